"""Dynamic batching and retirement on a real ONNX Runtime session (a tiny graph built here)."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _model(tmp_path: Path):
    import onnxruntime as ort

    from modelyard.platform.serving.models import LoadedModel, TensorSpec
    from tests.conftest import tiny_onnx

    path = tiny_onnx(tmp_path / "tiny.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x, y = TensorSpec("x", "FP32", (-1, 3)), TensorSpec("y", "FP32", (-1, 2))
    return LoadedModel("tiny", "1", "server-cpu", "fp32", path, session, [x], [y], ["CPUExecutionProvider"])


def test_requests_arriving_together_run_as_one_batch_and_each_gets_its_rows(tmp_path: Path) -> None:
    from modelyard.platform.serving.batcher import Batcher

    model = _model(tmp_path)
    batches: list[int] = []
    w = np.array([[1, 2], [3, 4], [5, 6]], dtype=np.float32)

    async def main() -> None:
        batcher = Batcher(model, 16, 0.005, ThreadPoolExecutor(2), lambda _m, rows, _s: batches.append(rows))
        batcher.start()
        inputs = [np.full((1 + i % 3, 3), i, dtype=np.float32) for i in range(20)]
        results = await asyncio.gather(*(batcher.infer({"x": x}) for x in inputs))
        for x, result in zip(inputs, results, strict=True):
            np.testing.assert_allclose(result["y"], x @ w)
        assert max(batches) > 1 and max(batches) <= 16 and sum(batches) == sum(len(x) for x in inputs)
        batcher.close()  # retired (the champion moved): later requests still get answers, alone
        late = await batcher.infer({"x": np.ones((2, 3), dtype=np.float32)})
        np.testing.assert_allclose(late["y"], np.ones((2, 3)) @ w)

    asyncio.run(main())


def test_decoding_names_what_is_wrong(tmp_path: Path) -> None:
    import pytest

    from modelyard.errors import InputError
    from modelyard.platform.serving.models import decode_inputs

    model = _model(tmp_path)
    ok = decode_inputs(
        model, [{"name": "x", "datatype": "FP32", "shape": [2, 3], "data": [[1, 2, 3], [4, 5, 6]]}], None, 8
    )
    assert ok["x"].dtype == np.float32 and ok["x"].shape == (2, 3)
    raw = np.arange(6, dtype=np.float32).tobytes()
    binary = decode_inputs(
        model, [{"name": "x", "datatype": "FP32", "shape": [2, 3], "parameters": {"binary_data_size": 24}}], raw, 8
    )
    np.testing.assert_array_equal(binary["x"], np.arange(6, dtype=np.float32).reshape(2, 3))
    bad = [
        (
            {"name": "x", "datatype": "FP32", "shape": [9, 3], "data": [0] * 27},
            "has 9 rows; this server takes at most 8",
        ),
        ({"name": "x", "datatype": "FP32", "shape": [1, 3], "data": [1, float("nan"), 2]}, "NaN or infinite"),
        ({"name": "x", "datatype": "FP32", "shape": [0, 3], "data": []}, "empty dimension"),
        ({"name": "x", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}, "binary data"),
    ]
    for tensor, words in bad:
        with pytest.raises(InputError, match=words):
            decode_inputs(model, [tensor], None, 8)


def test_a_swap_installs_only_the_version_the_alias_still_names(settings, tmp_path: Path) -> None:
    """The watcher loads in the background: if the alias moved again meanwhile, or another caller installed a
    champion, the load is discarded; a version still served elsewhere is never closed."""
    from modelyard.platform.context import Platform
    from modelyard.platform.serving.metrics import Metrics
    from modelyard.platform.serving.server import ModelServer, Served
    from modelyard.platform.store.audit import EventRecord

    platform = Platform(settings)
    server = ModelServer(platform, Metrics())

    def champion(version: str) -> None:
        platform.audit.record(EventRecord("tiny", "alias_set", "test", "test", "champion", None, version))

    async def main() -> None:
        pool = ThreadPoolExecutor(1)

        def served(version: str) -> Served:
            model = _model(tmp_path)
            model.version = version
            batcher = Batcher(model, 8, 0.0, pool, lambda *_: None)
            batcher.start()
            return Served(model, batcher)

        v1, v2, v3 = served("1"), served("2"), served("3")
        champion("1")
        server._champions["tiny"] = v1
        await server._swap("tiny", "2", v1, v2)  # the alias went back to 1 while v2 loaded
        assert server._champions["tiny"] is v1 and v2.batcher._closed and not v1.batcher._closed

        champion("3")
        server._champions["tiny"] = v3  # a request installed v3 while the watcher loaded it too
        await server._swap("tiny", "3", v1, served("3"))
        assert server._champions["tiny"] is v3 and not v3.batcher._closed

        server._explicit[("tiny", "3")] = v3  # the same load serves an explicit version request
        await server._swap("tiny", "3", v3, v3)
        assert not v3.batcher._closed
        champion("1")
        await server._swap("tiny", "1", v3, v1)  # a real move: v3 stays open while /versions/3 holds it
        assert server._champions["tiny"] is v1 and not v3.batcher._closed
        server._explicit.clear()
        server._retire(v3)
        assert v3.batcher._closed

    from modelyard.platform.serving.batcher import Batcher

    asyncio.run(main())
