"""Which GPUs a machine has, and how train workers share them: one worker per GPU, pinned.

A worker pinned with CUDA_VISIBLE_DEVICES sees one GPU and trains there alone, so N GPUs
train N models at once. A spec with `gpus: all` goes to the `train-all` queue, whose one
worker sees every GPU and trains with MirroredStrategy. Nothing here imports TensorFlow:
the supervisor that plans workers must not touch CUDA.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass, field

from modelyard.platform.queue.app import TRAIN_QUEUES


@dataclass(frozen=True)
class TrainWorker:
    name: str
    queues: tuple[str, ...]
    env: dict[str, str] = field(default_factory=dict)


def visible_gpus(environ: Mapping[str, str] | None = None) -> list[str]:
    """GPU ids this machine lets us use: CUDA_VISIBLE_DEVICES when set, else what nvidia-smi lists."""
    env = os.environ if environ is None else environ
    pinned = env.get("CUDA_VISIBLE_DEVICES")
    if pinned is not None:
        return [g.strip() for g in pinned.split(",") if g.strip() and g.strip() != "-1"]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"], capture_output=True, text=True, timeout=15
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def train_workers(gpus: list[str]) -> list[TrainWorker]:
    """The train workers for these GPUs: one per GPU, plus one over all of them for `gpus: all` specs."""
    if len(gpus) <= 1:  # CPU or one GPU: one worker takes both kinds of training
        return [TrainWorker("train", TRAIN_QUEUES, {"CUDA_VISIBLE_DEVICES": gpus[0]} if gpus else {})]
    pinned = [TrainWorker(f"train-gpu{g}", ("train",), {"CUDA_VISIBLE_DEVICES": g}) for g in gpus]
    return [*pinned, TrainWorker("train-all-gpus", ("train-all",), {"CUDA_VISIBLE_DEVICES": ",".join(gpus)})]
