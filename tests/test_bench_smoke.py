"""Every benchmark has a smoke size, and `make bench-smoke` (run by .ci/run) runs them all.

The smoke runs themselves take minutes and start servers, so they are CI's (`make bench-smoke`),
not the suite's; here, in seconds: each bench/*.py offers --smoke, and the target runs every one.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "bench").glob("*.py"))


def test_there_are_benchmarks() -> None:
    assert len(SCRIPTS) >= 9, [s.name for s in SCRIPTS]


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.stem for s in SCRIPTS])
def test_every_benchmark_has_a_smoke_size(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script), "--help"], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--smoke" in done.stdout, f"{script.name} has no --smoke flag: {done.stdout}"


def test_ci_runs_every_benchmark_at_its_smoke_size() -> None:
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nbench-smoke:", 1)[1].split("\n\n", 1)[0]
    assert "for script in bench/*.py" in recipe and "$$script --smoke" in recipe and "set -e" in recipe, recipe
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make bench-smoke" in " ".join(ci)
