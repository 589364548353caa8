"""Edge fixtures: a tiny real ONNX model, real signing keys, real bundles, an agent home.

Keys and bundles are session-scoped: signing is cheap, but it adds up over dozens of tests.
"""

from __future__ import annotations

import io
import shutil
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from modelyard.bundle import RuntimeSupport
from modelyard.edge.archive import Limits
from modelyard.edge.install import Installer, copy_fetch
from modelyard.exporters.bundle import BuiltBundle, build_bundle, create_keys

INPUTS = [{"name": "input", "datatype": "FP32", "shape": [-1, 4]}]
OUTPUTS = [{"name": "probabilities", "datatype": "FP32", "shape": [-1, 3]}]
NEEDS = {"domains": {"ai.onnx": 17}, "ops": {"ai.onnx": ["Gemm", "Softmax"]}}
SUPPORT = RuntimeSupport("1.31.1", 23, {"ai.onnx": 23, "ai.onnx.ml": 5, "com.microsoft": 1})


def make_onnx(path: Path, seed: int = 0, opset: int = 17) -> Path:
    """Gemm + Softmax: input FP32 [-1, 4] -> probabilities FP32 [-1, 3]."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    weights = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W")
    bias = numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B")
    graph = helper.make_graph(
        [
            helper.make_node("Gemm", ["input", "W", "B"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "tiny",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])],
        initializer=[weights, bias],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    onnx.checker.check_model(model)
    path.write_bytes(model.SerializeToString())
    return path


def smoke_rows(rows: int = 8) -> dict[str, np.ndarray]:
    return {"input": np.random.default_rng(1).normal(size=(rows, 4)).astype(np.float32)}


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("keys")
    create_keys(folder / "signing.pem", folder / "signing.pub.pem")
    return folder / "signing.pem", folder / "signing.pub.pem"


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("other-keys")
    create_keys(folder / "signing.pem", folder / "signing.pub.pem")
    return folder / "signing.pem", folder / "signing.pub.pem"


BuildFn = Callable[..., BuiltBundle]


@pytest.fixture(scope="session")
def build(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> BuildFn:
    """build(version="1", seed=0, **overrides) -> a real signed bundle in its own folder."""

    def _build(version: str = "1", seed: int = 0, **overrides: Any) -> BuiltBundle:
        folder = tmp_path_factory.mktemp(f"bundle-v{version}")
        onnx_path = make_onnx(folder / "model.onnx", seed=seed, opset=overrides.pop("opset", 17))
        args: dict[str, Any] = dict(
            model="tiny", version=version, variant="fp32", target="edge-cpu", inputs=INPUTS, outputs=OUTPUTS,
            runtime_needs=NEEDS, smoke_inputs=smoke_rows(), private_key=keys[0],
        )  # fmt: skip
        args.update(overrides)
        return build_bundle(onnx_path, folder / "out", **args)

    return _build


@pytest.fixture(scope="session")
def v1(build: BuildFn) -> BuiltBundle:
    return build("1", seed=0)


@pytest.fixture(scope="session")
def v2(build: BuildFn) -> BuiltBundle:
    return build("2", seed=2)


def fragile_bundle(tmp_path: Path, private_key: Path) -> BuiltBundle:
    """Version 9: passes its 8-row smoke test, fails to run on any other batch size (a Reshape to [8, 3])."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(9)
    inits = [
        numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(3,)).astype(np.float32), "B"),
        numpy_helper.from_array(np.array([8, 3], dtype=np.int64), "fixed"),
    ]
    nodes = [
        helper.make_node("Gemm", ["input", "W", "B"], ["logits"]),
        helper.make_node("Reshape", ["logits", "fixed"], ["eight"]),
        helper.make_node("Softmax", ["eight"], ["probabilities"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "fragile", [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, 4])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 3])], initializer=inits,
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    (tmp_path / "fragile.onnx").write_bytes(model.SerializeToString())
    return build_bundle(
        tmp_path / "fragile.onnx", tmp_path / "out", model="tiny", version="9", variant="fp32", target="edge-cpu",
        inputs=INPUTS, outputs=OUTPUTS, runtime_needs=NEEDS, smoke_inputs=smoke_rows(8), private_key=private_key,
    )  # fmt: skip


def desired_for(bundle: BuiltBundle, **extra: Any) -> dict[str, Any]:
    m = bundle.manifest
    entry = {
        "model": m["model"], "version": m["version"], "target": m["target"], "sha256": bundle.sha256,
        "size": bundle.size, "url": f"/v1/bundles/{m['model']}/{m['version']}/{m['target']}",
        "rollout_id": None, "rollback": False, "failed_inference_limit": 0,
    }  # fmt: skip
    entry.update(extra)
    return entry


@pytest.fixture(scope="session")
def v9(tmp_path_factory: pytest.TempPathFactory, keys: tuple[Path, Path]) -> BuiltBundle:
    return fragile_bundle(tmp_path_factory.mktemp("bundle-v9"), keys[0])


@pytest.fixture
def home(tmp_path: Path, keys: tuple[Path, Path]) -> Path:
    """An agent home with the pinned public key, as enrollment leaves it."""
    home = tmp_path / "agent"
    home.mkdir()
    shutil.copyfile(keys[1], home / "trust.pem")
    return home


def installer(home: Path, tar: Path, **kwargs: Any) -> Installer:
    kwargs.setdefault("support", SUPPORT)
    return Installer(home, fetch=copy_fetch(tar), limits=kwargs.pop("limits", Limits()), **kwargs)


def rewrite_tar(source: Path, dest: Path, edit: Callable[[tarfile.TarFile], None]) -> Path:
    """Copy the members of `source` into a new tar, then let `edit` add hostile ones."""
    with tarfile.open(source) as src, tarfile.open(dest, "w") as out:
        for info in src.getmembers():
            out.addfile(info, src.extractfile(info))
        edit(out)
    return dest


def add_bytes(tar: tarfile.TarFile, name: str, data: bytes = b"x") -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
