"""Keras -> ONNX through a tf.function with an explicit input signature (dynamic batch).

tf2onnx's from_keras fails on Keras 3 (KeyError 'keras_tensor_N'); converting a
tf.function whose signature names each input works, and keeps the names.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from modelyard.errors import ModelyardError


class ExportError(ModelyardError):
    """An export cannot be made or fails its checks; the version is not deployable."""


class UnsupportedOperationError(ExportError):
    """The converter has no ONNX equivalent for an operation of the model."""


@dataclass
class TensorInfo:
    name: str
    shape: list[int | None]
    dtype: str = "float32"


@dataclass
class Converted:
    model: Any  # onnx.ModelProto
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    opset: int
    notes: list[str] = field(default_factory=list)


def input_infos(model: Any) -> list[TensorInfo]:
    infos = []
    for i, tensor in enumerate(model.inputs):
        name = _clean(getattr(tensor, "name", "") or f"input_{i}")
        dtype = str(getattr(tensor, "dtype", "float32")).replace("<dtype: '", "").replace("'>", "")
        infos.append(TensorInfo(name, [None, *[int(d) if d is not None else None for d in tensor.shape[1:]]], dtype))
    return infos


def _clean(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name.split(":")[0]) or "input"


def to_onnx(model: Any, opset: int = 17) -> Converted:
    """Freeze the model's tf.function (variables and captured tensors, such as a fitted
    Normalization's mean, become constants) and convert the graph with tf2onnx."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    inputs = input_infos(model)
    signature = [tf.TensorSpec(i.shape, tf.as_dtype(i.dtype), name=i.name) for i in inputs]
    single = len(signature) == 1

    @tf.function(input_signature=signature)
    def serve(*args: Any) -> Any:
        return model(args[0] if single else list(args), training=False)

    try:
        frozen = convert_variables_to_constants_v2(
            serve.get_concrete_function(), lower_control_flow=False, aggressive_inlining=True
        )
        proto, _ = tf2onnx.convert.from_graph_def(
            frozen.graph.as_graph_def(),
            opset=opset,
            input_names=[t.name for t in frozen.inputs],
            output_names=[t.name for t in frozen.outputs],
        )
    except Exception as err:  # tf2onnx raises bare exceptions; name the layer and the op
        raise _explain(model, err) from None
    unsupported = _unsupported_ops(proto)
    if unsupported:
        raise _unsupported_error(model, unsupported)
    for graph_input, info in zip(proto.graph.input, inputs, strict=False):
        _rename(proto, graph_input.name, info.name)
    outputs = []
    for i, out in enumerate(list(proto.graph.output)):
        wanted = "output" if len(proto.graph.output) == 1 else f"output_{i}"
        dims = [d.dim_value or None for d in out.type.tensor_type.shape.dim]
        _rename(proto, out.name, wanted)
        outputs.append(TensorInfo(wanted, [None, *dims[1:]]))
    return Converted(proto, inputs, outputs, opset)


def _rename(proto: Any, old: str, new: str) -> None:
    """Rename a graph input or output wherever the graph uses it."""
    for node in proto.graph.node:
        node.output[:] = [new if o == old else o for o in node.output]
        node.input[:] = [new if i == old else i for i in node.input]
    for value in (*proto.graph.input, *proto.graph.output):
        if value.name == old:
            value.name = new


def _unsupported_ops(proto: Any) -> list[tuple[str, str]]:
    """tf2onnx leaves ops it cannot convert in the graph under their TensorFlow names."""
    import onnx

    known = {s.name for s in onnx.defs.get_all_schemas_with_history()}
    domains = {"", "ai.onnx", "ai.onnx.ml", "com.microsoft"}
    return [(n.name, n.op_type) for n in proto.graph.node if n.op_type not in known or n.domain not in domains]


def _layer_of(model: Any, node_name: str) -> str:
    names = [layer.name for layer in getattr(model, "layers", [])]
    matches = [n for n in names if n and n in node_name]
    return max(matches, key=len) if matches else node_name.split("/")[0]


def _unsupported_error(model: Any, ops: list[tuple[str, str]]) -> UnsupportedOperationError:
    node, op = ops[0]
    more = f" (and {len(ops) - 1} more)" if len(ops) > 1 else ""
    return UnsupportedOperationError(
        f"layer '{_layer_of(model, node)}' uses operation '{op}', which has no ONNX conversion{more}."
    )


def _explain(model: Any, err: Exception) -> ExportError:
    text = str(err)
    op = re.search(r"(?:op|Op|operation)[^A-Za-z0-9]+([A-Z][A-Za-z0-9]+)", text)
    node = re.search(r"node ['\"]?([\w/.-]+)", text)
    if op:
        where = _layer_of(model, node.group(1)) if node else "?"
        return UnsupportedOperationError(
            f"layer '{where}' uses operation '{op.group(1)}', which has no ONNX conversion."
        )
    first = text.splitlines()[0] if text else type(err).__name__
    return ExportError(f"conversion to ONNX failed: {type(err).__name__}: {first[:300]}")
