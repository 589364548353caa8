"""The per-epoch metric logger: every epoch written, in order, in few writes, and nothing waits at the end."""

from __future__ import annotations

import time

import pytest

pytest.importorskip("mlflow")


def counting_client(tmp_path):  # type: ignore[no-untyped-def]
    from mlflow.tracking import MlflowClient

    class Counting(MlflowClient):  # the real client on a real store, its writes counted
        writes = 0

        def log_batch(self, *args, **kwargs):  # type: ignore[no-untyped-def]
            Counting.writes += 1
            return super().log_batch(*args, **kwargs)

    client = Counting(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    run_id = client.create_run(client.create_experiment("e", artifact_location=tmp_path.as_uri())).info.run_id
    return client, run_id


def fit(logger, epochs: int) -> None:  # type: ignore[no-untyped-def]
    for epoch in range(1, epochs + 1):  # epochs of about 20 ms
        logger.log(epoch, {"loss": 1.0 / epoch, "accuracy": epoch / epochs})
        time.sleep(0.02)


def test_epochs_are_written_in_order_in_a_few_batches(tmp_path) -> None:
    from modelyard.platform.registry.tracking import EpochLogger

    client, run_id = counting_client(tmp_path)
    fit(logger := EpochLogger(client, run_id, every=0.2), 30)
    logger.close()

    history = client.get_metric_history(run_id, "loss")
    assert [m.step for m in history] == list(range(1, 31))
    assert [m.value for m in history] == [1.0 / e for e in range(1, 31)]
    assert 2 <= type(client).writes < 15  # batches of 0.2 s, not one write per epoch


def test_close_writes_the_rest_at_once_without_waiting_out_the_interval(tmp_path) -> None:
    from modelyard.platform.registry.tracking import EpochLogger

    client, run_id = counting_client(tmp_path)
    fit(logger := EpochLogger(client, run_id, every=30.0), 10)
    started = time.monotonic()
    logger.close()

    assert time.monotonic() - started < 10  # far less than the 30 s interval
    assert type(client).writes == 1
    assert [m.step for m in client.get_metric_history(run_id, "accuracy")] == list(range(1, 11))
