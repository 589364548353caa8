"""Tensor data on the wire <-> numpy arrays: JSON data, Triton's binary tensor extension, answers.

Data travels flattened in row-major order with an explicit shape, as Triton and MLServer send
it; nested lists are accepted too (numpy flattens them the same way). Each failure is a
TensorError whose message is one sentence about the tensor the caller named in `what`; the
agent and the server turn it into their own error types.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from modelyard.oip.protocol import DATATYPES, datatype_of


class TensorError(ValueError):
    """A tensor's data does not hold what its datatype and shape say (one sentence)."""


def numpy_dtype(datatype: str) -> np.dtype:
    """The numpy dtype of a datatype of DATATYPES (a KeyError for any other: check the datatype first)."""
    return np.dtype(DATATYPES[datatype])


# The JSON values each kind of datatype takes: numbers for floats (not strings, not booleans, which numpy would
# convert), integers for integers (numpy would truncate 1.5), true and false for BOOL.
_JSON_TYPES: dict[str, frozenset[type]] = {
    "f": frozenset({int, float}),
    "i": frozenset({int}),
    "u": frozenset({int}),
    "b": frozenset({bool}),
}


def from_json(
    data: Any, datatype: str, shape: list[int], *, what: str = "the tensor", finite: bool = False
) -> np.ndarray:
    """The array a tensor's JSON `data` holds, in `shape`.

    `finite` refuses NaN and infinities: the server logs what it serves and drift checks read the
    log, so a NaN there would poison every window after it; the agent passes them on to its model.
    """
    if not isinstance(data, list):
        raise TensorError(f"{what} needs its data as a list of numbers.")
    dtype = numpy_dtype(datatype)
    if not _leaf_types(data) <= _JSON_TYPES[dtype.kind]:
        raise TensorError(f"{what} holds data that is not of its datatype.")
    try:
        array = np.asarray(data, dtype=dtype)
    except (ValueError, TypeError, OverflowError):  # ragged lists, an int beyond the dtype
        raise TensorError(f"{what} holds data that is not of its datatype.") from None
    count = math.prod(shape)
    if array.size != count:
        raise TensorError(f"{what} has {array.size} values; shape {shape} needs {count}.")
    if finite:
        check_finite(array, what)
    return array.reshape(shape)


def from_binary(
    buffer: bytes | None,
    offset: int,
    size: Any,
    datatype: str,
    shape: list[int],
    *,
    what: str = "the tensor",
    finite: bool = False,
) -> np.ndarray:
    """The array `size` bytes at `offset` of a request's binary part hold (parameters.binary_data_size).

    A view on the buffer, not a copy: the request's bytes live as long as the array does. `finite`
    refuses NaN and infinities, as from_json does: the bytes are the same values, only sent raw.
    """
    if buffer is None or not isinstance(size, int) or isinstance(size, bool) or offset + size > len(buffer):
        raise TensorError(f"{what} names binary data the request does not carry.")
    dtype = numpy_dtype(datatype)
    count = math.prod(shape)
    if size != count * dtype.itemsize:
        raise TensorError(f"{what}: {size} bytes of binary data do not hold shape {shape} of {datatype}.")
    array = np.frombuffer(buffer, dtype=dtype, count=count, offset=offset).reshape(shape)
    if finite:
        check_finite(array, what)
    return array


def check_finite(array: np.ndarray, what: str) -> None:
    """Refuse NaN and infinities in a float tensor, however it was sent (other dtypes hold none)."""
    if array.dtype.kind == "f" and not np.isfinite(array).all():
        raise TensorError(f"{what} holds NaN or infinite values.")


def _leaf_types(data: list[Any]) -> set[type]:
    """The Python types of the values in (nested) JSON lists, level by level: no recursion, C-speed loops."""
    types: set[type] = set()
    level: list[Any] = data
    while level:
        found = set(map(type, level))
        if list not in found:
            return types | found
        found.discard(list)
        types |= found
        level = [item for sub in level if type(sub) is list for item in sub]
    return types


def encode_tensor(
    name: str, value: np.ndarray, datatype: str | None = None, *, binary: bool = False
) -> tuple[dict[str, Any], bytes | None]:
    """An output tensor of an infer answer, and its bytes when sent with the binary extension.

    `datatype` defaults to the array's own; a dtype the protocol lacks is called BYTES, its
    catch-all, rather than refusing an answer the model already computed.
    """
    tensor: dict[str, Any] = {
        "name": name,
        "datatype": datatype or datatype_of(value.dtype) or "BYTES",
        "shape": list(value.shape),
    }
    if binary:
        raw = np.ascontiguousarray(value).tobytes()
        tensor["parameters"] = {"binary_data_size": len(raw)}
        return tensor, raw
    tensor["data"] = value.reshape(-1).tolist()
    return tensor, None
