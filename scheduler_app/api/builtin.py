"""Flask-APScheduler's REST API (``/scheduler`` by default), with its routes and JSON shapes,
served over this service's task registry and job service.

Why it is not the shipped ``flask_apscheduler.api``: that module passes the request body to
``add_job(**data)``, and APScheduler resolves a ``func`` string with ``__import__``, so anyone
who can reach the API can run ``os:system`` (remote code execution); its ``run`` endpoint calls
the job's function inside the HTTP request; and most bad input (a non-JSON body, an unknown
trigger, a wrong type) ends as a 500. Here:

- ``func`` must name a registered task, by its task name (``demo.sleep``) or by the exact
  ``module:function`` reference of one (``scheduler_app.tasks.demo:sleep``). The string is
  only looked up in the registry; nothing is ever imported or resolved from it.
- The body is translated into the same ``JobCreate`` / ``JobPatch`` requests ``/api/jobs``
  takes, so validation, storage and wake-ups are the job service's, and every problem is a 4xx
  naming the field as the client sent it (``minute``, ``args.0``, ``func``).
- ``POST /jobs/<id>/run`` queues a run and answers 202 with the job and that run.
- Auth is the ``/api`` auth (viewer reads, admin writes), and error bodies carry the
  contract's ``{"error": {...}}`` plus Flask-APScheduler's legacy ``"error_message"``.

Arguments: a job stores keyword arguments only. Positional ``args`` are mapped onto the task's
parameters in signature order, so a job always reads back with ``args: []``. Arguments given
in a PATCH (``args``, ``kwargs`` or both) replace the job's arguments as a whole.

A job's task cannot change (the job service has no such write): ``replace_existing`` or a PATCH
with another task's ``func`` is a 400 naming ``func``; delete the job and add it again.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from apscheduler.schedulers import SchedulerNotRunningError
from flask import Blueprint, Flask, Response, current_app, url_for
from flask_apscheduler.utils import trigger_to_dict

from .. import start_scheduler, stop_scheduler
from ..errors import InvalidRequest, NotFound
from ..scheduler.extension import JobScheduler
from ..scheduler.triggers import TriggerError, build_trigger
from ..services import services
from ..services.models import JobCreate, JobPatch, parse_model
from ..services.views import run_view
from ..store import JobRecord
from ..tasks import Task, UnknownTask, registry
from ..timeutil import iso, utcnow
from .auth import require_role
from .common import json_body

bp = Blueprint("scheduler", __name__)
bp.before_request(require_role)

# Flask-APScheduler's trigger arguments per trigger (``utils.pop_trigger``).
TRIGGER_ARGS: dict[str, tuple[str, ...]] = {
    "date": ("run_date", "timezone"),
    "interval": ("weeks", "days", "hours", "minutes", "seconds", "start_date", "end_date",
                 "timezone"),
    "cron": ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second",
             "start_date", "end_date", "timezone"),
}
_ANY_TRIGGER_ARG = frozenset(arg for args in TRIGGER_ARGS.values() for arg in args)
OPTIONS = ("name", "max_instances", "coalesce", "misfire_grace_time")
CREATE_KEYS = frozenset({"id", "func", "args", "kwargs", "trigger", "replace_existing", *OPTIONS})
PATCH_KEYS = frozenset({"id", "func", "args", "kwargs", "trigger", *OPTIONS})
# Our field names → the client's, for every body (more are added per request).
_BASE_RENAMES = {"task": "func", "trigger.type": "trigger"}
JOB_LIST_PAGE = 500


def init_app(app: Flask, prefix: str) -> None:
    app.register_blueprint(bp, url_prefix=prefix)


@bp.after_request
def _legacy_error_message(response: Response) -> Response:
    """Add Flask-APScheduler's ``error_message`` to every error body answered here.

    An ``after_request`` hook rather than error handlers, so the body itself is still built by
    ``api.errors`` (the one mapping) whatever the error: a ServiceError, a 413 from Werkzeug,
    an unexpected 500."""
    if response.status_code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("error"), dict) \
            and "error_message" not in body:
        body["error_message"] = body["error"].get("message")
        response.set_data(current_app.json.dumps(body))
    return response


# -- the scheduler ----------------------------------------------------------------------------

@bp.get("")
def get_scheduler_info() -> dict[str, Any]:
    scheduler = services().scheduler
    return {"current_host": scheduler.host_name, "allowed_hosts": scheduler.allowed_hosts,
            "running": scheduler.started}


@bp.post("/pause")
def pause_scheduler() -> Any:
    """Pause this node's job loop: it fires nothing until resumed. Runs go on."""
    scheduler = _running_scheduler()
    try:
        scheduler.pause()
    except SchedulerNotRunningError:  # shut down meanwhile
        raise InvalidRequest("the scheduler is not running") from None
    return "", 204


