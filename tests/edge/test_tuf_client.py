"""The agent's TUF client against a real control-plane repository (python-tuf on both sides) over real HTTP.

Each attack from TUF's list is staged by the test server (tests/tuf_server.py) between the device and
an honest repository, and must end in a refusal with TUF's own exception as the cause.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata

from modelyard.bundle import check_desired
from modelyard.edge.errors import DownloadError, EdgeError
from modelyard.edge.tuf_client import (
    CredentialFetcher,
    TrustError,
    TufClient,
    TufLimits,
    VersionFloor,
    bootstrap,
    root_fingerprint,
    split_token,
    target_path,
)
from modelyard.platform.fleet import tuf_repo
from modelyard.platform.fleet.tuf_repo import DeviceTarget, FleetRepository
from tests.tuf_server import CREDENTIAL, Fleet, tuf_fleet

BUNDLE = b"pretend this is a bundle.tar " * 100
# Metadata of another version under this one's name: longer than the snapshot's length for it, or another hash.
MIX_AND_MATCH = (tuf_errors.DownloadLengthMismatchError, tuf_errors.LengthOrHashMismatchError)


@pytest.fixture
def fleet(tmp_path: Path) -> Iterator[Fleet]:
    with tuf_fleet(tmp_path, root_keys=3, threshold=2) as f:
        yield f


def assign(fleet: Fleet, device: str = "cam-07", group: str = "field", data: bytes = BUNDLE, **custom: object) -> str:
    sha = fleet.site.add_blob(data)
    wanted = DeviceTarget(str(custom.pop("model", "cancer")), str(custom.pop("version", "3")), "edge-cpu", sha,
                          len(data), **custom)  # type: ignore[arg-type]  # fmt: skip
    fleet.repo.publish_group(group, {device: wanted})
    return sha


def device(fleet: Fleet, home: Path, *, group: str = "field", device_id: str = "cam-07", **limits: float) -> TufClient:
    """An enrolled device: the root pinned by the ceremony's fingerprint, then the credential."""
    bootstrap(home, fleet.url, fleet.ceremony.fingerprint)
    return TufClient(
        home, fleet.url, device_id=device_id, group=group, credential=CREDENTIAL, limits=TufLimits(**limits)
    )


# -- the happy path ---------------------------------------------------------------------------------------------
def test_a_device_installs_exactly_what_its_signed_target_says(fleet: Fleet, tmp_path: Path) -> None:
    sha = assign(fleet, rollout_id=4)
    client = device(fleet, tmp_path / "home")

    target = client.desired()
    assert target is not None
    desired = target.desired()
    path = client.download(target, tmp_path / "home" / "downloads" / f"{sha}.tar")

    assert check_desired(desired) is None
    assert desired | {"url": None} == {
        "model": "cancer", "version": "3", "target": "edge-cpu", "sha256": sha, "size": len(BUNDLE),
        "url": None, "rollout_id": 4, "rollback": False, "failed_inference_limit": 5,
    }  # fmt: skip
    assert path.read_bytes() == BUNDLE


def test_nothing_listed_for_the_device_means_nothing_to_install(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, device="cam-08")

    assert device(fleet, tmp_path / "home").desired() is None


def test_a_rollback_is_a_new_signed_version_not_a_flag(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, version="5")
    client = device(fleet, tmp_path / "home")
    first = client.desired()
    sha = fleet.site.add_blob(b"v2 bundle")
    fleet.repo.rollback("field", {"cam-07": DeviceTarget("cancer", "2", "edge-cpu", sha, 9)})

    then = client.desired()

    assert first is not None and first.desired()["rollback"] is False
    assert then is not None and then.desired()["version"] == "2" and then.desired()["rollback"] is True


# -- enrollment: the root is pinned by its fingerprint, never trusted on first use --------------------------
def test_a_root_whose_fingerprint_does_not_match_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    home = tmp_path / "home"

    with pytest.raises(TrustError, match="refusing to trust"):
        bootstrap(home, fleet.url, "0" * 64)

    assert not (home / "tuf" / "pinned-root.json").exists()


def test_an_impostor_root_with_valid_self_signatures_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    # Its own ceremony: a valid root, just not ours.
    with tuf_fleet(tmp_path / "impostor") as impostor, pytest.raises(TrustError):
        bootstrap(tmp_path / "home", impostor.url, fleet.ceremony.fingerprint)


