"""What a duplicate delivery of a training costs a train worker, now and before issue 7.

A duplicate (a redelivery, a re-published message, a second `modelyard train` with the
same request id) arrives while another worker holds the request. Before, the task
imported TensorFlow and then found the request busy, and retried every heartbeat for as
long as the training ran. Now it checks the claim first (one UPDATE on the platform
database) and is dropped. Measured side by side, each in a fresh process as a train
worker's child runs it: the claim check of a busy request, and a bare `import tensorflow`
(what every duplicate paid before, at least). Medians of --runs.

    .venv/bin/python bench/duplicate_delivery.py [--runs 5]
    .venv/bin/python bench/duplicate_delivery.py --smoke   # one run of each: CI
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

CHECK = """
import time
t = time.perf_counter()
from modelyard.platform.context import Platform
from modelyard.platform.services.training import TrainRequest, claim_training
from modelyard.platform.services.attempts import unclaimed_answer
claim = claim_training(Platform(), TrainRequest(request_id="dup-1", spec={spec!r}))
assert claim.lease is None and unclaimed_answer(claim)["busy"], claim.state
print(time.perf_counter() - t)
"""

IMPORT_TF = """
import time
t = time.perf_counter()
import tensorflow
print(time.perf_counter() - t)
"""


def inner_seconds(code: str, env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median seconds inside the process (the work itself) and of the whole process."""
    inner, whole = [], []
    for _ in range(runs):
        t = time.perf_counter()
        done = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True, text=True)
        whole.append(time.perf_counter() - t)
        inner.append(float(done.stdout.strip().splitlines()[-1]))
    return statistics.median(inner), statistics.median(whole)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--smoke", action="store_true", help="CI: one run of each.")
    args = parser.parse_args()
    if args.smoke:
        args.runs = 1
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from tests.conftest import tiny_spec

    with tempfile.TemporaryDirectory() as tmp:
        env = {**os.environ, "MODELYARD_HOME": str(Path(tmp) / "home"), "TF_CPP_MIN_LOG_LEVEL": "3"}
        os.environ.update(env)
        from modelyard.platform.context import Platform
        from modelyard.platform.services.training import TrainRequest, claim_training

        spec = tiny_spec("dup")
        first = claim_training(Platform(), TrainRequest(request_id="dup-1", spec=spec))
        assert first.lease is not None  # a live holder: every later delivery is a busy duplicate
        check_in, check_whole = inner_seconds(CHECK.format(spec=spec), env, args.runs)
        tf_in, tf_whole = inner_seconds(IMPORT_TF, env, args.runs)

    print(f"duplicate delivery of a busy training, median of {args.runs} fresh processes")
    print(f"{'':38} {'work s':>8} {'process s':>10}")
    print(f"{'now: claim check, then dropped':38} {check_in:8.3f} {check_whole:10.3f}")
    print(f"{'before: import tensorflow first':38} {tf_in:8.3f} {tf_whole:10.3f}")
    print(f"ratio before/now (work): {tf_in / check_in:.1f}x; (process): {tf_whole / check_whole:.1f}x")
    print("before, a busy duplicate also retried every MODELYARD_HEARTBEAT_SECONDS (10 s) until the training")
    print("ended: 360 TensorFlow imports for one duplicate of a one-hour training; now one claim check.")


if __name__ == "__main__":
    main()
