"""The agent's side of TUF: python-tuf's ngclient decides which bundle this device may install.

The control plane publishes TUF metadata (modelyard/platform/fleet/tuf_repo.py): one root (offline
keys), online targets, snapshot and timestamp roles, and a delegated role per device group that
lists one target per device, `groups/<group>/<device>.tar`, with the bundle's length, sha256 and
`custom` fields (model, version, rollout, rollback). The agent trusts nothing else about an update:

- `bootstrap()` (enrollment): fetch root metadata and keep it only if the sha256 of its canonical
  signed part equals the fingerprint delivered out of band (in the enrollment token): never TOFU;
- `TufClient.desired()`: a fresh `Updater` from the pinned root walks root versions forward, then
  timestamp, snapshot, targets and the group's role (expiry, versions, hashes, thresholds: ngclient's
  checks, not ours), and looks up this device's target;
- `TufClient.download()`: fetched within the target's signed length, checked against its hashes;
- `VersionFloor`: per model, the version last installed; an older one needs a signed `rollback`.

`<home>/tuf/`: `pinned-root.json`, `metadata/` (ngclient's cache), `spool/` (downloads before they
verify), `versions.json` (the floor).
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import httpx
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata, Root, TargetFile
from tuf.ngclient import FetcherInterface, Updater, UpdaterConfig

from modelyard.bundle import check_desired
from modelyard.edge.errors import DownloadError, EdgeError
from modelyard.edge.slots import read_json, write_json_atomic

METADATA_PATH = "/v1/tuf/metadata/"
TARGETS_PATH = "/v1/tuf/targets/"
FINGERPRINT = re.compile(r"^[0-9a-f]{64}$")
BUNDLE_KEY_TARGET = "keys/bundle-signing.pem"


class TrustError(EdgeError):
    """Update metadata or a target failed TUF's checks (or the pinned root's): refused, never used."""

    def __init__(self, message: str, *, stage: str = "verify") -> None:
        super().__init__(message, stage=stage, outcome="refused")


@dataclass(frozen=True)
class TufLimits:
    """Bounds on what the control plane may make this device download, and how slowly."""

    max_bundle_bytes: int = 1024**3
    root_max_bytes: int = 512 * 1024
    timestamp_max_bytes: int = 16 * 1024
    snapshot_max_bytes: int = 1024**2
    targets_max_bytes: int = 8 * 1024**2
    max_root_rotations: int = 32
    connect_seconds: float = 10.0
    read_seconds: float = 30.0  # the longest silence between two bytes
    min_bytes_per_second: float = 4096.0  # after the grace period, a slower average is a slow-retrieval attack
    slow_grace_seconds: float = 30.0
    max_download_seconds: float = 3600.0

    def updater_config(self) -> UpdaterConfig:
        return UpdaterConfig(
            max_root_rotations=self.max_root_rotations,
            root_max_length=self.root_max_bytes,
            timestamp_max_length=self.timestamp_max_bytes,
            snapshot_max_length=self.snapshot_max_bytes,
            targets_max_length=self.targets_max_bytes,
            app_user_agent="modelyard-agent",
        )


def target_path(group: str, device_id: str) -> str:
    """This device's target (the control plane names it the same way: tuf_repo.target_path)."""
    return f"groups/{group}/{device_id}.tar"


def split_token(token: str) -> tuple[str, str | None]:
    """(the enrollment secret, the root fingerprint) of `enr_<secret>.<sha256 hex>`; no suffix, no fingerprint."""
    secret, sep, tail = token.rpartition(".")
    return (secret, tail) if sep and FINGERPRINT.match(tail) else (token, None)


def root_fingerprint(data: bytes) -> str | None:
    """sha256 of the canonical JSON of root metadata's signed part; None if `data` is not root metadata."""
    try:
        md = Metadata.from_bytes(data)
    except Exception:  # anything unparsable is simply not the pinned root
        return None
    return hashlib.sha256(md.signed_bytes).hexdigest() if isinstance(md.signed, Root) else None