@bp.post("/resume")
def resume_scheduler() -> Any:
    scheduler = _running_scheduler()
    if services().settings.role == "web":
        raise InvalidRequest("this node's role is 'web': its job loop stays paused")
    try:
        scheduler.resume()
    except SchedulerNotRunningError:
        raise InvalidRequest("the scheduler is not running") from None
    return "", 204


@bp.post("/start", endpoint="start_scheduler")
def start_scheduler_view() -> Any:
    if services().scheduler.started:
        raise InvalidRequest("the scheduler is already running")
    start_scheduler(current_app)
    return "", 204


@bp.post("/shutdown")
def shutdown_scheduler() -> Any:
    """Stop this node gracefully (running tasks get the shutdown grace period)."""
    _running_scheduler()
    stop_scheduler(current_app)
    return "", 204


def _running_scheduler() -> JobScheduler:
    scheduler = services().scheduler
    if not scheduler.started:
        raise InvalidRequest("the scheduler is not running")
    return scheduler


# -- jobs -------------------------------------------------------------------------------------

@bp.post("/jobs")
def add_job() -> Any:
    body = _object_body()
    request, replace, renames = _create_request(body)
    with _client_fields(renames):
        record = _create(request, replace)
    return _job_dict(record)


@bp.get("/jobs")
def get_jobs() -> Any:
    """Every job, as Flask-APScheduler lists them: a plain array, not a page."""
    records: list[JobRecord] = []
    cursor: str | None = None
    while True:
        items, cursor = services().jobs.find(task=None, paused=None, limit=JOB_LIST_PAGE,
                                             cursor=cursor)
        records.extend(items)
        if cursor is None:
            return [_job_dict(r) for r in records]


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return _job_dict(services().jobs.get(job_id))


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Any:
    services().jobs.delete(job_id)
    return "", 204


@bp.patch("/jobs/<job_id>")
def update_job(job_id: str) -> dict[str, Any]:
    record = services().jobs.get(job_id)  # an unknown id is 404 before the body is judged
    body = _object_body()
    values, renames = _patch_values(body, record)
    if body and not values:  # only keys that change nothing, like the job's own id
        return _job_dict(record)
    with _client_fields(renames):
        record = services().jobs.update(job_id, parse_model(JobPatch, values))
    return _job_dict(record)


@bp.post("/jobs/<job_id>/pause")
def pause_job(job_id: str) -> dict[str, Any]:
    return _job_dict(services().jobs.pause(job_id))


@bp.post("/jobs/<job_id>/resume")
def resume_job(job_id: str) -> dict[str, Any]:
    return _job_dict(services().jobs.resume(job_id))


@bp.post("/jobs/<job_id>/run")
def run_job(job_id: str) -> Any:
    """Queue a run of the job now, in the background; the schedule is unchanged."""
    record = services().jobs.get(job_id)
    run = services().jobs.run_now(job_id)
    body = {**_job_dict(record), "run": run_view(run)}
    return body, 202, {"Location": url_for("api.runs.get_run", run_id=run.id)}


# -- reading a Flask-APScheduler body ---------------------------------------------------------

def _object_body() -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest.field("body", "must be a JSON object")
    return body


def _create_request(body: dict[str, Any]) -> tuple[JobCreate, bool, dict[str, str]]:
    kind, inline = _trigger_kind(body)
    kind = kind or "date"  # APScheduler's default: run once, now (or at the given run_date)
    _reject_unknown(body, CREATE_KEYS, kind)
    replace = body.get("replace_existing", False)
    if not isinstance(replace, bool):
        raise InvalidRequest.field("replace_existing", "must be true or false")
    if "func" not in body:
        raise InvalidRequest.field("func", "is required: a registered task's name or its "
                                           "module:function reference")
    task = _registered_task(body["func"])
    renames = dict(_BASE_RENAMES)
    values = {key: body[key] for key in ("id", *OPTIONS) if key in body}
    values["task"] = task.name
    values["kwargs"] = _arguments(body, task, renames)
    values["trigger"] = _trigger_spec(body, kind, inline, renames)
    with _client_fields(renames):
        request = parse_model(JobCreate, values)
    return request, replace, renames