def test_the_fingerprint_travels_in_the_enrollment_token(fleet: Fleet) -> None:
    secret, fingerprint = split_token(f"enr_abc-_def.{fleet.ceremony.fingerprint}")

    assert (secret, fingerprint) == ("enr_abc-_def", fleet.ceremony.fingerprint)
    assert split_token("enr_abc-_def") == ("enr_abc-_def", None)
    assert fingerprint == root_fingerprint(fleet.repo.store.get("root", 1) or b"")


def test_a_token_made_before_a_root_rotation_still_enrolls_and_follows_the_chain(fleet: Fleet, tmp_path: Path) -> None:
    fleet.repo.rotate_root(fleet.ceremony.key_files[:2], tmp_path / "new-root-keys")
    assign(fleet)

    version = bootstrap(tmp_path / "home", fleet.url, fleet.ceremony.fingerprint)  # v1's fingerprint
    client = TufClient(tmp_path / "home", fleet.url, device_id="cam-07", group="field", credential=CREDENTIAL)

    assert version == 1
    assert client.desired() is not None


# -- freeze, rollback, mix-and-match ------------------------------------------------------------------------------
def test_expired_timestamp_metadata_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    client = device(fleet, tmp_path / "home")
    two_days_ago = dt.datetime.now(dt.UTC) - dt.timedelta(days=2)
    stale = FleetRepository(fleet.repo.store, fleet.repo.keys, clock=lambda: two_days_ago)
    assign(Fleet(stale, fleet.ceremony, fleet.site, fleet.offline))  # timestamp expired a day ago

    with pytest.raises(TrustError) as refused:
        client.desired()

    assert isinstance(refused.value.__cause__, tuf_errors.ExpiredMetadataError)
    assert fleet.repo.refresh() == ["timestamp"]  # beat's refresh re-signs it
    assert client.desired() is not None


def test_older_metadata_replayed_after_a_newer_one_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, version="3")
    old_timestamp = fleet.repo.store.latest("timestamp")
    client = device(fleet, tmp_path / "home")
    assert client.desired() is not None
    assign(fleet, version="4", data=b"v4")
    assert (client.desired() or pytest.fail()).desired()["version"] == "4"

    fleet.site.replace["/v1/tuf/metadata/timestamp.json"] = old_timestamp or b""
    with pytest.raises(TrustError) as refused:
        client.desired()

    assert isinstance(refused.value.__cause__, tuf_errors.BadVersionNumberError)


def test_metadata_of_another_version_served_under_this_versions_name_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, version="3")
    assign(fleet, version="4", data=b"v4")
    old_role = fleet.repo.store.get("group-field", 1) or b""
    fleet.site.replace["/v1/tuf/metadata/2.group-field.json"] = old_role  # the snapshot names v2 by hash

    with pytest.raises(TrustError) as refused:
        device(fleet, tmp_path / "home").desired()

    assert isinstance(refused.value.__cause__, MIX_AND_MATCH)


def test_a_snapshot_from_another_moment_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, version="3")
    old_snapshot = fleet.repo.store.latest("snapshot") or b""
    assign(fleet, version="4", data=b"v4")
    current = fleet.repo.snapshot_info.version
    fleet.site.replace[f"/v1/tuf/metadata/{current}.snapshot.json"] = old_snapshot

    with pytest.raises(TrustError) as refused:
        device(fleet, tmp_path / "home").desired()

    assert isinstance(refused.value.__cause__, MIX_AND_MATCH)


# -- endless data, slow retrieval, the credential ---------------------------------------------------------------
def test_a_target_longer_than_its_signed_length_is_refused_and_never_written(fleet: Fleet, tmp_path: Path) -> None:
    sha = assign(fleet)
    client = device(fleet, tmp_path / "home")
    target = client.desired() or pytest.fail()
    url = f"/v1/tuf/targets/groups/field/{sha}.cam-07.tar"
    fleet.site.replace[url] = BUNDLE + b"and then some more, forever"
    dest = tmp_path / "home" / "downloads" / f"{sha}.tar"

    with pytest.raises(TrustError) as refused:
        client.download(target, dest)

    assert isinstance(refused.value.__cause__, tuf_errors.DownloadLengthMismatchError)
    assert not dest.exists()


