"""The rollout state machine's tests again, on PostgreSQL (server mode): the fleet lock is an
advisory lock there, JSON columns are json, and times keep their offset."""

from __future__ import annotations

import os

import pytest

from tests.platform.test_rollouts import *  # noqa: F403 - the same tests, collected here with this module's fixture

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(fresh_pg: str, tmp_path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-redef]
    from modelyard.platform.settings import Settings
    from modelyard.platform.store.db import ensure_schema

    for key in list(os.environ):
        if key.startswith("MODELYARD_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("MODELYARD_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MODELYARD_DATABASE_URL", fresh_pg)
    found = Settings()
    found.ensure_folders()
    ensure_schema(found.platform_database_url, found.run_folder)
    return found
