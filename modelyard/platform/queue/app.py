"""The Celery application's configuration: queues, routes, JSON only, late acks, time limits, beat.

Both sides build the same app from settings: services send with it (queue/outbox.py), the
worker runs it (worker/app.py). Importing this module never imports TensorFlow: workers
fork their children from a parent that has not touched CUDA, and each training child
imports TensorFlow itself.
"""

from __future__ import annotations

from collections.abc import Mapping

from celery import Celery
from kombu import Queue

from modelyard.platform.queue.filesystem import TRANSPORT as FILESYSTEM_TRANSPORT
from modelyard.platform.settings import Settings

QUEUES = ("train", "train-all", "export", "monitor")
TRAIN_QUEUES = ("train", "train-all")
TRAIN_TASK = "modelyard.train"
EXPORT_TASK = "modelyard.export"
RECONCILE_TASK = "modelyard.monitor.reconcile"  # on the monitor queue, beside the drift checks
CHECK_TASK = "modelyard.monitor.check"
TICK_TASK = "modelyard.monitor.tick"
RETENTION_TASK = "modelyard.monitor.retention"
FLEET_TICK_TASK = "modelyard.monitor.fleet_tick"  # routed to the monitor queue by its name


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or Settings()
    if settings.mode == "embedded":
        settings.ensure_folders()
    app = Celery(
        "modelyard",
        broker=settings.effective_broker_url,
        backend=settings.effective_result_backend,
        include=["modelyard.platform.worker.tasks"],
    )
    transport: dict[str, object] = {"visibility_timeout": settings.effective_visibility_timeout}
    transport_class: str | None = None  # None: the broker URL names it
    if settings.mode == "embedded":
        # kombu's filesystem transport, writing by rename: kombu's own can hand a reader a
        # message file still being written (queue/filesystem.py)
        transport_class = FILESYSTEM_TRANSPORT
        folder = str(settings.queue_folder)
        transport.update(
            data_folder_in=folder,
            data_folder_out=folder,
            store_processed=False,
            control_folder=str(settings.root / "celery" / "control"),
            polling_interval=0.1,
        )
    else:  # look for the unacknowledged tasks of dead workers every redelivery_check_seconds
        transport.update(unacked_restore_interval=settings.redelivery_check_seconds, unacked_restore_throttle=1)
    soft = max(settings.train_time_limit - 60, settings.train_time_limit * 9 // 10)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],  # a pickled message is refused, never deserialized
        result_accept_content=["json"],
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_track_started=True,
        result_extended=True,
        result_expires=7 * 24 * 3600,
        broker_connection_retry_on_startup=True,
        broker_transport=transport_class,
        broker_transport_options=transport,
        result_backend_transport_options={"visibility_timeout": settings.effective_visibility_timeout},
        task_queues=[Queue(q, routing_key=q) for q in QUEUES],
        task_default_queue="monitor",
        task_routes={
            TRAIN_TASK: {"queue": "train", "routing_key": "train"},
            "modelyard.export*": {"queue": "export", "routing_key": "export"},
            "modelyard.monitor*": {"queue": "monitor", "routing_key": "monitor"},
        },
        task_annotations={
            TRAIN_TASK: {"time_limit": settings.train_time_limit, "soft_time_limit": soft},
            EXPORT_TASK: {"time_limit": 3600, "soft_time_limit": 3540},
        },
        worker_hijack_root_logger=False,
        beat_schedule_filename=str(settings.run_folder / "beat-schedule"),
        beat_scheduler="modelyard.platform.worker.beat:Scheduler",  # starts afresh on a damaged schedule file
        beat_schedule={
            "reconcile-requests": {
                "task": RECONCILE_TASK,
                "schedule": settings.reconcile_seconds,
                "options": {"expires": settings.reconcile_seconds},  # a backlog of passes is one pass
            },
            "monitor-tick": {  # drift checks that are due, and guard verdicts on recent promotions
                "task": TICK_TASK,
                "schedule": settings.monitor_tick_seconds,
                "options": {"expires": settings.monitor_tick_seconds},
            },
            "fleet-tick": {  # followers follow their champion, rollouts take the steps that are due
                "task": FLEET_TICK_TASK,
                "schedule": settings.fleet_tick_seconds,
                "options": {"expires": settings.fleet_tick_seconds},
            },
            "inference-log-retention": {
                "task": RETENTION_TASK,
                "schedule": settings.retention_seconds,
                "options": {"expires": settings.retention_seconds},
            },
        },
    )
    return app


def train_queue(spec: Mapping[str, object]) -> str:
    """Where a training goes: `train` (one GPU, or the CPU), `train-all` (every GPU of one machine)."""
    return "train-all" if spec.get("gpus") == "all" else "train"
