"""The control plane's TUF repository: the ceremony, publishing bundles as targets, refreshing, rotating.

What a device would make of the result is asked of python-tuf's own client (the agent's TufClient over
real HTTP, tests/tuf_server.py), not of our reading of the files.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api.metadata import Metadata, Root

from modelyard.edge.tuf_client import TufClient, bootstrap
from modelyard.errors import ConflictError, LifecycleError
from modelyard.platform.fleet.tuf_repo import (
    DeviceTarget,
    FileMetadataStore,
    FleetRepository,
    KeyRing,
    Lifetimes,
    fingerprint,
    group_role,
    parse_download,
    target_path,
)
from tests.tuf_server import CREDENTIAL, Fleet, tuf_fleet


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with tuf_fleet(tmp_path, root_keys=3, threshold=2) as f:
        yield f


def bundle(fleet: Fleet, version: str = "3", data: bytes | None = None, **more: object) -> DeviceTarget:
    data = data if data is not None else f"bundle v{version}".encode()
    return DeviceTarget("cancer", version, "edge-cpu", fleet.site.add_blob(data), len(data), **more)  # type: ignore[arg-type]


def client(fleet: Fleet, home: Path, device_id: str = "cam-07", group: str = "field") -> TufClient:
    bootstrap(home, fleet.url, fleet.ceremony.fingerprint)
    return TufClient(home, fleet.url, device_id=device_id, group=group, credential=CREDENTIAL)


def root_md(fleet: Fleet, version: int) -> Metadata[Root]:
    return Metadata[Root].from_bytes(fleet.repo.store.get("root", version) or b"")


# -- the ceremony --------------------------------------------------------------------------------------------
def test_the_ceremony_makes_offline_root_keys_and_online_role_keys(fleet: Fleet) -> None:
    root = root_md(fleet, 1)

    assert root.signed.roles["root"].threshold == 2 and len(root.signed.roles["root"].keyids) == 3
    assert len(root.signatures) == 3
    assert fleet.ceremony.fingerprint == hashlib.sha256(root.signed_bytes).hexdigest() == fingerprint(root)
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in fleet.ceremony.key_files)
    assert {p.parent for p in fleet.ceremony.key_files} == {fleet.offline}
    # Only the online keys stay on the control plane, one per online role.
    online = {p.stem for p in fleet.repo.keys.folder.glob("*.pem")}
    assert online == {kid for r in ("targets", "snapshot", "timestamp") for kid in root.signed.roles[r].keyids}
    assert not online & set(root.signed.roles["root"].keyids)
    assert root.signed.consistent_snapshot is True


def test_there_is_one_ceremony_per_fleet_and_a_threshold_needs_its_keys(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(ConflictError, match="exists already"):
        FleetRepository.create(fleet.repo.store, fleet.repo.keys, tmp_path / "again")
    with pytest.raises(LifecycleError, match="threshold"):
        FleetRepository.create(
            FileMetadataStore(tmp_path / "m2"), KeyRing(tmp_path / "k2"), tmp_path / "o2", root_keys=1, threshold=2
        )


# -- bundles as targets --------------------------------------------------------------------------------------
def test_a_group_role_lists_each_devices_bundle_and_only_changes_make_versions(fleet: Fleet, tmp_path: Path) -> None:
    v3 = bundle(fleet, rollout_id=7)

    first = fleet.repo.publish_group("field", {"cam-07": v3, "cam-08": v3})
    again = fleet.repo.publish_group("field", {"cam-07": v3})
    seen = client(fleet, tmp_path / "home").desired()

    assert (first, again) == (1, None)
    assert seen is not None and seen.desired()["rollout_id"] == 7
    delegation = fleet.repo.targets().delegations.roles[group_role("field")]  # type: ignore[index,union-attr]
    assert (delegation.paths, delegation.terminating) == (["groups/field/*"], True)


def test_removing_a_devices_target_or_its_group_leaves_it_nothing_to_install(fleet: Fleet, tmp_path: Path) -> None:
    fleet.repo.publish_group("field", {"cam-07": bundle(fleet), "cam-08": bundle(fleet)})
    device = client(fleet, tmp_path / "home")

    fleet.repo.publish_group("field", {"cam-07": None})
    removed = device.desired()
    fleet.repo.remove_group("field")
    other = client(fleet, tmp_path / "home-8", device_id="cam-08").desired()

    assert removed is None
    assert other is None
    assert "group-field" not in fleet.repo.group_roles()


def test_replace_makes_the_mapping_the_whole_group(fleet: Fleet) -> None:
    fleet.repo.publish_group("field", {"cam-07": bundle(fleet), "cam-08": bundle(fleet)})

    fleet.repo.publish_group("field", {"cam-09": bundle(fleet)}, replace=True)

    assert list(fleet.repo.targets("group-field").targets) == [target_path("field", "cam-09")]


def test_a_rollback_is_a_new_targets_version_whose_custom_says_so(fleet: Fleet) -> None:
    fleet.repo.publish_group("field", {"cam-07": bundle(fleet, "5")})

    version = fleet.repo.rollback("field", {"cam-07": bundle(fleet, "2")})

    listed = fleet.repo.targets("group-field").targets[target_path("field", "cam-07")]
    assert version == 2
    assert listed.custom == {
        "model": "cancer", "version": "2", "target": "edge-cpu", "rollout_id": None, "rollback": True,
        "failed_inference_limit": 5,
    }  # fmt: skip


def test_a_devices_desired_entry_becomes_its_target(fleet: Fleet) -> None:
    entry = {
        "model": "cancer", "version": "3", "target": "edge-cpu", "sha256": "ab" * 32, "size": 10,
        "url": "/v1/bundles/cancer/3/edge-cpu", "rollout_id": 4, "rollback": True, "failed_inference_limit": 0,
    }  # fmt: skip

    target = DeviceTarget.from_desired(entry)

    assert target == DeviceTarget("cancer", "3", "edge-cpu", "ab" * 32, 10, 4, True, 0)


def test_snapshot_and_timestamp_pin_every_role_by_version_length_and_hash(fleet: Fleet) -> None:
    fleet.repo.publish_group("field", {"cam-07": bundle(fleet)})
    store = fleet.repo.store

    snapshot = json.loads(store.latest("snapshot") or b"")["signed"]["meta"]
    timestamp = json.loads(store.latest("timestamp") or b"")["signed"]["meta"]["snapshot.json"]

    for name, meta in snapshot.items():
        data = store.published(f"{meta['version']}.{name}") or b""
        assert (meta["length"], meta["hashes"]["sha256"]) == (len(data), hashlib.sha256(data).hexdigest())
    data = store.get("snapshot", timestamp["version"]) or b""
    assert timestamp["hashes"]["sha256"] == hashlib.sha256(data).hexdigest()


# -- freshness: beat's refresh ---------------------------------------------------------------------------------
def test_refresh_re_signs_what_is_past_half_its_lifetime_and_nothing_else(fleet: Fleet) -> None:
    assert fleet.repo.refresh() == []
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=4)  # timestamp (1 d) and snapshot (7 d) are due
    repo = FleetRepository(fleet.repo.store, fleet.repo.keys, clock=lambda: later)

    done = repo.refresh()

    assert done == ["snapshot", "timestamp"]
    assert repo.refresh() == []


def test_lifetimes_are_per_role(tmp_path: Path) -> None:
    with tuf_fleet(tmp_path, lifetimes=Lifetimes(timestamp=dt.timedelta(hours=2))) as f:
        signed = Metadata.from_bytes(f.repo.store.latest("timestamp") or b"").signed
        left = signed.expires - dt.datetime.now(dt.UTC)

    assert dt.timedelta(hours=1) < left <= dt.timedelta(hours=2)


# -- rotation ------------------------------------------------------------------------------------------------
def test_rotating_online_keys_needs_a_threshold_of_root_keys(fleet: Fleet) -> None:
    before = fleet.repo.root().version
    keys_before = sorted(p.name for p in fleet.repo.keys.folder.glob("*.pem"))

    with pytest.raises(LifecycleError, match="threshold"):
        fleet.repo.rotate_online_keys(["timestamp"], fleet.ceremony.key_files[:1])

    assert fleet.repo.root().version == before
    assert sorted(p.name for p in fleet.repo.keys.folder.glob("*.pem")) == keys_before


def test_rotating_online_keys_re_signs_their_roles_and_retires_the_old_keys(fleet: Fleet, tmp_path: Path) -> None:
    fleet.repo.publish_group("field", {"cam-07": bundle(fleet)})
    old = root_md(fleet, 1).signed.roles["targets"].keyids[0]
    device = client(fleet, tmp_path / "home")
    assert device.desired() is not None

    version = fleet.repo.rotate_online_keys(["targets"], fleet.ceremony.key_files[1:])

    new = fleet.repo.root().roles["targets"].keyids
    assert version == 2 and new != [old]
    assert not (fleet.repo.keys.folder / f"{old}.pem").exists()
    assert fleet.repo.targets().delegations.keys.keys() == set(new)  # type: ignore[union-attr]
    assert device.desired() is not None  # the same device, no re-enrollment


def test_rotating_root_is_signed_by_old_and_new_keys_and_retires_the_old(fleet: Fleet, tmp_path: Path) -> None:
    ceremony = fleet.repo.rotate_root(fleet.ceremony.key_files[:2], tmp_path / "new", root_keys=2, threshold=1)

    v1, v2 = root_md(fleet, 1).signed, root_md(fleet, 2)
    assert ceremony.root_version == 2 and ceremony.fingerprint == fingerprint(v2)
    assert v2.signed.get_root_verification_result(v1, v2.signed_bytes, v2.signatures).verified
    assert len(v2.signed.roles["root"].keyids) == 2 and v2.signed.roles["root"].threshold == 1
    with pytest.raises(LifecycleError, match="not one of the keys"):
        fleet.repo.renew_root(fleet.ceremony.key_files[:2])
    assert fleet.repo.renew_root(ceremony.key_files[:1]) == 3


def test_a_failed_root_rotation_leaves_no_new_key_files(fleet: Fleet, tmp_path: Path) -> None:
    with pytest.raises(LifecycleError):
        fleet.repo.rotate_root(fleet.ceremony.key_files[:1], tmp_path / "new")

    assert list((tmp_path / "new").glob("*.pem")) == []
    assert fleet.repo.root().version == 1


# -- the store and the names -------------------------------------------------------------------------------------
def test_the_store_serves_the_names_ngclient_asks_for(fleet: Fleet) -> None:
    store = fleet.repo.store

    assert store.published("timestamp.json") == store.latest("timestamp")
    assert store.published("1.root.json") == store.get("root", 1)
    assert store.published("../1.root.json") is None
    assert store.published("1.root") is None
    with pytest.raises(ConflictError):
        store.put("root", 1, b"{}")


def test_download_paths_name_group_device_and_bundle(fleet: Fleet) -> None:
    sha = "ab" * 32

    assert parse_download(f"groups/field/{sha}.cam.07.tar") == ("field", "cam.07", sha)
    assert parse_download(f"groups/../{sha}.cam.tar") is None
    assert parse_download("groups/field/cam.tar") is None
    with pytest.raises(LifecycleError):
        target_path("field/x", "cam")
