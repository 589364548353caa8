"""The control plane's TUF repository: python-tuf's Metadata API under its `Repository` base class.

Roles (docs/tuf-integration-plan.md says why this shape):

- `root`: offline keys, a threshold of them, made by `create()` (the ceremony) and used again
  only to rotate keys (`rotate_online_keys`, `rotate_root`); the private keys go to a folder the
  operator moves offline. Devices pin its fingerprint, delivered out of band.
- `targets`, `snapshot`, `timestamp`: one online key each, in a `KeyRing` on the control plane.
  Top-level `targets` lists the bundle-signing public key and delegates one role per device group.
- `group-<name>`: a delegated role (online targets key, terminating, paths `groups/<name>/*`)
  listing one target per device, `groups/<name>/<device>.tar`: the bundle that device may run,
  with its length, sha256 and `custom` (model, version, rollout, whether it is a rollback).

Every write is a new version of the role, then `snapshot` and `timestamp` (consistent
snapshots: devices fetch `N.role.json`), under the store's lock. `refresh()` (beat) re-signs
whatever is past half its lifetime, so a fleet left alone never freezes itself.
NOTE: python-tuf says `tuf.repository` is not part of its stable API yet; it is small and pinned.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from securesystemslib.signer import CryptoSigner, Signer
from tuf.api.metadata import (
    DelegatedRole,
    Delegations,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)
from tuf.repository import AbortEdit, Repository

from modelyard.errors import ConflictError, LifecycleError
from modelyard.platform.fleet.tuf_store import (
    FileMetadataStore,
    KeyRing,
    MetadataStore,
    load_root_signers,
    write_root_keys,
)

__all__ = [
    "Ceremony", "DeviceTarget", "FileMetadataStore", "FleetRepository", "KeyRing", "Lifetimes", "MetadataStore",
    "fingerprint", "group_role", "parse_download", "target_path",
]  # fmt: skip

ONLINE = (Targets.type, Snapshot.type, Timestamp.type)
GROUP_PREFIX = "group-"
BUNDLE_KEY_TARGET = "keys/bundle-signing.pem"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_DOWNLOAD = re.compile(r"^groups/(?P<group>[^/]+)/(?P<sha>[0-9a-f]{64})\.(?P<device>[^/]+)\.tar$")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def group_role(group: str) -> str:
    return GROUP_PREFIX + _name(group, "group")


def target_path(group: str, device_id: str) -> str:
    """The path a device looks its bundle up by (the agent builds the same one)."""
    return f"groups/{_name(group, 'group')}/{_name(device_id, 'device id')}.tar"


def parse_download(path: str) -> tuple[str, str, str] | None:
    """(group, device, sha256) of a hash-prefixed target download path, `groups/G/<sha256>.<device>.tar`."""
    m = _DOWNLOAD.match(path)
    if m is None or not NAME.match(m["group"]) or not NAME.match(m["device"]):
        return None
    return m["group"], m["device"], m["sha"]


def fingerprint(root: Metadata[Root] | bytes) -> str:
    """sha256 of the canonical JSON of root's signed part: what the ceremony prints and devices pin."""
    md = Metadata[Root].from_bytes(root) if isinstance(root, bytes) else root
    return hashlib.sha256(md.signed_bytes).hexdigest()


def _name(value: str, what: str) -> str:
    if not NAME.match(value):
        raise LifecycleError(f"{what} '{value[:120]}' is not a name for TUF metadata (letters, digits, '_', '.', '-').")
    return value


@dataclass(frozen=True)
class Lifetimes:
    """How long each role's metadata stays valid; `refresh()` re-signs an online role past half of it."""

    root: dt.timedelta = dt.timedelta(days=365)
    targets: dt.timedelta = dt.timedelta(days=30)
    snapshot: dt.timedelta = dt.timedelta(days=7)
    timestamp: dt.timedelta = dt.timedelta(days=1)

    def of(self, role: str) -> dt.timedelta:
        return getattr(self, role) if role in (Root.type, *ONLINE) else self.targets


@dataclass(frozen=True)
class DeviceTarget:
    """One device's bundle, as its group role lists it (the desired entry, signed)."""

    model: str
    version: str
    target: str
    sha256: str
    size: int
    rollout_id: int | None = None
    rollback: bool = False
    failed_inference_limit: int = 5

    @classmethod
    def from_desired(cls, entry: Mapping[str, Any]) -> DeviceTarget:
        """From a device's `desired` entry in the platform database (devices.desired_entry)."""
        rollout = entry.get("rollout_id")
        return cls(
            str(entry["model"]), str(entry["version"]), str(entry["target"]), str(entry["sha256"]),
            int(entry["size"]), rollout if isinstance(rollout, int) else None, entry.get("rollback") is True,
            int(entry.get("failed_inference_limit", 5)),
        )  # fmt: skip

    def file(self, path: str) -> TargetFile:
        custom = {k: v for k, v in asdict(self).items() if k not in ("sha256", "size")}
        return TargetFile(self.size, {"sha256": self.sha256}, path, {"custom": custom})


