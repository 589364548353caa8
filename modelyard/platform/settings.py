"""One Settings object for the whole platform, read from MODELYARD_* variables.

With nothing set, everything lives under `home` (embedded mode): Celery on kombu's
filesystem transport, MLflow on SQLite, the platform database on SQLite. Setting the
URLs (Redis, an MLflow server, PostgreSQL) gives server mode; no other code branches
on the mode.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="MODELYARD_", frozen=True)

    home: Path = Field(Path("~/.modelyard"), description="Folder for every embedded-mode file.")
    broker_url: str | None = Field(None, description="Celery broker; default: filesystem queue under home.")
    result_backend: str | None = Field(None, description="Celery results; default: files under home.")
    mlflow_tracking_uri: str | None = Field(None, description="MLflow tracking URI; default: SQLite under home.")
    mlflow_artifact_location: str | None = Field(
        None, description="Where new MLflow experiments store artifacts; default: a folder under home."
    )
    database_url: str | None = Field(None, description="Platform database (audit log); default: SQLite under home.")
    train_time_limit: int = Field(6 * 3600, ge=10, description="Hard limit of one training task, seconds.")
    visibility_timeout: int | None = Field(
        None,
        description="Seconds before Redis redelivers an unacknowledged task; must exceed the longest "
        "training. Default: train_time_limit + 1 hour.",
    )
    heartbeat_seconds: float = Field(10.0, gt=0, description="How often a running training says it is alive.")
    stale_after_seconds: float = Field(
        60.0, gt=0, description="A training silent this long is presumed dead and may be taken over."
    )
    redelivery_check_seconds: int = Field(
        10, ge=1, description="How often Redis workers look for tasks whose worker died (server mode)."
    )
    max_retries: int = Field(
        12,
        ge=0,
        description="Retries of a stage after a transient service error (backoff 5 s doubling to 5 min: "
        "12 retries wait about 35 min); then the request fails with the error.",
    )
    max_attempts: int = Field(
        5, ge=1, description="A stage whose worker died this many times (lease gone stale) fails for good."
    )
    reconcile_seconds: float = Field(
        30.0, gt=0, description="How often beat runs the reconciler over unfinished requests."
    )
    republish_after_seconds: float | None = Field(
        None,
        gt=0,
        description="A request waiting this long for a worker gets its message sent again "
        "(a safety net for a message lost without a broker restart). Default: 30 in embedded mode (with "
        "reconcile passes every 30 s, a lost message is sent again within a minute), 1800 in server mode.",
    )

    # The HTTP service (`modelyard run api`, part of `modelyard up`).
    api_host: str = Field("127.0.0.1", description="Address the API listens on.")
    api_port: int = Field(8790, ge=1, le=65535, description="Port the API listens on.")
    api_anonymous: bool = Field(
        False,
        description="Embedded mode on 127.0.0.1 only: requests without a token act as 'local' with every "
        "scope. Refused in server mode or on another address.",
    )
    api_data_root: Path | None = Field(
        None, description="Folder whose files a training spec sent over HTTP may name; default: <home>/data."
    )
    api_allow_custom_architectures: bool = Field(
        False, description="Let specs sent over HTTP name `module:function` architectures (code run on workers)."
    )
    api_max_body_bytes: int = Field(8 * 1024 * 1024, ge=1024, description="Largest request body accepted.")
    api_request_timeout: float = Field(30.0, gt=0, description="Seconds an inference may wait (loading included).")
    token_cache_seconds: float = Field(
        2.0, ge=0, description="How long the API trusts a checked token before reading it again (revocation delay)."
    )
    ingest_rate_per_second: float = Field(
        10.0,
        ge=0,
        description="Ingest requests (inferences, feedback) one token may send a second, on average, per API "
        "process; past it: 429 with Retry-After. 0: no limit.",
    )
    ingest_burst: int = Field(
        100, ge=1, description="Ingest requests one token may send at once before the rate holds."
    )
    serve_max_batch: int = Field(32, ge=1, description="Largest dynamic batch, in rows (1: no batching).")
    serve_max_delay_ms: float = Field(
        0.0,
        ge=0,
        description="How long a batch waits for more requests. 0: a batch is what arrived while the previous "
        "one ran (no wait when idle, batches grow with the load).",
    )
    serve_max_rows: int = Field(1024, ge=1, description="Most rows one inference request may carry.")
    serve_poll_seconds: float = Field(1.0, gt=0, description="How often the server checks where `champion` points.")
    serve_threads: int = Field(
        1,
        ge=0,
        description="ONNX Runtime threads per session (0: one per core; 1 suits small models: batches, "
        "not threads, use the cores).",
    )
    inference_log_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Share of served requests written to the inference log."
    )
    inference_log_max_backlog: int = Field(
        100_000, ge=100, description="Predictions queued for the log before the oldest are dropped (counted)."
    )

    # The monitoring loop (the monitor queue, scheduled by beat).
    monitor_tick_seconds: float = Field(
        15.0, gt=0, description="How often beat looks for models due a drift check and promotions due a guard verdict."
    )
    inference_log_max_rows: int = Field(
        1_000_000, ge=1000, description="Rows kept per model in the inference log; older ones are removed hourly."
    )
    retention_seconds: float = Field(3600.0, gt=0, description="How often beat trims the inference log.")

    # The edge fleet: signed bundles, enrolled devices, phased rollouts (advanced by beat's fleet tick).
    edge_signing_key: Path | None = Field(
        None,
        description="Private key (PEM, EC P-256, mode 0600) that signs edge bundles; its public key is the same "
        "path with `.pub` appended. Default: <home>/keys/edge-signing.pem (`modelyard keys create`).",
    )
    edge_bundle_target: str = Field("edge-cpu", description="The export target a bundle is built from by default.")
    fleet_tick_seconds: float = Field(
        1.0, gt=0, description="How often beat's fleet tick (monitor queue) advances rollouts and followers."
    )
    device_heartbeat_seconds: float = Field(
        10.0, gt=0, description="How often agents report (and ask for their desired bundle)."
    )
    device_upload_seconds: float = Field(
        10.0, gt=0, description="How often agents upload sampled predictions (within a canary's observation window)."
    )
    device_sample_rate: float = Field(0.1, ge=0, le=1, description="Share of device predictions agents log.")
    telemetry_rate_per_second: float = Field(
        5.0,
        ge=0,
        description="Telemetry uploads one device may send a second, on average, per API process; past it: 429 "
        "with Retry-After (agents keep the records and retry). 0: no limit.",
    )
    telemetry_burst: int = Field(
        30, ge=1, description="Telemetry uploads one device may send at once (catching up after an outage)."
    )
    device_offline_seconds: float = Field(
        60.0,
        gt=0,
        description="A device silent this long shows as offline; a rollout assigns it the bundle without waiting for "
        "it (it installs when it is back) and never counts it as a failure.",
    )
    rollout_canary_percent: float = Field(10.0, gt=0, le=100, description="Default canary share of a group.")
    rollout_observe_seconds: float = Field(
        60.0, ge=0, description="Default observation window after the canary installed."
    )
    rollout_max_failure_share: float = Field(
        0.2, ge=0, lt=1, description="Share of a phase's devices that may fail before the rollout halts."
    )
    rollout_install_timeout_seconds: float = Field(
        300.0, gt=0, description="A device that reports no outcome this long after assignment counts as failed."
    )
    rollout_max_error_rate: float = Field(
        0.05,
        ge=0,
        le=1,
        description="Share of the canary's inferences failing (as its devices count them) that halts a rollout.",
    )
    enrollment_token_hours: float = Field(24.0, gt=0, description="How long an enrollment token stays valid.")

    @cached_property
    def root(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def mode(self) -> Literal["embedded", "server"]:
        return "embedded" if self.effective_broker_url.startswith("filesystem") else "server"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def effective_result_backend(self) -> str:
        return self.result_backend or f"file://{self.root / 'celery' / 'results'}"

    @property
    def tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        if self.mlflow_artifact_location:
            return self.mlflow_artifact_location
        if self.mlflow_tracking_uri:  # a tracking server chooses its own artifact store
            return None
        return (self.root / "mlartifacts").as_uri()

    @property
    def platform_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.root / 'platform.db'}"

    @property
    def effective_visibility_timeout(self) -> int:
        return self.visibility_timeout or self.train_time_limit + 3600

    @property
    def effective_republish_after_seconds(self) -> float:
        if self.republish_after_seconds is not None:
            return self.republish_after_seconds
        return 30.0 if self.mode == "embedded" else 1800.0

    @property
    def api_data_folder(self) -> Path:
        return (self.api_data_root or self.root / "data").expanduser().resolve()

    @property
    def signing_key(self) -> Path:
        return (self.edge_signing_key or self.root / "keys" / "edge-signing.pem").expanduser()

    @property
    def public_key(self) -> Path:
        return self.signing_key.with_name(self.signing_key.name + ".pub")

    @property
    def bundle_cache(self) -> Path:
        return self.root / "bundles"

    @property
    def queue_folder(self) -> Path:
        return self.root / "celery" / "queue"

    @property
    def run_folder(self) -> Path:
        return self.root / "run"

    def ensure_folders(self) -> None:
        """Create the embedded-mode folders (harmless in server mode)."""
        for path in (
            self.queue_folder,
            self.root / "celery" / "results",
            self.root / "celery" / "control",
            self.run_folder,
            self.root / "mlartifacts",
        ):
            path.mkdir(parents=True, exist_ok=True)
