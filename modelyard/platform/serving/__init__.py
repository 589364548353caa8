"""Serving: ONNX Runtime sessions per loaded version, dynamic batching, hot swap, the inference-log writer."""
