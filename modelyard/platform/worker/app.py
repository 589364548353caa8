"""The worker's Celery application: `celery -A modelyard.platform.worker.app:app` (as `modelyard up` runs it)."""

from __future__ import annotations

from modelyard.platform.queue.app import create_app

app = create_app()
