"""The training spec: what to train, on what, and how a new version is judged."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from modelyard.errors import SpecError

BUILTIN_ARCHITECTURES = ("mlp", "cnn", "lstm", "gru")
CLASSIFICATION_METRICS = (
    "accuracy",
    "precision_macro",
    "recall_macro",
    "f1_macro",
    "roc_auc",
    "log_loss",
    "ece",
)
REGRESSION_METRICS = ("mae", "rmse")
LOWER_IS_BETTER = frozenset({"log_loss", "ece", "mae", "rmse"})
MODEL_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# Bounds on a spec, checked before YAML builds anything: real specs are a few hundred bytes, a few
# levels deep; without them nested brackets cost CPU with the square of their depth, then a 500.
MAX_SPEC_CHARS = 64 * 1024
MAX_SPEC_DEPTH = 32


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetSpec(_Strict):
    source: str = Field(
        description="'sklearn:digits', 'sklearn:breast_cancer', 'sklearn:wine', or a path to a "
        ".csv, .parquet or .npz file (relative paths resolve against the spec's folder)."
    )
    label_column: str = Field("label", description="Label column of a CSV or Parquet file.")
    feature_columns: list[str] | None = Field(
        None, description="Feature columns of a CSV or Parquet file; default: every other column."
    )
    classes: list[int | str] | None = Field(None, description="The declared label set; a label outside it is an error.")
    task: Literal["classification", "regression"] = "classification"
    min_rows_per_class: int = Field(5, ge=3, description="Fewer rows in a class than this cannot be split three ways.")
    recent: RecentData | None = Field(
        None, description="Add labeled production rows from the inference log (set by retraining, not by hand)."
    )


class RecentData(_Strict):
    """Labeled rows of the model's inference log that a retraining learns from, fixed when it is queued."""

    mode: Literal["original", "recent", "original+recent"] = "original+recent"
    model: str = Field(pattern=MODEL_NAME_PATTERN, description="Whose inference log.")
    until_id: int = Field(ge=0, description="The newest log row the window that fired had.")
    rows: int = Field(1000, ge=1, description="At most this many labeled rows, newest first.")


class ArchitectureSpec(_Strict):
    name: str = Field(
        description="A built-in ('mlp', 'cnn', 'lstm', 'gru') or a user builder "
        "'package.module:function' returning a Keras model."
    )
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to the builder.")

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if name in BUILTIN_ARCHITECTURES:
            return name
        module, sep, func = name.partition(":")
        if not sep or not module or not func.isidentifier():
            raise ValueError(
                f"'{name}' is neither a built-in architecture ({', '.join(BUILTIN_ARCHITECTURES)}) "
                "nor a builder written as 'package.module:function'"
            )
        return name


class GateSpec(_Strict):
    min_delta: float = Field(0.0, ge=0, description="How much the primary metric must improve on the champion's.")
    tolerances: dict[str, float] = Field(
        default_factory=dict,
        description="Secondary metric -> how far it may regress against the champion.",
    )
    threshold: float | None = Field(
        None, description="With no champion: the primary metric must reach this to promote."
    )
    require_approval: bool = Field(False, description="Leave a passing version as challenger for a human to promote.")
    must_beat_baseline: bool = Field(
        True,
        description="Reject a network whose primary metric does not beat the classical baseline "
        "(logistic or ridge regression) trained and tested on the same split.",
    )
    baseline_margin: float = Field(
        0.0, ge=0, description="With must_beat_baseline: how much the network must beat the baseline by."
    )


class TrainSpec(_Strict):
    name: str = Field(pattern=MODEL_NAME_PATTERN, description="The registered model's name.")
    dataset: DatasetSpec
    architecture: ArchitectureSpec
    epochs: int = Field(20, ge=1, le=10_000)
    batch_size: int = Field(32, ge=1, le=65_536)
    learning_rate: float = Field(1e-3, gt=0, le=10)
    early_stopping_patience: int = Field(5, ge=0, description="0 turns early stopping off.")
    seed: int = Field(0, ge=0)
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    primary_metric: str = "accuracy"
    mixed_precision: bool = Field(True, description="Use mixed float16 when training on a GPU.")
    gpus: Literal["one", "all"] = Field(
        "one",
        description="one: the GPU of the train worker that takes it (each is pinned to one); "
        "all: every GPU of one machine with MirroredStrategy (queue train-all).",
    )
    gate: GateSpec = Field(default_factory=GateSpec)
    export: dict[str, Any] = Field(
        default_factory=dict, description="ONNX export settings (opset, tolerances, variants, budgets per target)."
    )
    monitoring: dict[str, Any] = Field(
        default_factory=dict,
        description="Drift checks, retraining policy and baking guard (modelyard.monitoring.spec, validated there).",
    )

    @model_validator(mode="after")
    def _metrics_fit_task(self) -> TrainSpec:
        known = REGRESSION_METRICS if self.dataset.task == "regression" else CLASSIFICATION_METRICS
        for field, metric in [("primary_metric", self.primary_metric)] + [
            (f"gate.tolerances.{m}", m) for m in self.gate.tolerances
        ]:
            if metric not in known:
                raise ValueError(f"{field}: '{metric}' is not a {self.dataset.task} metric (one of {', '.join(known)})")
        if self.validation_fraction + self.test_fraction >= 0.8:
            raise ValueError("validation_fraction + test_fraction must leave 20% for training")
        return self


