"""Fit a model from a spec on a split: fixed seeds, early stopping, GPU when present.

TensorFlow is imported here, inside functions: a Celery worker's parent process
never imports it (CUDA does not survive fork, and TensorFlow never returns GPU memory).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import TrainingError
from modelyard.trainers.architectures import build_model
from modelyard.trainers.datasets import Split
from modelyard.trainers.spec import TrainSpec

EpochCallback = Callable[[int, dict[str, float]], None]


@dataclass
class DeviceInfo:
    device: str
    gpus: list[str] = field(default_factory=list)
    strategy: str = "default"
    precision: str = "float32"

    def as_dict(self) -> dict[str, Any]:
        return {"device": self.device, "gpus": self.gpus, "strategy": self.strategy, "precision": self.precision}


@dataclass
class TrainResult:
    model: Any
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    device: DeviceInfo
    fit_seconds: float


def configure_devices(mixed_precision: bool) -> tuple[DeviceInfo, Any]:
    """Memory growth on every GPU, mixed precision on GPU, MirroredStrategy on several."""
    import keras
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    for gpu in gpus:
        with suppress(RuntimeError):  # already initialized in this process: growth is set once
            tf.config.experimental.set_memory_growth(gpu, True)
    if not gpus:
        keras.mixed_precision.set_global_policy("float32")
        return DeviceInfo(device="CPU"), tf.distribute.get_strategy()
    precision = "mixed_float16" if mixed_precision else "float32"
    keras.mixed_precision.set_global_policy(precision)
    names = [g.name for g in gpus]
    if len(gpus) > 1:
        strategy = tf.distribute.MirroredStrategy()
        return DeviceInfo("GPU", names, "MirroredStrategy", precision), strategy
    return DeviceInfo("GPU:0", names, "default", precision), tf.distribute.get_strategy()


def fit(spec: TrainSpec, split: Split, n_outputs: int, on_epoch_end: EpochCallback | None = None) -> TrainResult:
    import keras
    import numpy as np

    keras.utils.set_random_seed(spec.seed)
    device, strategy = configure_devices(spec.mixed_precision)
    task = spec.dataset.task
    with strategy.scope():
        model = build_model(spec.architecture, split.x_train, n_outputs, task)
        if task == "regression":
            loss, metrics = "mse", ["mae"]
        else:
            loss, metrics = "sparse_categorical_crossentropy", ["accuracy"]
        model.compile(optimizer=keras.optimizers.Adam(learning_rate=spec.learning_rate), loss=loss, metrics=metrics)
    callbacks: list[Any] = []
    if spec.early_stopping_patience:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=spec.early_stopping_patience, restore_best_weights=True
            )
        )
    callbacks.append(keras.callbacks.TerminateOnNaN())
    if on_epoch_end is not None:
        callbacks.append(
            keras.callbacks.LambdaCallback(
                on_epoch_end=lambda epoch, logs: on_epoch_end(epoch + 1, {k: float(v) for k, v in (logs or {}).items()})
            )
        )
    started = time.perf_counter()
    history = model.fit(
        split.x_train,
        split.y_train,
        validation_data=(split.x_val, split.y_val),
        epochs=spec.epochs,
        batch_size=spec.batch_size,
        callbacks=callbacks,
        verbose=0,
    )
    seconds = time.perf_counter() - started
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    losses = hist.get("loss", [])
    if not losses or not np.isfinite(losses[-1]):
        raise TrainingError(
            f"training of '{spec.name}' diverged (loss became NaN at epoch {len(losses)}); "
            "lower learning_rate in the spec."
        )
    val = hist.get("val_loss", losses)
    best = int(np.argmin(val)) + 1
    return TrainResult(model, hist, len(losses), best, device, seconds)
