"""Request and response bodies of the HTTP API (what /docs and the OpenAPI schema show)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import Path
from pydantic import BaseModel, ConfigDict, Field

from modelyard.oip import DATATYPES

# Path parameters, as the CLI spells them (registry/base.py's references).
ModelName = Annotated[str, Path(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")]
VersionNumber = Annotated[str, Path(pattern=r"^\d{1,9}$")]
VersionRef = Annotated[str, Path(pattern=r"^(\d{1,9}|champion|challenger|previous)$")]  # a number or an alias
RequestIdPath = Annotated[str, Path(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")]

RequestId = Field(None, min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$")
NO_NUL = r"^[^\x00]+$"  # PostgreSQL text refuses NUL


class ErrorBody(BaseModel):
    error: str = Field(description="One sentence: what was wrong and where.")
    code: str = Field(description="Stable code: model_not_found, invalid_spec, forbidden, ...")


ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorBody, "description": why}
    for status, why in {
        400: "Bad input (an inference that does not match the model's signature, ...).",
        401: "No valid bearer token.",
        403: "The token lacks the scope.",
        404: "No such model, version, alias, request or token.",
        409: "The change conflicts with the model's state (nothing to roll back to, ...).",
        413: "The body is too large.",
        422: "The body or a parameter is malformed (invalid spec, unreadable dataset, ...).",
        503: "A service the operation needs is unavailable, or the model cannot be served yet.",
    }.items()
}


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromoteBody(_Body):
    version: str = Field(
        "challenger", pattern=r"^(\d{1,9}|challenger|champion|previous)$", description="A version or an alias."
    )
    reason: str = Field("promoted through the API", min_length=1, max_length=2000)
    force: bool = Field(False, description="Serve a version that is not deployable.")


class RollbackBody(_Body):
    to: str | None = Field(None, pattern=r"^\d{1,9}$", description="Version to restore; default: previous.")
    reason: str = Field("rolled back through the API", min_length=1, max_length=2000)
    force: bool = False


class TrainBody(_Body):
    spec: dict[str, Any] | str = Field(description="The training spec: a JSON object, or YAML text.")
    request_id: str | None = RequestId
    trigger: Literal["manual", "drift", "schedule"] = "manual"


class TrainAccepted(BaseModel):
    request_id: str
    model: str
    new: bool = Field(description="False when this request id was known: nothing is trained twice.")


class RetrainBody(_Body):
    reason: str = Field(min_length=1, max_length=2000, description="Why; kept in the audit log.")


class RetrainAccepted(BaseModel):
    request_id: str
    model: str
    parent_version: str
    data: str


class ExportBody(_Body):
    targets: list[Literal["edge-cpu", "server-cpu", "server-gpu"]] | None = None


class ExportAccepted(BaseModel):
    task_id: str
    model: str
    version: str


class AliasChange(BaseModel):
    alias: str
    from_version: str | None
    to_version: str | None


class TokenBody(_Body):
    name: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.@:-]*$")
    scopes: list[Literal["read", "infer", "ingest", "operate", "admin"]] = Field(min_length=1)


class TokenCreated(BaseModel):
    name: str
    token: str = Field(description="Shown once; only its hash is stored.")
    scopes: list[str]


class Label(_Body):
    request_id: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    label: int | float | str | bool | list[Any]


class FeedbackBody(_Body):
    labels: list[Label] = Field(min_length=1, max_length=100_000)
    source: str = Field("api", min_length=1, max_length=100, pattern=NO_NUL)


class LoggedPrediction(_Body):
    request_id: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    version: str = Field(pattern=r"^\d{1,9}$")
    inputs: dict[str, list[Any]] = Field(description="Input name -> one row (nested lists).")
    outputs: dict[str, list[Any]]
    time: dt.datetime | None = None
    meta: dict[str, Any] = Field(default_factory=dict)


class InferencesBody(_Body):
    records: list[LoggedPrediction] = Field(min_length=1, max_length=100_000)
    source: str = Field(
        "upload", min_length=1, max_length=100, pattern=NO_NUL, description="A server name, a device id, ..."
    )


class Stored(BaseModel):
    stored: int


# The Open Inference Protocol (KServe v2) bodies. Their rules (datatypes, shapes, tensor data) are modelyard.oip's,
# shared with the device agent: serving/models.py's decode_inputs applies them to these bodies' tensors. A request's
# datatype is a plain string here, so one the model does not take is answered naming the tensor, not by pydantic.
DATATYPE = f"An Open Inference Protocol datatype: {', '.join(DATATYPES)}."
ANSWERED_DATATYPE = Field(description=DATATYPE, json_schema_extra={"enum": list(DATATYPES)})


class InferInput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = Field(description=DATATYPE)
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class RequestedOutput(BaseModel):
    name: str
    parameters: dict[str, Any] | None = None


class InferRequest(BaseModel):
    id: str | None = Field(
        None,
        min_length=1,
        max_length=90,
        pattern=NO_NUL,
        description="Kept in the inference log; rows of a batched request get ID#i.",
    )
    parameters: dict[str, Any] | None = None
    inputs: list[InferInput] = Field(min_length=1)
    outputs: list[RequestedOutput] | None = None


class InferOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str = ANSWERED_DATATYPE
    parameters: dict[str, Any] | None = None
    data: list[Any] | None = None


class InferResponse(BaseModel):
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]


class ServerMetadata(BaseModel):
    name: str = Field(description="The server's name.")
    version: str = Field(description="The server's version.")
    extensions: list[str] = Field(description="The protocol extensions it speaks, as Triton names them.")


class TensorMetadata(BaseModel):
    name: str
    datatype: str = ANSWERED_DATATYPE
    shape: list[int] = Field(description="Sizes; -1 where the model accepts any (the batch, first).")


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[TensorMetadata]
    outputs: list[TensorMetadata]
    parameters: dict[str, Any] = Field(default_factory=dict)


class Readiness(BaseModel):
    name: str
    ready: bool


class Live(BaseModel):
    live: bool


class Ready(BaseModel):
    ready: bool
