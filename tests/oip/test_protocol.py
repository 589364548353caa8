"""The Open Inference Protocol leaf: datatype tables, shape rules, tensor data in and out."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from modelyard.oip import (
    DATATYPES,
    ONNX_TO_OIP,
    TensorSpec,
    datatype_of,
    fits,
    infer_response,
    is_shape,
    model_metadata,
    unknown_and_missing,
)
from modelyard.oip.tensors import TensorError, encode_tensor, from_binary, from_json, numpy_dtype

REPO = Path(__file__).resolve().parents[2]


def test_every_datatype_round_trips_through_numpy_and_onnx_names_map_onto_them() -> None:
    for datatype in DATATYPES:
        assert datatype_of(numpy_dtype(datatype)) == datatype
    assert set(ONNX_TO_OIP.values()) == set(DATATYPES)
    assert ONNX_TO_OIP["tensor(float)"] == "FP32" and ONNX_TO_OIP["tensor(double)"] == "FP64"
    assert datatype_of(np.dtype("<U3")) is None and datatype_of("float32") == "FP32"


def test_shapes_are_lists_of_integers_and_minus_one_matches_any_size() -> None:
    assert is_shape([2, 3]) and is_shape([])
    assert not is_shape((2, 3)) and not is_shape([2, True]) and not is_shape([2.0]) and not is_shape(None)
    assert fits([5, 4], (-1, 4)) and fits((1, 4), [1, 4])
    assert not fits([5, 3], (-1, 4)) and not fits([5], (-1, 4))


def test_names_a_request_gives_against_a_signature() -> None:
    assert unknown_and_missing(["a", "x"], ["a", "b"]) == (["x"], ["b"])
    assert unknown_and_missing(["a", "b"], ["a", "b"]) == ([], [])


def test_json_data_flat_or_nested_becomes_an_array_of_the_shape() -> None:
    flat = from_json([1, 2, 3, 4, 5, 6], "INT64", [2, 3])
    nested = from_json([[1, 2, 3], [4, 5, 6]], "INT64", [2, 3])
    assert flat.dtype == np.int64 and flat.shape == (2, 3)
    np.testing.assert_array_equal(flat, nested)
    assert from_json([True, False], "BOOL", [2]).dtype == np.bool_


@pytest.mark.parametrize(
    ("data", "datatype", "shape", "finite", "words"),
    [
        (5, "FP32", [1], False, "input 'x' of m/1 needs its data as a list of numbers."),
        (["a", "b"], "FP32", [2], False, "input 'x' of m/1 holds data that is not of its datatype."),
        ([300], "UINT8", [1], False, "input 'x' of m/1 holds data that is not of its datatype."),
        ([1, 2, 3], "FP32", [2, 2], False, "input 'x' of m/1 has 3 values; shape [2, 2] needs 4."),
        ([1.0, float("nan")], "FP32", [2], True, "input 'x' of m/1 holds NaN or infinite values."),
    ],
)
def test_json_data_that_does_not_fit_is_one_sentence(
    data: object, datatype: str, shape: list[int], finite: bool, words: str
) -> None:
    with pytest.raises(TensorError) as err:
        from_json(data, datatype, shape, what="input 'x' of m/1", finite=finite)
    assert str(err.value) == words


def test_nan_passes_unless_the_caller_refuses_it() -> None:
    assert np.isnan(from_json([float("nan")], "FP32", [1])[0])


def test_binary_data_is_read_at_its_offset_and_checked_for_size() -> None:
    a, b = np.arange(6, dtype=np.float32), np.array([7, 8], dtype=np.int64)
    buffer = a.tobytes() + b.tobytes()
    np.testing.assert_array_equal(from_binary(buffer, 0, 24, "FP32", [2, 3]), a.reshape(2, 3))
    np.testing.assert_array_equal(from_binary(buffer, 24, 16, "INT64", [2]), b)
    with pytest.raises(TensorError, match=r"^t: 12 bytes of binary data do not hold shape \[2, 3\] of FP32\.$"):
        from_binary(buffer, 0, 12, "FP32", [2, 3], what="t")
    for missing in ((None, 0, 24), (buffer, 24, 24), (buffer, 0, "24")):
        with pytest.raises(TensorError, match="names binary data the request does not carry"):
            from_binary(missing[0], missing[1], missing[2], "FP32", [2, 3])  # type: ignore[arg-type]


def test_answers_carry_json_data_or_binary_chunks() -> None:
    value = np.array([[0.25, 0.75]], dtype=np.float32)
    tensor, raw = encode_tensor("p", value)
    assert (tensor, raw) == ({"name": "p", "datatype": "FP32", "shape": [1, 2], "data": [0.25, 0.75]}, None)
    tensor, raw = encode_tensor("p", value, "FP32", binary=True)
    assert tensor == {"name": "p", "datatype": "FP32", "shape": [1, 2], "parameters": {"binary_data_size": 8}}
    np.testing.assert_array_equal(from_binary(raw, 0, 8, "FP32", [1, 2]), value)
    assert encode_tensor("s", np.array(["a"]))[0]["datatype"] == "BYTES"  # the protocol's catch-all


def test_metadata_and_answers_have_the_protocol_layout() -> None:
    spec = TensorSpec("x", "FP32", (-1, 4))
    plain = model_metadata("m", "2", "onnxruntime", [spec], [spec])
    assert plain == {
        "name": "m", "versions": ["2"], "platform": "onnxruntime",
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
        "outputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
    }  # fmt: skip
    assert model_metadata("m", "2", "p", [], [], {"variant": "fp32"})["parameters"] == {"variant": "fp32"}
    assert infer_response("m", "2", "r1", []) == {"model_name": "m", "model_version": "2", "id": "r1", "outputs": []}


def test_the_api_schema_lists_the_shared_datatypes() -> None:
    from modelyard.platform.api.schemas import InferOutput, TensorMetadata

    for model in (InferOutput, TensorMetadata):
        assert model.model_json_schema()["properties"]["datatype"]["enum"] == list(DATATYPES)


def test_the_vocabulary_loads_no_numpy() -> None:
    """modelyard.bundle names datatypes through it; numpy only comes with modelyard.oip.tensors."""
    script = (
        "import json, sys, modelyard.oip; print(json.dumps([m for m in ('numpy', 'pydantic') if m in sys.modules]))"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []
