"""The Open Inference Protocol (KServe v2, as Triton and MLServer speak it), with Triton's binary
tensor extension, and the ingest routes of production data (logged predictions, labels)."""

from __future__ import annotations

import asyncio
import datetime as dt
import re
import time
import uuid
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import ValidationError

from modelyard.errors import InputError, UnavailableError
from modelyard.oip import infer_response
from modelyard.platform.api.auth import BEARER, RATE_LIMITED, Principal, authorize, require
from modelyard.platform.api.errors import answer_error
from modelyard.platform.api.schemas import (
    ERRORS,
    FeedbackBody,
    InferencesBody,
    InferRequest,
    InferResponse,
    Live,
    ModelMetadata,
    ModelName,
    Readiness,
    Ready,
    Stored,
    VersionRef,
)
from modelyard.platform.serving.models import decode_inputs, encode_outputs
from modelyard.platform.serving.server import ModelServer, Served

router = APIRouter(tags=["inference"], responses=ERRORS)
ingest = APIRouter(prefix="/v1", tags=["ingest"], responses=ERRORS)
HEADER_LENGTH = "inference-header-content-length"
INFER_BODY = {
    **BEARER,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": InferRequest.model_json_schema(ref_template="#/components/schemas/{model}")}
        },
    },
}


def _server(request: Request) -> ModelServer:
    return request.app.state.server  # type: ignore[no-any-return]


@router.get("/v2/health/live", summary="The server process answers")
async def live() -> Live:
    return Live(live=True)


@router.get("/v2/health/ready", summary="The server can serve (its database answers)", responses={503: ERRORS[503]})
async def ready(request: Request) -> Ready:
    try:
        await run_in_threadpool(_server(request).platform.audit.aliases, "-")
    except Exception:
        raise UnavailableError("the platform database does not answer.") from None
    return Ready(ready=True)


@router.get("/v2/models/{name}", summary="Metadata of the model's champion: inputs and outputs")
async def metadata(request: Request, name: ModelName, _: Principal = require("read")) -> ModelMetadata:
    served = await _server(request).champion(name)
    return ModelMetadata(**served.model.metadata())


@router.get("/v2/models/{name}/versions/{version}", summary="Metadata of one version (a number or an alias)")
async def version_metadata(
    request: Request, name: ModelName, version: VersionRef, _: Principal = require("read")
) -> ModelMetadata:
    served = await _server(request).version(name, version)
    return ModelMetadata(**served.model.metadata())


@router.get("/v2/models/{name}/ready", summary="Whether the champion is loaded", responses={503: ERRORS[503]})
async def model_ready(request: Request, name: ModelName, _: Principal = require("read")) -> Readiness:
    server = _server(request)
    if not server.is_ready(name):
        try:  # load it, or say why not
            await asyncio.wait_for(server.champion(name), server.settings.api_request_timeout)
        except TimeoutError:
            raise UnavailableError(f"model '{name}' is still loading.", code="timeout") from None
    return Readiness(name=name, ready=True)


@router.get("/v2/models/{name}/versions/{version}/ready", summary="Whether a version can serve")
async def version_ready(
    request: Request, name: ModelName, version: VersionRef, _: Principal = require("read")
) -> Readiness:
    await _server(request).version(name, version)
    return Readiness(name=name, ready=True)


@router.post(
    "/v2/models/{name}/infer", summary="Infer with the champion", openapi_extra=INFER_BODY, response_model=InferResponse
)
async def infer(request: Request, name: ModelName) -> Response:
    await authorize(request, "infer")
    server = _server(request)
    return await _infer(request, server, lambda: server.champion(name))


@router.post(
    "/v2/models/{name}/versions/{version}/infer",
    summary="Infer with one version (a number or an alias)",
    openapi_extra=INFER_BODY,
    response_model=InferResponse,
)
async def infer_version(request: Request, name: ModelName, version: VersionRef) -> Response:
    await authorize(request, "infer")
    server = _server(request)
    return await _infer(request, server, lambda: server.version(name, version))


