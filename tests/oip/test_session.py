"""ONNX Runtime sessions as the server and the agent open them (modelyard.runtime), on tiny real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from modelyard.oip import TensorSpec
from modelyard.runtime import (
    CPU,
    CUDA,
    ProviderFallback,
    SessionError,
    UnsupportedTensor,
    domains_for,
    max_opset_for,
    open_session,
    run,
    signature,
)
from tests.conftest import tiny_onnx


def test_a_session_reads_its_signature_in_oip_terms_and_runs(tmp_path: Path) -> None:
    session = open_session(tiny_onnx(tmp_path / "m.onnx"), threads=1, spinning=False, log_severity=3)

    assert session.get_providers()[0] == CPU
    assert signature(session) == ([TensorSpec("x", "FP32", (-1, 3))], [TensorSpec("y", "FP32", (-1, 2))])
    x = np.ones((2, 3), dtype=np.float32)
    out = run(session, ["y"], {"x": x})
    np.testing.assert_allclose(out["y"], x @ np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32))


def test_a_file_onnx_runtime_cannot_load_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "bad.onnx").write_bytes(b"not a model\n" * 10)
    with pytest.raises(SessionError) as err:
        open_session(tmp_path / "bad.onnx")
    assert "\n" not in err.value.reason and str(err.value).startswith("ONNX Runtime cannot load bad.onnx (")


def test_a_silent_fallback_from_cuda_is_refused(tmp_path: Path) -> None:
    import onnxruntime as ort

    if CUDA in ort.get_available_providers():
        pytest.skip("this ONNX Runtime has CUDA: nothing falls back")
    with pytest.raises(ProviderFallback, match=f"fell back from {CUDA} to {CPU}"):
        open_session(tiny_onnx(tmp_path / "m.onnx"), providers=[CUDA, CPU])


def test_a_tensor_type_without_an_oip_datatype_is_named(tmp_path: Path) -> None:
    from onnx import TensorProto

    session = open_session(tiny_onnx(tmp_path / "s.onnx", TensorProto.STRING))
    with pytest.raises(UnsupportedTensor) as err:
        signature(session)
    assert (err.value.name, err.value.onnx_type) == ("x", "tensor(string)")


def test_opset_tables_cover_old_known_and_future_releases() -> None:
    assert max_opset_for("1.16.3") == 19
    assert max_opset_for("1.10.0") == 18  # older than the table: its lowest
    assert max_opset_for("9.0.0") == max_opset_for("1.23.0")  # newer: the last known
    assert domains_for("1.22.0") == {"ai.onnx": 22, "ai.onnx.ml": 5, "com.microsoft": 1}
