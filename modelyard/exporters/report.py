"""export_report.json and the accuracy / latency / size plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def write_report(path: Path, report: dict[str, Any]) -> None:
    path.write_text(json.dumps(report, indent=2, default=str))


def plot(path: Path, primary: str, variants: list[dict[str, Any]], keras_value: float) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for v in variants:
        latency = next(
            (
                x["p50_ms"]
                for x in v["latencies"]
                if x["batch"] == 1 and x["threads"] == 1 and x["provider"] == "CPUExecutionProvider"
            ),
            None,
        )
        value = v["metrics"].get(primary)
        if latency is not None and value is not None:
            left.scatter(latency, value)
            left.annotate(v["variant"], (latency, value), fontsize=8)
        right.scatter(v["size_bytes"] / 1e3, value)
        right.annotate(v["variant"], (v["size_bytes"] / 1e3, value), fontsize=8)
    for ax, label in ((left, "latency p50, batch 1, one thread (ms)"), (right, "file size (kB)")):
        ax.axhline(keras_value, linestyle="--", linewidth=0.8, label="Keras")
        ax.set_xlabel(label)
        ax.set_ylabel(primary)
        ax.legend(fontsize=8)
    fig.suptitle("ONNX variants")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
