"""The Registry interface on MLflow's model registry, with MLflow errors made readable."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from modelyard.errors import ModelyardError, NotFoundError, RegistryError, TransientError
from modelyard.platform.registry.base import ModelSummary, Registry, VersionInfo

T = TypeVar("T")


@contextmanager
def mlflow_errors(what: str) -> Iterator[None]:
    """Turn MLflow's exceptions into ours: missing things, retryable outages (by type: faults.py), the rest."""
    from mlflow.exceptions import MlflowException

    from modelyard.platform.faults import is_transient

    try:
        yield
    except ModelyardError:
        raise
    except Exception as err:
        text = (str(err).splitlines() or [type(err).__name__])[0][:300]
        if is_transient(err):
            raise TransientError(f"{what}: MLflow is unreachable or busy ({text}).") from err
        if not isinstance(err, MlflowException):
            raise
        if getattr(err, "error_code", "") == "RESOURCE_DOES_NOT_EXIST":
            raise NotFoundError(f"{what}: not found in the registry.") from None
        raise RegistryError(f"{what}: {text}") from err


class MlflowRegistry(Registry):
    def __init__(self, tracking_uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)

    def _call(self, what: str, fn: Callable[[], T]) -> T:
        with mlflow_errors(what):
            return fn()

    def _info(self, mv: Any, model: Any = None) -> VersionInfo:
        """A version as we show it. `search_model_versions` returns no aliases (mlflow#9783): with the
        registered model given, they come from it instead."""
        aliases = list(getattr(mv, "aliases", []) or [])
        if model is not None:
            aliases = sorted(a for a, v in (model.aliases or {}).items() if str(v) == str(mv.version))
        return VersionInfo(
            name=mv.name,
            version=str(mv.version),
            run_id=mv.run_id,
            aliases=aliases,
            tags=dict(mv.tags or {}),
            created_ms=int(mv.creation_timestamp or 0),
            source=mv.source or "",
        )

    def _require_model(self, name: str) -> Any:
        try:
            return self._call(f"model '{name}'", lambda: self.client.get_registered_model(name))
        except NotFoundError:
            raise NotFoundError(f"model '{name}' is not registered.", code="model_not_found") from None

    def list_models(self) -> list[ModelSummary]:
        models = self._call("list models", lambda: list(self.client.search_registered_models(max_results=1000)))
        out = []
        for m in sorted(models, key=lambda m: m.name):
            latest = max((int(v.version) for v in (m.latest_versions or [])), default=None)
            aliases = {a: str(v) for a, v in (m.aliases or {}).items()}
            out.append(ModelSummary(m.name, str(latest) if latest else None, aliases, m.description or ""))
        return out

    def list_versions(self, name: str) -> list[VersionInfo]:
        model = self._require_model(name)
        found = self._call(
            f"versions of '{name}'",
            lambda: list(self.client.search_model_versions(f"name = '{name}'", max_results=10_000)),
        )
        return sorted((self._info(mv, model) for mv in found), key=lambda v: int(v.version))

    def get_version(self, name: str, version: str) -> VersionInfo:
        self._require_model(name)
        try:
            return self._info(self._call(f"'{name}/{version}'", lambda: self.client.get_model_version(name, version)))
        except NotFoundError:
            have = [v.version for v in self.list_versions(name)]
            span = f"versions {have[0]} to {have[-1]}" if have else "no versions"
            raise NotFoundError(
                f"model '{name}' has no version {version} (it has {span}).", code="version_not_found"
            ) from None

    def get_alias(self, name: str, alias: str) -> VersionInfo | None:
        model = self._require_model(name)
        version = (model.aliases or {}).get(alias)
        return None if version is None else self.get_version(name, str(version))

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self._call(f"set {alias} of '{name}'", lambda: self.client.set_registered_model_alias(name, alias, version))

    def delete_alias(self, name: str, alias: str) -> None:
        self._call(f"remove {alias} of '{name}'", lambda: self.client.delete_registered_model_alias(name, alias))

    def find_by_tag(self, name: str, key: str, value: str) -> VersionInfo | None:
        query = f"name = '{name}' and tags.`{key}` = '{value}'"
        found = self._call(f"search '{name}'", lambda: list(self.client.search_model_versions(query)))
        if not found:
            return None
        return self._info(min(found, key=lambda mv: int(mv.version)), self._require_model(name))

    def set_version_tag(self, name: str, version: str, key: str, value: str) -> None:
        self._call(f"tag '{name}/{version}'", lambda: self.client.set_model_version_tag(name, version, key, value))

    def run_metrics(self, run_id: str) -> dict[str, float]:
        run = self._call(f"run {run_id}", lambda: self.client.get_run(run_id))
        return dict(run.data.metrics)
