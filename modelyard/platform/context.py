"""What a task or a command works with, built once and passed down: settings and the stores.

Each store is opened on first use, so a stage that never needs MLflow never imports it.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING

from modelyard.platform.settings import Settings

if TYPE_CHECKING:
    from modelyard.platform.registry.lifecycle import Lifecycle
    from modelyard.platform.registry.mlflow_store import MlflowRegistry
    from modelyard.platform.store.audit import AuditLog
    from modelyard.platform.store.inference import InferenceLog
    from modelyard.platform.store.requests import RequestStore


class Platform:
    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or Settings()

    @cached_property
    def requests(self) -> RequestStore:
        from modelyard.platform.store.requests import RequestStore

        return RequestStore(self.settings)

    @cached_property
    def audit(self) -> AuditLog:
        from modelyard.platform.store.audit import AuditLog

        return AuditLog(self.settings)

    @cached_property
    def inference(self) -> InferenceLog:
        from modelyard.platform.store.inference import InferenceLog

        return InferenceLog(self.settings)

    @cached_property
    def registry(self) -> MlflowRegistry:
        """The MLflow registry, with MLflow's fluent API pointed at the same tracking store."""
        from modelyard.platform.registry import tracking
        from modelyard.platform.registry.mlflow_store import MlflowRegistry

        tracking.use_tracking(self.settings)
        return MlflowRegistry(self.settings.tracking_uri)

    @cached_property
    def lifecycle(self) -> Lifecycle:
        from modelyard.platform.registry.lifecycle import Lifecycle

        return Lifecycle(self.registry, self.audit)
