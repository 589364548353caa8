"""The platform's training task against a plain `model.fit` of the same spec and data.

Both sides run side by side in this one run, alternating, each in a fresh process
(the platform's train worker forks a fresh child per task): the platform side is
submit -> real Celery worker on the embedded filesystem queue -> claim, MLflow logging,
evaluation, baseline, registration as challenger -> the train task's end; the plain side
builds, compiles and fits the same Keras model on the same split. TensorFlow's import is
excluded from both. The export and the gate are the export stage's (another task, on
another queue, not started here): not counted.

    .venv/bin/python bench/train_overhead.py [--spec bench/digits-cnn.yaml] [--epochs 30,90] [--rounds 3]
    .venv/bin/python bench/train_overhead.py --smoke   # the same path at 2 epochs, one round: CI

The platform's cost is mostly fixed per task (MLflow store, artifacts, evaluation,
baseline, registration), so the ratio is printed for each epoch count asked for.
"""

from __future__ import annotations

import _thread
import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

PLAIN = r"""
import json, sys, time
import tensorflow as tf  # excluded from the timing, as in the task
import keras
from modelyard.trainers.spec import load_spec
from modelyard.trainers.datasets import load_dataset, split_dataset
from modelyard.trainers.architectures import build_model
spec = load_spec(sys.argv[1])
t = time.perf_counter()
ds = load_dataset(spec.dataset)
split = split_dataset(ds, spec.validation_fraction, spec.test_fraction, spec.seed)
keras.utils.set_random_seed(spec.seed)
model = build_model(spec.architecture, split.x_train, len(ds.classes), "classification")
model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
callbacks = [keras.callbacks.EarlyStopping(monitor="val_loss", patience=spec.early_stopping_patience,
                                           restore_best_weights=True)] if spec.early_stopping_patience else []
h = model.fit(split.x_train, split.y_train, validation_data=(split.x_val, split.y_val), epochs=spec.epochs,
              batch_size=spec.batch_size, callbacks=callbacks, verbose=0)
print(json.dumps({"seconds": time.perf_counter() - t, "epochs": len(h.history["loss"])}))
"""


