"""The use cases: what the CLI, the HTTP API and the worker call.

Submitting and following a training, the training and export stages, the reconciler,
drift checks, the retraining policy, the guard, ingest, registry operations. Services
reach the broker only through `modelyard.platform.queue`.
"""
