"""Jobs declared in configuration (``JOBS``) or in code (``@scheduler.task("interval", ...)``):
created, or brought up to date, by id at start.

Two shapes are read. Flask-APScheduler's: ``func`` names a registered task (its name or its
``module:function`` reference; nothing is imported from it), the trigger's name and fields sit
at the top level, positional ``args`` map onto the task's parameters; it is translated exactly
as the ``/scheduler`` API translates a request body. And the API's: ``task``, ``kwargs``, a
``trigger`` object, options, ``paused``.

Every declaration is validated when the app is created, as ``POST /api/jobs`` would validate
it, before any is written: one bad declaration stops start-up with a ``ConfigError`` naming the
job and the field, and leaves the job table as it was. They are written when the node starts,
through ``JobService.ensure``: a job already stored with the same definition is left alone
(its phase and pause state with it), a changed one is updated, so every process of a cluster
can do this at once and each id stays one job.

Decisions the convention leaves open:
- A declaration without a trigger is an error. Flask-APScheduler's default (a date trigger at
  "now") would run the job again at every start of every process.
- A declared date trigger whose time has passed is skipped with a warning: the one-off job
  has fired (and left the table) or was missed, and neither may stop a restart.
- A job dropped from ``JOBS`` is not deleted: the table also holds jobs made through the API
  and nothing marks which came from configuration. Delete it with the API or the CLI.
- Configuration wins at each start: an API edit of a declared job (its trigger, kwargs,
  options) is undone by the next start, except pausing, which is left to the operator.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from typing import Any

from flask import Flask

from .errors import ConfigError, InvalidRequest, ServiceError
from .services import services
from .services.compat import client_fields, create_request
from .services.jobs import JobService
from .services.models import JobCreate, parse_model
from .tasks import registry

log = logging.getLogger(__name__)

EXTENSION_KEY = "scheduler_app.declared_jobs"
_PASSED_DATE = [{"field": "trigger.run_date", "message": "is in the past"}]


def init_app(app: Flask, in_code: list[dict[str, Any]]) -> None:
    """Validate every declaration now (``JOBS``, then those made in code), so a bad one stops
    start-up before anything is written; ``install`` writes them when the node starts."""
    svc = services(app)
    requests = validate(svc.settings.declared_jobs, svc.jobs)
    for body in in_code:
        requests.extend(_validate_in_code(body, svc.jobs))
    app.extensions[EXTENSION_KEY] = requests


def add(app: Flask, body: dict[str, Any]) -> list[JobCreate]:
    """Validate a job declared in code after ``init_app`` (Flask-APScheduler's quick-start
    decorates its tasks after it) and keep it for ``install``; return what to write."""
    requests = _validate_in_code(body, services(app).jobs)
    app.extensions[EXTENSION_KEY].extend(requests)
    return requests


def _validate_in_code(body: dict[str, Any], jobs: JobService) -> list[JobCreate]:
    """As ``validate``; a bad declaration raises InvalidRequest (a ValueError) naming it."""
    try:
        return _checked(body, jobs)
    except InvalidRequest as exc:
        raise InvalidRequest(f"@scheduler.task job {body.get('id')!r}: {exc.message}",
                             details=exc.details) from None


def validate(declarations: tuple[dict[str, Any], ...], jobs: JobService) -> list[JobCreate]:
    """The create requests the declarations describe, checked as the API checks a new job.

    Raises ConfigError for the first declaration that is wrong, naming it and its fields."""
    requests = []
    for index, declaration in enumerate(declarations):
        try:
            requests.extend(_checked(declaration, jobs))
        except InvalidRequest as exc:
            raise ConfigError(f"JOBS[{index}] (id {declaration.get('id')!r}): {exc.message}") \
                from None
    return requests


def _checked(declaration: dict[str, Any], jobs: JobService) -> list[JobCreate]:
    """The declaration's create request, or none when its date trigger has passed."""
    request, in_config_terms = _request(declaration)
    with in_config_terms():
        fires = _check(jobs, request)
    if not fires:
        log.warning("declared job %s: its date trigger has passed; not created",
                    request.id, extra={"job_id": request.id})
        return []
    return [request]


def install(app: Flask) -> None:
    """Create or update every declared job (idempotent, safe in several processes at once).

    A job that cannot be written now (its date passed since start-up, the job table is full)
    is logged and skipped: the others are still written, and the next start tries again.
    Worker-only nodes leave job definitions to the nodes that serve the API, as they do for
    the built-in jobs."""
    write(app, app.extensions.get(EXTENSION_KEY, []))


def write(app: Flask, requests: list[JobCreate]) -> None:
    """Create or update these declared jobs now (see ``install``)."""
    svc = services(app)
    if svc.settings.role == "worker" or not requests:
        return
    in_place = []
    for request in requests:
        try:
            record = svc.jobs.ensure(request)
        except ServiceError as exc:
            log.error("declared job %s not written: %s", request.id, exc.message,
                      extra={"job_id": request.id})
            continue
        in_place.append(record.id)
    log.info("declared jobs in place: %s", ", ".join(in_place) or "none",
             extra={"node": svc.scheduler.node.id})


def _request(declaration: dict[str, Any]
             ) -> tuple[JobCreate, Callable[[], AbstractContextManager[Any]]]:
    """The create request, and a context manager that names fields in the errors of further
    checks as the declaration spells them (``minute``, not ``trigger.minute``)."""
    if "func" in declaration and "task" in declaration:
        raise InvalidRequest.field("task", "give either func (Flask-APScheduler's shape) or "
                                           "task (the API's), not both")
    if "func" not in declaration:
        return parse_model(JobCreate, declaration), nullcontext
    # The /scheduler API's reader (services.compat), so both agree on Flask-APScheduler's shape.
    if declaration.get("trigger") is None:
        raise InvalidRequest.field("trigger", "is required: 'cron', 'interval' or 'date' "
                                              "with its fields (a declared job without one "
                                              "would run again at every start)")
    body = {key: value for key, value in declaration.items() if key != "replace_existing"}
    body["func"] = _func_name(body["func"])
    if isinstance(body.get("args"), tuple):
        body["args"] = list(body["args"])
    request, _, renames = create_request(body)
    return request, lambda: client_fields(renames)


def _func_name(func: object) -> object:
    """A function object (a Python config file may hold one) stands for the task registered
    from it; any other function is reported by its reference as not a registered task."""
    if callable(func) and hasattr(func, "__module__") and hasattr(func, "__qualname__"):
        task = registry.of_function(func)
        return task.name if task is not None else f"{func.__module__}:{func.__qualname__}"
    return func


def _check(jobs: JobService, request: JobCreate) -> bool:
    """Validate as ``create`` does, writing nothing; False for a date trigger already past."""
    try:
        jobs._spec(request)  # the create path's own validation (task, kwargs, trigger)
    except InvalidRequest as exc:
        if exc.details == _PASSED_DATE:
            return False
        raise
    return True
