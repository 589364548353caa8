"""Production data in from files: `modelyard inferences upload` (inputs, optional predictions) and
`modelyard labels upload` (labels).

Each file is checked against the champion's signature before anything is written, and
stored in one transaction: whole, or not at all. Every refusal is one sentence naming the
file, the column and the row.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from modelyard.errors import InputError
from modelyard.platform.services.signatures import Signature, champion_of, open_version, predict, signature

if TYPE_CHECKING:
    import pandas as pd

    from modelyard.platform.context import Platform

OPTIONAL = ("prediction", "request_id")


def read_table(path: Path) -> pd.DataFrame:
    import pandas as pd

    if not path.is_file():
        raise InputError(f"file {path} does not exist.")
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".parquet", ".pq"):
        raise InputError(f"file {path.name} has an unknown format '{suffix}' (use .csv or .parquet).")
    try:
        # request ids are text: pandas would read 007 as 7.0 and 1e3 as 1000.0
        frame = pd.read_csv(path, dtype={"request_id": str}) if suffix == ".csv" else pd.read_parquet(path)
    except Exception as err:  # pandas raises many types; the user needs the file and the cause
        raise InputError(f"could not read {path.name}: {str(err).splitlines()[0] if str(err) else err}.") from None
    if frame.empty:
        raise InputError(f"file {path.name} has no rows.")
    frame.columns = [str(c) for c in frame.columns]
    return frame


def _line(path: Path, row: int) -> str:
    return f"row {row + 1}" + (f" (line {row + 2})" if path.suffix.lower() == ".csv" else "")


def check_columns(
    path: Path, frame: pd.DataFrame, sig: Signature, required: list[str], optional: tuple[str, ...]
) -> None:
    missing = [c for c in required if c not in frame.columns]
    extra = [c for c in frame.columns if c not in required and c not in optional]
    if missing or extra:
        parts = []
        if missing:
            shown = ", ".join(missing[:8]) + (f" and {len(missing) - 8} more" if len(missing) > 8 else "")
            parts.append(f"missing column{'s' if len(missing) > 1 else ''} {shown}")
        if extra:
            parts.append(f"extra column{'s' if len(extra) > 1 else ''} {', '.join(extra[:8])}")
        raise InputError(
            f"{path.name} does not match the signature of {sig.model}/{sig.version}: {'; '.join(parts)}.",
            code="signature_mismatch",
        )


def numeric_features(path: Path, frame: pd.DataFrame, columns: list[str]) -> np.ndarray:
    import pandas as pd

    for col in columns:
        values = frame[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            numeric = pd.to_numeric(values, errors="coerce")
            bad = np.flatnonzero((numeric.isna() & values.notna()).to_numpy())
            where = f": value {values.iloc[bad[0]]!r} in {_line(path, int(bad[0]))}" if len(bad) else ""
            raise InputError(f"column '{col}' of {path.name} is not numeric{where}.", code="wrong_dtype")
    x = frame[columns].to_numpy(dtype=np.float64)
    bad = ~np.isfinite(x)
    if bad.any():
        at, j = (int(i) for i in np.argwhere(bad)[0])
        what = "a missing value (NaN)" if np.isnan(x[at, j]) else "an infinite value"
        raise InputError(f"column '{columns[j]}' of {path.name} has {what} in {_line(path, at)}.", code="nan_value")
    return x


def canonical_labels(sig: Signature, labels: list[Any], where: str) -> list[Any]:
    """Each label as the model's own class value (1.0 from a CSV is class 1), or a finite float (regression);
    one sentence for the first that is missing, unknown or not a number."""
    found = []
    for i, label in enumerate(labels):
        label = label.item() if hasattr(label, "item") else label
        if label is None or (isinstance(label, float) and not np.isfinite(label)):
            raise InputError(f"label of {where} {i + 1} is missing.", code="invalid_label")
        if sig.task == "classification":
            index = sig.class_index(label)
            if index is None:
                raise InputError(
                    f"label {label!r} of {where} {i + 1} is not one of the classes of "
                    f"{sig.model}/{sig.version} ({', '.join(map(str, sig.classes))}).",
                    code="invalid_label",
                )
            found.append(sig.classes[index])
        else:
            try:
                found.append(float(label))
            except (TypeError, ValueError):
                raise InputError(f"label {label!r} of {where} {i + 1} is not a number.", code="invalid_label") from None
    return found


def log_file(platform: Platform, model: str, path: Path, source: str = "upload") -> dict[str, Any]:
    """Log the rows of a CSV/Parquet file as predictions of the champion (computed by its server variant when
    the file has no `prediction` column).

    The rows are the CLI's (sender `cli`, whoever holds the settings). Predictions the platform computed
    itself are evidence the guard may judge the champion by; a file's own `prediction` column is a claim,
    kept as data, never evidence."""
    from modelyard.platform.store.inference import Prediction

    version = champion_of(platform, model)
    sig = signature(platform, model, version)
    frame = read_table(path)
    check_columns(path, frame, sig, sig.columns, OPTIONAL)
    x = numeric_features(path, frame, sig.columns)
    loaded = open_version(platform, model, version)
    input_name, output_name = loaded.inputs[0].name, loaded.outputs[0].name
    if "prediction" in frame.columns:
        given = canonical_labels(sig, frame["prediction"].tolist(), f"column 'prediction' of {path.name}, row")
        outputs = _one_hot(sig, given)
        how = "given"
    else:
        outputs = predict(loaded, sig, x)
        how = f"computed by v{version}"
    if "request_id" in frame.columns:
        ids = [str(v) for v in frame["request_id"].tolist()]
        empty = [i for i, v in enumerate(frame["request_id"].tolist()) if v is None or str(v).strip() in ("", "nan")]
        if empty:
            raise InputError(f"column 'request_id' of {path.name} is empty in {_line(path, empty[0])}.")
        seen: dict[str, int] = {}
        for i, rid in enumerate(ids):
            if rid in seen:
                raise InputError(f"request id '{rid}' appears twice in {path.name} ({_line(path, i)}).")
            seen[rid] = i
    else:  # derived from the file's bytes: the same file logged twice is refused, not counted twice
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        ids = [f"{path.stem[:60]}-{digest}-{i}" for i in range(len(frame))]
    shape = sig.input_shape
    rows = [
        Prediction(
            model,
            version,
            rid,
            {input_name: x[i].reshape(shape).tolist()},
            {output_name: outputs[i].tolist()},
            source,
            {"file": path.name, "prediction": how},
            sender_kind="local",
            sender="cli",
            attested=how != "given",
        )
        for i, rid in enumerate(ids)
    ]
    stored = platform.inference.append(rows, unique=True)
    return {"model": model, "version": version, "stored": stored, "predictions": how, "first_request_id": ids[0]}


def _one_hot(sig: Signature, labels: list[Any]) -> np.ndarray:
    if sig.task != "classification":
        return np.asarray(labels, dtype=np.float64).reshape(-1, 1)
    out = np.zeros((len(labels), len(sig.classes)))
    for i, label in enumerate(labels):
        out[i, sig.class_index(label)] = 1.0
    return out


def feedback_file(platform: Platform, model: str, path: Path, source: str = "upload") -> dict[str, Any]:
    """Labels by request id: `request_id` and `label` columns; every id must have been logged."""
    version = champion_of(platform, model)
    sig = signature(platform, model, version)
    frame = read_table(path)
    check_columns(path, frame, sig, ["request_id", "label"], ())
    labels = canonical_labels(sig, frame["label"].tolist(), f"{path.name}, row")
    ids = [str(v) for v in frame["request_id"].tolist()]
    stored = platform.inference.add_feedback(model, list(zip(ids, labels, strict=True)), source)
    return {"model": model, "stored": stored}


def check_feedback(platform: Platform, model: str, labels: list[Any]) -> list[Any]:
    """The API's feedback route: the same label rules as the file; the labels to store."""
    sig = signature(platform, model, champion_of(platform, model))
    return canonical_labels(sig, labels, "feedback item")
