"""Bodies of the fleet routes: what agents send (modelyard/edge/PROTOCOL.md) and what operators send.

Agent bodies ignore fields they do not know, so a newer agent can talk to an older control plane.
"""

from __future__ import annotations

import datetime as dt
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from modelyard.platform.api.schemas import NO_NUL, _Body

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"


class _Agent(BaseModel):
    model_config = ConfigDict(extra="ignore")


class EnrollBody(_Agent):
    token: str = Field(min_length=1, max_length=200)
    device_id: str = Field(pattern=DEVICE_ID)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    profile: dict[str, Any] = Field(default_factory=dict)
    agent_version: str = Field("0", min_length=1, max_length=40, pattern=NO_NUL)


class EnrollAnswer(BaseModel):
    device_id: str
    group: str
    credential: str = Field(description="Shown once; only its hash is stored.")
    public_key: str = Field(description="PEM: the key every bundle this control plane signs verifies against.")
    heartbeat_seconds: float
    upload_seconds: float
    sample_rate: float


class Installed(_Agent):
    model: str = Field(max_length=200)
    version: str = Field(max_length=20)
    sha256: str | None = Field(None, max_length=64)
    slot: str | None = Field(None, max_length=10)


class Inferences(_Agent):
    model: str = Field(max_length=200)
    version: str = Field(max_length=20)
    since: str | None = Field(None, max_length=80, description="Changes whenever the counts start again.")
    total: int = Field(ge=0, description="Every inference of this bundle since `since`.")
    failed: int = Field(ge=0, description="How many of them failed (counted whatever the sample rate).")


class HeartbeatBody(_Agent):
    agent_version: str | None = Field(None, max_length=40)
    installed: Installed | None = None
    health: Literal["ok", "degraded", "failing"] | None = None
    serving: bool = False
    free_disk_bytes: int | None = Field(None, ge=0)
    last_error: str | None = Field(None, max_length=4000)
    buffered_records: int = Field(0, ge=0)
    dropped_records: int = Field(0, ge=0)
    inferences: Inferences | None = None


class HeartbeatAnswer(BaseModel):
    desired: dict[str, Any] | None = Field(description="The bundle this device should run; null: keep what it has.")
    heartbeat_seconds: float


class ReportBody(_Agent):
    rollout_id: int | None = None
    model: str = Field(max_length=200)
    version: str = Field(max_length=20)
    sha256: str | None = Field(None, max_length=64)
    outcome: Literal["installed", "failed", "rolled_back", "refused"]
    stage: str = Field("", max_length=40)
    reason: str = Field("", max_length=4000)
    seconds: float | None = None


class Recorded(BaseModel):
    recorded: bool


class TelemetryRecord(_Agent):
    request_id: str = Field(min_length=1, max_length=100, pattern=NO_NUL)
    model: str = Field(min_length=1, max_length=200)
    version: str = Field(pattern=r"^\d{1,9}$")
    inputs: dict[str, Any] = Field(description="Input name -> one row (a scalar where the row is one).")
    outputs: dict[str, Any] = Field(default_factory=dict)
    time: dt.datetime | None = None
    latency_ms: float | None = None
    error: str | None = Field(None, max_length=2000)


class TelemetryBody(_Agent):
    records: list[TelemetryRecord] = Field(max_length=1000)
    dropped: int = Field(0, ge=0)


class TelemetryStored(BaseModel):
    stored: int
    duplicates: int = Field(description="Records whose request id was stored before (a resent batch).")
    rejected: int = Field(0, description="Records skipped: their version was never bundled, or other inputs.")
    problems: list[str] = Field(default_factory=list, description="Why, for the first few rejected records.")


class EnrollmentTokenBody(_Body):
    group: str = Field(pattern=DEVICE_ID)
    tags: dict[str, str] = Field(default_factory=dict, max_length=50)
    uses: int = Field(1, ge=1, le=100_000, description="How many devices may enroll with it.")
    hours: float | None = Field(None, gt=0, le=24 * 365, description="How long it stays valid.")


class EnrollmentTokenCreated(BaseModel):
    token: str = Field(description="Shown once; only its hash is stored.")
    group: str
    uses: int


class BundleBody(_Body):
    version: str = Field("champion", pattern=r"^(\d{1,9}|champion|challenger|previous)$")
    target: Literal["edge-cpu"] = "edge-cpu"
    force: bool = False


class DeployBody(_Body):
    model: str = Field(min_length=1, max_length=200, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    version: str = Field("champion", pattern=r"^(\d{1,9}|champion|challenger|previous)$")
    group: str = Field(pattern=DEVICE_ID)
    canary_percent: float | None = Field(None, gt=0, le=100)
    observe_seconds: float | None = Field(None, ge=0, le=7 * 24 * 3600)
    max_failure_share: float | None = Field(None, ge=0, lt=1)
    follow: bool | None = Field(None, description="Also make the group follow the model's champion from now on.")


class AbortBody(_Body):
    reason: str = Field("aborted by an operator", min_length=1, max_length=2000, pattern=NO_NUL)
