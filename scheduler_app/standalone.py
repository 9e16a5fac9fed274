"""The standalone service: one host app of the extension, configured from the environment.

``create_app()`` builds a Flask app of its own, loads ``config.settings.Config`` and
``FLASK_*`` environment variables (the bare names, ``FLASK_WORKER_THREADS``, as well as the
extension's ``FLASK_SCHEDULER_*``), and sets what a host app would set for itself: the secret
key, its session cookie, its logging, JSON errors for every path, a proxy fix. Then it adds the
extension with the URL prefix ``""``. ``wsgi.py`` and ``make run`` serve it.
"""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from . import cli, logs, security
from .api.errors import register_error_handlers
from .errors import ConfigError
from .extension import Scheduler
from .services import services
from .settings import bare_keys

log = logging.getLogger(__name__)

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    """Build the service: settings, tasks, database, scheduler (not started), routes.

    ``config`` overrides everything else (tests pass a temporary database here).
    """
    from config.settings import Config

    app = Flask("scheduler_app", instance_relative_config=True)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's field order
    app.config.from_object(Config)
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    for bare, key in bare_keys().items():  # the older, bare name wins when it is set
        if bare in app.config:
            app.config[key] = app.config[bare]
    logs.configure(*_log_settings(app.config))
    os.makedirs(app.instance_path, exist_ok=True)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret_key(app.instance_path)
    hops = app.config.get("PROXY_FIX_HOPS", 0)
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= 10:
        raise ConfigError(f"PROXY_FIX_HOPS must be an integer from 0 to 10, got {hops!r}")
    if hops:
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    security.harden_sessions(app)
    register_error_handlers(app)  # this app is ours: JSON errors for every path
    Scheduler(app)
    cli.add_top_level_commands(app)
    return app


def start_scheduler(app: Flask) -> None:
    """Start the node of ``app`` (gunicorn's ``post_worker_init``, tests)."""
    app = _real(app)
    services(app).extension.start(app=app)


def stop_scheduler(app: Flask) -> None:
    app = _real(app)
    services(app).extension.shutdown(app=app)


def _real(app: Flask) -> Flask:
    """The app itself, not ``current_app``'s proxy (which is gone when exit hooks run)."""
    getter = getattr(app, "_get_current_object", None)
    return getter() if getter is not None else app  # type: ignore[no-any-return]


def _log_settings(config: Mapping[str, Any]) -> tuple[str, str]:
    fmt = config.get("LOG_FORMAT", "text")
    if fmt not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, got {fmt!r}")
    level = config.get("LOG_LEVEL", "INFO")
    if not isinstance(level, str) or level.upper() not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {level!r}")
    return fmt, level.upper()


def _instance_secret_key(instance_path: str) -> str:
    """A secret key kept in the instance folder, made once, shared by every worker on this
    host (a per-process random key would make one worker's session cookie invalid on the
    next). Several hosts must set FLASK_SECRET_KEY to one value."""
    path = os.path.join(instance_path, "secret_key")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):  # another worker may be writing it right now
            with open(path) as existing:
                key = existing.read().strip()
            if key:
                return key
            time.sleep(0.01)
        raise ConfigError(f"{path} is empty; delete it or set FLASK_SECRET_KEY") from None
    key = secrets.token_hex(32)
    with os.fdopen(fd, "w") as new:
        new.write(key)
    return key
