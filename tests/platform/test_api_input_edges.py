"""The API's input edges, in process: training specs bounded in size and depth before YAML builds
anything, and tensor data checked the same way however it is sent (JSON or Triton's binary extension).
The HTTP side of the same edges (a real server) is tests/integration/test_api_input_edges.py."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from modelyard.errors import InputError, SpecError
from modelyard.trainers.spec import MAX_SPEC_CHARS, MAX_SPEC_DEPTH, load_spec, parse_spec, parse_spec_text
from tests.conftest import tiny_spec

TOO_DEEP = f"nests lists or mappings deeper than {MAX_SPEC_DEPTH} levels"


def _nested(depth: int) -> list:
    """`depth` lists, one inside the other."""
    value: list = []
    for _ in range(depth - 1):
        value = [value]
    return value


@pytest.mark.parametrize(
    "text",
    [
        "[" * 2_000 + "]" * 2_000,  # flow sequences on one line
        "{a: " * 2_000 + "1" + "}" * 2_000,  # flow mappings
        "- " * 2_000 + "x",  # block sequences, compact
        "".join(f"{'  ' * i}k{i}:\n" for i in range(40)) + "  " * 40 + "v",  # block mappings by indentation
    ],
    ids=["flow-sequences", "flow-mappings", "block-sequences", "indented-mappings"],
)
def test_spec_text_nested_deeper_than_the_limit_is_one_sentence(text: str) -> None:
    with pytest.raises(SpecError) as err:
        parse_spec_text(text, "in the request body")
    assert str(err.value).startswith(f"training spec in the request body {TOO_DEEP} at line ")


def test_the_cli_refuses_a_spec_file_as_long_as_allowed_of_brackets_in_seconds(tmp_path: Path) -> None:
    """Before the bound, this file kept a core busy for minutes (the scanner's cost grows with the square
    of the brackets open on a line), then failed with a RecursionError."""
    spec = tmp_path / "brackets.yaml"
    spec.write_text("[" * (MAX_SPEC_CHARS - 1))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODELYARD_")}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "modelyard.platform.cli.main", "trainings", "start", str(spec)],
        env={**env, "MODELYARD_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (done.returncode, done.stderr.strip()) == (1, f"error: training spec {spec} {TOO_DEEP} at line 1.")
    assert time.perf_counter() - started < 30  # the command's start-up; the spec itself takes milliseconds


def test_nesting_up_to_the_limit_is_a_spec_one_level_more_is_not() -> None:
    # The top-level mapping is one level, `export` a second: the lists inside may take the rest.
    fits = tiny_spec("deep", export={"k": _nested(MAX_SPEC_DEPTH - 2)})
    assert parse_spec_text(yaml.safe_dump(fits), "in the request body").export["k"] == fits["export"]["k"]
    assert parse_spec(fits).name == "deep"
    deeper = tiny_spec("deep", export={"k": _nested(MAX_SPEC_DEPTH - 1)})
    with pytest.raises(SpecError, match=f"^training spec in the request body {TOO_DEEP} at line \\d+\\.$"):
        parse_spec_text(yaml.safe_dump(deeper, default_flow_style=True), "in the request body")
    with pytest.raises(SpecError, match=f"^training spec in the request body {TOO_DEEP}\\.$"):
        parse_spec(deeper, "in the request body")  # a JSON object body: the same bound


def test_spec_text_longer_than_the_limit_is_refused_before_it_is_read() -> None:
    text = yaml.safe_dump(tiny_spec("long")) + "# " + "x" * MAX_SPEC_CHARS + "\n"
    with pytest.raises(SpecError) as err:
        parse_spec_text(text, "in the request body")
    assert str(err.value) == f"training spec in the request body is longer than {MAX_SPEC_CHARS} characters."


def test_a_spec_file_gets_the_same_bounds(tmp_path: Path) -> None:
    deep, long = tmp_path / "deep.yaml", tmp_path / "long.yaml"
    deep.write_text("name: x\nexport:\n  k: " + "[" * 5_000 + "]" * 5_000 + "\n")
    long.write_text(yaml.safe_dump(tiny_spec("long")) + "# " + "x" * (4 * MAX_SPEC_CHARS) + "\n")
    with pytest.raises(SpecError, match=f"^training spec {deep} {TOO_DEEP} at line 3\\.$"):
        load_spec(deep)
    with pytest.raises(SpecError, match=f"^training spec {long} is longer than {MAX_SPEC_CHARS} characters\\.$"):
        load_spec(long)


def _model(tmp_path: Path):
    import onnxruntime as ort

    from modelyard.platform.serving.models import LoadedModel, TensorSpec
    from tests.conftest import tiny_onnx

    path = tiny_onnx(tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = TensorSpec("x", "FP32", (-1, 3)), TensorSpec("y", "FP32", (-1, 2))
    return LoadedModel("tiny", "1", "server-cpu", "fp32", path, session, [x], [y], ["CPUExecutionProvider"])


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_binary_tensors_with_nan_or_infinity_are_refused_as_json_ones_are(tmp_path: Path, bad: float) -> None:
    from modelyard.platform.serving.models import decode_inputs

    raw = np.array([[1, bad, 2]], dtype=np.float32).tobytes()
    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": len(raw)}}
    with pytest.raises(InputError) as err:
        decode_inputs(_model(tmp_path), [tensor], raw, 8)
    assert str(err.value) == "input 'x' of tiny/1 holds NaN or infinite values."


@pytest.mark.parametrize(
    "data",
    [["0.5", 1, 2], [True, 1.0, 2.0], [0.5, 1.5, False], [[1, 2, "3"]]],
    ids=["a-string", "a-boolean", "a-boolean-among-numbers", "a-string-nested"],
)
def test_json_fp32_data_takes_numbers_only(tmp_path: Path, data: list) -> None:
    from modelyard.platform.serving.models import decode_inputs

    tensor = {"name": "x", "datatype": "FP32", "shape": [1, 3], "data": data}
    with pytest.raises(InputError) as err:
        decode_inputs(_model(tmp_path), [tensor], None, 8)
    assert str(err.value) == "input 'x' of tiny/1 holds data that is not of its datatype."


@pytest.mark.parametrize(
    ("data", "datatype"),
    [([1.5], "INT64"), ([True], "INT32"), ([1], "BOOL"), ([None], "FP64")],
    ids=["a-fraction-as-an-integer", "a-boolean-as-an-integer", "a-number-as-a-boolean", "null-as-a-number"],
)
def test_json_data_is_of_the_datatype_numpy_would_otherwise_convert_to(data: list, datatype: str) -> None:
    from modelyard.oip.tensors import TensorError, from_json

    with pytest.raises(TensorError, match=r"^input 'x' holds data that is not of its datatype\.$"):
        from_json(data, datatype, [1], what="input 'x'")
