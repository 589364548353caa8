"""The worker runtime: the Celery app the workers run, thin tasks over services, the GPU plan, `modelyard up`."""
