"""A real HTTP control plane for agent tests: the five endpoints of PROTOCOL.md, in memory.

Not a mock of anything the agent imports: the agent talks to it over 127.0.0.1 sockets with
httpx, exactly as it talks to modelyard's control plane. Bundle downloads honour Range and
If-Range, and record the headers they received so tests can prove a download resumed; a bundle
can also be dripped, one byte at a time, as a stalled link would.
"""

from __future__ import annotations

import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class CPState:
    files: dict[str, bytes] = field(default_factory=dict)  # url path -> bytes
    etags: dict[str, str] = field(default_factory=dict)
    desired: dict[str, Any] | None = None
    public_key: str = ""
    revoked: bool = False
    down: bool = False  # answer 503 to everything
    reports_status: int = 200  # answer this (with an error body) to install reports
    ignore_range: bool = False
    extra_bytes: bytes = b""
    drip: dict[str, float] = field(default_factory=dict)  # url path -> seconds between single bytes sent
    range_headers: list[str | None] = field(default_factory=list)
    heartbeats: list[dict[str, Any]] = field(default_factory=list)
    reports: list[dict[str, Any]] = field(default_factory=list)
    telemetry: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped_reported: int = 0


class _Handler(BaseHTTPRequestHandler):
    cp: CPState
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _json(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _body(self) -> dict[str, Any]:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)) or b"{}")

    def do_POST(self) -> None:
        cp, body = self.cp, self._body()
        if cp.down:
            return self._json(503, {"error": "down for maintenance.", "code": "unavailable"})
        if self.path == "/v1/devices/enroll":
            return self._json(200, {
                "device_id": body["device_id"], "group": "default", "credential": "secret-" + body["device_id"],
                "public_key": cp.public_key, "heartbeat_seconds": 0.2, "upload_seconds": 0.2, "sample_rate": 1.0,
            })  # fmt: skip
        if cp.revoked or self.headers.get("Authorization", "").split(" ")[-1].startswith("secret-") is False:
            return self._json(401, {"error": "credential unknown or revoked.", "code": "unauthorized"})
        kind = re.fullmatch(r"/v1/devices/[^/]+/(heartbeat|reports|telemetry)", self.path)
        if kind is None:
            return self._json(404, {"error": "no such route.", "code": "not_found"})
        if kind.group(1) == "heartbeat":
            cp.heartbeats.append(body)
            return self._json(200, {"desired": cp.desired, "heartbeat_seconds": 0.2})
        if kind.group(1) == "reports":
            if cp.reports_status != 200:
                return self._json(cp.reports_status, {"error": "reports are failing.", "code": "failing"})
            cp.reports.append(body)
            return self._json(200, {"recorded": True})
        new = [r for r in body["records"] if r["request_id"] not in cp.telemetry]
        cp.telemetry.update({r["request_id"]: r for r in new})
        cp.dropped_reported += body["dropped"]
        return self._json(200, {"stored": len(new), "duplicates": len(body["records"]) - len(new)})

    def do_GET(self) -> None:
        cp = self.cp
        data = cp.files.get(self.path)
        if data is None:
            return self._json(404, {"error": f"no bundle at {self.path}.", "code": "not_found"})
        cp.range_headers.append(self.headers.get("Range"))
        etag = cp.etags.get(self.path, "")
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if_range = self.headers.get("If-Range")
        if match and not cp.ignore_range and (if_range is None or if_range == f'"{etag}"'):
            start = int(match.group(1))
        payload = data[start:] + cp.extra_bytes
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("ETag", f'"{etag}"')
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        pause = cp.drip.get(self.path)
        if pause is None:
            self.wfile.write(payload)
            return None
        for i in range(len(payload)):  # a server (or a link) that gives a byte now and then
            try:
                self.wfile.write(payload[i : i + 1])
                self.wfile.flush()
            except OSError:  # the client gave up
                return None
            time.sleep(pause)
        return None


class FakeControlPlane:
    def __init__(self) -> None:
        self.state = CPState()
        handler = type("Handler", (_Handler,), {"cp": self.state})
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def publish(self, path: str, data: bytes, etag: str) -> None:
        self.state.files[path] = data
        self.state.etags[path] = etag

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