@dataclass(frozen=True)
class Ceremony:
    """What `create()` and `rotate_root()` leave: the root's fingerprint and where its private keys went."""

    root_version: int
    fingerprint: str
    threshold: int
    key_files: list[Path] = field(default_factory=list)


# -- the repository ------------------------------------------------------------------------------------------
class FleetRepository(Repository):
    """The fleet's TUF repository over a MetadataStore and a KeyRing; every public method is one publish."""

    def __init__(
        self,
        store: MetadataStore,
        keys: KeyRing,
        lifetimes: Lifetimes | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self.store, self.keys = store, keys
        self.lifetimes = lifetimes or Lifetimes()
        self.clock = clock
        self._root_signers: list[Signer] = []  # set only while a ceremony or a rotation signs root

    # -- the Repository protocol: load, sign, persist -----------------------------------------------------
    def open(self, role: str) -> Metadata:
        data = self.store.latest(role)
        if data is not None:
            return Metadata.from_bytes(data)
        if role == Root.type:
            md: Metadata = Metadata(Root())
        elif role == Snapshot.type:
            md = Metadata(Snapshot(meta={}))  # do_snapshot() fills in every role with its length and hash
        elif role == Timestamp.type:
            md = Metadata(Timestamp())
            md.signed.snapshot_meta.version = 0  # so do_timestamp() takes the first snapshot's full MetaFile
        else:
            md = Metadata(Targets())
        md.signed.version = 0  # close() makes it 1
        return md

    def close(self, role: str, md: Metadata) -> None:
        md.signed.version += 1
        md.signed.expires = self.clock() + self.lifetimes.of(role)
        md.signatures.clear()
        for signer in self._signers(role):
            md.sign(signer, append=True)
        self._verify(role, md)  # never publish what a device would refuse
        self.store.put(role, md.signed.version, md.to_bytes())

    @property
    def targets_infos(self) -> dict[str, MetaFile]:
        roles = [Targets.type, *self.group_roles()]
        return {f"{r}.json": _meta(data) for r in roles if (data := self.store.latest(r)) is not None}

    @property
    def snapshot_info(self) -> MetaFile:
        data = self.store.latest(Snapshot.type)
        if data is None:
            raise LifecycleError("there is no snapshot metadata yet; run the keys ceremony first.")
        return _meta(data)

    def _signers(self, role: str) -> list[Signer]:
        if role == Root.type:
            if not self._root_signers:
                raise LifecycleError("root metadata changes only with the offline root keys (a keys ceremony).")
            return self._root_signers
        delegator: Root | Targets = self.root() if role in ONLINE else self.targets()
        keyids = delegator.get_delegated_role(role).keyids
        return [self.keys.signer(delegator.get_key(kid)) for kid in keyids]

    def _verify(self, role: str, md: Metadata) -> None:
        if role == Root.type:
            previous = self.store.latest(Root.type)
            before = Metadata[Root].from_bytes(previous).signed if previous else None
            ok = bool(md.signed.get_root_verification_result(before, md.signed_bytes, md.signatures))
        else:
            delegator: Root | Targets = self.root() if role in ONLINE else self.targets()
            ok = bool(delegator.get_verification_result(role, md.signed_bytes, md.signatures))
        if not ok:
            raise LifecycleError(
                f"{role} v{md.signed.version} is not signed by a threshold of its keys; not published."
            )

    def group_roles(self) -> list[str]:
        if self.store.latest(Targets.type) is None:
            return []
        delegations = self.targets().delegations
        return list(delegations.roles or {}) if delegations is not None else []

    def _publish(self, *, force: bool = False) -> None:
        self.do_snapshot(force=force)
        self.do_timestamp(force=force)

    # -- the ceremony ------------------------------------------------------------------------------------------
    @classmethod
    def create(
        cls,
        store: MetadataStore,
        keys: KeyRing,
        root_key_folder: Path,
        *,
        root_keys: int = 3,
        threshold: int = 2,
        lifetimes: Lifetimes | None = None,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> Ceremony:
        """Root v1 with `root_keys` new offline keys (any `threshold` of them sign), one online key per
        top-level role, and the first targets, snapshot and timestamp. The root private keys are written to
        `root_key_folder` (mode 0600) for the operator to move offline; the fingerprint is for enrollment."""
        if not 1 <= threshold <= root_keys:
            raise LifecycleError(f"a root threshold of {threshold} needs between {threshold} and 255 root keys.")
        repo = cls(store, keys, lifetimes, clock)
        with store.locked():
            if store.latest(Root.type) is not None:
                raise ConflictError("the fleet's TUF root exists already; rotate its keys instead of creating one.")
            root_signers = [CryptoSigner.generate_ed25519() for _ in range(root_keys)]
            online = {role: CryptoSigner.generate_ed25519() for role in ONLINE}
            files = write_root_keys(Path(root_key_folder), root_signers)
            for signer in online.values():
                keys.add(signer)
            with repo._signing_root(root_signers), repo.edit_root() as root:
                for signer in root_signers:
                    root.add_key(signer.public_key, Root.type)
                root.roles[Root.type].threshold = threshold
                for role, signer in online.items():
                    root.add_key(signer.public_key, role)
            with repo.edit_targets() as targets:
                targets.delegations = Delegations(keys={}, roles={})
            repo._publish()
            return Ceremony(1, repo.fingerprint(), threshold, files)

    @contextlib.contextmanager
    def _signing_root(self, signers: Sequence[Signer]) -> Iterator[None]:
        self._root_signers = list(signers)
        try:
            yield
        finally:
            self._root_signers = []

    def fingerprint(self) -> str:
        data = self.store.latest(Root.type)
        if data is None:
            raise LifecycleError("the fleet has no TUF root yet; run `modelyard keys ceremony`.")
        return fingerprint(data)

    # -- bundles as targets ----------------------------------------------------------------------------------
    def publish_group(
        self, group: str, assignments: Mapping[str, DeviceTarget | None], *, replace: bool = False
    ) -> int | None:
        """Set the bundle of each device named (None: it may run nothing new); `replace`: the mapping is the
        whole group. One new version of the group's role (then snapshot, timestamp); None when nothing changed."""
        role = group_role(group)
        with self.store.locked():
            self._ensure_delegation(group)
            new_role = self.store.latest(role) is None
            with self.edit_targets(role) as targets:
                before = dict(targets.targets)
                if replace:
                    targets.targets = {}
                for device, wanted in assignments.items():
                    path = target_path(group, device)
                    if wanted is None:
                        targets.targets.pop(path, None)
                    else:
                        targets.targets[path] = wanted.file(path)
                if targets.targets == before and not new_role:
                    raise AbortEdit("no device's bundle changed")
            self._publish()
            data = self.store.latest(role)
            version = Metadata.from_bytes(data).signed.version if data else None
            return None if targets.targets == before and not new_role else version

    def rollback(self, group: str, assignments: Mapping[str, DeviceTarget]) -> int | None:
        """Send devices back to an older bundle: a new signed version whose targets say `rollback: true`."""
        return self.publish_group(group, {d: _as_rollback(t) for d, t in assignments.items()})

    def remove_group(self, group: str) -> None:
        """Stop delegating to the group's role: its devices find no bundle from the next version on."""
        role = group_role(group)
        with self.store.locked():
            with self.edit_targets() as targets:
                if targets.delegations is None or role not in (targets.delegations.roles or {}):
                    raise AbortEdit("no such group")
                del targets.delegations.roles[role]  # type: ignore[union-attr]
            self._publish()

    def publish_bundle_key(self, pem: bytes) -> None:
        """The public key bundles' OpenSSF signatures verify against, as a top-level target (no TOFU)."""
        with self.store.locked():
            with self.edit_targets() as targets:
                wanted = TargetFile.from_data(BUNDLE_KEY_TARGET, pem)
                if targets.targets.get(BUNDLE_KEY_TARGET) == wanted:
                    raise AbortEdit("unchanged")
                targets.targets[BUNDLE_KEY_TARGET] = wanted
            self._publish()

    def _ensure_delegation(self, group: str) -> None:
        role = group_role(group)
        if role in self.group_roles():
            return
        root = self.root()
        keyids = list(root.roles[Targets.type].keyids)
        with self.edit_targets() as targets:
            if targets.delegations is None or targets.delegations.roles is None:
                targets.delegations = Delegations(keys={}, roles={})
            assert targets.delegations.roles is not None
            targets.delegations.roles[role] = DelegatedRole(role, keyids, 1, True, paths=[f"groups/{group}/*"])
            for kid in keyids:
                targets.delegations.keys[kid] = root.get_key(kid)

    # -- keeping it fresh; rotating keys -----------------------------------------------------------------------
    def refresh(self) -> list[str]:
        """Beat: re-sign every online role past half its lifetime (timestamp first of all). The roles re-signed."""
        with self.store.locked():
            now, done = self.clock(), []
            for role in [Targets.type, *self.group_roles()]:
                if self._due(role, now):
                    with self.edit_targets(role):
                        pass
                    done.append(role)
            snapshot, _ = self.do_snapshot(force=self._due(Snapshot.type, now))
            timestamp, _ = self.do_timestamp(force=self._due(Timestamp.type, now))
            return done + [Snapshot.type] * snapshot + [Timestamp.type] * timestamp

    def _due(self, role: str, now: dt.datetime) -> bool:
        return self.open(role).signed.expires - now < self.lifetimes.of(role) / 2

    def rotate_online_keys(self, roles: Sequence[str], root_key_files: Sequence[Path]) -> int:
        """New keys for online roles, in a root version signed by the offline root keys; every role they sign
        is re-signed with the new keys at once. Devices follow without re-enrolling. The new root's version."""
        if bad := [r for r in roles if r not in ONLINE]:
            raise LifecycleError(f"{bad[0]} is not an online role ({', '.join(ONLINE)}).")
        with self.store.locked():
            root = self.root()
            signers = load_root_signers(root_key_files, root)
            new = {role: CryptoSigner.generate_ed25519() for role in roles}
            retired = {kid for role in roles for kid in root.roles[role].keyids}
            for signer in new.values():  # stored before root names them: a crash must not lose a key in use
                self.keys.add(signer)
            try:
                with self._signing_root(signers), self.edit_root() as edited:
                    for role, signer in new.items():
                        for kid in list(edited.roles[role].keyids):
                            edited.revoke_key(kid, role)
                        edited.add_key(signer.public_key, role)
            except BaseException:
                for signer in new.values():
                    self.keys.retire(signer.public_key.keyid)
                raise
            if Targets.type in new:
                key = new[Targets.type].public_key
                with self.edit_targets() as targets:
                    if targets.delegations is not None and targets.delegations.roles is not None:
                        targets.delegations.keys = {key.keyid: key}
                        for delegated in targets.delegations.roles.values():
                            delegated.keyids = [key.keyid]
                for group in self.group_roles():
                    with self.edit_targets(group):
                        pass
            self._publish(force=True)
            still = {kid for role in ONLINE for kid in self.root().roles[role].keyids}
            for kid in retired - still:
                self.keys.retire(kid)
            return self.root().version

    def rotate_root(
        self,
        root_key_files: Sequence[Path],
        new_key_folder: Path,
        *,
        root_keys: int | None = None,
        threshold: int | None = None,
    ) -> Ceremony:
        """Root v+1 with new offline keys, signed by a threshold of the old ones and of the new ones (devices
        check both, then trust only the new); the new private keys go to `new_key_folder`."""
        with self.store.locked():
            root = self.root()
            old = load_root_signers(root_key_files, root)
            count = root_keys or len(root.roles[Root.type].keyids)
            needed = threshold or root.roles[Root.type].threshold
            if not 1 <= needed <= count:
                raise LifecycleError(f"a root threshold of {needed} needs at least {needed} root keys.")
            new = [CryptoSigner.generate_ed25519() for _ in range(count)]
            files = write_root_keys(Path(new_key_folder), new)  # before root names them, as above
            try:
                with self._signing_root([*old, *new]), self.edit_root() as edited:
                    for kid in list(edited.roles[Root.type].keyids):
                        edited.revoke_key(kid, Root.type)
                    for signer in new:
                        edited.add_key(signer.public_key, Root.type)
                    edited.roles[Root.type].threshold = needed
            except BaseException:
                for path in files:
                    path.unlink(missing_ok=True)
                raise
            return Ceremony(self.root().version, self.fingerprint(), needed, files)

    def renew_root(self, root_key_files: Sequence[Path]) -> int:
        """Root v+1 with the same keys and a new expiry (root is offline: beat cannot do this)."""
        with self.store.locked():
            signers = load_root_signers(root_key_files, self.root())
            with self._signing_root(signers), self.edit_root():
                pass
            return self.root().version

    def status(self) -> dict[str, dict[str, Any]]:
        """Each published role: its version and expiry (what `modelyard keys status` shows)."""
        found = {}
        for role in [Root.type, *ONLINE, *self.group_roles()]:
            data = self.store.latest(role)
            if data is not None:
                signed = Metadata.from_bytes(data).signed
                found[role] = {"version": signed.version, "expires": signed.expires.isoformat()}
        return found


def _meta(data: bytes) -> MetaFile:
    version = Metadata.from_bytes(data).signed.version
    return MetaFile(version, len(data), {"sha256": hashlib.sha256(data).hexdigest()})


def _as_rollback(target: DeviceTarget) -> DeviceTarget:
    return replace(target, rollback=True)
