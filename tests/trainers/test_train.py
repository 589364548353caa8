"""Training on tiny data: seeds make it repeatable, early stopping stops, a GPU is used when present."""

import numpy as np
import pytest

from modelyard.trainers.datasets import load_dataset, split_dataset
from modelyard.trainers.spec import parse_spec
from modelyard.trainers.train import fit
from tests.conftest import tiny_spec


def _split(spec):
    ds = load_dataset(spec.dataset)
    return split_dataset(ds, spec.validation_fraction, spec.test_fraction, spec.seed)


def test_same_seed_same_weights_and_progress_per_epoch() -> None:
    spec = parse_spec(tiny_spec(epochs=2))
    split = _split(spec)
    epochs: list[int] = []
    a = fit(spec, split, 10, lambda epoch, logs: epochs.append(epoch))
    b = fit(spec, split, 10)
    assert epochs == [1, 2] and a.epochs_run == 2
    assert all(np.array_equal(x, y) for x, y in zip(a.model.get_weights(), b.model.get_weights(), strict=True))
    assert a.device.device in ("CPU", "GPU:0", "GPU")


def test_early_stopping_stops_before_the_last_epoch() -> None:
    spec = parse_spec(tiny_spec(epochs=200, early_stopping_patience=1, learning_rate=0.05))
    result = fit(spec, _split(spec), 10)
    assert result.epochs_run < 200


@pytest.mark.gpu
def test_training_uses_the_gpu_with_mixed_precision() -> None:
    import tensorflow as tf

    if not tf.config.list_physical_devices("GPU"):
        pytest.skip("no GPU visible to TensorFlow")
    spec = parse_spec(tiny_spec(epochs=1))
    result = fit(spec, _split(spec), 10)
    assert result.device.device.startswith("GPU") and result.device.precision == "mixed_float16"
    assert result.model.outputs[0].dtype == "float32"  # the head stays float32 under mixed precision
