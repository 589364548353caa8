"""A real HTTP server for TUF tests: the control plane's `/v1/tuf/...` routes over a FileMetadataStore,
with the misbehaviours an attacker between device and control plane would try.

- `/v1/tuf/metadata/<name>`: the store's published bytes (root files without a credential, the rest
  with the device credential, as the API is meant to);
- `/v1/tuf/targets/<dir>/<sha256>.<name>`: content-addressed blobs (bundles by their checksum);
- `site.replace[url_path] = bytes` serves other bytes (a rollback, a mix-and-match, endless data);
- `site.trickle[url_path] = seconds` sends a body one byte per `seconds` (slow retrieval).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from modelyard.platform.fleet.tuf_repo import Ceremony, FileMetadataStore, FleetRepository, KeyRing

CREDENTIAL = "dev_test-credential"
_BLOB = re.compile(r"^(?P<sha>[0-9a-f]{64})\.")


@dataclass
class Site:
    store: FileMetadataStore
    url: str = ""
    blobs: dict[str, bytes] = field(default_factory=dict)
    replace: dict[str, bytes] = field(default_factory=dict)
    trickle: dict[str, float] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    def add_blob(self, data: bytes) -> str:
        sha = hashlib.sha256(data).hexdigest()
        self.blobs[sha] = data
        return sha

    def body(self, path: str, authorized: bool) -> tuple[int, bytes]:
        if path in self.replace:
            return 200, self.replace[path]
        if path.startswith("/v1/tuf/metadata/"):
            name = path.removeprefix("/v1/tuf/metadata/")
            if not authorized and not name.endswith("root.json"):
                return 401, b'{"error": "this endpoint needs the device credential"}'
            data = self.store.published(name)
            return (404, b"") if data is None else (200, data)
        if path.startswith("/v1/tuf/targets/"):
            if not authorized:
                return 401, b""
            m = _BLOB.match(path.rsplit("/", 1)[-1])
            data = self.blobs.get(m["sha"]) if m else None
            return (404, b"") if data is None else (200, data)
        return 404, b""


def _handler(site: Site) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            site.requests.append(self.path)
            authorized = self.headers.get("Authorization") == f"Bearer {CREDENTIAL}"
            status, data = site.body(self.path, authorized)
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            delay = site.trickle.get(self.path)
            try:
                if delay is None:
                    self.wfile.write(data)
                    return
                for i in range(len(data)):
                    self.wfile.write(data[i : i + 1])
                    self.wfile.flush()
                    time.sleep(delay)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the client gave up: what a slow-retrieval test wants

        def log_message(self, *args: object) -> None:
            pass

    return Handler


@contextlib.contextmanager
def serve(store: FileMetadataStore) -> Iterator[Site]:
    site = Site(store)
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(site))
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    site.url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        yield site
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Fleet:
    """A control plane's TUF repository after its ceremony, served over HTTP."""

    repo: FleetRepository
    ceremony: Ceremony
    site: Site
    offline: Path

    @property
    def url(self) -> str:
        return self.site.url


@contextlib.contextmanager
def tuf_fleet(folder: Path, **create: object) -> Iterator[Fleet]:
    store = FileMetadataStore(folder / "cp" / "metadata")
    keys = KeyRing(folder / "cp" / "keys")
    offline = folder / "offline-root-keys"
    ceremony = FleetRepository.create(store, keys, offline, **create)  # type: ignore[arg-type]
    with serve(store) as site:
        yield Fleet(FleetRepository(store, keys), ceremony, site, offline)
