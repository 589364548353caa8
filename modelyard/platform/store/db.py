"""The platform database: the audit log, training requests, API tokens and the inference log.

MLflow keeps no alias history, so `events` is the audit log and the source of
`modelyard models history`; `model_versions` and `aliases` are its projections, written in the
same transaction, so read commands need not open MLflow. `training_requests` makes
training idempotent on the request id. `api_tokens` holds SHA-256 hashes of bearer
tokens, never the tokens; `inference_log` and `feedback` are production data, joined by
request id (each row says who sent it and when the platform received it); `drift_checks`
holds one row per judged monitoring window. The edge fleet:
`bundles` (one signed archive per version and target), `device_groups`, `enrollment_tokens`,
`devices` (credentials as hashes, what each runs and should run), `rollouts` and
`rollout_devices` (which device each phase touched and what came of it).
The schema is created and upgraded by Alembic migrations (see migrations/).
"""

from __future__ import annotations

import datetime as dt
import fcntl
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Engine, Integer, String, Text, create_engine, event, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
SCHEMA_HEAD = "0008"  # the newest migration; a test keeps it equal to Alembic's head


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def aware(when: dt.datetime) -> dt.datetime:
    """A time from either database as UTC: SQLite hands back naive UTC, PostgreSQL the session's zone."""
    return when.astimezone(dt.UTC) if when.tzinfo else when.replace(tzinfo=dt.UTC)


class Base(DeclarativeBase):
    pass


class Event(Base):
    __tablename__ = "events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(40))
    alias: Mapped[str | None] = mapped_column(String(40))
    from_version: Mapped[str | None] = mapped_column(String(20))
    to_version: Mapped[str | None] = mapped_column(String(20))
    actor: Mapped[str] = mapped_column(String(200))
    reason: Mapped[str] = mapped_column(Text)
    evidence: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    request_id: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class ModelVersion(Base):
    """A version as registered through the platform (a projection of `registered` events)."""

    __tablename__ = "model_versions"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(20), primary_key=True)
    run_id: Mapped[str | None] = mapped_column(String(64))
    request_id: Mapped[str | None] = mapped_column(String(100))
    trigger: Mapped[str | None] = mapped_column(String(20))
    dataset_sha256: Mapped[str | None] = mapped_column(String(64))
    parent_version: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Alias(Base):
    """Where each alias points now (a projection of alias_set / alias_removed events)."""

    __tablename__ = "aliases"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    alias: Mapped[str] = mapped_column(String(40), primary_key=True)
    version: Mapped[str] = mapped_column(String(20))
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class TrainingRequest(Base):
    """One training request and where it stands (store/states.py has its states and transitions)."""

    __tablename__ = "training_requests"

    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    status: Mapped[str] = mapped_column(String(20), index=True)  # a states.State
    trigger: Mapped[str] = mapped_column(String(20), default="manual")
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[str | None] = mapped_column(String(20))
    run_id: Mapped[str | None] = mapped_column(String(64))
    owner: Mapped[str | None] = mapped_column(String(200))
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims by train workers
    export_attempts: Mapped[int] = mapped_column(Integer, default=0)  # claims by export workers
    takeovers: Mapped[int] = mapped_column(Integer, default=0)  # claims of a stale lease: workers that died
    lease: Mapped[int] = mapped_column(Integer, default=0)  # the fencing token: grows on every claim
    parent_version: Mapped[str | None] = mapped_column(String(20))
    # The outbox: when the current stage's message was sent (or a retry is due), under which
    # broker epoch, and which lease the reconciler last re-published.
    published_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    broker_epoch: Mapped[str | None] = mapped_column(String(64))
    republished_lease: Mapped[int | None] = mapped_column(Integer)
    republishes: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)  # the last error: a final failure's reason, or a retried one
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow, onupdate=utcnow)


