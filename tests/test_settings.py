"""Settings come from config/settings.py, then FLASK_* environment variables."""

from __future__ import annotations

import pytest

from scheduler_app import create_app
from scheduler_app.errors import ConfigError
from scheduler_app.services import services


def test_environment_overrides(monkeypatch, tmp_path):
    url = f"sqlite:///{tmp_path / 'env.sqlite3'}"
    monkeypatch.setenv("FLASK_DATABASE_URL", url)
    monkeypatch.setenv("FLASK_API_TOKENS", '{"s3cret": "admin", "peek": "viewer"}')
    monkeypatch.setenv("FLASK_WORKER_THREADS", "7")
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-the-environment")
    monkeypatch.setenv("FLASK_SCHEDULER_TIMEZONE", "Europe/Paris")
    app = create_app({"SCHEDULER_AUTOSTART": False})
    settings = services(app).settings
    assert settings.database_url == url
    assert settings.api_tokens == {"s3cret": "admin", "peek": "viewer"}
    assert settings.worker_threads == 7
    assert settings.timezone == "Europe/Paris"
    assert app.config["SECRET_KEY"] == "from-the-environment"
    services(app).store.db.dispose()


def test_a_bad_environment_value_names_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("FLASK_DATABASE_URL", f"sqlite:///{tmp_path / 'env.sqlite3'}")
    monkeypatch.setenv("FLASK_WORKER_THREADS", "many")
    with pytest.raises(ConfigError, match="WORKER_THREADS"):
        create_app({"SCHEDULER_AUTOSTART": False})


def test_default_database_is_a_file_in_the_instance_folder(monkeypatch, tmp_path):
    monkeypatch.delenv("FLASK_DATABASE_URL", raising=False)
    app = create_app({"SCHEDULER_AUTOSTART": False})
    try:
        url = services(app).settings.database_url
        assert url.startswith("sqlite:///") and url.endswith("/instance/scheduler.sqlite3")
        assert app.instance_path in url
    finally:
        services(app).store.db.dispose()