class CredentialFetcher(FetcherInterface):
    """ngclient's network I/O over httpx: the device credential, timeouts, and a floor on the average
    rate, so a server that trickles bytes cannot hold the update loop (slow retrieval)."""

    def __init__(self, base_url: str, *, credential: str | None = None, limits: TufLimits | None = None,
                 spool: Path | None = None, transport: httpx.BaseTransport | None = None) -> None:  # fmt: skip
        self.base = base_url.rstrip("/") + "/"
        self.limits = limits or TufLimits()
        self.spool = spool
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        timeout = httpx.Timeout(self.limits.connect_seconds, read=self.limits.read_seconds)
        self.http = httpx.Client(headers=headers, timeout=timeout, follow_redirects=False, transport=transport)

    def close(self) -> None:
        self.http.close()

    def _fetch(self, url: str) -> Iterator[bytes]:
        if not url.startswith(self.base):  # the credential goes to the control plane only
            raise tuf_errors.DownloadError(f"{url} is not on the control plane {self.base}")
        try:
            response = self.http.send(self.http.build_request("GET", url), stream=True)
        except httpx.TimeoutException as exc:
            raise tuf_errors.SlowRetrievalError(f"{url}: no answer within the timeout") from exc
        if response.status_code != 200:
            response.close()
            raise tuf_errors.DownloadHTTPError(f"HTTP {response.status_code} from {url}", response.status_code)
        return self._chunks(response, url)

    def _chunks(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        start, received, lim = time.monotonic(), 0, self.limits
        try:
            for chunk in response.iter_bytes():
                received += len(chunk)
                elapsed = time.monotonic() - start
                slow = elapsed > lim.slow_grace_seconds and received / elapsed < lim.min_bytes_per_second
                if slow or elapsed > lim.max_download_seconds:
                    raise tuf_errors.SlowRetrievalError(f"{url}: {received} bytes in {elapsed:.0f} s")
                yield chunk
        except httpx.TimeoutException as exc:
            raise tuf_errors.SlowRetrievalError(f"{url}: silent for {lim.read_seconds:.0f} s") from exc
        except httpx.HTTPError as exc:
            raise tuf_errors.DownloadError(f"{url}: {exc}") from exc
        finally:
            response.close()

    @contextlib.contextmanager
    def download_file(self, url: str, max_length: int) -> Iterator[IO[bytes]]:
        """As FetcherInterface's, but spooled under the agent home (a device's /tmp may be a small tmpfs)."""
        if self.spool is not None:
            self.spool.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=self.spool) as spooled:
            received = 0
            for chunk in self.fetch(url):
                received += len(chunk)
                if received > max_length:  # endless data: never more than the signed length
                    raise tuf_errors.DownloadLengthMismatchError(f"{url}: more than the {max_length} bytes allowed")
                spooled.write(chunk)
            spooled.seek(0)
            yield spooled


@dataclass(frozen=True)
class VerifiedTarget:
    """This device's target, as the verified metadata lists it."""

    info: TargetFile

    @property
    def custom(self) -> dict[str, Any]:
        custom = self.info.custom
        return custom if isinstance(custom, dict) else {}

    def desired(self) -> dict[str, Any]:
        """The installer's desired entry (PROTOCOL.md 2), every field from signed metadata."""
        c = self.custom
        entry = {
            "model": c.get("model"), "version": c.get("version"), "target": c.get("target"),
            "sha256": self.info.hashes.get("sha256"), "size": self.info.length,
            "url": f"/v1/bundles/{c.get('model')}/{c.get('version')}/{c.get('target')}",
            "rollout_id": c.get("rollout_id"), "rollback": c.get("rollback", False),
            "failed_inference_limit": c.get("failed_inference_limit"),
        }  # fmt: skip
        problem = check_desired(entry)
        if problem is not None:  # signed, but still never a path or a URL before it is checked
            raise TrustError(f"the signed target {self.info.path} is malformed: {problem}")
        return entry


