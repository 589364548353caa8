"""Every error as one JSON body, `{"error": sentence, "code": stable code}` (the Open Inference
Protocol's `error` field, plus a code clients can branch on), with the status its class means.

Bad input is never a 500; an unexpected failure is a 500 that names the request id to find
in the server log, never a stack trace.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from modelyard import errors as e

log = logging.getLogger("modelyard.api")

STATUS: list[tuple[type[Exception], int]] = [  # first match wins: subclasses before their bases
    (e.NotFoundError, 404),
    (e.AuthError, 401),
    (e.ForbiddenError, 403),
    (e.InputError, 400),
    (e.SpecError, 422),
    (e.DatasetError, 422),
    (e.ArchitectureError, 422),
    (e.LifecycleError, 409),
    (e.ConflictError, 409),
    (e.UnavailableError, 503),
    (e.TransientError, 503),
    (e.RegistryError, 502),
]
HTTP_CODES = {
    400: "bad_request",
    404: "not_found",
    405: "method_not_allowed",
    406: "not_acceptable",
    413: "body_too_large",
    415: "unsupported_media_type",
    429: "rate_limited",
}


class BodyTooLarge(Exception):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the request body is larger than {limit} bytes.")


def status_of(err: e.ModelyardError) -> int:
    from modelyard.platform.store.requests import ClaimLost

    if isinstance(err, ClaimLost):
        return 409
    return next((status for cls, status in STATUS if isinstance(err, cls)), 400)


def body(message: str, code: str) -> dict[str, str]:
    return {"error": message, "code": code}


def describe_validation(err: RequestValidationError) -> str:
    first: dict[str, Any] = err.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or "the body"
    return f"{where}: {first.get('msg', 'is not valid').rstrip('.')}."


async def answer_error(request: Request, err: Exception) -> JSONResponse:
    """The JSON answer to any exception a request raised."""
    if isinstance(err, e.ModelyardError):
        status = status_of(err)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return JSONResponse(body(str(err), err.code), status_code=status, headers=headers)
    if isinstance(err, RequestValidationError):
        return JSONResponse(body(describe_validation(err), "invalid_request"), status_code=422)
    if isinstance(err, HTTPException):
        message = err.detail if isinstance(err.detail, str) else "the request was refused."
        if err.status_code == 404 and message == "Not Found":
            message = f"no route {request.method} {request.url.path}."
        elif err.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}."
        code = HTTP_CODES.get(err.status_code, "http_error")
        return JSONResponse(body(message, code), status_code=err.status_code, headers=err.headers)
    if isinstance(err, BodyTooLarge):
        return JSONResponse(body(str(err), "body_too_large"), status_code=413)
    rid = request.scope.get("modelyard.request_id", "-")
    from modelyard.platform.faults import describe, is_transient

    if is_transient(err):  # the database, the broker or MLflow is down: retry later, not a bug
        log.warning("request %s: %s", rid, describe(err))
        return JSONResponse(
            body(
                f"a service the platform needs is unreachable or busy ({describe(err)}); retry later.",
                "service_unavailable",
            ),
            status_code=503,
        )
    log.error("request %s failed", rid, exc_info=err)
    return JSONResponse(
        body(f"internal error (request id {rid}); the server log has the details.", "internal"), status_code=500
    )


def install(app: FastAPI) -> None:
    for kind in (e.ModelyardError, RequestValidationError, HTTPException, BodyTooLarge, Exception):
        app.add_exception_handler(kind, answer_error)  # type: ignore[arg-type]
