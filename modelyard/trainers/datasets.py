"""Load a dataset named by a spec, validate it, split it deterministically, hash it.

Every validation failure is one sentence naming the file, the column and the row.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from modelyard.errors import DatasetError
from modelyard.trainers.spec import DatasetSpec

SKLEARN_SETS = ("digits", "breast_cancer", "wine")


@dataclass
class Dataset:
    """Features as float32, labels encoded 0..K-1 (classification) or float32 (regression)."""

    x: np.ndarray
    y: np.ndarray
    classes: list[Any]
    feature_names: list[str]
    source: str
    task: str
    content_hash: str = ""

    def __post_init__(self) -> None:
        if not self.content_hash:
            self.content_hash = content_hash(self.x, self.y)


@dataclass
class Split:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    hashes: dict[str, str] = field(default_factory=dict)


def content_hash(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    for arr in (x, y):
        arr = np.ascontiguousarray(arr)
        h.update(f"{arr.dtype.str}{arr.shape}".encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def load_dataset(spec: DatasetSpec) -> Dataset:
    source = spec.source
    if source.startswith("sklearn:"):
        x, y, names = _load_sklearn(source.removeprefix("sklearn:"))
        return _encode(x, y, names, spec, where=source)
    path = Path(source)
    if not path.is_file():
        raise DatasetError(f"dataset {source} does not exist.")
    suffix = path.suffix.lower()
    if suffix in (".csv", ".parquet", ".pq"):
        x, y, names = _load_table(path, spec)
    elif suffix == ".npz":
        x, y, names = _load_npz(path)
    else:
        raise DatasetError(f"dataset {source} has an unknown format '{suffix}' (use .csv, .parquet or .npz).")
    return _encode(x, y, names, spec, where=path.name)


def _load_sklearn(name: str) -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn import datasets

    if name not in SKLEARN_SETS:
        raise DatasetError(f"unknown bundled dataset 'sklearn:{name}' (one of {', '.join(SKLEARN_SETS)}).")
    bunch = getattr(datasets, f"load_{name}")()
    x = np.asarray(bunch.data, dtype=np.float32)
    if name == "digits":  # 8x8 grey images with values 0..16
        x = (x / 16.0).reshape(-1, 8, 8, 1)
        names = ["pixels"]
    else:
        names = [str(n) for n in bunch.feature_names]
    return x, np.asarray(bunch.target), names


def _load_table(path: Path, spec: DatasetSpec) -> tuple[np.ndarray, np.ndarray, list[str]]:
    import pandas as pd

    try:
        frame = pd.read_csv(path) if path.suffix.lower() == ".csv" else pd.read_parquet(path)
    except Exception as err:  # pandas raises many types; the user needs the file and the cause
        raise DatasetError(f"could not read dataset {path.name}: {err}.") from None
    if frame.empty:
        raise DatasetError(f"dataset {path.name} has no rows.")
    if spec.label_column not in frame.columns:
        raise DatasetError(
            f"dataset {path.name} has no label column '{spec.label_column}' "
            f"(its columns: {', '.join(map(str, frame.columns))})."
        )
    features = spec.feature_columns or [c for c in frame.columns if c != spec.label_column]
    missing = [c for c in features if c not in frame.columns]
    if missing:
        raise DatasetError(f"dataset {path.name} has no feature column '{missing[0]}'.")
    if not features:
        raise DatasetError(f"dataset {path.name} has no feature columns besides the label.")
    row_base = 2 if path.suffix.lower() == ".csv" else 1  # CSV: header is line 1
    for col in features:
        values = frame[col]
        if not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
            numeric = pd.to_numeric(values, errors="coerce")
            bad = values[numeric.isna() & values.notna()]
            pos = int(np.flatnonzero(frame.index == bad.index[0])[0]) if len(bad) else 0
            raise DatasetError(
                f"column '{col}' of dataset {path.name} is not numeric: "
                f"value {bad.iloc[0]!r} in row {pos + 1} (line {pos + row_base})."
                if len(bad)
                else f"column '{col}' of dataset {path.name} is not numeric."
            )
    x = frame[features].to_numpy(dtype=np.float64)
    _check_finite(x, features, path.name, row_base)
    labels = frame[spec.label_column]
    if labels.isna().any():
        pos = int(np.flatnonzero(labels.isna().to_numpy())[0])
        raise DatasetError(
            f"label column '{spec.label_column}' of dataset {path.name} is empty "
            f"in row {pos + 1} (line {pos + row_base})."
        )
    return x.astype(np.float32), labels.to_numpy(), [str(c) for c in features]


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    try:
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise DatasetError(
                    f"dataset {path.name} has no array '{missing[0]}' (it has: {', '.join(data.files)})."
                )
            x, y = data["x"], data["y"]
    except (OSError, ValueError) as err:
        raise DatasetError(f"could not read dataset {path.name}: {err}.") from None
    if len(x) != len(y):
        raise DatasetError(f"dataset {path.name} has {len(x)} rows in 'x' but {len(y)} labels in 'y'.")
    if not np.issubdtype(x.dtype, np.number):
        raise DatasetError(f"array 'x' of dataset {path.name} is not numeric (dtype {x.dtype}).")
    flat = x.reshape(len(x), -1).astype(np.float64)
    _check_finite(flat, None, path.name, 1)
    return x.astype(np.float32), y, ["x"]


def _check_finite(x: np.ndarray, columns: list[str] | None, where: str, row_base: int) -> None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return
    row, col = (int(i) for i in np.argwhere(bad)[0])
    what = "a missing value (NaN)" if np.isnan(x[row, col]) else "an infinite value"
    name = f"column '{columns[col]}'" if columns else f"feature {col}"
    line = f" (line {row + row_base})" if columns else ""
    raise DatasetError(f"{name} of dataset {where} has {what} in row {row + 1}{line}.")


def _encode(x: np.ndarray, y: np.ndarray, names: list[str], spec: DatasetSpec, where: str) -> Dataset:
    if spec.task == "regression":
        try:
            y_num = y.astype(np.float32)
        except ValueError:
            raise DatasetError(f"labels of dataset {where} are not numeric, as regression needs.") from None
        _check_finite(y_num.reshape(-1, 1), ["label"], where, 1)
        return Dataset(x, y_num, [], names, spec.source, spec.task)
    labels = [_plain(v) for v in y]
    if spec.classes is not None:
        declared = {_plain(c) for c in spec.classes} | {str(c) for c in spec.classes}
        for i, value in enumerate(labels):
            if value not in declared and str(value) not in declared:
                raise DatasetError(
                    f"label {value!r} in row {i + 1} of dataset {where} is not among the declared "
                    f"classes {list(spec.classes)}."
                )
        classes = [_plain(c) for c in spec.classes]
        index = class_index(classes)
        encoded = np.array([index[label_key(v)] for v in labels], dtype=np.int64)
    else:
        classes = sorted(set(labels), key=lambda v: (isinstance(v, str), v))
        index = {c: i for i, c in enumerate(classes)}
        encoded = np.array([index[v] for v in labels], dtype=np.int64)
    if len(classes) < 2:
        raise DatasetError(f"dataset {where} has a single class; classification needs two or more.")
    counts = np.bincount(encoded, minlength=len(classes))
    for cls, count in zip(classes, counts, strict=False):
        if count < spec.min_rows_per_class:
            raise DatasetError(
                f"class {cls!r} has {count} row{'s' if count != 1 else ''} in dataset {where}; "
                f"at least {spec.min_rows_per_class} are needed to split it for training, validation and test."
            )
    return Dataset(x, encoded, classes, names, spec.source, spec.task)


def label_key(value: Any) -> str:
    """How a label is matched to a class wherever it comes from (a CSV, JSON, numpy): 1, 1.0, '1' and
    numpy's 1 are one class; other floats and strings keep their text."""
    value = _plain(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def class_index(classes: list[Any]) -> dict[str, int]:
    """label_key -> the class's position (its encoded label)."""
    return {label_key(c): i for i, c in enumerate(classes)}


def _plain(value: Any) -> Any:
    """numpy scalars -> Python values, so labels compare and serialize as written."""
    return value.item() if hasattr(value, "item") else value


def split_dataset(ds: Dataset, validation_fraction: float, test_fraction: float, seed: int) -> Split:
    """Deterministic split, stratified for classification: the same inputs give the same split."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(ds.y))
    strat = ds.y if ds.task == "classification" else None
    rest, test = train_test_split(idx, test_size=test_fraction, random_state=seed, stratify=strat)
    val_share = validation_fraction / (1 - test_fraction)
    strat_rest = ds.y[rest] if strat is not None else None
    train, val = train_test_split(rest, test_size=val_share, random_state=seed, stratify=strat_rest)
    split = Split(ds.x[train], ds.y[train], ds.x[val], ds.y[val], ds.x[test], ds.y[test])
    split.hashes = {
        "train": content_hash(split.x_train, split.y_train),
        "validation": content_hash(split.x_val, split.y_val),
        "test": content_hash(split.x_test, split.y_test),
    }
    return split
