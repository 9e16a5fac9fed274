"""Flask-APScheduler's job body (``func``, ``args``, ``trigger`` by name with its arguments at
the top level) read into this service's ``JobCreate`` requests and ``JobPatch`` values.

One reader for every place that accepts that shape: the ``/scheduler`` API and ``JOBS`` in the
configuration. ``func`` is only ever looked up in the task registry, never imported; problems
are named as the client wrote them (``minute``, ``args.0``, ``func``).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

from ..errors import InvalidRequest, NotFound
from ..store import JobRecord
from ..tasks import Task, UnknownTask, registry
from ..timeutil import iso, utcnow
from .jobs import JobService
from .models import JobCreate, JobPatch, collect, invalid, parse_model

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


def create_request(body: dict[str, Any]) -> tuple[JobCreate, bool, dict[str, str]]:
    """The request a body describes, or an InvalidRequest naming every bad field at once
    (past a bad trigger name, which decides what the other fields mean)."""
    kind, inline = _trigger_kind(body)
    kind = kind or "date"  # APScheduler's default: run once, now (or at the given run_date)
    problems: list[dict[str, str]] = []
    collect(problems, lambda: _reject_unknown(body, CREATE_KEYS, kind))
    replace = body.get("replace_existing", False)
    if not isinstance(replace, bool):
        problems.append({"field": "replace_existing", "message": "must be true or false"})
    renames = dict(_BASE_RENAMES)
    values = {key: body[key] for key in ("id", *OPTIONS) if key in body}
    task = collect(problems, lambda: _func(body))
    kwargs = None if task is None else collect(problems, lambda: _arguments(body, task, renames))
    if task is not None and kwargs is not None:  # else the task and its arguments are judged
        values["task"], values["kwargs"] = task.name, kwargs
    trigger = collect(problems, lambda: _trigger_spec(body, kind, inline, renames))
    if trigger is not None:
        values["trigger"] = trigger
    try:
        with client_fields(renames):
            request = parse_model(JobCreate, values)
    except InvalidRequest as exc:
        left_out = {"func"} if "task" not in values else set()
        left_out |= {"trigger"} if trigger is None else set()
        problems.extend(d for d in exc.details if d.get("field") not in left_out)
    if problems:
        raise invalid(problems)
    return request, replace, renames


def _func(body: dict[str, Any]) -> Task:
    if "func" not in body:
        raise InvalidRequest.field("func", "is required: a registered task's name or its "
                                           "module:function reference")
    return registered_task(body["func"])


def patch_values(body: dict[str, Any], record: JobRecord
                  ) -> tuple[dict[str, Any], dict[str, str]]:
    kind, inline = _trigger_kind(body)
    _reject_unknown(body, PATCH_KEYS, kind)
    if "id" in body and body["id"] != record.id:
        raise InvalidRequest.field("id", "a job's id cannot change")
    renames = dict(_BASE_RENAMES)
    values = {key: body[key] for key in OPTIONS if key in body}
    if "func" in body:
        same_task(registered_task(body["func"]), record)
    if "args" in body or "kwargs" in body:
        values["kwargs"] = _arguments(body, registered_task(body.get("func", record.task)),
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


def registered_task(func: object) -> Task:
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


def same_task(task: Task, record: JobRecord) -> None:
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
def client_fields(renames: dict[str, str]) -> Iterator[None]:
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


# -- writing (the /scheduler API, and Scheduler.add_job and modify_job) ---------------------

def add(jobs: JobService, body: dict[str, Any]) -> JobRecord:
    """Create the job a Flask-APScheduler body describes (``replace_existing`` honoured)."""
    request, replace, renames = create_request(body)
    with client_fields(renames):
        return _create(jobs, request, replace)


def modify(jobs: JobService, job_id: str, body: dict[str, Any]) -> JobRecord:
    """Change a job as a Flask-APScheduler ``modify_job`` body says."""
    record = jobs.get(job_id)
    values, renames = patch_values(body, record)
    if body and not values:  # only keys that change nothing, like the job's own id
        return record
    with client_fields(renames):
        return jobs.update(job_id, parse_model(JobPatch, values, task=record.task))


def _create(jobs: JobService, request: JobCreate, replace: bool) -> JobRecord:
    if replace and request.id is not None:
        existing = None
        with suppress(NotFound):
            existing = jobs.get(request.id)
        if existing is not None:
            return _replace(jobs, existing, request)
    return jobs.create(request)


def _replace(jobs: JobService, existing: JobRecord, request: JobCreate) -> JobRecord:
    """``replace_existing``: the job takes the new definition (omitted options back to their
    defaults) in one compare-and-set write, and is scheduled afresh like a new job."""
    same_task(registry.get(request.task), existing)
    settings = jobs.settings
    patch = parse_model(JobPatch, {
        "name": request.name or request.id,
        "kwargs": request.kwargs,
        "trigger": request.trigger,
        "max_instances": request.max_instances or settings.max_instances,
        "coalesce": settings.coalesce if request.coalesce is None else request.coalesce,
        "misfire_grace_time": request.misfire_grace_time or settings.misfire_grace_time,
    })
    record = jobs.update(existing.id, patch)
    if record.next_run_time is None:  # was paused; a replaced job starts scheduled
        record = jobs.resume(existing.id)
    return record
