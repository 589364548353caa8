"""A drift check as the platform shows it (`modelyard drift list --json`, the API) and as evidence in events."""

from __future__ import annotations

from typing import Any


def drifted_columns(row: Any) -> list[str]:
    columns = ((row.scores or {}).get("features") or {}).get("columns", [])
    return [c["column"] for c in columns if c.get("drifted")]


def check_evidence(row: Any) -> dict[str, Any]:
    scores = row.scores or {}
    return {
        "check_id": row.id,
        "verdict": row.verdict,
        "rows": row.rows,
        "labeled_rows": row.labeled_rows,
        "drift_share": row.drift_share,
        "drifted_columns": drifted_columns(row),
        "prediction": {k: v for k, v in (scores.get("prediction") or {}).items() if k in ("distance", "drifted")},
        "performance": scores.get("performance"),
        "window": [row.first_id, row.last_id],
    }


def check_row(row: Any) -> dict[str, Any]:
    """A drift_checks row as `modelyard drift list --json` and the API show it."""
    scores = row.scores or {}
    features = scores.get("features") or {}
    return {
        "id": row.id,
        "model": row.model,
        "version": row.version,
        "created": row.created_at.strftime("%Y-%m-%d %H:%M:%S"),
        "window": {"first_id": row.first_id, "last_id": row.last_id, "rows": row.rows, "labeled": row.labeled_rows},
        "verdict": row.verdict,
        "reason": scores.get("reason"),
        "drift_share": row.drift_share,
        "drifted_columns": drifted_columns(row),
        "column_scores": {c["column"]: c["score"] for c in features.get("columns", [])},
        "prediction_drift": (scores.get("prediction") or {}).get("distance"),
        "performance": scores.get("performance"),
        "decision": row.decision,
        "report": row.report_uri,
        "duration_s": round(float(row.duration_s), 3),
    }
