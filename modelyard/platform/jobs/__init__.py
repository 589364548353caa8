"""Celery app and thin tasks, the training and export job functions, submission, the embedded supervisor."""
