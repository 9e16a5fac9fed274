"""A Flask service that runs long Python tasks in the background: now, later, or on a schedule,
with a durable record of every run. ``create_app()`` wires it; it starts no thread."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import secrets
import threading
import time
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix
from werkzeug.serving import is_running_from_reloader

from . import alerts, declared_jobs, logs, migrations, security
from .errors import ConfigError
from .scheduler.extension import JobScheduler
from .services import Services, services
from .services.models import JobCreate
from .settings import Settings, load_settings
from .store import Database, Store
from .tasks import registry

__all__ = ["create_app", "services", "start_scheduler", "stop_scheduler"]

log = logging.getLogger(__name__)

PRUNE_JOB_ID = "maintenance.prune_runs"


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: settings, task modules, database tables, scheduler (not started), routes.

    ``config`` overrides everything else (tests pass a temporary database here).
    """
    app = Flask(__name__, instance_relative_config=True)
    app.json.sort_keys = False  # type: ignore[attr-defined]  # keep the contract's field order
    app.config.from_object("config.settings.Config")
    app.config.from_prefixed_env()
    if config:
        app.config.update(config)
    os.makedirs(app.instance_path, exist_ok=True)
    settings = load_settings(
        app.config, "sqlite:///" + os.path.join(app.instance_path, "scheduler.sqlite3"))
    logs.configure(settings.log_format, settings.log_level)
    if not app.config.get("SECRET_KEY"):
        app.config["SECRET_KEY"] = _instance_secret_key(app.instance_path)
    if settings.proxy_fix_hops:
        hops = settings.proxy_fix_hops
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=hops, x_proto=hops, x_host=hops, x_port=hops)
    security.init_app(app)
    for module in settings.task_modules:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ConfigError(f"TASK_MODULES: cannot import {module!r}: {exc}") from exc

    db = Database(settings.database_url, pool_size=max(10, settings.worker_threads + 6))
    _prepare_schema(app, db)
    store = Store(db)
    scheduler = JobScheduler(app, settings, store)
    Services.build(settings, store, scheduler).install(app)
    declared_jobs.init_app(app)  # a bad JOBS entry stops start-up here, before any write
    alerts.init_app(app)

    from . import api, cli, dashboard, health, metrics
    from .api import builtin

    api.init_app(app)
    health.init_app(app)
    metrics.init_app(app)
    dashboard.init_app(app)
    cli.init_app(app)
    if settings.api_enabled:
        builtin.init_app(app, settings.api_prefix)

    if settings.autostart:
        autostarted = threading.Event()
        if is_running_from_reloader():
            # The reloader's serving process under `flask run --debug`: start now, so jobs
            # fire right after a reload, not only after the next request.
            autostarted.set()
            start_scheduler(app)

        @app.before_request
        def _start_on_first_request() -> None:
            # Once per process: an explicit stop (POST /scheduler/shutdown) then sticks.
            if not autostarted.is_set():
                autostarted.set()
                start_scheduler(app)

    return app


def _prepare_schema(app: Flask, db: Database) -> None:
    """Migrate the database to this code's schema (the default), or with
    ``SCHEMA_AUTO_UPGRADE=false`` leave that to ``flask db upgrade`` and only say if it is due."""
    auto = app.config.get("SCHEMA_AUTO_UPGRADE", True)
    if not isinstance(auto, bool):
        raise ConfigError(f"SCHEMA_AUTO_UPGRADE must be true or false, not {auto!r}")
    if auto:
        db.migrate()
        return
    current, head = db.schema_revision(), migrations.head()
    behind = current is None or (current != head and migrations.is_known(current))
    if behind:
        log.error("the database schema is at %s and this code needs %s: run "
                  "'flask --app wsgi db upgrade'", current or "nothing", head)


def start_scheduler(app: Flask) -> None:
    """Start this process's node and install the built-in jobs. Called by gunicorn's
    ``post_worker_init`` hook, the ``scheduler worker`` command, or the first request.

    The node is also stopped gracefully when the interpreter exits (``flask run`` reloads,
    Ctrl-C): running tasks are asked to stop and unfinished runs are handed back. The stop is
    registered with ``threading._register_atexit`` so that it runs *before*
    ``concurrent.futures`` joins its pool threads at exit; a plain ``atexit`` callback would
    run after that join, so exit would wait for every running task to end by itself, and the
    node would never be marked stopped.
    """
    app = _real(app)
    svc = services(app)
    if svc.scheduler.started:
        return
    svc.scheduler.start()
    register = getattr(threading, "_register_atexit", atexit.register)
    try:
        register(stop_scheduler, app)
    except RuntimeError:  # the interpreter is already shutting down
        pass
    _install_builtin_jobs(svc.settings, svc)
    declared_jobs.install(app)


def stop_scheduler(app: Flask) -> None:
    services(_real(app)).scheduler.shutdown()


def _real(app: Flask) -> Flask:
    """The app itself, not ``current_app``'s proxy (which is gone when exit hooks run)."""
    getter = getattr(app, "_get_current_object", None)
    return getter() if getter is not None else app  # type: ignore[no-any-return]


def _install_builtin_jobs(settings: Settings, svc: Services) -> None:
    if not settings.prune_cron or settings.role == "worker":
        return
    if "maintenance.prune_runs" not in registry:
        log.warning("PRUNE_RUNS_CRON is set but scheduler_app.tasks.maintenance is not in "
                    "TASK_MODULES; old runs will not be pruned")
        return
    svc.jobs.ensure(JobCreate(
        id=PRUNE_JOB_ID, name="Prune old runs", task="maintenance.prune_runs",
        kwargs={"older_than_days": settings.prune_older_than_days},
        trigger={"type": "cron", "expr": settings.prune_cron}))


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
