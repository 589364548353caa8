"""Forged evidence against a real `modelyard run api` on 127.0.0.1: real tokens (one per scope, made through
the token store), real device credentials (enrolled over HTTP with a one-time token), models trained,
exported and bundled for real. Nobody but the server itself and the devices assigned a version can supply
the evidence the guard rolls a champion back on; client-chosen times order nothing; a device credential
reaches only what its group runs; ingest and telemetry are held to a rate per sender.

The guard runs in this process, on the same platform database, with an injected `now`: no waiting for beat.
"""

from __future__ import annotations

import datetime as dt
import os
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.conftest import tiny_spec
from tests.integration.conftest import _free_port, _spawn

pytestmark = pytest.mark.integration

MODEL = "digits"
BURST = 8  # the API's ingest and telemetry bursts here (a slow refill: 0.5 requests a second)
LIMITS = {
    "MODELYARD_INGEST_RATE_PER_SECOND": "0.5",
    "MODELYARD_INGEST_BURST": str(BURST),
    "MODELYARD_TELEMETRY_RATE_PER_SECOND": "0.5",
    "MODELYARD_TELEMETRY_BURST": str(BURST),
}
IMAGE = [[[0.5] for _ in range(8)] for _ in range(8)]  # one 8x8x1 row of `images`
OUTPUT = [0.1] * 10


