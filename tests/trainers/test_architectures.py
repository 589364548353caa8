"""Built-in and user architectures build and train on tiny data (real Keras)."""

import sys
from pathlib import Path

import numpy as np
import pytest

from modelyard.errors import ArchitectureError
from modelyard.trainers.architectures import build_model
from modelyard.trainers.spec import ArchitectureSpec


@pytest.mark.parametrize(
    ("name", "shape"),
    [("mlp", (6,)), ("mlp", (8, 8, 1)), ("cnn", (8, 8, 1)), ("cnn", (8, 8)), ("lstm", (5, 3)), ("gru", (8, 8, 1))],
)
def test_builtins_give_class_probabilities(name: str, shape: tuple) -> None:
    x = np.random.default_rng(0).random((16, *shape), dtype=np.float32)
    model = build_model(ArchitectureSpec(name=name), x, 3, "classification")
    out = np.asarray(model.predict(x[:4], verbose=0))
    assert out.shape == (4, 3) and np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def test_regression_head_has_one_output() -> None:
    x = np.zeros((8, 4), dtype=np.float32)
    assert build_model(ArchitectureSpec(name="mlp"), x, 1, "regression").outputs[0].shape[-1] == 1


def test_bad_params_and_shapes() -> None:
    x = np.zeros((8, 4), dtype=np.float32)
    with pytest.raises(ArchitectureError, match="'mlp': bad params"):
        build_model(ArchitectureSpec(name="mlp", params={"layers": 3}), x, 2, "classification")
    with pytest.raises(ArchitectureError, match="'cnn' needs images"):
        build_model(ArchitectureSpec(name="cnn"), x, 2, "classification")


USER_MODULE = """
import keras

def tiny(input_shape, n_outputs, task, width=4):
    inputs = keras.Input(shape=input_shape)
    x = keras.layers.Flatten()(inputs)
    x = keras.layers.Dense(width, activation="relu")(x)
    return keras.Model(inputs, keras.layers.Dense(n_outputs, activation="softmax")(x))

def wrong_size(input_shape, n_outputs, task):
    return tiny(input_shape, n_outputs + 1, task)

def not_a_model(input_shape, n_outputs, task):
    return "model"
"""


def test_user_builders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_models.py").write_text(USER_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    x = np.zeros((8, 4, 4), dtype=np.float32)
    model = build_model(ArchitectureSpec(name="my_models:tiny", params={"width": 6}), x, 3, "classification")
    assert model.outputs[0].shape[-1] == 3
    with pytest.raises(ArchitectureError, match="outputs 4 values per row; this dataset needs 3"):
        build_model(ArchitectureSpec(name="my_models:wrong_size"), x, 3, "classification")
    with pytest.raises(ArchitectureError, match=r"returned str, not a keras\.Model"):
        build_model(ArchitectureSpec(name="my_models:not_a_model"), x, 3, "classification")
    with pytest.raises(ArchitectureError, match="module 'my_models' has no 'missing'"):
        build_model(ArchitectureSpec(name="my_models:missing"), x, 3, "classification")
    sys.modules.pop("my_models", None)
