"""How long the read commands take in embedded mode, each as a user runs it (a fresh process).

Fills a temporary home's platform database with a model of 50 versions and their alias
moves (about 250 events), then times `modelyard --help`, `models list`, `versions list NAME`
and `models history NAME` (median of --runs), and, side by side, a bare `import mlflow`: the cost the
read commands no longer pay. Target: every read command under 0.5 s (they read the embedded
SQLite file with the standard library: store/reads.py).

    .venv/bin/python bench/read_commands.py [--runs 7] [--versions 50]
    .venv/bin/python bench/read_commands.py --smoke   # 5 versions, one run each: CI
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def fill(home: Path, versions: int) -> None:
    os.environ["MODELYARD_HOME"] = str(home)
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.audit import AuditLog, EventRecord

    audit = AuditLog(Settings())
    for v in range(1, versions + 1):
        version, old = str(v), str(v - 1) if v > 1 else None
        evidence = {"run_id": f"run{v}", "trigger": "manual", "dataset_sha256": "ab" * 32}
        audit.record(
            EventRecord("bench", "registered", "trained", "w", None, None, version, evidence, f"req-{v}"),
            EventRecord("bench", "alias_set", "newest", "w", "challenger", old, version),
        )
        moves = [EventRecord("bench", "alias_set", "gate", "gate", "previous", None, old)] if old else []
        audit.record(
            EventRecord("bench", "gate_passed", "better", "gate", None, old, version),
            *moves,
            EventRecord("bench", "alias_set", "gate", "gate", "champion", old, version),
        )


def timed(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run(argv, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - t)
        if done.returncode != 0:  # a command that fails is no read command to time
            said = (done.stderr or done.stdout).strip().splitlines()[-15:]
            raise SystemExit(f"{' '.join(argv[2:])} exited with {done.returncode}:\n" + "\n".join(said))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--versions", type=int, default=50)
    parser.add_argument("--smoke", action="store_true", help="CI: 5 versions, one run of each command.")
    args = parser.parse_args()
    if args.smoke:
        args.runs, args.versions = 1, 5
    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        fill(home, args.versions)
        env = {**os.environ, "MODELYARD_HOME": str(home), "COLUMNS": "200"}
        cli = [sys.executable, "-m", "modelyard.platform.cli.main"]
        rows = [
            ("modelyard --help", [*cli, "--help"]),
            ("modelyard models list", [*cli, "models", "list"]),
            ("modelyard versions list bench", [*cli, "versions", "list", "bench"]),
            ("modelyard models history bench", [*cli, "models", "history", "bench"]),
            ("python -c 'import mlflow' (avoided)", [sys.executable, "-c", "import mlflow"]),
        ]
        print(f"| command | median s ({args.runs} runs) | target <= 0.5 s |")
        print("|---|---:|---|")
        for label, argv in rows:
            seconds = timed(argv, env, args.runs)
            verdict = "-" if "avoided" in label else ("met" if seconds <= 0.5 else "NOT met")
            print(f"| {label} | {seconds:.2f} | {verdict} |")


if __name__ == "__main__":
    main()
