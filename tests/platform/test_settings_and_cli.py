import subprocess
import sys

from modelyard.platform.settings import Settings


def test_embedded_defaults_live_under_home(settings) -> None:
    assert settings.mode == "embedded"
    assert settings.effective_broker_url == "filesystem://"
    assert settings.tracking_uri == f"sqlite:///{settings.root / 'mlflow.db'}"
    assert settings.platform_database_url == f"sqlite:///{settings.root / 'platform.db'}"
    assert settings.effective_visibility_timeout > settings.train_time_limit


def test_server_mode_comes_from_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("MODELYARD_BROKER_URL", "redis://r:6379/0")
    monkeypatch.setenv("MODELYARD_MLFLOW_TRACKING_URI", "http://mlflow:5000")
    s = Settings()
    assert s.mode == "server" and s.tracking_uri == "http://mlflow:5000" and s.artifact_location is None


def test_help_imports_nothing_heavy() -> None:
    """What makes --help fast is what it does not import; a wall-clock bound would flake on a busy machine."""
    code = (
        "import sys; sys.argv = ['modelyard', '--help']\n"
        "from modelyard.platform.cli.main import cli\n"
        "try:\n    cli()\nexcept SystemExit:\n    pass\n"
        "print([m for m in ('tensorflow', 'keras', 'mlflow', 'pandas', 'celery', 'sklearn', 'sqlalchemy') "
        "if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "demo" in out
    assert out.strip().splitlines()[-1] == "[]"


def test_unknown_model_is_one_clear_sentence(settings) -> None:
    import os

    env = {**os.environ, "MODELYARD_HOME": str(settings.root), "COLUMNS": "200"}
    for args, message in [
        (["versions", "show", "ghost@champion"], "error: model 'ghost' is not registered."),
        (["models", "rollback", "ghost"], "error: model 'ghost' is not registered."),
        (["run", "gpu"], "error: unknown part 'gpu' (parts: train, export, monitor, beat, api)."),
    ]:
        done = subprocess.run(
            [sys.executable, "-m", "modelyard.platform.cli.main", *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 1 and done.stderr.strip() == message, done.stderr
