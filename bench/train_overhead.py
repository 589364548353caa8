"""The platform's training task against a plain `model.fit` of the same spec and data.

Both sides run side by side in this one run, alternating, each in a fresh process
(the platform's train worker forks a fresh child per task): the platform side is
submit -> real Celery worker on the embedded filesystem queue -> MLflow logging,
registration and gate -> result; the plain side builds, compiles and fits the same
Keras model on the same split. TensorFlow's import is excluded from both.

    .venv/bin/python bench/train_overhead.py [--spec bench/digits-cnn.yaml] [--epochs 30,90] [--rounds 3]

The platform's cost is mostly fixed per task (MLflow store, artifacts, evaluation,
baseline, gate), so the ratio is printed for each epoch count asked for.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
    out = subprocess.run([sys.executable, "-c", PLAIN, str(spec)], capture_output=True, text=True, env=env, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def platform_task(settings, spec: Path) -> dict:
    from modelyard.platform.services.follow import follow
    from modelyard.platform.services.submit import submit_training

    started = time.perf_counter()
    submitted = submit_training(settings, spec, uuid.uuid4().hex)
    result = follow(settings, submitted.request_id, quiet=True, timeout=1800, until="trained")
    wall = time.perf_counter() - started
    timings = result["timings"]
    return {"seconds": wall - timings["tensorflow_import_s"], "wall": wall, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=ROOT / "bench" / "digits-cnn.yaml")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", default="30,90", help="Comma-separated epoch counts to compare at.")
    args = parser.parse_args()

    home = Path(tempfile.mkdtemp(prefix="modelyard-bench-"))
    os.environ.update({"MODELYARD_HOME": str(home), "TF_CPP_MIN_LOG_LEVEL": "3", "MLFLOW_LOGGING_LEVEL": "WARNING"})
    from modelyard.platform.services.bootstrap import prepare_stores
    from modelyard.platform.settings import Settings
    from modelyard.platform.worker.supervisor import worker_argv

    settings = Settings()
    prepare_stores(settings)
    worker = subprocess.Popen(
        worker_argv(settings, ["train"], None, "WARNING"),
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    summary = []
    try:
        for epochs in (int(e) for e in args.epochs.split(",")):
            spec = _with_epochs(args.spec, epochs, home)
            platform_task(settings, spec)  # warm-up: creates the experiment and the champion
            plain, platform = [], []
            for i in range(args.rounds):
                plain.append(plain_fit(spec))
                platform.append(platform_task(settings, spec))
                print(
                    f"{epochs} epochs, round {i + 1}: plain fit {plain[-1]['seconds']:.2f} s, "
                    f"platform task {platform[-1]['seconds']:.2f} s",
                    flush=True,
                )
            summary.append((epochs, plain, platform))
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    print(f"\nspec: {args.spec.name}, {args.rounds} rounds each, medians, TensorFlow import excluded from both")
    # The fits themselves spread by 10-30% on this machine, more than the overhead: besides the
    # ratio of medians, the fixed cost is read inside each task (its wall time minus its own fit),
    # and "fixed ratio" is (plain fit + that cost) / plain fit.
    print(
        f"{'epochs':>6} {'plain fit s':>12} {'platform s':>11} {'overhead s':>11} {'ratio':>7} "
        f"{'fixed cost s':>13} {'fixed ratio':>12}  (target <= 1.15)"
    )
    for epochs, plain, platform in summary:
        p = statistics.median(r["seconds"] for r in plain)
        q = statistics.median(r["seconds"] for r in platform)
        fixed = statistics.median(r["seconds"] - r["timings"]["fit_s"] for r in platform)
        print(f"{epochs:>6} {p:>12.2f} {q:>11.2f} {q - p:>11.2f} {q / p:>7.3f} {fixed:>13.2f} {(p + fixed) / p:>12.3f}")
    stages = ("load_s", "setup_s", "build_s", "fit_s", "evaluate_s", "log_s", "register_s", "gate_s")
    last = summary[-1][2]
    print(
        "platform task stages, last row (median s): "
        + ", ".join(f"{s[:-2]} {statistics.median(r['timings'].get(s, 0.0) for r in last):.2f}" for s in stages)
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
