"""What enrollment leaves in the agent home, and the knobs the CLI sets.

`<home>/agent.json` (mode 0600: it holds the device credential) and `<home>/trust.pem`, the
control plane's public signing key, pinned at enrollment: bundles are verified against this
file only, never against a key sent later.
"""

from __future__ import annotations

import os
import platform
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from modelyard.bundle import RuntimeSupport
from modelyard.edge.errors import EdgeError
from modelyard.edge.probation import Rules
from modelyard.edge.slots import read_json, write_json_atomic

DEVICE_ID = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"
# How often a device whose credential was refused (401) asks again: slowly, but it keeps asking.
UNAUTHORIZED_HEARTBEAT_S = 600.0


@dataclass
class Enrollment:
    server_url: str
    device_id: str
    credential: str
    group: str = ""
    heartbeat_seconds: float = 30.0
    upload_seconds: float = 60.0
    sample_rate: float = 1.0
    # Set when the control plane answered 401 on heartbeat: keep serving, install nothing, heartbeat slowly;
    # a later 200 clears it (a restored database or a misconfigured proxy must not orphan the device for good).
    decommissioned: bool = False

    @staticmethod
    def path(home: Path) -> Path:
        return home / "agent.json"

    @classmethod
    def load(cls, home: Path) -> Enrollment | None:
        data = read_json(cls.path(home))
        if not isinstance(data, dict):
            return None
        try:
            return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
        except TypeError as exc:
            raise EdgeError(f"{cls.path(home)} lacks enrollment fields ({exc}); enroll again.") from exc

    def save(self, home: Path) -> None:
        write_json_atomic(self.path(home), asdict(self), mode=0o600)


@dataclass(frozen=True)
class DownloadLimits:
    """How long one bundle download may take (client.py); a limit <= 0 is off."""

    total_seconds: float = 1800.0
    min_bytes_per_second: float = 1024.0
    window_seconds: float = 60.0


@dataclass(frozen=True)
class Options:
    """Operator knobs (CLI flags); None means: use what the control plane said."""

    heartbeat_seconds: float | None = None
    max_bundle_bytes: int = 1024 * 1024 * 1024
    max_telemetry_bytes: int = 64 * 1024 * 1024
    backoff_cap_seconds: float = 300.0
    threads: int = 2
    # A download gives up (reported as failed at `download`; it resumes from its .part file when tried again)
    # once it took this long in all, or once a window of `download_rate_window_seconds` brought fewer bytes
    # than the minimum rate: a stalled or dripping server must not hold the install worker, nor keep the
    # device from a newer desired bundle, for longer than that. 0 turns a limit off.
    download_timeout_seconds: float = 1800.0
    download_min_bytes_per_second: float = 1024.0
    download_rate_window_seconds: float = 60.0
    # Probation (probation.py): a switched bundle is committed after this many good inferences or this long
    # without a failure, and rolled back locally once this many of its inferences failed (or the control
    # plane's `failed_inference_limit`, when that is lower).
    probation_successes: int = 20
    probation_seconds: float = 300.0
    probation_max_failures: int = 3

    def probation_rules(self) -> Rules:
        return Rules(self.probation_successes, self.probation_seconds, self.probation_max_failures)

    def download_limits(self) -> DownloadLimits:
        return DownloadLimits(
            self.download_timeout_seconds, self.download_min_bytes_per_second, self.download_rate_window_seconds
        )


def profile(support: RuntimeSupport) -> dict[str, Any]:
    """The device profile sent at enrollment (PROTOCOL.md, 1)."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        memory = 0
    return {
        "arch": platform.machine() or "unknown",
        "os": platform.system().lower() or "unknown",
        "runtime": "onnxruntime",
        "runtime_version": support.runtime_version,
        "max_opset": support.max_opset,
        "domains": sorted(support.domains),
        "cpu_count": os.cpu_count() or 1,
        "memory_bytes": int(memory),
    }