class Plane:
    """The API process, the platform it shares a database with, and ways to act as each kind of sender."""

    def __init__(self, url: str, platform: Any, tokens: dict[str, str]) -> None:
        self.url, self.platform, self.tokens = url, platform, tokens
        self._made = 0

    def call(self, method: str, path: str, credential: str | None, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {credential}"} if credential else {}
        return requests.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def token(self, *scopes: str) -> tuple[str, str]:
        """A new token (its own rate bucket) made through the token store: (name, token)."""
        from modelyard.platform.store.tokens import TokenStore

        self._made += 1
        name = f"t{self._made}-{'-'.join(scopes)}"
        return name, TokenStore(self.platform.settings).create(name, list(scopes), "test")

    def enroll(self, group: str, device_id: str) -> str:
        """A device of `group` enrolled over HTTP: its credential."""
        made = self.call("POST", "/v1/devices/enrollment-tokens", self.tokens["admin"], json={"group": group})
        assert made.status_code == 201, made.text
        body = {"token": made.json()["token"], "device_id": device_id}
        enrolled = self.call("POST", "/v1/devices/enroll", None, json=body)
        assert enrolled.status_code == 200, enrolled.text
        return str(enrolled.json()["credential"])

    def deploy(self, version: str, group: str) -> None:
        body = {"model": MODEL, "version": version, "group": group, "canary_percent": 100}
        started = self.call("POST", "/v1/rollouts", self.tokens["operate"], json=body)
        assert started.status_code == 201, started.text

    def promote(self, version: str) -> dt.datetime:
        """A legitimate promotion (as `modelyard models promote` makes one): when it happened."""
        self.platform.lifecycle.promote(MODEL, version, "operator", "promoted by hand")
        moves = [e for e in self.platform.audit.history(MODEL, ("alias_set",)) if e.alias == "champion"]
        assert moves[-1].to_version == version
        return _aware(moves[-1].created_at)

    def fresh_promotion(self) -> dt.datetime:
        """v2 newly promoted over v1: what the guard bakes next."""
        if self.champion() != "1":
            self.promote("1")
        return self.promote("2")

    def champion(self) -> str | None:
        return self.platform.audit.aliases(MODEL).get(MODEL, {}).get("champion")

    def champion_moves(self) -> int:
        return len([e for e in self.platform.audit.history(MODEL, ("alias_set",)) if e.alias == "champion"])

    def guard(self, at: dt.datetime) -> dict[str, Any]:
        from modelyard.platform.services.guard import guard

        verdict = guard(self.platform, MODEL, now=at)
        assert verdict is not None
        return verdict


def _aware(when: dt.datetime) -> dt.datetime:
    return when if when.tzinfo else when.replace(tzinfo=dt.UTC)


def _uploads(n: int, version: str, prefix: str, **extra: Any) -> dict[str, Any]:
    records = [
        {"request_id": f"{prefix}-{i}", "version": version, "inputs": {"images": IMAGE}, "outputs": {"output": OUTPUT}}
        | extra
        for i in range(n)
    ]
    return {"records": records}


def _telemetry(n: int, version: str, prefix: str, **extra: Any) -> dict[str, Any]:
    records = [
        {"request_id": f"{prefix}-{i}", "model": MODEL, "version": version, "inputs": {"images": IMAGE}} | extra
        for i in range(n)
    ]
    return {"records": records}


def _logged(plane: Plane, prefix: str) -> list[Any]:
    return [r for r in plane.platform.inference.recent(MODEL, 100_000) if r.request_id.startswith(prefix)]


@pytest.fixture(scope="module")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    """digits v1 and v2 (promoted, bundled by the gate), v3 (never promoted), an API with tight rate limits."""
    from modelyard.platform.context import Platform
    from modelyard.platform.fleet.bundles import create_keys
    from modelyard.platform.services.training import TrainRequest, run_training
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.tokens import SCOPES, TokenStore

    folder = tmp_path_factory.mktemp("forged")
    home = folder / "home"
    env = {"MODELYARD_HOME": str(home), "MODELYARD_SERVE_POLL_SECONDS": "0.2", **LIMITS}
    saved = {k: v for k, v in os.environ.items() if k.startswith("MODELYARD_")}
    for key in saved:
        del os.environ[key]
    os.environ.update(env)
    try:
        settings = Settings()
        settings.ensure_folders()
        platform = Platform(settings)
        create_keys(platform)  # the gate bundles what it promotes; devices can enroll
        for seed in (1, 2):
            run_training(platform, TrainRequest(request_id=f"forged-{seed}", spec=tiny_spec(MODEL, seed=seed)))
        held = tiny_spec(MODEL, seed=3, gate={"must_beat_baseline": False, "require_approval": True})
        run_training(platform, TrainRequest(request_id="forged-3", spec=held))
        store = TokenStore(settings)
        tokens = {scope: store.create(f"fixture-{scope}", [scope], "test") for scope in SCOPES}
    finally:
        for key in env:
            del os.environ[key]
        os.environ.update(saved)
    port = _free_port()
    process = _spawn(
        folder / "api.log", ["run", "api"], {**env, "MODELYARD_API_PORT": str(port)}, "Uvicorn running on", "api"
    )
    try:
        plane = Plane(f"http://127.0.0.1:{port}", platform, tokens)
        for version in ("1", "2"):  # the gate bundled both
            answer = plane.call("GET", f"/v1/bundles/{MODEL}/{version}/edge-cpu", tokens["read"])
            assert answer.status_code == 200, answer.text
        plane.fresh_promotion()
        moves = [e for e in platform.audit.history(MODEL, ("alias_set",)) if e.alias == "champion"]
        assert "3" not in {e.to_version for e in moves}, "v3 was never promoted"
        yield plane
    finally:
        process.stop()


# -- item 1: an ingest token ----------------------------------------------------------------------------
def test_an_ingest_token_cannot_report_failures_of_a_champion(plane: Plane) -> None:
    _, token = plane.token("ingest")
    promoted = plane.fresh_promotion()

    forged = plane.call(
        "POST", f"/v1/models/{MODEL}/inferences", token, json=_uploads(40, "2", "fail", meta={"error": "x"})
    )

    assert forged.status_code == 400, forged.text
    assert forged.json()["code"] == "failure_not_accepted"
    assert forged.json()["error"].endswith("nothing was stored."), forged.json()
    assert _logged(plane, "fail-") == []
    verdict = plane.guard(promoted + dt.timedelta(minutes=1))
    assert verdict["verdict"] == "baking" and plane.champion() == "2", verdict


def test_a_client_chosen_time_never_orders_evidence_against_a_promotion(plane: Plane) -> None:
    name, token = plane.token("ingest")
    plane.fresh_promotion()
    future = "2030-01-01T00:00:00Z"

    # the reproduction: failures of v1 dated after any promotion, uploaded before v1's next one
    forged = plane.call(
        "POST",
        f"/v1/models/{MODEL}/inferences",
        token,
        json=_uploads(40, "1", "dated-fail", meta={"error": "x"}, time=future),
    )
    plain = plane.call("POST", f"/v1/models/{MODEL}/inferences", token, json=_uploads(40, "1", "dated", time=future))
    promoted = plane.promote("1")  # a later, legitimate promotion

    assert forged.status_code == 400 and plain.status_code == 200, (forged.text, plain.text)
    stored = _logged(plane, "dated-")
    assert len(stored) == 40 and all(r.sender_kind == "token" and r.sender == name for r in stored)
    assert all(_aware(r.created_at).year == 2030 for r in stored), "the client's time is kept, as data"
    assert all(_aware(r.received_at) < promoted for r in stored), "the server's clock says when it came"
    window = plane.platform.inference.window(MODEL, "1", 10_000, since=promoted)
    assert not [r for r in window if r.request_id.startswith("dated")], "received before the promotion: not after it"
    verdict = plane.guard(promoted + dt.timedelta(minutes=1))
    assert verdict["verdict"] == "baking" and plane.champion() == "1", verdict


# -- item 2: a device, for a version its group was never assigned ----------------------------------------
def test_a_device_cannot_report_failures_of_a_version_its_group_was_never_assigned(plane: Plane) -> None:
    credential = plane.enroll("cams", "cam-1")
    plane.deploy("1", "cams")  # its group runs v1
    promoted = plane.fresh_promotion()  # v2 is the new champion; cams never got it
    claim = {"installed": {"model": MODEL, "version": "2"}, "health": "ok"}  # its own word is not enough
    assert plane.call("POST", "/v1/devices/cam-1/heartbeat", credential, json=claim).status_code == 200

    forged = plane.call(
        "POST", "/v1/devices/cam-1/telemetry", credential, json=_telemetry(40, "2", "cam-fail", error="x")
    )

    assert forged.status_code == 403, forged.text
    assert forged.json()["error"] == (
        "device 'cam-1' may report telemetry only for what its group 'cams' runs: digits/2 is not assigned to it; "
        "nothing was stored."
    )
    assert _logged(plane, "cam-fail-") == []
    verdict = plane.guard(promoted + dt.timedelta(minutes=1))
    assert verdict["verdict"] == "baking" and plane.champion() == "2", verdict
    fine = plane.call("POST", "/v1/devices/cam-1/telemetry", credential, json=_telemetry(3, "1", "cam-ok"))
    assert fine.status_code == 200 and fine.json()["stored"] == 3, fine.text  # what it runs: stored


# -- item 3: a device of an empty group ---------------------------------------------------------------
def test_a_device_reads_only_its_groups_bundles_and_reports_only_what_it_runs(plane: Plane) -> None:
    built = plane.call("POST", f"/v1/models/{MODEL}/bundles", plane.tokens["operate"], json={"version": "3"})
    assert built.status_code == 201, built.text  # v3 was never promoted; its bundle exists
    lonely = plane.enroll("nobody", "lonely-1")
    field = plane.enroll("field", "field-1")
    plane.deploy("2", "field")

    refused = [plane.call("GET", f"/v1/bundles/{MODEL}/{v}/edge-cpu", lonely) for v in ("1", "2", "3")]
    foreign = plane.call("POST", "/v1/devices/lonely-1/telemetry", lonely, json=_telemetry(50, "1", "lonely"))

    assert [r.status_code for r in refused] == [403, 403, 403], [r.text for r in refused]
    assert refused[2].json()["error"] == (
        "device 'lonely-1' may download only what its group 'nobody' runs: digits/3 is not assigned to it."
    )
    assert foreign.status_code == 403 and _logged(plane, "lonely-") == [], foreign.text
    assert plane.call("GET", f"/v1/bundles/{MODEL}/2/edge-cpu", field).status_code == 200, "its own group's bundle"
    assert plane.call("GET", f"/v1/bundles/{MODEL}/3/edge-cpu", field).status_code == 403
    assert plane.call("GET", f"/v1/bundles/{MODEL}/3/edge-cpu", plane.tokens["read"]).status_code == 200


# -- rates -----------------------------------------------------------------------------------------------
def test_ingest_and_telemetry_answer_429_past_their_rate_per_sender(plane: Plane) -> None:
    name, token = plane.token("ingest")
    _, other = plane.token("ingest")
    credential = plane.enroll("rated", "rated-1")
    plane.deploy("2", "rated")

    uploads = [
        plane.call("POST", f"/v1/models/{MODEL}/inferences", token, json=_uploads(1, "2", f"rate-{i}"))
        for i in range(BURST + 3)
    ]
    reports = [
        plane.call("POST", "/v1/devices/rated-1/telemetry", credential, json=_telemetry(1, "2", f"rated-{i}"))
        for i in range(BURST + 3)
    ]

    for answers in (uploads, reports):
        statuses = [a.status_code for a in answers]
        assert statuses[:BURST] == [200] * BURST and statuses[-1] == 429, statuses
    late = uploads[-1]
    assert int(late.headers["Retry-After"]) >= 1
    assert re.fullmatch(
        f"token '{name}' sent ingest faster than 0.5 requests a second \\(bursts of {BURST}\\); retry in [12] s\\.",
        late.json()["error"],
    ), late.json()
    assert reports[-1].json()["error"].startswith("device 'rated-1' sent telemetry faster than")
    assert int(reports[-1].headers["Retry-After"]) >= 1
    assert (
        plane.call("POST", f"/v1/models/{MODEL}/inferences", other, json=_uploads(1, "2", "other")).status_code == 200
    )


# -- every credential, every evidence-carrying endpoint --------------------------------------------------
def test_forged_evidence_from_any_credential_moves_no_champion(plane: Plane) -> None:
    from modelyard.platform.store.tokens import SCOPES

    tokens = {scope: plane.token(scope)[1] for scope in SCOPES}
    devices = {"cams2-1": plane.enroll("cams2", "cams2-1"), "stray-1": plane.enroll("strays", "stray-1")}
    plane.deploy("1", "cams2")  # cams2-1 runs v1; stray-1's group runs nothing
    promoted = plane.fresh_promotion()
    moves = plane.champion_moves()
    future = "2030-01-01T00:00:00Z"
    failed = {"meta": {"error": "inference_failed"}, "time": future}
    bad = {"inputs": [{"name": "images", "shape": [1, 3], "datatype": "FP32", "data": [1.0, 2.0, 3.0]}]}
    answers = []

    for scope, token in tokens.items():  # uploads: failures, and wrong predictions with labels that damn them
        answers.append(
            plane.call("POST", f"/v1/models/{MODEL}/inferences", token, json=_uploads(40, "2", f"{scope}-f", **failed))
        )
        answers.append(
            plane.call(
                "POST", f"/v1/models/{MODEL}/inferences", token, json=_uploads(40, "2", f"{scope}-w", time=future)
            )
        )
        labels = {"labels": [{"request_id": f"{scope}-w-{i}", "label": 3} for i in range(40)]}
        answers.append(plane.call("POST", f"/v1/models/{MODEL}/feedback", token, json=labels))
        answers.append(plane.call("POST", f"/v2/models/{MODEL}/infer", token, json=bad))
        for device_id in devices:  # a token is not a device credential
            answers.append(
                plane.call(
                    "POST", f"/v1/devices/{device_id}/telemetry", token, json=_telemetry(40, "2", "t", error="x")
                )
            )
    for device_id, credential in devices.items():
        claim = {
            "installed": {"model": MODEL, "version": "2"},
            "inferences": {"model": MODEL, "version": "2", "total": 40, "failed": 40},
        }
        answers.append(plane.call("POST", f"/v1/devices/{device_id}/heartbeat", credential, json=claim))
        answers.append(
            plane.call(
                "POST",
                f"/v1/devices/{device_id}/reports",
                credential,
                json={"model": MODEL, "version": "2", "outcome": "failed"},
            )
        )
        answers.append(
            plane.call(
                "POST",
                f"/v1/devices/{device_id}/telemetry",
                credential,
                json=_telemetry(40, "2", f"{device_id}-f", error="x", time=future),
            )
        )
        answers.append(
            plane.call(
                "POST", f"/v1/models/{MODEL}/inferences", credential, json=_uploads(40, "2", f"{device_id}-u", **failed)
            )
        )
    assert all(a.status_code < 500 for a in answers), [(a.status_code, a.text) for a in answers if a.status_code >= 500]

    verdict = plane.guard(promoted + dt.timedelta(minutes=1))
    assert verdict["verdict"] == "baking", verdict
    assert plane.champion() == "2" and plane.champion_moves() == moves, "no champion moved"

    # and the same failures from a device that was assigned v2 are evidence: the guard was not blind
    honest = plane.enroll("canaries", "canary-1")
    plane.deploy("2", "canaries")
    sent = plane.call("POST", "/v1/devices/canary-1/telemetry", honest, json=_telemetry(40, "2", "canary", error="x"))
    assert sent.status_code == 200 and sent.json()["stored"] == 40, sent.text
    verdict = plane.guard(promoted + dt.timedelta(minutes=1))
    assert verdict["verdict"] == "guard_rolled_back" and plane.champion() == "1", verdict
    assert "40 of 40 predictions failed" in verdict["reason"]