async def _infer(request: Request, server: ModelServer, choose: Any) -> Response:
    started = time.perf_counter()
    raw = await request.body()
    header, binary = _split_body(raw, request.headers.get(HEADER_LENGTH))
    try:
        parsed = InferRequest.model_validate_json(header)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "the body"
        raise InputError(f"the inference request is not valid: {where}: {first.get('msg', '').rstrip('.')}.") from None
    timeout = server.settings.api_request_timeout
    try:
        async with asyncio.timeout(timeout):
            served: Served = await choose()
            model = served.model
            feeds = decode_inputs(
                model, [i.model_dump() for i in parsed.inputs], binary, server.settings.serve_max_rows
            )
            try:
                results = await served.batcher.infer(feeds)
            except Exception as err:  # ONNX Runtime refused the run: one sentence, not a 500
                what = (str(err).splitlines() or [type(err).__name__])[0][:300]
                if "InvalidArgument" in type(err).__name__:
                    raise InputError(f"{model.name}/{model.version} refused the input: {what}") from None
                # a failed run is logged too (inputs, no outputs): the guard counts the new champion's errors
                failed = parsed.id or request.scope.get("modelyard.request_id") or uuid.uuid4().hex
                server.writer.add(model.name, model.version, failed, feeds, {}, {"error": "inference_failed"})
                raise UnavailableError(
                    f"{model.name}/{model.version} failed to run: {what}", code="inference_failed"
                ) from None
    except TimeoutError:
        raise UnavailableError(f"the inference did not finish within {timeout:.0f} s.", code="timeout") from None
    rid = parsed.id or request.scope.get("modelyard.request_id") or uuid.uuid4().hex
    binary_all = bool((parsed.parameters or {}).get("binary_data_output", False))
    wanted = [o.model_dump() for o in parsed.outputs] if parsed.outputs else None
    tensors, chunks = encode_outputs(model, results, wanted, binary_all)
    server.writer.add(model.name, model.version, rid, feeds, results, {})
    metrics = server.metrics
    metrics.inferences.labels(model.name, model.version).inc()
    metrics.inference_latency.labels(model.name, model.version).observe(time.perf_counter() - started)
    answer = orjson.dumps(infer_response(model.name, model.version, rid, tensors))
    if not chunks:
        return Response(answer, media_type="application/json")
    return Response(
        answer + b"".join(chunks),
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(len(answer))},
    )


def _row_tensors(model: Any, kind: str, given: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """One logged row per name as OIP tensors of one row, with the datatype the signature names."""
    import numpy as np

    specs = {t.name: t for t in (model.inputs if kind == "input" else model.outputs)}
    tensors = []
    for tensor_name, value in given.items():
        try:
            shape = [1, *np.shape(value)]
        except ValueError:  # ragged nested lists
            raise InputError(f"{kind} '{tensor_name}' is not a regular array.") from None
        spec = specs.get(tensor_name)
        tensors.append({"name": tensor_name, "datatype": spec and spec.datatype, "shape": shape, "data": value})
    return tensors


def _split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes | None]:
    """The JSON part and the binary part of a request using the binary tensor extension."""
    if header_length is None:
        return raw, None
    if not re.fullmatch(r"[0-9]{1,12}", header_length) or int(header_length) > len(raw):
        raise InputError("Inference-Header-Content-Length is not a length within the body.")
    n = int(header_length)
    return raw[:n], raw[n:]


