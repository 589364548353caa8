"""The control plane's five endpoints (PROTOCOL.md, "HTTP"), and a resumable bundle download.

Each failure is one ControlPlaneError/DownloadError sentence; the caller decides whether to
retry (agent.py backs off). Nothing here retries by itself except a download restarting from
zero when the server ignores the range.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import httpx

from modelyard.bundle import check_desired, sha256_file
from modelyard.edge import failpoint
from modelyard.edge.errors import ControlPlaneError, DownloadError

log = logging.getLogger("modelyard.edge")

TIMEOUT = httpx.Timeout(10.0, read=30.0)
CHUNK = 256 * 1024


class ControlPlane:
    def __init__(self, server_url: str, *, credential: str | None = None, device_id: str | None = None) -> None:
        self.base = server_url.rstrip("/")
        self.device_id = device_id
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=TIMEOUT, follow_redirects=False)

    def close(self) -> None:
        self.http.close()

    def _post(self, path: str, body: dict[str, Any], what: str) -> dict[str, Any]:
        try:
            response = self.http.post(path, json=body)
        except httpx.HTTPError as exc:
            raise ControlPlaneError(f"{what}: the control plane at {self.base} could not be reached ({exc}).") from exc
        if response.status_code != 200:
            raise ControlPlaneError(f"{what}: {_error_text(response)}", status=response.status_code)
        try:
            data = response.json()
        except ValueError as exc:
            raise ControlPlaneError(f"{what}: the control plane answered something that is not JSON.") from exc
        if not isinstance(data, dict):
            raise ControlPlaneError(f"{what}: the control plane answered a JSON value that is not an object.")
        return data

    def enroll(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._post("/v1/devices/enroll", body, "enrollment")

    def heartbeat(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"/v1/devices/{self.device_id}/heartbeat", body, "heartbeat")

    def report(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._post(f"/v1/devices/{self.device_id}/reports", body, "install report")

    def telemetry(self, records: list[dict[str, Any]], dropped: int) -> dict[str, Any]:
        return self._post(
            f"/v1/devices/{self.device_id}/telemetry", {"records": records, "dropped": dropped}, "telemetry"
        )

    def download(self, desired: dict[str, Any], dest: Path, *, max_bytes: int) -> None:
        """Fetch desired["url"] into dest, resuming `<dest>.part`; dest appears only once its sha256 matches."""
        label = f"bundle {desired.get('model')}/{desired.get('version')} ({desired.get('target', '?')})"
        problem = check_desired(desired)
        if problem is not None:  # the installer refuses these first; never fetch another host with the credential
            raise DownloadError(f"{label}: refused {problem}")
        size, sha = int(desired["size"]), str(desired["sha256"])
        if size > max_bytes:
            raise DownloadError(f"{label}: {size} bytes is over this device's {max_bytes}-byte bundle limit.")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.parent / f"{sha}.part"
        # A download of another bundle that never finished (the control plane moved on) would stay forever.
        for stale in dest.parent.glob("*.part"):
            if stale != part:
                try:
                    stale.unlink()
                except OSError as exc:
                    log.warning("could not delete the stale download %s (%s)", stale, exc)
        have = part.stat().st_size if part.exists() else 0
        if have > size:
            part.unlink()
            have = 0
        if have < size:
            self._fetch_into(part, have, desired, label)
        if part.stat().st_size != size or sha256_file(part) != sha:
            part.unlink()
            raise DownloadError(f"{label}: the downloaded file does not match the desired sha256 and size.")
        os.replace(part, dest)

    def _fetch_into(self, part: Path, have: int, desired: dict[str, Any], label: str) -> None:
        size, sha = int(desired["size"]), str(desired["sha256"])
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha}"'} if have else {}
        try:
            with self.http.stream("GET", desired["url"], headers=headers) as response:
                if response.status_code == 206 and have:
                    mode = "ab"
                elif response.status_code == 200:
                    mode, have = "wb", 0  # the server ignored or refused the range (If-Range): start over
                else:
                    response.read()
                    raise DownloadError(f"{label}: downloading {desired['url']} failed: {_error_text(response)}")
                too_big = False
                with part.open(mode) as out:
                    for chunk in response.iter_bytes(CHUNK):
                        have += len(chunk)
                        if have > size:
                            too_big = True
                            break
                        out.write(chunk)
                        out.flush()
                        os.fsync(out.fileno())
                        failpoint.hit("mid-download")
                if too_big:
                    part.unlink()
                    raise DownloadError(f"{label}: the server sent more than the desired {size} bytes; aborted.")
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"{label}: downloading {desired['url']} was interrupted ({exc}); it will resume."
            ) from exc


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return f"HTTP {response.status_code}" + (f": {message}" if message else f" from {response.request.url}.")
