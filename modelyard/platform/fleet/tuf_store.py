"""Where the fleet's TUF metadata and online keys live: a MetadataStore (every version of every role)
and a KeyRing (the online private keys), plus loading and writing the offline root keys.

`FileMetadataStore` is the embedded-mode store and the layout ngclient fetches (`N.role.json`,
`role.json`), servable as is. Server mode wants a store every API process reads the same bytes
from: a table in the platform database (docs/tuf-integration-plan.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO

from securesystemslib.signer import CryptoSigner, Key, Signer, SSlibKey
from tuf.api.metadata import Root, Timestamp

from modelyard.errors import ConflictError, LifecycleError

_PUBLISHED = re.compile(r"^(?:(?P<version>[1-9][0-9]{0,9})\.)?(?P<role>[A-Za-z0-9][A-Za-z0-9_.-]{0,120})\.json$")


class MetadataStore(ABC):
    """Where published metadata lives: every version of every role, plus the latest of each.

    Files here (`FileMetadataStore`) in embedded mode; a table in the platform database in server
    mode, so every API process serves the same bytes (see the integration plan).
    """

    @abstractmethod
    def latest(self, role: str) -> bytes | None: ...

    @abstractmethod
    def get(self, role: str, version: int) -> bytes | None: ...

    @abstractmethod
    def put(self, role: str, version: int, data: bytes) -> None:
        """Store a new version; an existing (role, version) with other bytes is a ConflictError."""

    @abstractmethod
    def locked(self) -> contextlib.AbstractContextManager[None]:
        """Serialize writers (one new version of a role at a time, across processes)."""

    def published(self, name: str) -> bytes | None:
        """The bytes served as `name` (`timestamp.json`, `root.json`, `3.snapshot.json`, `7.group-field.json`)."""
        m = _PUBLISHED.match(name)
        if m is None:
            return None
        return self.latest(m["role"]) if m["version"] is None else self.get(m["role"], int(m["version"]))


class FileMetadataStore(MetadataStore):
    """`<folder>/<N>.<role>.json` and `<folder>/<role>.json`: the layout ngclient fetches, servable as is."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        # flock is per open file: a second open in this process would wait on the first, so nest in memory.
        self._held = threading.RLock()
        self._depth = 0
        self._lockfile: IO[str] | None = None

    def latest(self, role: str) -> bytes | None:
        return _read(self.folder / f"{role}.json")

    def get(self, role: str, version: int) -> bytes | None:
        return _read(self.folder / f"{version}.{role}.json")

    def put(self, role: str, version: int, data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        if role != Timestamp.type:  # devices only ever ask for timestamp.json; its versions would just pile up
            versioned = self.folder / f"{version}.{role}.json"
            old = _read(versioned)
            if old is not None and old != data:
                raise ConflictError(f"{role} v{version} was published already with other content.")
            _write_atomic(versioned, data)
        _write_atomic(self.folder / f"{role}.json", data)

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        with self._held:
            if self._depth == 0:
                self.folder.mkdir(parents=True, exist_ok=True)
                self._lockfile = (self.folder / ".lock").open("a")
                fcntl.flock(self._lockfile, fcntl.LOCK_EX)
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
                if self._depth == 0 and self._lockfile is not None:
                    fcntl.flock(self._lockfile, fcntl.LOCK_UN)
                    self._lockfile.close()
                    self._lockfile = None


def _read(path: Path) -> bytes | None:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        return None


def _write_atomic(path: Path, data: bytes, mode: int = 0o644) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class KeyRing:
    """The online private keys: `<folder>/<keyid>.pem` (mode 0600), or a signer URI per keyid in
    `<folder>/uris.json` (`awskms:`, `gcpkms:`, `hsm:` ... whatever securesystemslib can load)."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def add(self, signer: CryptoSigner) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        path = self.folder / f"{signer.public_key.keyid}.pem"
        _write_atomic(path, signer.private_bytes, mode=0o600)
        return path

    def retire(self, keyid: str) -> None:
        (self.folder / f"{keyid}.pem").unlink(missing_ok=True)

    def signer(self, key: Key) -> Signer:
        uris = json.loads(_read(self.folder / "uris.json") or b"{}")
        uri = uris.get(key.keyid) or f"file2:{self.folder / f'{key.keyid}.pem'}"
        try:
            return Signer.from_priv_key_uri(uri, key)
        except (OSError, ValueError) as exc:
            raise LifecycleError(f"the online TUF key {key.keyid[:12]}… cannot be loaded from {uri} ({exc}).") from exc


def load_root_signers(paths: Sequence[Path], root: Root) -> list[Signer]:
    """Signers for the root key files given (PEM, PKCS#8), each matched to a key the root lists."""
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    signers: list[Signer] = []
    for path in paths:
        private = load_pem_private_key(Path(path).read_bytes(), None)
        public = SSlibKey.from_crypto(private.public_key())  # type: ignore[arg-type]
        if public.keyid not in root.roles[Root.type].keyids:
            raise LifecycleError(f"{path} is not one of the keys of root v{root.version}.")
        signers.append(CryptoSigner(private, root.keys[public.keyid]))  # type: ignore[arg-type]
    return signers


def write_root_keys(folder: Path, signers: Sequence[CryptoSigner]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    paths = [folder / f"root-{s.public_key.keyid[:16]}.pem" for s in signers]
    if clash := [p for p in paths if p.exists()]:
        raise ConflictError(f"{clash[0]} exists; root keys are never overwritten.")
    for path, signer in zip(paths, signers, strict=True):
        _write_atomic(path, signer.private_bytes, mode=0o600)
    return paths