class ApiToken(Base):
    """A bearer token of the HTTP API: its hash, scopes and life (store/tokens.py)."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100), unique=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))  # enough to recognise a token, not to use it
    scopes: Mapped[str] = mapped_column(String(200))  # space-separated
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_by: Mapped[str] = mapped_column(String(200))
    revoked_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    last_used_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class InferenceRecord(Base):
    """One served (or uploaded) prediction: what went in, what came out, which version answered, and its
    provenance: who sent it (authenticated), when the platform received it (its own clock), and whether the
    platform vouches that the version produced it (what the guard may judge a champion by)."""

    __tablename__ = "inference_log"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    version: Mapped[str] = mapped_column(String(20))
    request_id: Mapped[str] = mapped_column(String(100))
    source: Mapped[str] = mapped_column(String(100))  # a label: server, a device id, what an uploader called it
    inputs: Mapped[dict[str, Any]] = mapped_column(JSON)  # input name -> nested list (one row)
    outputs: Mapped[dict[str, Any]] = mapped_column(JSON)
    meta: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # as the sender says
    sender_kind: Mapped[str] = mapped_column(String(20), default="token")  # server, device, token, local
    sender: Mapped[str] = mapped_column(String(100), default="unknown")  # server, a device id, a token's name, cli
    received_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # the server's clock
    attested: Mapped[bool] = mapped_column(Boolean, default=False)


class Feedback(Base):
    """A label for a logged prediction, joined by request id."""

    __tablename__ = "feedback"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    label: Mapped[Any] = mapped_column(JSON)
    source: Mapped[str] = mapped_column(String(100))  # a label the sender chose
    sender: Mapped[str] = mapped_column(String(100), default="unknown")  # who: a token's name, cli
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)  # received (server clock)


class DriftCheck(Base):
    """One drift check of one window of one served version: the scores, the verdict, what it cost."""

    __tablename__ = "drift_checks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(20))
    # model + version + the window's first and last log ids, hashed: a redelivered check of the same
    # window finds its row instead of writing a second one.
    window_key: Mapped[str] = mapped_column(String(64), unique=True)
    first_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    last_id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    window_from: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    window_to: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    rows: Mapped[int] = mapped_column(Integer)
    labeled_rows: Mapped[int] = mapped_column(Integer, default=0)
    verdict: Mapped[str] = mapped_column(String(30))  # monitoring.checks.Verdict
    drift_share: Mapped[float | None] = mapped_column()
    scores: Mapped[dict[str, Any]] = mapped_column(JSON)  # feature, prediction and performance evidence
    decision: Mapped[str | None] = mapped_column(Text)  # what the retraining policy did with it
    report_uri: Mapped[str | None] = mapped_column(Text)
    duration_s: Mapped[float] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Bundle(Base):
    """A signed edge bundle of one version for one target (the archive is an MLflow artifact of the version)."""

    __tablename__ = "bundles"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    version: Mapped[str] = mapped_column(String(20), primary_key=True)
    target: Mapped[str] = mapped_column(String(40), primary_key=True)
    variant: Mapped[str] = mapped_column(String(40))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    artifact_uri: Mapped[str] = mapped_column(Text)
    manifest: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class DeviceGroup(Base):
    """A group of devices: what it runs now (its last completed rollout) and, if set, the model it follows."""

    __tablename__ = "device_groups"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    follows: Mapped[str | None] = mapped_column(String(200))  # a model whose champion the group follows
    followed_version: Mapped[str | None] = mapped_column(String(20))  # the champion it last started a rollout of
    target: Mapped[str] = mapped_column(String(40), default="edge-cpu")
    canary_percent: Mapped[float] = mapped_column(default=10.0)
    observe_seconds: Mapped[float] = mapped_column(default=60.0)
    max_failure_share: Mapped[float] = mapped_column(default=0.2)
    current_model: Mapped[str | None] = mapped_column(String(200))
    current_version: Mapped[str | None] = mapped_column(String(20))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class EnrollmentToken(Base):
    __tablename__ = "enrollment_tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    token_sha256: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    group: Mapped[str] = mapped_column(String(100))
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    uses_left: Mapped[int] = mapped_column(Integer, default=1)
    expires_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


class Device(Base):
    """An enrolled device: who it is, what it reports, and the bundle it should run (`desired`)."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(100), primary_key=True)
    group: Mapped[str] = mapped_column(String(100), index=True)
    tags: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    profile: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    credential_sha256: Mapped[str | None] = mapped_column(String(64), unique=True)
    state: Mapped[str] = mapped_column(String(20), default="active")  # active, decommissioned
    agent_version: Mapped[str | None] = mapped_column(String(40))
    installed: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # model, version, sha256, slot
    desired: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # model, version, target, sha256, size, ...
    health: Mapped[str | None] = mapped_column(String(20))
    status: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # free disk, buffered, dropped, serving
    last_error: Mapped[str | None] = mapped_column(Text)
    last_seen_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))
    enrolled_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    decommissioned_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class Rollout(Base):
    """One bundle going to one group: canary -> observing -> rolling -> completed, or halted/aborted."""

    __tablename__ = "rollouts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200), index=True)
    version: Mapped[str] = mapped_column(String(20))
    target: Mapped[str] = mapped_column(String(40))
    group: Mapped[str] = mapped_column(String(100), index=True)
    kind: Mapped[str] = mapped_column(String(20))  # deploy, follow, rollback
    state: Mapped[str] = mapped_column(String(20), index=True)
    paused_from: Mapped[str | None] = mapped_column(String(20))
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"))
    canary_percent: Mapped[float] = mapped_column()
    observe_seconds: Mapped[float] = mapped_column()
    max_failure_share: Mapped[float] = mapped_column()
    reason: Mapped[str | None] = mapped_column(Text)  # why it halted, was aborted or superseded
    created_by: Mapped[str] = mapped_column(String(200))
    phase_started_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    created_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    finished_at: Mapped[dt.datetime | None] = mapped_column(DateTime(timezone=True))


