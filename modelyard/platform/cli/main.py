"""The `modelyard` command line: `modelyard NOUN VERB` (see cli/common.py for the grammar).

Each group lives in its own module; heavy modules are imported inside the commands, so
`--help` and the read commands start fast.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from modelyard.errors import ModelyardError
from modelyard.platform.cli import access, fleet, monitoring, process, registry, trainings

cli = typer.Typer(
    no_args_is_help=True, add_completion=False, help="Train, register, gate, promote, monitor and deploy models."
)
registry.register(cli, "Models and versions")
trainings.register(cli, "Training")
monitoring.register(cli, "Monitoring")
fleet.register(cli, "Edge fleet")
access.register(cli, "Access")
process.register(cli, "Run the platform")
err = Console(stderr=True)


def main() -> None:
    """Entry point: a user error is one red sentence and exit code 1, never a stack trace."""
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")  # MLflow's INFO lines are not for CLI users
    try:
        cli(standalone_mode=False)
    except ModelyardError as e:
        err.print(f"[red]error:[/red] {e}")
        sys.exit(1)
    except typer.Abort:
        err.print("aborted")
        sys.exit(130)
    except Exception as e:  # click's usage errors carry their own exit code
        code = getattr(e, "exit_code", None)
        if code is None:
            raise
        if hasattr(e, "show"):
            e.show()
        sys.exit(code)


if __name__ == "__main__":
    main()
