"""A download is bounded in time and pace, over a real local HTTP server (issue 18, item 8)."""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.edge.client import CHUNK, ControlPlane
from modelyard.edge.config import DownloadLimits, Options
from modelyard.edge.errors import DownloadError
from tests.edge.fake_control_plane import FakeControlPlane

URL = "/v1/bundles/tiny/1/edge-cpu"


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    yield server
    server.close()


def _published(cp: FakeControlPlane, size: int = 8 * CHUNK) -> dict[str, object]:
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    cp.publish(URL, data, sha)
    return {"model": "tiny", "version": "1", "target": "edge-cpu", "sha256": sha, "size": size, "url": URL}


class Ticks:
    """A clock that moves `step` seconds each time it is read."""

    def __init__(self, step: float) -> None:
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


def test_a_dripping_server_fails_the_download_by_the_minimum_rate(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp, size=5000)
    cp.state.drip[URL] = 0.05  # 20 bytes/s
    client = ControlPlane(cp.url, credential="secret-dev", device_id="dev")
    limits = DownloadLimits(total_seconds=60, min_bytes_per_second=1000, window_seconds=0.5)
    started = time.monotonic()

    with pytest.raises(DownloadError, match=r"bytes/s over the last \d+ s, below the 1000 bytes/s minimum; gave up"):
        client.download(desired, tmp_path / "b.tar", max_bytes=10**8, limits=limits)

    assert time.monotonic() - started < 5
    part = tmp_path / f"{desired['sha256']}.part"
    assert 0 < part.stat().st_size < 5000, "what came is kept: the next try resumes from it"


def test_a_server_that_sends_nothing_fails_the_download_within_a_window(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp, size=5000)
    cp.state.drip[URL] = 3.0  # a byte, then nothing for longer than the window
    client = ControlPlane(cp.url, credential="secret-dev", device_id="dev")
    started = time.monotonic()

    with pytest.raises(DownloadError, match=r"brought nothing for 0.5 s; gave up"):
        client.download(desired, tmp_path / "b.tar", max_bytes=10**8, limits=DownloadLimits(60, 1000, 0.5))

    assert time.monotonic() - started < 3


def test_a_download_longer_than_its_total_limit_gives_up(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp)
    client = ControlPlane(cp.url, credential="secret-dev", device_id="dev", clock=Ticks(step=100.0))
    limits = DownloadLimits(total_seconds=250, min_bytes_per_second=0, window_seconds=0)

    with pytest.raises(DownloadError, match=r"took longer than 250 s \(\d+ bytes this time\); gave up"):
        client.download(desired, tmp_path / "b.tar", max_bytes=10**8, limits=limits)


def test_limits_off_let_a_slow_download_finish(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp)
    client = ControlPlane(cp.url, credential="secret-dev", device_id="dev", clock=Ticks(step=1000.0))

    client.download(desired, tmp_path / "b.tar", max_bytes=10**8, limits=DownloadLimits(0, 0, 0))

    assert hashlib.sha256((tmp_path / "b.tar").read_bytes()).hexdigest() == desired["sha256"]


def test_the_agent_has_download_and_probation_limits_by_default() -> None:
    options = Options()
    assert options.download_limits() == DownloadLimits(1800.0, 1024.0, 60.0)
    rules = options.probation_rules()
    assert (rules.successes, rules.quiet_seconds, rules.max_failures) == (20, 300.0, 3)