def describe_validation_error(err: ValidationError, where: str) -> str:
    """One sentence naming the first bad field (and how many more there are)."""
    first = err.errors()[0]
    loc = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"].removeprefix("Value error, ")
    more = len(err.errors()) - 1
    tail = f" ({more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid training spec {where}: field '{loc}': {msg}{tail}."


def parse_spec(data: Any, where: str = "(inline)") -> TrainSpec:
    if not isinstance(data, dict):
        raise SpecError(f"invalid training spec {where}: expected a mapping at the top level.")
    check_nesting(data, where)
    try:
        return TrainSpec.model_validate(data)
    except ValidationError as err:
        raise SpecError(describe_validation_error(err, where)) from None


def check_nesting(data: Any, where: str) -> None:
    """Refuse data nested deeper than MAX_SPEC_DEPTH (a spec sent as a JSON object), without recursion."""
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if depth > MAX_SPEC_DEPTH:
            raise SpecError(_too_deep(where))
        children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else ()
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))


def parse_spec_text(text: str, where: str) -> TrainSpec:
    """A spec sent as text (YAML, or JSON, which YAML reads too), as from an HTTP body."""
    return parse_spec(_read_yaml(text, where, "YAML or JSON"), where)


def load_spec(path: str | Path) -> TrainSpec:
    """Read a YAML spec; relative dataset paths are made absolute against its folder."""
    path = Path(path)
    try:
        with path.open(encoding="utf-8", errors="replace") as file:
            text = file.read(MAX_SPEC_CHARS + 1)  # never more than the limit and one: the file may be huge
    except FileNotFoundError:
        raise SpecError(f"training spec {path} does not exist.") from None
    except IsADirectoryError:
        raise SpecError(f"training spec {path} is a folder, not a file.") from None
    spec = parse_spec(_read_yaml(text, str(path), "YAML"), str(path))
    source = spec.dataset.source
    if ":" not in source.split("/")[0] and not Path(source).is_absolute():
        spec.dataset.source = str((path.parent / source).resolve())
    return spec


def _too_deep(where: str, line: int | None = None) -> str:
    at = f" at line {line}" if line else ""
    return f"training spec {where} nests lists or mappings deeper than {MAX_SPEC_DEPTH} levels{at}."


class _Refused(Exception):
    """Raised inside the YAML composer; _read_yaml words it as a SpecError."""

    def __init__(self, what: str, line: int) -> None:
        self.what, self.line = what, line


def _read_yaml(text: str, where: str, kind: str) -> Any:
    """YAML text -> plain data, bounded before the parser builds anything: the size first, then the depth
    (counted as the composer descends, so it stops at the first node too deep), and no aliases."""
    import yaml

    if len(text) > MAX_SPEC_CHARS:
        raise SpecError(f"training spec {where} is longer than {MAX_SPEC_CHARS} characters.")
    try:
        return yaml.load(text, Loader=_bounded_loader())  # a SafeLoader: plain data only
    except _Refused as err:
        if err.what == "alias":
            raise SpecError(f"training spec {where} uses YAML aliases (*name); write the values out.") from None
        raise SpecError(_too_deep(where, err.line)) from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        line = f" at line {mark.line + 1}" if mark else ""
        raise SpecError(f"training spec {where} is not valid {kind}{line}.") from None


@functools.cache
def _bounded_loader() -> Any:
    """A SafeLoader that counts nesting as it reads and refuses aliases before it resolves one.

    PyYAML composes and constructs recursively, and its scanner's cost grows with the square of
    the brackets open on a line: nested brackets cost seconds, then a RecursionError (a 500). So
    the scanner stops at the first bracket too deep, and the composer at the first collection
    too deep however it is written (indents too). Aliases: a few hundred bytes of nested aliases
    expand to gigabytes.
    """
    import yaml

    class BoundedLoader(yaml.SafeLoader):
        depth = 0

        def fetch_flow_collection_start(self, TokenClass: Any) -> None:
            if self.flow_level >= MAX_SPEC_DEPTH:
                raise _Refused("depth", self.line + 1)
            super().fetch_flow_collection_start(TokenClass)

        def compose_node(self, parent: Any, index: Any) -> Any:
            event = self.peek_event()
            if isinstance(event, yaml.AliasEvent):
                raise _Refused("alias", _line(event))
            if not isinstance(event, yaml.SequenceStartEvent | yaml.MappingStartEvent):
                return super().compose_node(parent, index)
            if self.depth >= MAX_SPEC_DEPTH:
                raise _Refused("depth", _line(event))
            self.depth += 1
            try:
                return super().compose_node(parent, index)
            finally:
                self.depth -= 1

    return BoundedLoader


def _line(event: Any) -> int:
    mark = event.start_mark
    return mark.line + 1 if mark else 0
