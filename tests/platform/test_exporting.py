"""Export of registered versions against real MLflow (SQLite) and real TensorFlow, no broker:
the plain functions the export task wraps."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest

from tests.conftest import tiny_spec


def test_in_process_training_exports_then_gates(settings) -> None:
    from modelyard.platform.context import Platform
    from modelyard.platform.services.exporting import export_version
    from modelyard.platform.services.training import TrainRequest, run_training

    platform = Platform(settings)
    result = run_training(platform, TrainRequest(request_id="inproc-1", spec=tiny_spec("inproc")))

    assert result["status"] == "promoted" and result["export"]["parity"]["passed"]
    tags = platform.registry.get_version("inproc", "1").tags
    assert tags["modelyard.export.status"] == "passed" and tags["modelyard.export.server-gpu"] == "none"
    assert tags["modelyard.deployable"] == "true"
    # search_model_versions returns no aliases (mlflow#9783); the registry fills them (MLflow on SQLite here,
    # on an MLflow server in tests/integration/test_server_mode.py).
    assert [(v.version, v.aliases) for v in platform.registry.list_versions("inproc")] == [("1", ["champion"])]

    # Exporting again for a target this CPU machine cannot serve filters what is shown,
    # not what the version can do: it stays deployable.
    again = export_version(platform, "inproc", "1", "test", targets=["server-gpu"])
    assert again["targets"] == {"server-gpu": None} and again["deployable"] is True
    assert platform.registry.get_version("inproc", "1").tags["modelyard.deployable"] == "true"


def test_a_version_without_signature_is_not_deployable(settings) -> None:
    import keras
    import mlflow
    import mlflow.keras

    from modelyard.exporters.convert import ExportError
    from modelyard.platform.context import Platform
    from modelyard.platform.registry.mlflow_store import MlflowRegistry
    from modelyard.platform.registry.tracking import experiment_for, use_tracking
    from modelyard.platform.services.bootstrap import prepare_stores
    from modelyard.platform.services.exporting import export_version

    prepare_stores(settings)
    use_tracking(settings)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    # The model's experiment keeps its artifacts under the home; MLflow's Default one would write ./mlruns.
    experiment = experiment_for(settings, "nosig")
    with mlflow.start_run(experiment_id=experiment) as run, tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model"
        path.mkdir()
        mlflow.keras.save_model(model, str(path), pip_requirements=["keras"])  # no signature
        mlflow.log_artifacts(str(path), "model")
        mlflow.log_dict(tiny_spec("nosig"), "evaluation/spec.json")
    version = mlflow.register_model(f"runs:/{run.info.run_id}/model", "nosig").version

    with pytest.raises(ExportError, match=r"nosig/1 has no signature; log the model with one to export it\."):
        export_version(Platform(settings), "nosig", str(version), "test")
    tags = MlflowRegistry(settings.tracking_uri).get_version("nosig", "1").tags
    assert tags["modelyard.deployable"] == "false" and tags["modelyard.export.status"] == "failed"
