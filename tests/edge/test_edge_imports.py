"""The agent loads none of the platform's heavy dependencies (it must install and run alone)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

FORBIDDEN = [
    "tensorflow", "mlflow", "celery", "pandas", "keras", "sqlalchemy", "fastapi",
    "modelyard.platform", "modelyard.trainers", "modelyard.exporters", "modelyard.monitoring", "modelyard.errors",
]  # fmt: skip


def test_importing_the_agent_loads_nothing_of_the_platform() -> None:
    script = (
        "import json, sys\n"
        "import modelyard.edge, modelyard.edge.agent, modelyard.edge.cli, modelyard.edge.server\n"
        f"print(json.dumps(sorted(m for m in {FORBIDDEN!r} if m in sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout) == []


def test_importing_the_package_is_cheap() -> None:
    script = (
        "import sys, modelyard.edge; print([m for m in ('onnxruntime', 'httpx', 'model_signing') if m in sys.modules])"
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "[]"