def test_a_target_whose_bytes_do_not_hash_to_the_signed_sha256_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    sha = assign(fleet)
    client = device(fleet, tmp_path / "home")
    target = client.desired() or pytest.fail()
    fleet.site.replace[f"/v1/tuf/targets/groups/field/{sha}.cam-07.tar"] = bytes(len(BUNDLE))

    with pytest.raises(TrustError):
        client.download(target, tmp_path / "out.tar")

    assert not (tmp_path / "out.tar").exists()


def test_a_file_fetched_by_the_resumable_downloader_is_judged_by_tuf(fleet: Fleet, tmp_path: Path) -> None:
    sha = assign(fleet)
    client = device(fleet, tmp_path / "home")
    target = client.desired() or pytest.fail()
    good, bad = tmp_path / "good.tar", tmp_path / "bad.tar"
    good.write_bytes(BUNDLE)
    bad.write_bytes(BUNDLE[:-1] + b"!")

    client.verify(target, good)
    with pytest.raises(TrustError):
        client.verify(target, bad)
    assert client.download_url(target) == f"{fleet.url}/v1/tuf/targets/groups/field/{sha}.cam-07.tar"


def test_a_bundle_over_the_device_limit_is_not_even_downloaded(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet)
    client = device(fleet, tmp_path / "home", max_bundle_bytes=100)
    target = client.desired() or pytest.fail()
    asked = len(fleet.site.requests)

    with pytest.raises(TrustError, match="bundle limit"):
        client.download(target, tmp_path / "out.tar")

    assert len(fleet.site.requests) == asked


def test_a_trickling_server_is_abandoned(fleet: Fleet, tmp_path: Path) -> None:
    sha = assign(fleet)
    client = device(fleet, tmp_path / "home", slow_grace_seconds=0.3, min_bytes_per_second=1000)
    target = client.desired() or pytest.fail()
    fleet.site.trickle[f"/v1/tuf/targets/groups/field/{sha}.cam-07.tar"] = 0.05

    with pytest.raises(DownloadError) as abandoned:
        client.download(target, tmp_path / "out.tar")

    assert isinstance(abandoned.value.__cause__, tuf_errors.SlowRetrievalError)


def test_metadata_needs_the_device_credential_and_it_goes_to_the_control_plane_only(
    fleet: Fleet, tmp_path: Path
) -> None:
    assign(fleet)
    bootstrap(tmp_path / "home", fleet.url, fleet.ceremony.fingerprint)
    stranger = TufClient(tmp_path / "home", fleet.url, device_id="cam-07", group="field")
    fetcher = CredentialFetcher(fleet.url, credential=CREDENTIAL)

    with pytest.raises(DownloadError):
        stranger.desired()
    with pytest.raises(tuf_errors.DownloadError):
        fetcher.download_bytes("http://127.0.0.2:9/elsewhere", 10)


# -- wrong software: a device sees only its own target ---------------------------------------------------------
def test_a_target_for_another_group_or_device_is_not_visible(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, group="lab", device="cam-07")  # the same device id, in another group
    assign(fleet, group="field", device="cam-08")
    # A group role that lists a path outside its delegation (a bug, or a forged entry) is never consulted for it.
    sha = fleet.site.add_blob(b"wrong software")
    lab = fleet.repo.targets("group-lab")
    with fleet.repo.edit_targets("group-lab") as role:
        role.targets[target_path("field", "cam-07")] = DeviceTarget("evil", "9", "edge-cpu", sha, 14).file(
            target_path("field", "cam-07")
        )
    fleet.repo.do_snapshot()
    fleet.repo.do_timestamp()

    assert lab.version < fleet.repo.targets("group-lab").version
    assert device(fleet, tmp_path / "home").desired() is None


# -- rotation without re-enrolling ---------------------------------------------------------------------------------
def test_online_keys_and_root_rotate_under_an_enrolled_device(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet, version="3")
    client = device(fleet, tmp_path / "home")
    assert client.desired() is not None

    fleet.repo.rotate_online_keys(["targets", "snapshot", "timestamp"], fleet.ceremony.key_files[:2])
    assign(fleet, version="4", data=b"v4")
    after_online = client.desired()
    ceremony = fleet.repo.rotate_root(fleet.ceremony.key_files[1:], tmp_path / "root-v3", threshold=2)
    fleet.repo.rotate_online_keys(["timestamp"], ceremony.key_files[:2])  # signed by the new root keys only
    assign(fleet, version="5", data=b"v5")
    after_root = client.desired()

    assert after_online is not None and after_online.desired()["version"] == "4"
    assert after_root is not None and after_root.desired()["version"] == "5"
    history = sorted(p.name for p in (tmp_path / "home" / "tuf" / "metadata" / "root_history").iterdir())
    assert history == ["1.root.json", "2.root.json", "3.root.json", "4.root.json"]


