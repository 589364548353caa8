"""Keras architectures: built-ins configured by params, or a user's builder function.

Every builder returns an uncompiled Keras model whose last layer gives class
probabilities (classification) or one value (regression), in float32 even under
mixed precision. TensorFlow/Keras is imported inside the functions.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from modelyard.errors import ArchitectureError
from modelyard.trainers.spec import ArchitectureSpec


def build_model(spec: ArchitectureSpec, x_train: np.ndarray, n_outputs: int, task: str) -> Any:
    """Build the model named by the spec for inputs shaped like x_train."""
    input_shape = tuple(int(d) for d in x_train.shape[1:])
    if spec.name in _BUILTINS:
        try:
            return _BUILTINS[spec.name](x_train, n_outputs, task, **spec.params)
        except TypeError as err:
            raise ArchitectureError(f"architecture '{spec.name}': bad params ({err}).") from None
    return _build_user(spec, input_shape, n_outputs, task)


def _head(x: Any, n_outputs: int, task: str) -> Any:
    from keras import layers

    if task == "regression":
        return layers.Dense(1, dtype="float32", name="output")(x)
    return layers.Dense(n_outputs, activation="softmax", dtype="float32", name="output")(x)


def _mlp(
    x_train: np.ndarray,
    n_outputs: int,
    task: str,
    hidden_units: list[int] = (64, 32),  # type: ignore[assignment]
    dropout: float = 0.1,
    activation: str = "relu",
) -> Any:
    import keras
    from keras import layers

    inputs = keras.Input(shape=x_train.shape[1:], name="features")
    x = layers.Flatten()(inputs) if x_train.ndim > 2 else inputs
    norm = layers.Normalization(name="standardize")
    norm.adapt(x_train.reshape(len(x_train), -1))
    x = norm(x)
    for units in hidden_units:
        x = layers.Dense(int(units), activation=activation)(x)
        if dropout:
            x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, n_outputs, task), name="mlp")


def _cnn(
    x_train: np.ndarray,
    n_outputs: int,
    task: str,
    filters: list[int] = (16, 32),  # type: ignore[assignment]
    kernel_size: int = 3,
    dense_units: int = 64,
    dropout: float = 0.2,
    pool: bool = True,
) -> Any:
    import keras
    from keras import layers

    if x_train.ndim not in (3, 4):
        raise ArchitectureError(
            f"architecture 'cnn' needs images (height, width[, channels]); inputs have shape {x_train.shape[1:]}."
        )
    inputs = keras.Input(shape=x_train.shape[1:], name="images")
    x = layers.Reshape((*x_train.shape[1:], 1))(inputs) if x_train.ndim == 3 else inputs
    for i, f in enumerate(filters):
        x = layers.Conv2D(int(f), kernel_size, padding="same", activation="relu")(x)
        if pool and i < len(filters) - 1:
            x = layers.MaxPooling2D(2, padding="same")(x)
    x = layers.GlobalAveragePooling2D()(x) if not pool else layers.Flatten()(x)
    if dense_units:
        x = layers.Dense(int(dense_units), activation="relu")(x)
    if dropout:
        x = layers.Dropout(dropout)(x)
    return keras.Model(inputs, _head(x, n_outputs, task), name="cnn")


def _as_sequence_shape(x_train: np.ndarray) -> tuple[int, int]:
    """(steps, features): images become rows-as-steps, flat rows one feature per step."""
    shape = x_train.shape[1:]
    if len(shape) == 1:
        return int(shape[0]), 1
    if len(shape) == 2:
        return int(shape[0]), int(shape[1])
    if len(shape) == 3:
        return int(shape[0]), int(shape[1] * shape[2])
    raise ArchitectureError(f"a recurrent architecture cannot read inputs of shape {shape}.")


def _recurrent(cell: str):
    def build(
        x_train: np.ndarray,
        n_outputs: int,
        task: str,
        units: int = 32,
        layers_count: int = 1,
        bidirectional: bool = False,
        dropout: float = 0.0,
    ) -> Any:
        import keras
        from keras import layers

        steps, features = _as_sequence_shape(x_train)
        inputs = keras.Input(shape=x_train.shape[1:], name="sequence")
        x = layers.Reshape((steps, features))(inputs)
        rnn = layers.LSTM if cell == "lstm" else layers.GRU
        for i in range(int(layers_count)):
            layer = rnn(int(units), return_sequences=i < layers_count - 1, dropout=dropout)
            x = layers.Bidirectional(layer)(x) if bidirectional else layer(x)
        return keras.Model(inputs, _head(x, n_outputs, task), name=cell)

    return build


_BUILTINS = {"mlp": _mlp, "cnn": _cnn, "lstm": _recurrent("lstm"), "gru": _recurrent("gru")}


def _build_user(spec: ArchitectureSpec, input_shape: tuple[int, ...], n_outputs: int, task: str) -> Any:
    import keras

    module_name, _, func_name = spec.name.partition(":")
    try:
        builder = getattr(importlib.import_module(module_name), func_name)
    except ImportError as err:
        raise ArchitectureError(f"architecture '{spec.name}': cannot import module '{module_name}' ({err}).") from None
    except AttributeError:
        raise ArchitectureError(f"architecture '{spec.name}': module '{module_name}' has no '{func_name}'.") from None
    try:
        model = builder(input_shape=input_shape, n_outputs=n_outputs, task=task, **spec.params)
    except Exception as err:  # the user's code: report its failure in one sentence
        raise ArchitectureError(f"architecture '{spec.name}' failed to build: {type(err).__name__}: {err}.") from None
    if not isinstance(model, keras.Model):
        raise ArchitectureError(f"architecture '{spec.name}' returned {type(model).__name__}, not a keras.Model.")
    want = 1 if task == "regression" else n_outputs
    got = model.outputs[0].shape[-1] if model.outputs else None
    if got != want:
        raise ArchitectureError(f"architecture '{spec.name}' outputs {got} values per row; this dataset needs {want}.")
    return model
