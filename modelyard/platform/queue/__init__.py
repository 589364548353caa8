"""The one narrow interface between the platform and its broker.

`app.py` configures Celery (queues, routes, limits, beat's schedule) the same way for the
side that sends and the side that works; `outbox.py` is every message services send and
the one read of a task's state. Nothing here runs a task.
"""
