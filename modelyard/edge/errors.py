"""The agent's failures: one sentence each, with the install stage they belong to.

The agent cannot use modelyard.errors (it installs without the rest of modelyard), so it has
its own small hierarchy. `stage` and `outcome` map straight onto a report (PROTOCOL.md, 4).
"""

from __future__ import annotations


class EdgeError(Exception):
    """A failure whose message is one sentence meant for an operator."""

    def __init__(self, message: str, *, stage: str = "verify", outcome: str = "failed") -> None:
        super().__init__(message)
        self.stage = stage
        self.outcome = outcome


class BundleRefused(EdgeError):
    """The bundle is unsafe, unsigned, tampered or not for this device: refused before it is used."""

    def __init__(self, message: str, *, stage: str = "verify") -> None:
        super().__init__(message, stage=stage, outcome="refused")


class DownloadError(EdgeError):
    """The bundle could not be downloaded whole."""

    def __init__(self, message: str) -> None:
        super().__init__(message, stage="download", outcome="failed")


class ControlPlaneError(EdgeError):
    """The control plane answered with an error or could not be reached."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message, stage="download", outcome="failed")
        self.status = status


class InferenceError(EdgeError):
    """A prediction request is malformed (the caller's fault) or the session failed."""

    def __init__(self, message: str, *, client_error: bool = True) -> None:
        super().__init__(message, stage="serve", outcome="failed")
        self.client_error = client_error
