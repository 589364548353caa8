"""`pip install modelyard[edge]` in a clean venv gives a working agent without the platform's stack."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from modelyard.exporters.bundle import BuiltBundle
from tests.edge.conftest import desired_for

REPO = Path(__file__).resolve().parents[2]

SCRIPT = """
import json, sys
from pathlib import Path
import numpy as np
from modelyard.edge.install import Installer, copy_fetch
from modelyard.edge.runtime import LoadedModel
from modelyard.edge.slots import Slots

home, tar, desired = Path(sys.argv[1]), Path(sys.argv[2]), json.loads(sys.argv[3])
outcome = Installer(home, fetch=copy_fetch(tar)).install(desired)
assert outcome.outcome == "installed", outcome
slots = Slots(home)
out = LoadedModel(slots.path(slots.active())).predict({"input": np.ones((2, 4), dtype=np.float32)})
print(json.dumps({"outcome": outcome.outcome, "shape": list(out["probabilities"].shape)}))
"""


def _pypi_reachable() -> bool:
    try:
        socket.create_connection(("pypi.org", 443), timeout=5).close()
        return True
    except OSError:
        return False


def _copy_checkout(dest: Path) -> None:
    """Tracked files plus new ones not ignored (what a commit holds): the checkout itself stays clean.
    Outside a git checkout (an unpacked source tree), the package and its build files."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO, capture_output=True, text=True,
    )  # fmt: skip
    if listed.returncode != 0:
        names = ["pyproject.toml", "README.md"] + [str(p.relative_to(REPO)) for p in (REPO / "modelyard").rglob("*")]
    else:
        names = list(filter(None, listed.stdout.split("\0")))
    for name in names:
        if "__pycache__" in name:
            continue
        source = REPO / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


@pytest.mark.integration
def test_the_edge_extra_installs_and_runs_alone(tmp_path: Path, v1: BuiltBundle, keys: tuple[Path, Path]) -> None:
    src, venv = tmp_path / "src", tmp_path / "venv"
    _copy_checkout(src)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    pip = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", f"{src}[edge]"], capture_output=True, text=True, timeout=600
    )
    if pip.returncode != 0 and not _pypi_reachable():
        pytest.skip("PyPI cannot be reached, so `pip install modelyard[edge]` cannot build in a clean venv.")
    assert pip.returncode == 0, pip.stderr[-3000:]

    helped = subprocess.run([str(venv / "bin" / "modelyard-agent"), "--help"], capture_output=True, text=True)
    assert helped.returncode == 0 and "enroll" in helped.stdout and "run" in helped.stdout

    absent = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print([m for m in ('tensorflow', 'mlflow', 'celery', "
         "'pandas', 'keras', 'sqlalchemy', 'fastapi') if u.find_spec(m) is not None])"],
        capture_output=True, text=True, check=True, cwd=tmp_path,
    )  # fmt: skip
    assert absent.stdout.strip() == "[]"

    home = tmp_path / "agent"
    home.mkdir()
    shutil.copyfile(keys[1], home / "trust.pem")
    import json

    used = subprocess.run(
        [str(python), "-c", SCRIPT, str(home), str(v1.path), json.dumps(desired_for(v1))],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert used.returncode == 0, used.stderr[-3000:]
    assert json.loads(used.stdout) == {"outcome": "installed", "shape": [2, 3]}
