"""Trained Keras model -> ONNX variants, parity, measurements, target selection, Triton repositories.

Plain functions on plain arguments: no MLflow, no Celery, no platform imports.
"""
