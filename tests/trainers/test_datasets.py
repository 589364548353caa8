from pathlib import Path

import numpy as np
import pytest

from modelyard.errors import DatasetError
from modelyard.trainers.datasets import load_dataset, split_dataset
from modelyard.trainers.spec import DatasetSpec


def csv(tmp_path: Path, text: str, name: str = "data.csv") -> DatasetSpec:
    path = tmp_path / name
    path.write_text(text)
    return DatasetSpec(source=str(path), min_rows_per_class=3)


GOOD_ROWS = "".join(f"{i},{i * 2},{i % 2}\n" for i in range(12))


def test_digits_are_8x8_images_scaled_to_one() -> None:
    ds = load_dataset(DatasetSpec(source="sklearn:digits"))
    assert ds.x.shape == (1797, 8, 8, 1) and ds.x.max() == 1.0 and ds.classes == list(range(10))


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_tabular_sklearn_sets_keep_feature_names(name: str) -> None:
    ds = load_dataset(DatasetSpec(source=f"sklearn:{name}"))
    assert ds.x.ndim == 2 and len(ds.feature_names) == ds.x.shape[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a,b,label\n" + GOOD_ROWS + "1,,0\n",
            "column 'b' of dataset data.csv has a missing value (NaN) in row 13 (line 14).",
        ),
        (
            "a,b,label\n" + GOOD_ROWS + "1,inf,0\n",
            "column 'b' of dataset data.csv has an infinite value in row 13 (line 14).",
        ),
        ("a,b,y\n" + GOOD_ROWS, "dataset data.csv has no label column 'label' (its columns: a, b, y)."),
        (
            "a,b,label\n" + GOOD_ROWS + "x,1,0\n",
            "column 'a' of dataset data.csv is not numeric: value 'x' in row 13 (line 14).",
        ),
        (
            "a,b,label\n" + GOOD_ROWS + "1,1,\n",
            "label column 'label' of dataset data.csv is empty in row 13 (line 14).",
        ),
        ("a,b,label\n" + GOOD_ROWS + "1,1,2\n", "class 2 has 1 row in dataset data.csv; at least 3 are needed"),
        ("a,b,label\n", "dataset data.csv has no rows."),
    ],
)
def test_bad_csvs_get_one_sentence_naming_column_and_row(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(DatasetError) as raised:
        load_dataset(csv(tmp_path, text))
    assert str(raised.value).startswith(message)


def test_labels_outside_the_declared_classes(tmp_path: Path) -> None:
    spec = csv(tmp_path, "a,label\n" + "".join(f"{i},{'cat' if i % 2 else 'dog'}\n" for i in range(8)) + "9,cow\n")
    spec.classes = ["cat", "dog"]
    with pytest.raises(
        DatasetError, match=r"label 'cow' in row 9 of dataset data.csv is not among the declared classes"
    ):
        load_dataset(spec)


def test_string_labels_are_encoded_in_declared_order(tmp_path: Path) -> None:
    spec = csv(tmp_path, "a,label\n" + "".join(f"{i},{'cat' if i % 2 else 'dog'}\n" for i in range(8)))
    spec.classes = ["dog", "cat"]
    ds = load_dataset(spec)
    assert ds.classes == ["dog", "cat"] and ds.y[:2].tolist() == [0, 1]


def test_parquet_and_npz(tmp_path: Path) -> None:
    import pandas as pd

    frame = pd.DataFrame({"a": np.arange(12.0), "label": np.arange(12) % 2})
    frame.to_parquet(tmp_path / "d.parquet")
    assert load_dataset(DatasetSpec(source=str(tmp_path / "d.parquet"), min_rows_per_class=3)).x.shape == (12, 1)
    np.savez(tmp_path / "d.npz", x=np.zeros((12, 4, 3)), y=np.arange(12) % 3)
    assert load_dataset(DatasetSpec(source=str(tmp_path / "d.npz"), min_rows_per_class=3)).x.shape == (12, 4, 3)
    np.savez(tmp_path / "bad.npz", features=np.zeros(3))
    with pytest.raises(DatasetError, match="has no array 'x'"):
        load_dataset(DatasetSpec(source=str(tmp_path / "bad.npz")))


def test_unknown_sources() -> None:
    with pytest.raises(DatasetError, match="unknown bundled dataset 'sklearn:mnist'"):
        load_dataset(DatasetSpec(source="sklearn:mnist"))
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset(DatasetSpec(source="/no/such/file.csv"))


def test_split_is_deterministic_stratified_and_hashed() -> None:
    ds = load_dataset(DatasetSpec(source="sklearn:wine"))
    a = split_dataset(ds, 0.15, 0.2, seed=3)
    b = split_dataset(ds, 0.15, 0.2, seed=3)
    c = split_dataset(ds, 0.15, 0.2, seed=4)
    assert a.hashes == b.hashes and a.hashes["test"] != c.hashes["test"]
    assert len(a.y_train) + len(a.y_val) + len(a.y_test) == len(ds.y)
    share = np.bincount(a.y_test) / len(a.y_test)
    assert np.allclose(share, np.bincount(ds.y) / len(ds.y), atol=0.05)
