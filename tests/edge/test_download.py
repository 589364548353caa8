"""Resumable, size-limited, digest-checked downloads over a real local HTTP server."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from modelyard.edge.client import CHUNK, ControlPlane
from modelyard.edge.errors import DownloadError
from tests.edge.fake_control_plane import FakeControlPlane

REPO = Path(__file__).resolve().parents[2]
URL = "/v1/bundles/tiny/1/edge-cpu"


@pytest.fixture
def cp() -> Iterator[FakeControlPlane]:
    server = FakeControlPlane()
    yield server
    server.close()


def _published(cp: FakeControlPlane, size: int = 4 * CHUNK + 123) -> dict[str, object]:
    data = os.urandom(size)
    sha = hashlib.sha256(data).hexdigest()
    cp.publish(URL, data, sha)
    return {"model": "tiny", "version": "1", "target": "edge-cpu", "sha256": sha, "size": size, "url": URL}


def _client(cp: FakeControlPlane) -> ControlPlane:
    return ControlPlane(cp.url, credential="secret-dev", device_id="dev")


def test_download_writes_the_file_only_once_its_digest_matches(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp)
    dest = tmp_path / "downloads" / f"{desired['sha256']}.tar"

    _client(cp).download(desired, dest, max_bytes=10**8)

    assert hashlib.sha256(dest.read_bytes()).hexdigest() == desired["sha256"]
    assert cp.state.range_headers == [None]
    assert not list(dest.parent.glob("*.part"))


def test_download_resumes_with_a_range_request_after_a_sigkill(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp)
    dest = tmp_path / "downloads" / f"{desired['sha256']}.tar"
    script = (
        "import json, sys; from pathlib import Path; from modelyard.edge.client import ControlPlane\n"
        "d = json.loads(sys.argv[1]); ControlPlane(sys.argv[2], credential='secret-dev', device_id='dev')"
        ".download(d, Path(sys.argv[3]), max_bytes=10**8)\n"
    )
    env = {**os.environ, "MODELYARD_EDGE_FAILPOINT": "mid-download"}
    killed = subprocess.run(
        [sys.executable, "-c", script, json.dumps(desired), cp.url, str(dest)], env=env, cwd=REPO, timeout=60
    )
    assert killed.returncode == -9  # SIGKILL
    part = dest.parent / f"{desired['sha256']}.part"
    have = part.stat().st_size
    assert 0 < have < desired["size"] and not dest.exists()

    env.pop("MODELYARD_EDGE_FAILPOINT")
    subprocess.run(
        [sys.executable, "-c", script, json.dumps(desired), cp.url, str(dest)], env=env, cwd=REPO, check=True
    )

    assert cp.state.range_headers == [None, f"bytes={have}-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == desired["sha256"]


def test_a_server_answering_200_to_a_range_restarts_from_zero(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp)
    dest = tmp_path / f"{desired['sha256']}.tar"
    (tmp_path / f"{desired['sha256']}.part").write_bytes(b"stale bytes of an older file")
    cp.state.ignore_range = True

    _client(cp).download(desired, dest, max_bytes=10**8)

    assert cp.state.range_headers == ["bytes=28-"]
    assert hashlib.sha256(dest.read_bytes()).hexdigest() == desired["sha256"]


def test_more_bytes_than_desired_aborts_and_discards_them(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp, size=1000)
    cp.state.extra_bytes = b"x" * 5000

    with pytest.raises(DownloadError, match=r"bundle tiny/1 \(edge-cpu\): the server sent more than the desired 1000"):
        _client(cp).download(desired, tmp_path / "b.tar", max_bytes=10**8)
    assert not list(tmp_path.iterdir())


def test_a_bundle_over_the_device_limit_is_not_downloaded(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp, size=2000)
    with pytest.raises(DownloadError, match="2000 bytes is over this device's 1000-byte bundle limit"):
        _client(cp).download(desired, tmp_path / "b.tar", max_bytes=1000)
    assert cp.state.range_headers == []


def test_a_digest_mismatch_discards_the_download(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = {**_published(cp, size=1000), "sha256": "0" * 64}
    with pytest.raises(DownloadError, match="does not match the desired sha256 and size"):
        _client(cp).download(desired, tmp_path / "b.tar", max_bytes=10**8)
    assert not list(tmp_path.iterdir())


def test_a_missing_bundle_is_one_sentence(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = {"model": "tiny", "version": "1", "sha256": "0" * 64, "size": 10, "url": "/v1/bundles/none"}
    with pytest.raises(DownloadError, match=r"downloading /v1/bundles/none failed: HTTP 404: no bundle at"):
        _client(cp).download(desired, tmp_path / "b.tar", max_bytes=10**8)


@pytest.mark.parametrize("url", ["{base}" + URL, "//127.0.0.1:1" + URL, URL + "/../../../v1/devices/dev/reports"])
def test_a_url_off_the_control_plane_is_never_fetched(cp: FakeControlPlane, tmp_path: Path, url: str) -> None:
    desired = {**_published(cp), "url": url.format(base=cp.url)}
    with pytest.raises(DownloadError, match="is not a /v1/bundles/ path on the control plane"):
        _client(cp).download(desired, tmp_path / "b.tar", max_bytes=10**8)
    assert cp.state.range_headers == []  # no request left the device, so the credential went nowhere


def test_a_new_download_deletes_the_part_files_of_other_bundles(cp: FakeControlPlane, tmp_path: Path) -> None:
    desired = _published(cp)
    stale = tmp_path / "downloads" / f"{'e' * 64}.part"
    stale.parent.mkdir()
    stale.write_bytes(b"half of a bundle the control plane no longer wants")

    _client(cp).download(desired, tmp_path / "downloads" / f"{desired['sha256']}.tar", max_bytes=10**8)

    assert not stale.exists()