def plain_fit(spec: Path) -> dict:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    out = subprocess.run([sys.executable, "-c", PLAIN, str(spec)], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        said = "\n".join(out.stderr.strip().splitlines()[-15:])
        raise SystemExit(f"the plain fit exited with code {out.returncode}:\n{said}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def watch(worker: subprocess.Popen, stop: threading.Event) -> None:
    """Interrupt the main thread (waiting in follow()) as soon as the train worker exits, rather than wait
    out follow()'s timeout for a task nobody will run."""
    while not stop.wait(0.5):
        if worker.poll() is not None:
            _thread.interrupt_main()
            return


def platform_task(settings, spec: Path, timeout: float) -> dict:
    from modelyard.platform.queue.app import create_app
    from modelyard.platform.queue.outbox import read_task
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

    started = time.perf_counter()
    submitted = submit_training(settings, spec, uuid.uuid4().hex)
    trained = follow(settings, submitted.request_id, quiet=True, timeout=timeout, until="trained")
    # follow() returns the request row's result: the train stage's own timings (load, fit, log, ...).
    # The Celery task times TensorFlow's import around that stage and adds it to the task's result
    # only (worker/tasks.py): read it there, once the task has ended (just after the row says trained).
    app = create_app(settings)
    deadline = time.monotonic() + 60
    state, info = read_task(app, submitted.request_id)
    while state != "SUCCESS" and time.monotonic() < deadline:
        if state == "FAILURE":
            raise SystemExit(f"train task {submitted.request_id} failed after its request was trained: {info!r}")
        time.sleep(0.05)
        state, info = read_task(app, submitted.request_id)
    wall = time.perf_counter() - started
    if state != "SUCCESS":
        raise SystemExit(f"train task {submitted.request_id} still {state} 60 s after its request was trained")
    imported = ((info or {}).get("timings") or {}).get("tensorflow_import_s")
    if imported is None:
        raise SystemExit(f"the train task's result has no timings.tensorflow_import_s: {info!r}")
    timings = {**trained["timings"], "tensorflow_import_s": imported}
    return {"seconds": wall - imported, "wall": wall, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "bench" / "digits-cnn.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", default="30,90", help="Comma-separated epoch counts to compare at.")
    parser.add_argument("--smoke", action="store_true", help="CI: 2 epochs, one round, no warm-up task.")
    args = parser.parse_args()
    if args.smoke:
        args.epochs, args.rounds = "2", 1
    timeout = 600 if args.smoke else 1800

    # Stopped from outside (CI's timeout, a kill): the finally clauses still stop the worker and remove the home.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    home = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    try:
        run(args, home, timeout)
    finally:
        shutil.rmtree(home, ignore_errors=True)


def run(args: argparse.Namespace, home: Path, timeout: float) -> None:
    os.environ.update({"MODELYARD_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_LOGGING_LEVEL": "WARNING"})
    from modelyard.platform.services.bootstrap import prepare_stores
    from modelyard.platform.settings import Settings
    from modelyard.platform.worker.supervisor import worker_argv

    settings = Settings()
    prepare_stores(settings)
    log = home / "worker.log"
    with open(log, "wb") as out:  # the worker keeps its own descriptor
        worker = subprocess.Popen(
            worker_argv(settings, ["train"], None, "WARNING"),
            start_new_session=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    summary = []
    stop = threading.Event()
    watcher = threading.Thread(target=watch, args=(worker, stop), daemon=True)
    watcher.start()
    try:
        for epochs in (int(e) for e in args.epochs.split(",")):
            spec = _with_epochs(args.spec, epochs, home)
            if not args.smoke:
                platform_task(settings, spec, timeout)  # warm-up: creates the experiment
            plain, platform = [], []
            for i in range(args.rounds):
                plain.append(plain_fit(spec))
                platform.append(platform_task(settings, spec, timeout))
                print(
                    f"{epochs} epochs, round {i + 1}: plain fit {plain[-1]['seconds']:.2f} s, "
                    f"platform task {platform[-1]['seconds']:.2f} s",
                    flush=True,
                )
            summary.append((epochs, plain, platform))
    except BaseException as err:
        said = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        if isinstance(err, KeyboardInterrupt) and worker.poll() is not None:
            raise SystemExit(f"the train worker exited with code {worker.returncode}; its log ends:\n{said}") from None
        print(f"the train worker's log ends:\n{said}", file=sys.stderr)
        raise
    finally:
        stop.set()
        watcher.join()  # before the worker is stopped: its exit is no failure then
        worker.terminate()
        worker.wait(timeout=60)

    warm = "no warm-up task (smoke)" if args.smoke else "after a warm-up task"
    print(f"\nspec: {args.spec.name}, {args.rounds} rounds each, {warm}, medians, TensorFlow import excluded from both")
    # The fits themselves spread by 10-30% on this machine, more than the overhead: besides the
    # ratio of medians, the fixed cost is read inside each task (its wall time minus its own fit),
    # and "fixed ratio" is (plain fit + that cost) / plain fit.
    print(
        f"{'epochs':>6} {'plain fit s':>12} {'platform s':>11} {'overhead s':>11} {'ratio':>7} "
        f"{'fixed cost s':>13} {'fixed ratio':>12}  (target <= 1.10 at 30 epochs)"
    )
    for epochs, plain, platform in summary:
        p = statistics.median(r["seconds"] for r in plain)
        q = statistics.median(r["seconds"] for r in platform)
        fixed = statistics.median(r["seconds"] - r["timings"]["fit_s"] for r in platform)
        print(f"{epochs:>6} {p:>12.2f} {q:>11.2f} {q - p:>11.2f} {q / p:>7.3f} {fixed:>13.2f} {(p + fixed) / p:>12.3f}")
    stages = ("load_s", "setup_s", "build_s", "fit_s", "evaluate_s", "log_s", "register_s")
    last = summary[-1][2]
    print(
        "platform train task stages, last row (median s): "
        + ", ".join(f"{s[:-2]} {statistics.median(r['timings'].get(s, 0.0) for r in last):.2f}" for s in stages)
        + f"; TensorFlow import {statistics.median(r['timings']['tensorflow_import_s'] for r in last):.2f} (excluded)"
    )
    print(
        f"queue and result round trip (median s): "
        f"{statistics.median(r['seconds'] - r['timings']['total_s'] for r in last):.2f}"
    )


def _with_epochs(spec: Path, epochs: int, folder: Path) -> Path:
    import yaml

    data = yaml.safe_load(spec.read_text())
    data["epochs"] = epochs
    out = folder / f"{spec.stem}-{epochs}.yaml"
    out.write_text(yaml.safe_dump(data))
    return out


if __name__ == "__main__":
    main()
