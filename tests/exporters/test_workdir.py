"""An export writes nothing into the current directory (two workers in one folder would collide)."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import numpy as np
import pytest

from modelyard.exporters import scratch
from modelyard.exporters.pipeline import ExportData, export_model
from modelyard.exporters.spec import ExportSpec
from modelyard.trainers.evaluate import classification_metrics

RNG = np.random.default_rng(0)


def two_input_model():
    """Symbolic shape inference gives up on it, and saves what it got into the current directory."""
    import keras

    image = keras.Input((8, 8, 1), name="image")
    table = keras.Input((5,), name="table")
    a = keras.layers.Flatten()(keras.layers.Conv2D(4, 3, activation="relu")(image))
    b = keras.layers.Dense(4, activation="relu")(table)
    return keras.Model([image, table], keras.layers.Dense(3, activation="softmax")(keras.layers.concatenate([a, b])))


def test_an_export_leaves_the_current_folder_empty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    x = {"image": RNG.random((16, 8, 8, 1), dtype=np.float32), "table": RNG.random((16, 5), dtype=np.float32)}
    y = RNG.integers(0, 3, 16)
    data = ExportData(x, x, x, lambda out: classification_metrics(y, out, 3).metrics, "accuracy", True)
    spec = ExportSpec(latency_runs=3, parity_samples=16, calibration={"samples": 16})

    result = export_model(two_input_model(), data, spec, tmp_path / "export", "m")

    assert set(result.variant_files) == {"fp32", "fp16", "int8-dynamic", "int8-static"}
    assert sorted(os.listdir(cwd)) == []
    assert Path.cwd() == cwd


def test_each_block_gets_its_own_folder_and_the_cwd_comes_back_even_on_error(tmp_path: Path) -> None:
    before = Path.cwd()
    inside: list[Path] = []

    def work(name: str) -> None:
        with scratch.inside(tmp_path / name) as folder:
            inside.append(Path.cwd())
            assert Path.cwd() == folder
            (folder / "tool-output").write_text(name)

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with pytest.raises(RuntimeError), scratch.inside(tmp_path / "failing"):
        raise RuntimeError("a tool failed")

    assert Path.cwd() == before
    assert sorted(p.name for p in inside) == ["w0", "w1", "w2", "w3"]
    assert all((tmp_path / f"w{i}" / "tool-output").read_text() == f"w{i}" for i in range(4))
