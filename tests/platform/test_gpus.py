"""The train worker plan: one worker per GPU, pinned, plus one over all GPUs for `gpus: all` specs."""

from __future__ import annotations

import pytest
from rich.console import Console

from modelyard.platform.queue.app import train_queue
from modelyard.platform.worker.gpus import TrainWorker, train_workers, visible_gpus


def test_cuda_visible_devices_decides_which_gpus_count() -> None:
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "0,2"}) == ["0", "2"]
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": ""}) == []
    assert visible_gpus({"CUDA_VISIBLE_DEVICES": "-1"}) == []


def test_no_gpu_or_one_gpu_is_one_worker_for_both_train_queues() -> None:
    assert train_workers([]) == [TrainWorker("train", ("train", "train-all"), {})]
    assert train_workers(["3"]) == [TrainWorker("train", ("train", "train-all"), {"CUDA_VISIBLE_DEVICES": "3"})]


def test_several_gpus_get_one_pinned_worker_each_and_one_over_all() -> None:
    assert train_workers(["0", "1"]) == [
        TrainWorker("train-gpu0", ("train",), {"CUDA_VISIBLE_DEVICES": "0"}),
        TrainWorker("train-gpu1", ("train",), {"CUDA_VISIBLE_DEVICES": "1"}),
        TrainWorker("train-all-gpus", ("train-all",), {"CUDA_VISIBLE_DEVICES": "0,1"}),
    ]


def test_a_spec_that_asks_for_all_gpus_goes_to_train_all() -> None:
    assert train_queue({"gpus": "all"}) == "train-all"
    assert train_queue({"gpus": "one"}) == "train" and train_queue({}) == "train"


def test_up_starts_the_planned_workers_with_distinct_names(settings) -> None:
    from modelyard.platform.worker.supervisor import Supervisor

    children = Supervisor(settings, Console(quiet=True), gpus=["0", "1"]).children
    trainers = [c for c in children if "--max-tasks-per-child" in c.argv]

    assert [(c.name, c.env) for c in trainers] == [
        ("train-gpu0", {"CUDA_VISIBLE_DEVICES": "0"}),
        ("train-gpu1", {"CUDA_VISIBLE_DEVICES": "1"}),
        ("train-all-gpus", {"CUDA_VISIBLE_DEVICES": "0,1"}),
    ]
    names = [c.argv[c.argv.index("-n") + 1] for c in trainers]
    assert len(set(names)) == 3
    assert [c.argv[c.argv.index("-Q") + 1] for c in trainers] == ["train", "train", "train-all"]


def test_up_can_run_only_the_train_workers_as_a_container_does(settings) -> None:
    from modelyard.errors import ModelyardError
    from modelyard.platform.worker.supervisor import Supervisor

    only_train = Supervisor(settings, Console(quiet=True), gpus=["0", "1"], only=frozenset({"train"}))
    assert [c.name for c in only_train.children] == ["train-gpu0", "train-gpu1", "train-all-gpus"]
    with pytest.raises(ModelyardError, match=r"unknown part 'gpu' \(parts: api, beat, export, monitor, train\)\."):
        Supervisor(settings, Console(quiet=True), gpus=[], only=frozenset({"gpu"}))
