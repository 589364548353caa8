"""Prometheus metrics of one API process, on a registry of its own (`/metrics` serves it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
BATCH = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "modelyard_http_requests", "HTTP requests answered.", ["method", "route", "status"], registry=r
        )
        self.latency = Histogram(
            "modelyard_http_request_seconds", "HTTP request latency.", ["method", "route"], buckets=LATENCY, registry=r
        )
        self.inferences = Counter(
            "modelyard_inference_requests", "Inference requests answered per version.", ["model", "version"], registry=r
        )
        self.inference_latency = Histogram(
            "modelyard_inference_seconds",
            "Inference latency per version, queueing and batching included.",
            ["model", "version"],
            buckets=LATENCY,
            registry=r,
        )
        self.batch_rows = Histogram(
            "modelyard_batch_rows",
            "Rows per ONNX Runtime run (dynamic batching).",
            ["model", "version"],
            buckets=BATCH,
            registry=r,
        )
        self.loaded = Gauge(
            "modelyard_loaded_versions", "Versions loaded, by role.", ["model", "version", "role"], registry=r
        )
        self.swaps = Counter("modelyard_hot_swaps", "Champion switches done by the server.", ["model"], registry=r)
        self.log_backlog = Gauge("modelyard_inference_log_backlog", "Predictions waiting to be logged.", registry=r)
        self.log_written = Gauge("modelyard_inference_log_written", "Predictions written to the log.", registry=r)
        self.log_dropped = Gauge("modelyard_inference_log_dropped", "Predictions dropped, never logged.", registry=r)
