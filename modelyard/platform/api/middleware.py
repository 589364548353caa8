"""One pure ASGI middleware for every request: its id, the body size limit, metrics and the
structured access log (one JSON line per request, with the request id and the token's name)."""

from __future__ import annotations

import json
import logging
import time
import uuid
from typing import Any

from modelyard.platform.api.errors import BodyTooLarge, body
from modelyard.platform.api.inference import fast_route
from modelyard.platform.serving.metrics import Metrics

access = logging.getLogger("modelyard.access")
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})


class RequestMiddleware:
    def __init__(self, app: Any, metrics: Metrics, max_body: int) -> None:
        self.app = app
        self.metrics = metrics
        self.max_body = max_body

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = time.perf_counter()
        headers = dict(scope.get("headers") or [])
        rid = _request_id(headers.get(b"x-request-id"))
        scope["modelyard.request_id"] = rid
        status = 500
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            status = 413
            await _send_json(send, 413, body(str(BodyTooLarge(self.max_body)), "body_too_large"), rid)
            return self._done(scope, status, started, rid)
        received = 0

        async def limited_receive() -> Any:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:
                    raise BodyTooLarge(self.max_body)
            return message

        async def send_with_id(message: dict) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
            await send(message)

        try:
            fast = fast_route(scope)
            if fast is not None:
                await fast(limited_receive, send_with_id)
            else:
                await self.app(scope, limited_receive, send_with_id)
        finally:
            self._done(scope, status, started, rid)

    def _done(self, scope: dict, status: int, started: float, rid: str) -> None:
        seconds = time.perf_counter() - started
        route = getattr(scope.get("route"), "path", None) or scope.get("modelyard.route") or "unmatched"
        method = scope.get("method", "-")
        method = method if method in METHODS else "other"  # a label per made-up method would grow forever
        self.metrics.requests.labels(method, route, str(status)).inc()
        self.metrics.latency.labels(method, route).observe(seconds)
        if access.isEnabledFor(logging.INFO):
            access.info(
                json.dumps(
                    {
                        "request_id": rid,
                        "method": method,
                        "path": scope.get("path"),
                        "route": route,
                        "status": status,
                        "ms": round(seconds * 1000, 3),
                        "actor": scope.get("modelyard.actor"),
                        "client": (scope.get("client") or ["-"])[0],
                    }
                )
            )


def _request_id(given: bytes | None) -> str:
    if given:
        text = given.decode("latin-1")[:90]  # room for #i on the rows of a batched request
        if text.replace("-", "").replace("_", "").replace(".", "").replace(":", "").isalnum():
            return text
    return uuid.uuid4().hex


async def _send_json(send: Any, status: int, data: dict, rid: str) -> None:
    raw = json.dumps(data).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(raw)).encode()),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": raw})
