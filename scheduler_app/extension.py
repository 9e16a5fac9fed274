"""``Scheduler``: the Flask extension, and the composition root of the package.

``init_app(app)`` reads the ``SCHEDULER_*`` settings, opens the database, builds the store,
the node and the services for that app, and registers the routes and the CLI under the
extension's own names. It starts no thread: ``start()`` (gunicorn's hook, the CLI, or the
host's own code) does. The public Python API of ``shared/PYTHON_API.md`` lives here.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVar, overload

from flask import Flask, current_app, has_app_context

from . import alerts, cli, declared_jobs, metrics, routes
from .enqueue import TaskFunction, with_handle
from .errors import AlreadyQueued, ConfigError, InvalidRequest
from .handles import RunHandle
from .scheduler.engine import Engine
from .scheduler.node import new_node_id
from .scheduler.process_helper import building_helper_app
from .scheduler.triggers import TriggerError, build_trigger
from .services import EXTENSION_KEY, Services, compat
from .services.models import JobCreate
from .settings import Settings, config_key, load_settings
from .store import Database, Store
from .tasks import Task, registry
from .tasks.controls import OPTIONS as CONTROL_OPTIONS

log = logging.getLogger(__name__)

PRUNE_JOB_ID = "maintenance.prune_runs"
F = TypeVar("F", bound=Callable[..., Any])
RoleLoader = Callable[[], "str | None"]


class Scheduler:
    """Background work for a Flask app: ``Scheduler(app)`` or ``Scheduler()`` then
    ``init_app(app)``, as with any Flask extension. See ``shared/PYTHON_API.md``."""

    def __init__(self, app: Flask | None = None) -> None:
        self.app: Flask | None = None
        self.role_loader_function: RoleLoader | None = None
        # Jobs declared by @task("interval", id=...), in Flask-APScheduler's shape.
        self._declared: list[dict[str, Any]] = []
        self._apps: weakref.WeakSet[Flask] = weakref.WeakSet()
        if app is not None:
            self.init_app(app)

    # -- set-up ---------------------------------------------------------------------------------
    def init_app(self, app: Flask) -> None:
        """Build this extension's parts for ``app`` and register its routes and CLI. Starts
        no thread. A wrong setting raises ConfigError naming the key, before anything is
        written."""
        if EXTENSION_KEY in app.extensions:
            raise RuntimeError("this app already has a scheduler_app.Scheduler")
        settings = load_settings(app.config, app.instance_path)
        _check_prune_cron(settings)
        for module in settings.task_modules:
            try:
                importlib.import_module(module)
            except ImportError as exc:
                raise ConfigError(f"SCHEDULER_TASK_MODULES: cannot import {module!r}: {exc}") \
                    from exc
        if settings.database_url.startswith("sqlite:///" + app.instance_path):
            os.makedirs(app.instance_path, exist_ok=True)
        db = Database(settings.database_url, pool_size=max(10, settings.worker_threads + 6))
        try:
            if not building_helper_app():  # the node that started the helper migrated
                _prepare_schema(settings, db)
            store = Store(db, alert_on=alerts.recorded_events(settings))
            node_id = new_node_id()
            engine = Engine(app, settings, store, node_id=node_id,
                            companions=alerts.companions(settings, store, node_id))
            svc = Services.build(settings, store, engine, self)
            svc.install(app)
            # A bad JOBS entry or decorated job stops start-up here, before any write.
            declared_jobs.init_app(app, self._declared)
        except BaseException:
            app.extensions.pop(EXTENSION_KEY, None)
            db.dispose()
            raise
        metrics.init_app(app)
        routes.register(app)
        cli.init_app(app)
        self._apps.add(app)
        self.app = app  # the newest app is the one calls outside an app context act on
        if settings.autostart:
            _start_with_first_request(app, self)

    def services(self, app: Flask | None = None) -> Services:
        """The parts built for ``app``: the given one, the current one, or the one this
        extension was made with."""
        if app is None:
            app = self._current_app()
        state = app.extensions.get(EXTENSION_KEY)
        if state is None:
            raise RuntimeError("scheduler_app.Scheduler.init_app(app) has not been called "
                               "for this app")
        return state  # type: ignore[no-any-return]

    def _current_app(self) -> Flask:
        if has_app_context():
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
            state = app.extensions.get(EXTENSION_KEY)
            if state is not None and state.extension is self:
                return app
        if self.app is not None:
            return self.app
        raise RuntimeError("no app: call init_app(app) first, or work inside the app's "
                           "context")

    def role_loader(self, function: RoleLoader) -> RoleLoader:
        """Decorate the host's function that says who the current request is: ``"admin"``,
        ``"viewer"`` or None (then API tokens and the loopback rule decide)."""
        self.role_loader_function = function
        return function

    # -- starting and stopping ----------------------------------------------------------------
    def start(self, paused: bool = False, app: Flask | None = None, *,
              as_worker: bool = False) -> None:
        """Start this process's node: it fires jobs and executes runs. Idempotent, and safe
        in every process of ``gunicorn -w N``: the database makes each fire happen once.
        ``as_worker``: this process serves no HTTP (``flask scheduler worker``)."""
        svc = self.services(app)
        target = self.app_of(svc)
        if svc.scheduler.started:
            return
        problem = svc.store.db.schema_problem()
        if problem is not None:  # the tables are not there yet: say so, do not crash the worker
            log.error("the scheduler is not started: %s", problem)
            return
        svc.scheduler.start(paused=paused, as_worker=as_worker)
        register = getattr(threading, "_register_atexit", atexit.register)
        try:
            # Before concurrent.futures joins its threads at exit, so running tasks are asked
            # to stop and their runs handed back instead of exit waiting for them.
            register(self.shutdown, True, target)
        except RuntimeError:  # the interpreter is already shutting down
            pass
        _install_builtin_jobs(svc)
        declared_jobs.install(target)

    def shutdown(self, wait: bool = True, app: Flask | None = None) -> None:
        """Stop firing and executing here; running tasks get SHUTDOWN_GRACE_SECONDS, then
        their runs are handed back to the queue."""
        self.services(app).scheduler.shutdown(wait=wait)

    @property
    def running(self) -> bool:
        return self.services().scheduler.started

    def app_of(self, svc: Services) -> Flask:
        """The app ``svc`` was built for."""
        for app in self._apps:
            if app.extensions.get(EXTENSION_KEY) is svc:
                return app
        raise RuntimeError("these services belong to no app of this extension")

    # -- tasks ------------------------------------------------------------------------------
    @overload
    def task(self, function: F, /) -> TaskFunction: ...

    @overload
    def task(self, trigger: str | None = None, /, **options: Any
             ) -> Callable[[Callable[..., Any]], TaskFunction]: ...

    def task(self, first: Any = None, /, **options: Any) -> Any:
        """Register a task, in any of three forms::

            @scheduler.task                       # named "<module>.<function>"
            @scheduler.task(name="reports.build", timeout=600, max_attempts=3, max_running=2)
            @scheduler.task(unique=True, concurrency_key="imports", rate_limit="100/m")
            @scheduler.task("interval", id="cleanup", minutes=5)   # Flask-APScheduler's form

        The last also declares a job that fires the task (its options are APScheduler's:
        ``id``, ``name``, ``args``, ``kwargs``, the trigger's fields, ``max_instances``...).
        """
        if callable(first):
            return self._register(first, {})
        if first is None:
            return lambda function: self._register(function, options)
        if not isinstance(first, str):
            raise TypeError("@scheduler.task takes a function, task options, or a trigger name "
                            f"and its fields, not {first!r}")
        trigger = first

        def decorate(function: Callable[..., Any]) -> TaskFunction:
            handle = self._register(function, {})
            body = {"id": options.get("id") or handle.name, **options, "trigger": trigger,
                    "func": handle.name}
            self._declare(body)
            return handle

        return decorate

    def _register(self, function: Callable[..., Any], options: dict[str, Any]) -> TaskFunction:
        allowed = {"name", "timeout", "max_attempts", "max_running", "retry_backoff",
                   "isolation", "memory_limit_mb", *CONTROL_OPTIONS}
        unknown = sorted(set(options) - allowed)
        if unknown:
            raise TypeError(f"@scheduler.task: unknown option(s) {', '.join(unknown)}; "
                            f"options are {', '.join(sorted(allowed))}")
        task = registry.register(function, context=None, full_name=True, **options)
        return TaskFunction(self, task)

    def _declare(self, body: dict[str, Any]) -> None:
        """A job declared in code: checked now against every app already set up (and at
        ``init_app`` for later ones), written when the node starts (or now, if started)."""
        self._declared.append(body)
        for app in self._apps:
            requests = declared_jobs.add(app, body)
            svc = self.services(app)
            if svc.scheduler.started:
                declared_jobs.write(app, requests)

    def get_run(self, run_id: int) -> RunHandle:
        """The run with this id (``LookupError`` if there is none)."""
        svc = self.services()
        return RunHandle(svc.runs.get(run_id), svc)

    # -- jobs, with Flask-APScheduler's method names ------------------------------------------
    def add_job(self, id: str, func: Any, **options: Any) -> dict[str, Any]:  # noqa: A002
        """Schedule ``func`` (a task, a task's function or a task name) with a trigger, as
        Flask-APScheduler's ``add_job``: ``add_job("nightly", build, trigger="cron",
        hour=2, kwargs={...})``. Validated as the HTTP API validates; a bad field raises a
        ``ValueError`` naming every bad field, and nothing is stored."""
        svc = self.services()
        record = compat.add(svc.jobs, {"id": id, "func": _task_name(func), **options})
        return self._job(svc, record.id)

    def get_job(self, id: str) -> dict[str, Any] | None:  # noqa: A002
        """The job as ``GET /api/jobs/<id>`` shows it, or None."""
        svc = self.services()
        try:
            return self._job(svc, id)
        except LookupError:
            return None

    def get_jobs(self) -> list[dict[str, Any]]:
        svc = self.services()
        jobs: list[dict[str, Any]] = []
        cursor = None
        while True:
            records, cursor = svc.jobs.find(task=None, paused=None, limit=500, cursor=cursor)
            jobs.extend(svc.jobs.views(records))
            if cursor is None:
                return jobs

    def modify_job(self, id: str, **changes: Any) -> dict[str, Any]:  # noqa: A002
        """Change a job, with Flask-APScheduler's field names (``trigger="cron", hour=3``,
        ``kwargs``, ``name``, ``max_instances``...); a new trigger reschedules it."""
        svc = self.services()
        compat.modify(svc.jobs, id, changes)
        return self._job(svc, id)

    def pause_job(self, id: str) -> dict[str, Any]:  # noqa: A002
        svc = self.services()
        svc.jobs.pause(id)
        return self._job(svc, id)

    def resume_job(self, id: str) -> dict[str, Any]:  # noqa: A002
        svc = self.services()
        svc.jobs.resume(id)
        return self._job(svc, id)

    def remove_job(self, id: str) -> None:  # noqa: A002
        self.services().jobs.delete(id)

    def run_job(self, id: str) -> RunHandle:  # noqa: A002
        """Queue a run of the job now (never inline); its schedule is unchanged."""
        svc = self.services()
        try:
            return RunHandle(svc.jobs.run_now(id), svc)
        except AlreadyQueued as exc:  # the job's task is unique and its key is held
            with_handle(exc, svc)
            raise

    @staticmethod
    def _job(svc: Services, job_id: str) -> dict[str, Any]:
        return svc.jobs.views([svc.jobs.get(job_id)])[0]


APScheduler = Scheduler
"""Flask-APScheduler's name: changing the import is the whole migration."""


