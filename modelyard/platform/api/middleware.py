"""One pure ASGI middleware for every request: its id, the body size limit, paths that route exactly,
metrics and the structured access log (one JSON line per request, with the request id and the token's
name); and, below ASGI, the limit on a request's headers (`header_limited_http`, for uvicorn)."""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from typing import Any

from modelyard.platform.api.errors import BodyTooLarge, body
from modelyard.platform.api.inference import fast_route
from modelyard.platform.serving.metrics import Metrics

access = logging.getLogger("modelyard.access")
METHODS = frozenset({"GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"})
# Routes compile to regexes ending in `$`, which in Python also matches before a final newline: a path
# that holds a control character (%0A, %00, ...) is routed nowhere, once here for every route.
CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_HEADER_BYTES = 64 * 1024  # request line and headers; a token is ~50 bytes, a browser's headers ~2 KiB


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
        if CONTROL.search(scope.get("path", "")):
            status = 404
            raw = scope.get("raw_path") or scope["path"].encode("utf-8", "backslashreplace")  # as sent: %0A
            shown = raw.decode("latin-1")[:200].encode("unicode_escape").decode("ascii")
            message = f"no route {scope.get('method', '-')} {shown}: the path holds a control character."
            await _send_json(send, 404, body(message, "not_found"), rid)
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


def header_limited_http(limit: int = MAX_HEADER_BYTES) -> Any:
    """uvicorn's HTTP/1.1 protocol, refusing a request whose request line and headers pass `limit` bytes.

    httptools (uvicorn's default where installed) has no such limit: it buffered a 64 MiB header, and
    the memory stayed. This counts the bytes of a request's head as they arrive, before the parser
    copies them, and answers 431. Without httptools uvicorn uses h11, whose
    h11_max_incomplete_event_size (serve.py) is the same limit.
    """
    try:
        from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
    except ImportError:
        return "h11"

    refusal = json.dumps(body(f"the request's headers are larger than {limit} bytes.", "headers_too_large"))
    answer = (
        "HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
        f"content-length: {len(refusal)}\r\nconnection: close\r\n\r\n{refusal}"
    ).encode()

    class HeaderLimitedProtocol(HttpToolsProtocol):
        head_bytes = 0  # of the request being read, up to the blank line that ends its head
        in_head = True
        tail = b""  # the last 3 bytes seen: the blank line may straddle two reads
        refused = False

        def data_received(self, data: bytes) -> None:
            if self.refused:
                return  # the rest of what the client was sending: dropped until the connection closes
            if self.in_head:
                seen = self.tail + data
                end = seen.find(b"\r\n\r\n")
                self.head_bytes += len(data) if end < 0 else end + 4 - len(self.tail)
                self.tail = seen[-3:]
                if self.head_bytes > limit:
                    return self.refuse()
            super().data_received(data)

        def refuse(self) -> None:
            """Answer 431 and close. Not at once: closing with unread bytes resets the connection, and the
            client, still sending, would never read the answer. So its bytes are dropped for a second."""
            access.warning(
                json.dumps({"status": 431, "code": "headers_too_large", "client": (self.client or ["-"])[0]})
            )
            self.refused = True
            self.transport.write(answer)
            if self.transport.can_write_eof():
                self.transport.write_eof()
            self.loop.call_later(1.0, self.transport.close)

        def on_headers_complete(self) -> None:
            self.in_head = False
            super().on_headers_complete()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self.in_head, self.head_bytes, self.tail = True, 0, b""

    return HeaderLimitedProtocol
