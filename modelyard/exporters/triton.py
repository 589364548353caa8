"""A Triton Inference Server model repository for one ONNX variant."""

from __future__ import annotations

import shutil
from pathlib import Path

TRITON_TYPES = {
    1: "TYPE_FP32",
    10: "TYPE_FP16",
    11: "TYPE_FP64",
    6: "TYPE_INT32",
    7: "TYPE_INT64",
    3: "TYPE_INT8",
    2: "TYPE_UINT8",
    9: "TYPE_BOOL",
}


def _tensors(values: list) -> str:
    blocks = []
    for v in values:
        tensor = v.type.tensor_type
        dims = [d.dim_value if d.dim_value > 0 else -1 for d in tensor.shape.dim][1:]  # batch is max_batch_size's
        blocks.append(
            f'  {{\n    name: "{v.name}"\n    data_type: {TRITON_TYPES.get(tensor.elem_type, "TYPE_FP32")}\n'
            f"    dims: [ {', '.join(str(d) for d in dims)} ]\n  }}"
        )
    return ",\n".join(blocks)


def config_pbtxt(name: str, onnx_path: Path, gpu: bool, max_batch: int) -> str:
    import onnx

    graph = onnx.load(str(onnx_path), load_external_data=False).graph
    initializers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initializers]
    preferred = [b for b in (4, 8, 16, 32, 64) if b <= max_batch] or [max_batch]
    return (
        f'name: "{name}"\nplatform: "onnxruntime_onnx"\nmax_batch_size: {max_batch}\n'
        f"input [\n{_tensors(inputs)}\n]\noutput [\n{_tensors(list(graph.output))}\n]\n"
        f"dynamic_batching {{\n  preferred_batch_size: [ {', '.join(map(str, preferred))} ]\n"
        f"  max_queue_delay_microseconds: 100\n}}\n"
        f"instance_group [\n  {{\n    count: 1\n    kind: {'KIND_GPU' if gpu else 'KIND_CPU'}\n  }}\n]\n"
    )


def write_repository(root: Path, name: str, onnx_path: Path, gpu: bool, max_batch: int) -> Path:
    """root/name/config.pbtxt and root/name/1/model.onnx; the model folder is returned."""
    folder = root / name
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / "1" / "model.onnx")
    (folder / "config.pbtxt").write_text(config_pbtxt(name, onnx_path, gpu, max_batch))
    return folder