@contextlib.contextmanager
def _trusting(what: str) -> Iterator[None]:
    """TUF's exceptions as the agent's one-sentence errors (the TUF one stays as __cause__)."""
    try:
        yield
    except tuf_errors.DownloadLengthMismatchError as exc:
        raise TrustError(f"{what}: the control plane sent more than the signed length allows ({exc}).") from exc
    except tuf_errors.SlowRetrievalError as exc:
        raise DownloadError(f"{what}: the download was too slow and was abandoned ({exc}).") from exc
    except tuf_errors.DownloadError as exc:
        raise DownloadError(f"{what}: {exc or type(exc).__name__}; it will be tried again.") from exc
    except tuf_errors.RepositoryError as exc:
        kind = type(exc).__name__
        raise TrustError(
            f"{what}: the update metadata failed TUF's checks ({kind}: {exc}); nothing installed."
        ) from exc


def bootstrap(home: Path, server_url: str, fingerprint: str, *, fetcher: CredentialFetcher | None = None,
              limits: TufLimits | None = None) -> int:  # fmt: skip
    """Pin the root whose fingerprint was delivered out of band; its version. Nothing is pinned otherwise.

    The newest root is tried first, then each version from 1 (a token made before a root rotation
    carries an older root's fingerprint; the chain from it to the newest is verified at refresh).
    """
    if not FINGERPRINT.match(fingerprint):
        raise TrustError(f"root fingerprint {fingerprint[:80]!r} is not 64 lowercase hex digits.")
    limits = limits or TufLimits()
    fetcher = fetcher or CredentialFetcher(server_url, limits=limits)
    base = server_url.rstrip("/") + METADATA_PATH
    found: bytes | None = None
    with _trusting("fetching the root metadata"):
        newest = fetcher.download_bytes(base + "root.json", limits.root_max_bytes)
        if root_fingerprint(newest) == fingerprint:
            found = newest
        else:
            count = _unverified_version(newest)
            for version in range(1, min(count, limits.max_root_rotations + 1)):
                data = fetcher.download_bytes(f"{base}{version}.root.json", limits.root_max_bytes)
                if root_fingerprint(data) == fingerprint:
                    found = data
                    break
    if found is None:
        raise TrustError(
            f"no root metadata at {base} has the fingerprint {fingerprint[:16]}… from the enrollment token; "
            "refusing to trust this control plane.",
            stage="download",
        )
    folder = Path(home) / "tuf"
    with _trusting("checking the pinned root"):  # its own signatures must meet its threshold
        Updater(str(_fresh(folder / "metadata")), base, fetcher=fetcher, bootstrap=found)
    write_json_atomic(folder / "pinned.json", {"fingerprint": fingerprint})
    (folder / "pinned-root.json").write_bytes(found)
    return int(Metadata.from_bytes(found).signed.version)


def _unverified_version(data: bytes) -> int:
    # Only bounds how many versions bootstrap() tries; nothing is trusted because of it.
    try:
        return int(Metadata.from_bytes(data).signed.version)
    except Exception:
        return 1


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for stale in folder.glob("*.json"):  # metadata of a control plane this home trusted before
        stale.unlink()
    for stale in (folder / "root_history").glob("*.json"):
        stale.unlink()
    return folder


