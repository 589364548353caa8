"""The drift-over-time chart: the share of drifted columns per check, verdicts marked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

COLORS = {
    "no_drift": "tab:green",
    "drift_harmless": "tab:orange",
    "harmful_drift": "tab:red",
    "performance_drop": "tab:purple",
}


def drift_chart(points: list[tuple[dt.datetime, float, str]], drift_share: float, path: Path, title: str) -> None:
    """points: (time, share of drifted columns, verdict) per judged check, oldest first."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.2), dpi=100)
    if points:
        times: list = [p[0] for p in points]  # matplotlib plots datetimes; its stubs say floats
        ax.plot(times, [p[1] for p in points], color="0.6", linewidth=1, zorder=1)
        for verdict, color in COLORS.items():
            mine = [p for p in points if p[2] == verdict]
            if mine:
                ax.scatter(
                    [p[0] for p in mine],  # type: ignore[arg-type]
                    [p[1] for p in mine],
                    color=color,
                    label=verdict,
                    zorder=2,
                    s=18,
                )
        ax.legend(loc="upper left", fontsize=7)
    ax.axhline(drift_share, color="tab:red", linestyle="--", linewidth=0.8)
    ax.set_ylim(0, 1.02)
    ax.set_ylabel("share of drifted columns")
    ax.set_title(title, fontsize=9)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
