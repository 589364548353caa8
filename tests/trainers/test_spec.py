from pathlib import Path

import pytest

from modelyard.errors import SpecError
from modelyard.trainers.spec import load_spec, parse_spec
from tests.conftest import tiny_spec


def test_a_valid_spec_keeps_its_values() -> None:
    spec = parse_spec(tiny_spec(epochs=7))
    assert spec.epochs == 7 and spec.architecture.name == "cnn" and spec.primary_metric == "accuracy"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"epochs": 0}, "field 'epochs': Input should be greater than or equal to 1"),
        ({"learning_rate": "fast"}, "field 'learning_rate': Input should be a valid number"),
        ({"architecture": {"name": "transformer"}}, "field 'architecture.name': 'transformer' is neither"),
        ({"dataset": {}}, "field 'dataset.source': Field required"),
        ({"batchsize": 3}, "field 'batchsize': Extra inputs are not permitted"),
        ({"primary_metric": "mae"}, "primary_metric: 'mae' is not a classification metric"),
        ({"name": "bad name!"}, "field 'name': String should match pattern"),
    ],
)
def test_a_malformed_spec_names_the_field(change: dict, message: str) -> None:
    with pytest.raises(SpecError) as raised:
        parse_spec(tiny_spec(**change), "spec.yaml")
    assert str(raised.value).startswith("invalid training spec spec.yaml: ")
    assert message in str(raised.value)


def test_yaml_errors_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("name: x\ndataset: [unclosed\n")
    with pytest.raises(SpecError, match=r"broken.yaml is not valid YAML at line \d"):
        load_spec(path)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(tmp_path / "nope.yaml")


def test_relative_dataset_paths_resolve_against_the_spec(tmp_path: Path) -> None:
    (tmp_path / "specs").mkdir()
    path = tmp_path / "specs" / "s.yaml"
    path.write_text("name: x\ndataset: {source: ../data/train.csv}\narchitecture: {name: mlp}\n")
    assert load_spec(path).dataset.source == str(tmp_path / "data" / "train.csv")