class TufClient:
    """One device's view of the fleet's TUF repository (needs a pinned root: `bootstrap()`)."""

    def __init__(self, home: Path, server_url: str, *, device_id: str, group: str, credential: str | None = None,
                 limits: TufLimits | None = None, fetcher: CredentialFetcher | None = None) -> None:  # fmt: skip
        self.folder = Path(home) / "tuf"
        self.limits = limits or TufLimits()
        base = server_url.rstrip("/")
        self.metadata_url, self.targets_url = base + METADATA_PATH, base + TARGETS_PATH
        self.path = target_path(group, device_id)
        # ngclient wants one Updater at a time per metadata folder (it rewrites root.json and the cache):
        # the poll loop refreshes while the install worker may be downloading.
        self._metadata = threading.Lock()
        self.fetcher = fetcher or CredentialFetcher(
            server_url, credential=credential, limits=self.limits, spool=self.folder / "spool"
        )

    def _updater(self) -> Updater:
        try:
            pinned = (self.folder / "pinned-root.json").read_bytes()
        except FileNotFoundError as exc:
            raise EdgeError(f"{self.folder} holds no pinned root; enroll this device again.") from exc
        (self.folder / "metadata").mkdir(parents=True, exist_ok=True)
        return Updater(
            str(self.folder / "metadata"), self.metadata_url, None, self.targets_url,
            fetcher=self.fetcher, config=self.limits.updater_config(), bootstrap=pinned,
        )  # fmt: skip

    def desired(self) -> VerifiedTarget | None:
        """Refresh the metadata; this device's target, or None when it lists none for it."""
        with _trusting("refreshing the update metadata"), self._metadata:
            updater = self._updater()
            updater.refresh()
            info = updater.get_targetinfo(self.path)
        return None if info is None else VerifiedTarget(info)

    def download(self, target: VerifiedTarget, dest: Path) -> Path:
        """Download `target` to `dest` (written only once its length and hashes verified); `dest`."""
        if target.info.length > self.limits.max_bundle_bytes:
            raise TrustError(
                f"{target.info.path} is {target.info.length} bytes, over this device's "
                f"{self.limits.max_bundle_bytes}-byte bundle limit.",
                stage="download",
            )
        with _trusting(f"downloading {target.info.path}"):
            with self._metadata:  # its target info came from a refresh: no second one needed
                updater = self._updater()
            if updater.find_cached_target(target.info, str(dest)) is None:
                dest.parent.mkdir(parents=True, exist_ok=True)
                updater.download_target(target.info, str(dest))
        return dest

    def download_url(self, target: VerifiedTarget) -> str:
        """Where the target's bytes are (consistent snapshots: `<dir>/<sha256>.<name>`), for a resumable
        download of the agent's own (client.py); `verify()` then lets TUF judge the file."""
        folder, sep, name = target.info.path.rpartition("/")
        return f"{self.targets_url}{folder}{sep}{target.info.hashes['sha256']}.{name}"

    def verify(self, target: VerifiedTarget, path: Path) -> None:
        """Refuse a file (downloaded by other means) whose length or hashes are not the signed ones."""
        with _trusting(f"verifying {path.name}"), path.open("rb") as f:
            target.info.verify_length_and_hashes(f)

    def bundle_key(self, dest: Path) -> Path | None:
        """The public key bundles' OpenSSF signatures verify against, fetched as a TUF target; None if unlisted."""
        with _trusting("fetching the bundle-signing key"):
            with self._metadata:
                updater = self._updater()
                updater.refresh()
                info = updater.get_targetinfo(BUNDLE_KEY_TARGET)
            if info is None:
                return None
            dest.parent.mkdir(parents=True, exist_ok=True)
            updater.download_target(info, str(dest))
        return dest

    def close(self) -> None:
        self.fetcher.close()


class VersionFloor:
    """Anti-rollback across model changes: per model, the version this device installed last.

    A bundle older than that is refused unless its signed target says `rollback: true`. The file
    is per device and is never reset when another model is installed in between.
    """

    def __init__(self, home: Path) -> None:
        self.path = Path(home) / "tuf" / "versions.json"

    def load(self) -> dict[str, int]:
        data = read_json(self.path)
        return {str(k): int(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def refusal(self, desired: dict[str, Any]) -> str | None:
        """Why `desired` (a checked entry) may not be installed, or None."""
        floor = self.load().get(str(desired["model"]))
        version = int(desired["version"])
        if floor is None or version >= floor or desired.get("rollback") is True:
            return None
        return (
            f"bundle {desired['model']}/{version} is older than version {floor} this device installed before, "
            "and its signed target is not marked as a rollback."
        )

    def record(self, model: str, version: str) -> None:
        """After a committed install: the floor is what runs now (a signed rollback lowers it)."""
        floors = self.load()
        floors[model] = int(version)
        write_json_atomic(self.path, floors)
