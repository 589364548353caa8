"""Before several processes start: the platform's and MLflow's schemas, created once."""

from __future__ import annotations

from modelyard.platform.settings import Settings


def prepare_stores(settings: Settings) -> None:
    """Create the MLflow and platform schemas once, before several processes race to."""
    from mlflow.tracking import MlflowClient

    from modelyard.platform.store.db import ensure_schema

    settings.ensure_folders()
    ensure_schema(settings.platform_database_url, settings.run_folder)
    MlflowClient(tracking_uri=settings.tracking_uri).search_experiments(max_results=1)
