"""Local inference on 127.0.0.1 over the Open Inference Protocol (KServe v2 REST).

Routes: GET /v2/health/live, /v2/health/ready, /v2, /v2/models/{name}[/versions/{v}], .../ready;
POST /v2/models/{name}[/versions/{v}]/infer. Errors are {"error": one sentence} with 400, 404 or 503.
A stdlib ThreadingHTTPServer: one device, a handful of local callers, no extra dependency.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

import numpy as np

from modelyard.bundle import Manifest
from modelyard.edge import oip
from modelyard.edge.errors import InferenceError
from modelyard.edge.version import AGENT_VERSION

log = logging.getLogger("modelyard.edge.server")
MODEL_PATH = re.compile(r"^/v2/models/([^/]+)(?:/versions/([^/]+))?(/ready|/infer)?$")
MAX_BODY = 64 * 1024 * 1024


class DataPlane(Protocol):
    def current_manifest(self) -> Manifest | None: ...

    def predict(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...


class _Handler(BaseHTTPRequestHandler):
    plane: DataPlane
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)

    def _send(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        manifest = self.plane.current_manifest()
        if self.path == "/v2/health/live":
            return self._send(200, {"live": True})
        if self.path == "/v2/health/ready":
            return self._send(200 if manifest else 503, {"ready": manifest is not None})
        if self.path == "/v2":
            return self._send(200, {"name": "modelyard-agent", "version": AGENT_VERSION, "extensions": []})
        found = self._model(manifest)
        if found is None:
            return None
        suffix = MODEL_PATH.match(self.path.split("?")[0]).group(3)  # type: ignore[union-attr]
        if suffix == "/ready":
            return self._send(200, {"name": found.model, "ready": True})
        if suffix is None:
            return self._send(200, oip.metadata(found))
        return self._send(405, {"error": f"{self.path} takes POST."})

    def do_POST(self) -> None:
        manifest = self._model(self.plane.current_manifest())
        if manifest is None:
            return None
        if not self.path.endswith("/infer"):
            return self._send(404, {"error": f"no route POST {self.path}."})
        length = int(self.headers.get("Content-Length") or 0)
        if length <= 0 or length > MAX_BODY:
            return self._send(400, {"error": f"the infer request body must be 1 to {MAX_BODY} bytes of JSON."})
        try:
            body = json.loads(self.rfile.read(length))
            request_id, inputs = oip.decode_request(body, manifest)
            wanted = oip.requested_outputs(body, manifest)
            outputs = self.plane.predict(inputs)
        except ValueError:
            return self._send(400, {"error": "the infer request body is not valid JSON."})
        except InferenceError as exc:
            return self._send(400 if exc.client_error else 500, {"error": str(exc)})
        return self._send(200, oip.encode_response(manifest, outputs, request_id, wanted))

    def _model(self, manifest: Manifest | None) -> Manifest | None:
        """The manifest the path names, or None after answering 404/503."""
        match = MODEL_PATH.match(self.path.split("?")[0])
        if not match:
            self._send(404, {"error": f"no route {self.command} {self.path}."})
            return None
        if manifest is None:
            self._send(503, {"error": "no model is installed on this device yet."})
            return None
        name, version = match.group(1), match.group(2)
        if name != manifest.model or (version is not None and version != manifest.version):
            where = f"{name}" + (f" version {version}" if version else "")
            serving = f"{manifest.model}/{manifest.version}"
            self._send(404, {"error": f"model {where} is not served here (serving {serving})."})
            return None
        return manifest


class LocalServer:
    def __init__(self, plane: DataPlane, *, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("Handler", (_Handler,), {"plane": plane})
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return int(self.httpd.server_address[1])

    def start(self) -> None:
        self.thread = threading.Thread(target=self.httpd.serve_forever, name="oip-server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def serve(plane: DataPlane, port: int, on_ready: Callable[[int], None]) -> LocalServer:
    server = LocalServer(plane, port=port)
    server.start()
    on_ready(server.port)
    return server