def _patch_values(body: dict[str, Any], record: JobRecord
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    kind, inline = _trigger_kind(body)
    _reject_unknown(body, PATCH_KEYS, kind)
    if "id" in body and body["id"] != record.id:
        raise InvalidRequest.field("id", "a job's id cannot change")
    renames = dict(_BASE_RENAMES)
    values = {key: body[key] for key in OPTIONS if key in body}
    if "func" in body:
        _same_task(_registered_task(body["func"]), record)
    if "args" in body or "kwargs" in body:
        values["kwargs"] = _arguments(body, _registered_task(body.get("func", record.task)),
                                      renames)
    if kind is not None:
        values["trigger"] = _trigger_spec(body, kind, inline, renames)
    return values, renames


def _trigger_kind(body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The trigger's name, and its arguments when given in the legacy object form
    (``{"trigger": {"type": "cron", "minute": "5"}}``, as ``utils.fix_job_def`` reads it)."""
    raw = body.get("trigger")
    if raw is None:
        return None, {}
    if isinstance(raw, str):
        kind: object = raw
        inline: dict[str, Any] = {}
    elif isinstance(raw, dict):
        inline = dict(raw)
        kind = inline.pop("type", "date")
    else:
        raise InvalidRequest.field("trigger", "must be 'cron', 'interval' or 'date', or an "
                                              "object with a 'type'")
    if not isinstance(kind, str) or kind not in TRIGGER_ARGS:
        raise InvalidRequest.field("trigger", f"unknown trigger {_short(kind)}; use 'cron', "
                                              "'interval' or 'date'")
    return kind, inline


def _reject_unknown(body: dict[str, Any], allowed: frozenset[str], kind: str | None) -> None:
    trigger_args = set(TRIGGER_ARGS[kind]) if kind else set()
    unknown = sorted(set(body) - allowed - trigger_args)
    if not unknown:
        return
    details = []
    for key in unknown:
        message = "unexpected field"
        if key in _ANY_TRIGGER_ARG:
            message = f"is not an argument of a {kind} trigger" if kind else \
                "is a trigger argument: send 'trigger' with it"
        details.append({"field": key, "message": message})
    raise InvalidRequest("; ".join(f"{d['field']}: {d['message']}" for d in details),
                         details=details)


def _trigger_spec(body: dict[str, Any], kind: str, inline: dict[str, Any],
                  renames: dict[str, str]) -> dict[str, Any]:
    """Our trigger spec from the trigger's name and its top-level (or inline) arguments."""
    top = {arg: body[arg] for arg in TRIGGER_ARGS[kind] if arg in body}
    twice = sorted(set(top) & set(inline))
    if twice:
        raise InvalidRequest.field(twice[0], "is given both here and inside 'trigger'")
    renames.update({f"trigger.{arg}": arg for arg in top})
    spec = {"type": kind, **inline, **top}
    if kind == "date" and spec.get("run_date") is None:
        spec["run_date"] = iso(utcnow())  # APScheduler's DateTrigger() means now
    return spec


def _registered_task(func: object) -> Task:
    """The task ``func`` names, looked up in the registry only: never imported."""
    if isinstance(func, str):
        with suppress(UnknownTask):
            return registry.get(func)
        if ":" in func:
            with suppress(UnknownTask):
                return registry.by_ref(func)
    raise InvalidRequest.field(
        "func", f"{_short(func)} is not a registered task; send a task name or the "
                "module:function reference of one (GET /api/tasks lists them)")


def _same_task(task: Task, record: JobRecord) -> None:
    if task.name != record.task:
        raise InvalidRequest.field(
            "func", f"a job's task cannot change (job {record.id} runs {record.task}); "
                    "delete the job and add it again")


def _arguments(body: dict[str, Any], task: Task, renames: dict[str, str]) -> dict[str, Any]:
    """``kwargs`` plus positional ``args`` mapped onto the task's parameters in order."""
    kwargs = body.get("kwargs")
    args = body.get("args")
    kwargs = {} if kwargs is None else kwargs
    args = [] if args is None else args
    if not isinstance(kwargs, dict):
        raise InvalidRequest.field("kwargs", "must be an object of keyword arguments")
    if not isinstance(args, list):
        raise InvalidRequest.field("args", "must be an array")
    names = list(task.params_model.model_fields)
    if len(args) > len(names):
        raise InvalidRequest.field(
            "args", f"{task.name} takes at most {len(names)} argument(s) "
                    f"({', '.join(names) or 'none'}); got {len(args)}")
    merged = dict(kwargs)
    for index, value in enumerate(args):
        name = names[index]
        if name in kwargs:
            raise InvalidRequest.field(f"args.{index}", f"{name!r} is also given in kwargs")
        merged[name] = value
        renames[f"kwargs.{name}"] = f"args.{index}"
    return merged


@contextmanager
def _client_fields(renames: dict[str, str]) -> Iterator[None]:
    """Name fields in validation errors as the client sent them (``minute``, not
    ``trigger.minute``; ``args.0``, not ``kwargs.seconds``)."""
    try:
        yield
    except InvalidRequest as exc:
        if not isinstance(exc.details, list):
            raise
        details = [_renamed(detail, renames) for detail in exc.details]
        if details == exc.details:
            raise
        message = "; ".join(f"{d.get('field')}: {d.get('message')}" for d in details
                            if isinstance(d, dict))
        raise InvalidRequest(message or exc.message, details=details) from None


def _renamed(detail: Any, renames: dict[str, str]) -> Any:
    field = detail.get("field") if isinstance(detail, dict) else None
    if not isinstance(field, str) or field not in renames:
        return detail
    return {**detail, "field": renames[field]}


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "…"


# -- writing ----------------------------------------------------------------------------------

def _create(request: JobCreate, replace: bool) -> JobRecord:
    jobs = services().jobs
    if replace and request.id is not None:
        existing = None
        with suppress(NotFound):
            existing = jobs.get(request.id)
        if existing is not None:
            return _replace(existing, request)
    return jobs.create(request)


def _replace(existing: JobRecord, request: JobCreate) -> JobRecord:
    """``replace_existing``: the job takes the new definition (omitted options back to their
    defaults) in one compare-and-set write, and is scheduled afresh like a new job."""
    _same_task(registry.get(request.task), existing)
    settings = services().settings
    patch = parse_model(JobPatch, {
        "name": request.name or request.id,
        "kwargs": request.kwargs,
        "trigger": request.trigger,
        "max_instances": request.max_instances or settings.max_instances,
        "coalesce": settings.coalesce if request.coalesce is None else request.coalesce,
        "misfire_grace_time": request.misfire_grace_time or settings.misfire_grace_time,
    })
    record = services().jobs.update(existing.id, patch)
    if record.next_run_time is None:  # was paused; a replaced job starts scheduled
        record = services().jobs.resume(existing.id)
    return record


# -- the job as Flask-APScheduler shows it (``utils.job_to_dict``) ----------------------------

def _job_dict(record: JobRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "id": record.id,
        "name": spec.get("name", record.id),
        "func": _func_ref(record.task),
        "args": [],
        "kwargs": spec.get("kwargs") or {},
        **_trigger_fields(spec.get("trigger") or {}),
        "misfire_grace_time": spec.get("misfire_grace_time"),
        "max_instances": spec.get("max_instances"),
        "coalesce": spec.get("coalesce"),
        "next_run_time": iso(record.next_run_time),
    }


def _func_ref(task_name: str) -> str:
    """The task's ``module:function`` reference; its name if not registered here."""
    return registry.get(task_name).ref if task_name in registry else task_name


def _trigger_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """``trigger`` and its arguments at the top level, as stored (times are ISO strings).

    A crontab ``expr`` is shown as APScheduler's fields, read from the trigger it builds, so
    its weekdays are APScheduler's (``mon``…) and sending them back means the same schedule."""
    fields = {"trigger": spec.get("type")}
    fields.update((key, value) for key, value in spec.items() if key not in ("type", "expr"))
    if spec.get("type") == "cron" and "expr" in spec:
        try:
            trigger = build_trigger({"type": "cron", "expr": spec["expr"]}, "UTC")[1]
        except TriggerError:
            fields["expr"] = spec["expr"]
        else:
            fields.update(trigger_to_dict(trigger))
    return fields