class RolloutDevice(Base):
    """A device a rollout touched: in which phase, what it ran before, and what came of it."""

    __tablename__ = "rollout_devices"

    rollout_id: Mapped[int] = mapped_column(Integer, primary_key=True)
    device_id: Mapped[str] = mapped_column(String(100), primary_key=True)
    phase: Mapped[str] = mapped_column(String(20))  # canary, rest
    state: Mapped[str] = mapped_column(String(20))  # assigned, installed, failed, rolled_back, refused, reverted
    before: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # the device's desired entry before
    reason: Mapped[str | None] = mapped_column(Text)
    # The device's inference counts ({model, version, since, total, failed}) when observing began: the
    # canary's error rate is what it counted after that.
    counted_from: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    assigned_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(DateTime(timezone=True), default=utcnow)


def dumps(value: Any) -> str:
    """JSON columns through orjson: several times faster than json (the inference log writes a row per
    prediction) and numpy arrays as they are; json for what orjson refuses."""
    import orjson

    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        import json

        return json.dumps(value)


@cache
def engine_for(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 30}, json_serializer=dumps)

        @event.listens_for(engine, "connect")
        def _wal(dbapi_conn: Any, _record: Any) -> None:  # readers do not block the writer
            dbapi_conn.execute("PRAGMA journal_mode=WAL")
            dbapi_conn.execute("PRAGMA busy_timeout=30000")

        return engine
    return create_engine(url, pool_pre_ping=True, json_serializer=dumps)


def session_factory(url: str) -> sessionmaker:
    return sessionmaker(engine_for(url), expire_on_commit=False)


_upgraded: set[str] = set()


def ensure_schema(url: str, lock_folder: Path) -> None:
    """Run Alembic migrations to head once per process, serialized across processes."""
    if url in _upgraded or _at_head(url):
        _upgraded.add(url)
        return
    import logging

    from alembic import command
    from alembic.config import Config

    logging.getLogger("alembic").setLevel(logging.WARNING)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    engine = engine_for(url)
    lock_folder.mkdir(parents=True, exist_ok=True)
    with open(lock_folder / "migrate.lock", "w") as lock, engine.begin() as conn:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one machine: workers started together
        if conn.dialect.name == "postgresql":  # many machines: the database serializes
            conn.execute(text("SELECT pg_advisory_xact_lock(7244196)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
    _upgraded.add(url)


def _at_head(url: str) -> bool:
    """Whether the schema is current, read without loading Alembic (a fresh worker child does this)."""
    try:
        with engine_for(url).connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == SCHEMA_HEAD
    except Exception:  # no table yet, or no database yet: let Alembic create it
        return False