def test_metadata_signed_with_a_retired_online_key_is_refused(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet)
    client = device(fleet, tmp_path / "home")
    assert client.desired() is not None
    # Signed with the old timestamp key (which an attacker may hold: that is why it was rotated).
    stale_timestamp = fleet.repo.store.latest("timestamp") or b""
    fleet.repo.rotate_online_keys(["timestamp"], fleet.ceremony.key_files[:2])

    fleet.site.replace["/v1/tuf/metadata/timestamp.json"] = stale_timestamp
    with pytest.raises(TrustError) as refused:
        client.desired()

    assert isinstance(refused.value.__cause__, tuf_errors.RepositoryError)


def test_rotating_a_stolen_timestamp_key_undoes_a_fast_forward(fleet: Fleet, tmp_path: Path) -> None:
    assign(fleet)
    client = device(fleet, tmp_path / "home")
    assert client.desired() is not None
    # Whoever stole the timestamp key signs version 1000: the device trusts it, then refuses the real one.
    forged = Metadata.from_bytes(fleet.repo.store.latest("timestamp") or b"")
    forged.signed.version = 1000
    forged.sign(fleet.repo._signers("timestamp")[0])
    fleet.site.replace["/v1/tuf/metadata/timestamp.json"] = forged.to_bytes()
    assert client.desired() is not None
    del fleet.site.replace["/v1/tuf/metadata/timestamp.json"]
    with pytest.raises(TrustError):
        client.desired()

    fleet.repo.rotate_online_keys(["timestamp"], fleet.ceremony.key_files[:2])

    assert fleet.repo.timestamp().version < 1000
    assert client.desired() is not None


# -- the bundle's own signature key comes through TUF too ----------------------------------------------------
def test_the_bundle_signing_key_is_a_verified_target(fleet: Fleet, tmp_path: Path) -> None:
    pem = b"-----BEGIN PUBLIC KEY-----\nnot a real key\n-----END PUBLIC KEY-----\n"
    fleet.site.add_blob(pem)
    fleet.repo.publish_bundle_key(pem)

    path = device(fleet, tmp_path / "home").bundle_key(tmp_path / "home" / "trust.pem")

    assert path is not None and path.read_bytes() == pem


# -- anti-rollback across models -------------------------------------------------------------------------------
def test_the_version_floor_survives_installing_another_model(tmp_path: Path) -> None:
    floor = VersionFloor(tmp_path)
    floor.record("cancer", "5")
    floor.record("digits", "1")

    older = {"model": "cancer", "version": "3", "rollback": False}
    assert floor.refusal(older) is not None
    assert floor.refusal(older | {"rollback": True}) is None
    assert floor.refusal({"model": "cancer", "version": "5", "rollback": False}) is None
    floor.record("cancer", "3")  # the signed rollback was installed: the floor follows it down
    assert floor.refusal({"model": "cancer", "version": "4", "rollback": False}) is None


# -- both sides speak the same names ------------------------------------------------------------------------------
def test_the_agent_and_the_control_plane_agree_on_paths_and_fingerprints(fleet: Fleet) -> None:
    root = fleet.repo.store.latest("root") or b""

    assert target_path("field", "cam.07") == tuf_repo.target_path("field", "cam.07")
    assert root_fingerprint(root) == tuf_repo.fingerprint(root) == fleet.ceremony.fingerprint
    assert root_fingerprint(b"{}") is None
    assert hashlib.sha256(b"x").hexdigest() != fleet.ceremony.fingerprint


def test_an_unenrolled_home_has_no_trust_to_refresh_from(tmp_path: Path) -> None:
    client = TufClient(tmp_path, "http://127.0.0.1:9", device_id="cam-07", group="field")

    with pytest.raises(EdgeError, match="no pinned root"):
        client.desired()
