"""The control plane's five endpoints (PROTOCOL.md, "HTTP"), and a resumable bundle download.

Each failure is one ControlPlaneError/DownloadError sentence; the caller decides whether to
retry (agent.py backs off). Nothing here retries by itself except a download restarting from
zero when the server ignores the range. A download is bounded in bytes (the size the control
plane announced), in time and in pace (config.DownloadLimits): a server that stalls or drips
fails it, so the install worker is free again for a newer desired bundle.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from modelyard.bundle import check_desired, sha256_file
from modelyard.edge import failpoint
from modelyard.edge.config import DownloadLimits
from modelyard.edge.errors import ControlPlaneError, DownloadError

log = logging.getLogger("modelyard.edge")

TIMEOUT = httpx.Timeout(10.0, read=30.0)
CHUNK = 256 * 1024


class ControlPlane:
    def __init__(
        self,
        server_url: str,
        *,
        credential: str | None = None,
        device_id: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base = server_url.rstrip("/")
        self.device_id = device_id
        self.clock = clock
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

    def download(
        self, desired: dict[str, Any], dest: Path, *, max_bytes: int, limits: DownloadLimits | None = None
    ) -> None:
        """Fetch desired["url"] into dest, resuming `<dest>.part`; dest appears only once its sha256 matches.

        Never more than the announced size; never longer than `limits` allow (DownloadError, the .part kept).
        """
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
            self._fetch_into(part, have, desired, label, limits or DownloadLimits())
        if part.stat().st_size != size or sha256_file(part) != sha:
            part.unlink()
            raise DownloadError(f"{label}: the downloaded file does not match the desired sha256 and size.")
        os.replace(part, dest)

    def _fetch_into(self, part: Path, have: int, desired: dict[str, Any], label: str, limits: DownloadLimits) -> None:
        size, sha = int(desired["size"]), str(desired["sha256"])
        headers = {"Range": f"bytes={have}-", "If-Range": f'"{sha}"'} if have else {}
        pace = _Pace(limits, self.clock, f"{label}: downloading {desired['url']}")
        try:
            with self.http.stream("GET", desired["url"], headers=headers, timeout=pace.timeout) as response:
                if response.status_code == 206 and have:
                    mode = "ab"
                elif response.status_code == 200:
                    mode, have = "wb", 0  # the server ignored or refused the range (If-Range): start over
                else:
                    response.read()
                    raise DownloadError(f"{label}: downloading {desired['url']} failed: {_error_text(response)}")
                too_big = False
                with part.open(mode) as out:
                    unsynced = 0
                    try:
                        # As the bytes arrive (no chunk size): a server dripping them must be seen to drip.
                        for chunk in response.iter_bytes():
                            have += len(chunk)
                            if have > size:
                                too_big = True
                                break
                            out.write(chunk)
                            unsynced += len(chunk)
                            if unsynced >= CHUNK:
                                out.flush()
                                os.fsync(out.fileno())
                                unsynced = 0
                                failpoint.hit("mid-download")
                            pace.check(len(chunk))
                    finally:
                        out.flush()
                        os.fsync(out.fileno())  # what came is kept to resume from, whatever stopped it
                if too_big:
                    part.unlink()
                    raise DownloadError(f"{label}: the server sent more than the desired {size} bytes; aborted.")
        except httpx.ReadTimeout as exc:
            raise DownloadError(
                f"{label}: downloading {desired['url']} brought nothing for {pace.timeout.read:g} s; gave up, "
                "it resumes from there when tried again."
            ) from exc
        except httpx.HTTPError as exc:
            raise DownloadError(
                f"{label}: downloading {desired['url']} was interrupted ({exc or type(exc).__name__}); it will resume."
            ) from exc


class _Pace:
    """Gives up on a download that takes longer than its limits allow, in all or per window."""

    def __init__(self, limits: DownloadLimits, clock: Callable[[], float], what: str) -> None:
        self.limits, self.clock, self.what = limits, clock, what
        self.start = self.mark = clock()
        self.got = self.marked = 0
        self.paced = limits.min_bytes_per_second > 0 and limits.window_seconds > 0
        # A read that brings nothing for a whole window is below any minimum rate: it need not wait longer.
        read = min(TIMEOUT.read or 30.0, limits.window_seconds) if self.paced else TIMEOUT.read
        self.timeout = httpx.Timeout(10.0, read=read)

    def check(self, received: int) -> None:
        now = self.clock()
        self.got += received
        total = self.limits.total_seconds
        if total > 0 and now - self.start > total:
            raise DownloadError(
                f"{self.what} took longer than {total:g} s ({self.got} bytes this time); gave up, "
                "it resumes from there when tried again."
            )
        if self.paced and now - self.mark >= self.limits.window_seconds:
            rate = (self.got - self.marked) / (now - self.mark)
            if rate < self.limits.min_bytes_per_second:
                raise DownloadError(
                    f"{self.what} brought {rate:.0f} bytes/s over the last {now - self.mark:.0f} s, below the "
                    f"{self.limits.min_bytes_per_second:g} bytes/s minimum; gave up, it resumes from there when "
                    "tried again."
                )
            self.mark, self.marked = now, self.got


def _error_text(response: httpx.Response) -> str:
    try:
        body = response.json()
        message = body.get("error") if isinstance(body, dict) else None
    except ValueError:
        message = None
    return f"HTTP {response.status_code}" + (f": {message}" if message else f" from {response.request.url}.")