def _task_name(func: Any) -> Any:
    if isinstance(func, TaskFunction):
        return func.name
    if isinstance(func, Task):
        return func.name
    if callable(func):
        task = registry.of_function(func)
        if task is not None:
            return task.name
        raise InvalidRequest.field("func", f"{getattr(func, '__qualname__', func)!r} is not a "
                                           "registered task; decorate it with @scheduler.task")
    return func


def _prepare_schema(settings: Settings, db: Database) -> None:
    """Migrate the database to this code's schema (the default), or with
    ``SCHEDULER_SCHEMA_AUTO_UPGRADE`` false leave that to ``flask scheduler db upgrade`` and
    only say if it is due."""
    if settings.schema_auto_upgrade:
        db.migrate()
        return
    problem = db.schema_problem()
    if problem is not None:
        log.error("%s", problem)


def _check_prune_cron(settings: Settings) -> None:
    """PRUNE_RUNS_CRON must be a crontab expression (checked here, where the trigger builder
    may be imported: settings sit below the scheduler layer)."""
    if settings.prune_cron is None:
        return
    try:
        build_trigger({"type": "cron", "expr": settings.prune_cron}, settings.timezone)
    except TriggerError as exc:
        raise ConfigError(f"{config_key('prune_cron')} must be a crontab expression or empty: "
                          f"{exc.message}") from None


def _install_builtin_jobs(svc: Services) -> None:
    settings = svc.settings
    if not settings.prune_cron or settings.role == "worker":
        return
    if PRUNE_JOB_ID not in registry:
        log.warning("PRUNE_RUNS_CRON is set but scheduler_app.tasks.maintenance is not in "
                    "TASK_MODULES; old runs will not be pruned")
        return
    svc.jobs.ensure(JobCreate(
        id=PRUNE_JOB_ID, name="Prune old runs", task=PRUNE_JOB_ID,
        kwargs={"older_than_days": settings.prune_older_than_days},
        trigger={"type": "cron", "expr": settings.prune_cron}))


def _start_with_first_request(app: Flask, extension: Scheduler) -> None:
    """SCHEDULER_AUTOSTART: start the node with the first request this process serves, and in
    the debug reloader's serving process at once (so jobs fire right after a reload)."""
    from werkzeug.serving import is_running_from_reloader

    started = threading.Event()
    if is_running_from_reloader():
        started.set()
        extension.start(app=app)

    @app.before_request
    def _start_on_first_request() -> None:
        # Once per process: an explicit stop (POST /scheduler/shutdown) then sticks.
        if not started.is_set():
            started.set()
            extension.start(app=app)
