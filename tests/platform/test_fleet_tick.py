"""The fleet's tick is one of beat's periodic passes: a task on the monitor queue, every
`fleet_tick_seconds`, whose messages expire after one interval (a backlog is one pass); the API
process runs no tick of its own."""

from __future__ import annotations

import threading


def test_beat_sends_the_fleet_tick_to_the_monitor_queue_every_interval(settings) -> None:
    from modelyard.platform.queue.app import FLEET_TICK_TASK, create_app

    app = create_app(settings.model_copy(update={"fleet_tick_seconds": 0.5}))
    entry = app.conf.beat_schedule["fleet-tick"]
    assert (entry["task"], entry["schedule"], entry["options"]) == (FLEET_TICK_TASK, 0.5, {"expires": 0.5})
    assert app.amqp.router.route({}, FLEET_TICK_TASK)["queue"].name == "monitor"


def test_the_worker_has_the_task_and_it_runs_the_driver(settings, monkeypatch) -> None:
    from modelyard.platform.fleet import driver
    from modelyard.platform.queue.app import FLEET_TICK_TASK
    from modelyard.platform.worker import tasks

    ran = []
    monkeypatch.setattr(driver.FleetDriver, "tick", lambda self: ran.append(self) or {"started": [], "moved": [3]})
    assert tasks.app.tasks[FLEET_TICK_TASK].run() == {"started": [], "moved": [3]}
    assert len(ran) == 1


def test_the_api_process_starts_no_fleet_thread(settings) -> None:
    from fastapi.testclient import TestClient

    from modelyard.platform.api.app import create_app

    before = {t.name for t in threading.enumerate()}
    with TestClient(create_app(settings)):
        names = {t.name for t in threading.enumerate()} - before
    assert not any("fleet" in name for name in names), names


def test_the_worker_log_keeps_the_fleet_tick_s_failures_not_its_every_pass() -> None:
    import logging

    from modelyard.platform.queue.app import FLEET_TICK_TASK, TICK_TASK
    from modelyard.platform.worker import tasks  # noqa: F401 - installs the filter

    def shown(logger: str, level: int, message: str, *args: object) -> bool:
        record = logging.LogRecord(logger, level, __file__, 1, message, args, None)
        return logging.getLogger(logger).filter(record) is not False

    assert not shown("celery.worker.strategy", logging.INFO, "Task %s[%s] received", FLEET_TICK_TASK, "1")
    assert not shown("celery.app.trace", logging.INFO, "Task %s[%s] succeeded in 0.01s: None", FLEET_TICK_TASK, "1")
    assert not shown("celery.worker.request", logging.INFO, "Discarding revoked task: %s[%s]", FLEET_TICK_TASK, "1")
    assert shown("celery.app.trace", logging.ERROR, "Task %s[%s] raised unexpected: boom", FLEET_TICK_TASK, "1")
    assert shown("celery.worker.strategy", logging.INFO, "Task %s[%s] received", TICK_TASK, "2")