@ingest.post(
    "/models/{name}/feedback",
    summary="Labels for logged predictions, by request id (all or none)",
    responses=RATE_LIMITED,
)
async def feedback(
    request: Request, name: ModelName, body: FeedbackBody, who: Principal = require("ingest", limit="ingest")
) -> Stored:
    await run_in_threadpool(_server(request).writer.flush, 5.0)  # a prediction served a moment ago is written
    from modelyard.platform.services.ingest import check_feedback

    store = request.app.state.inference_log
    given = [item.label for item in body.labels]
    labels = await run_in_threadpool(check_feedback, request.app.state.platform, name, given)
    pairs = [(item.request_id, label) for item, label in zip(body.labels, labels, strict=True)]
    stored = await run_in_threadpool(store.add_feedback, name, pairs, body.source, who.name)
    return Stored(stored=stored)


@ingest.post(
    "/models/{name}/inferences",
    summary="Predictions made elsewhere (a Triton server, another service), in one batch",
    responses=RATE_LIMITED,
)
async def inferences(
    request: Request, name: ModelName, body: InferencesBody, who: Principal = require("ingest", limit="ingest")
) -> Stored:
    """Stored as the token's (sender: its name) at the server's receive time; `time` is kept as data and
    `source` as a label. Uploads feed drift checks, never the guard: a record that marks a prediction as
    failed (`meta.error`) is refused with the whole batch, as failures count only from what the server
    served and from devices assigned the version."""
    from modelyard.platform.store.db import utcnow
    from modelyard.platform.store.inference import Prediction

    server = _server(request)
    rows = []
    for i, record in enumerate(body.records):
        if record.meta.get("error") is not None:
            raise InputError(
                f"record {i} (request id {record.request_id}) marks a failed prediction (meta.error): an upload "
                "cannot report failures, only the server and devices assigned the version can; nothing was stored.",
                code="failure_not_accepted",
            )
        model = (await server.version(name, record.version)).model
        try:  # the same checks as a served request's, one row each
            for kind, given in (("input", record.inputs), ("output", record.outputs)):
                decode_inputs(model, _row_tensors(model, kind, given), None, 1, kind)
        except InputError as err:
            raise InputError(f"record {i} (request id {record.request_id}): {err}") from None
        rows.append(
            Prediction(
                model=name,
                version=model.version,
                request_id=record.request_id,
                inputs=record.inputs,
                outputs=record.outputs,
                source=body.source,
                meta=record.meta,
                # UTC, as every row: SQLite keeps no offset. Data only: the store stamps the receive time.
                created_at=record.time.astimezone(dt.UTC)
                if record.time and record.time.tzinfo
                else (record.time or utcnow()),
                sender_kind="token",
                sender=who.name,
                attested=False,
            )
        )
    stored = await run_in_threadpool(request.app.state.inference_log.append, rows)
    return Stored(stored=stored)


_INFER_PATH = re.compile(
    r"^/v2/models/(?P<name>[A-Za-z0-9][A-Za-z0-9_.-]{0,199})"
    r"(?:/versions/(?P<version>\d{1,9}|champion|challenger|previous))?/infer$"
)


def fast_route(scope: dict) -> Any:
    """The inference routes' hot path, or None: a POST to an infer URL whose parameters are valid.

    FastAPI's routing, dependency solving and middleware layers cost more per request than the
    model does; the middleware calls this handler directly for those requests. The FastAPI
    routes above declare the same operations (their OpenAPI schema, /docs) and do the same work
    through `_infer`; requests with invalid parameters go to them and get FastAPI's answer.
    """
    if scope.get("method") != "POST":
        return None
    match = _INFER_PATH.match(scope.get("path", ""))
    if match is None:
        return None
    name, version = match["name"], match["version"]
    scope["modelyard.route"] = (
        "/v2/models/{name}/infer" if version is None else "/v2/models/{name}/versions/{version}/infer"
    )

    async def handle(receive: Any, send: Any) -> None:
        request = Request(scope, receive)
        try:
            await authorize(request, "infer")
            server = _server(request)
            choose = (lambda: server.champion(name)) if version is None else (lambda: server.version(name, version))
            response = await _infer(request, server, choose)
        except Exception as err:  # the same answers as the app's exception handlers (errors.py)
            response = await answer_error(request, err)
        await response(scope, receive, send)

    return handle
