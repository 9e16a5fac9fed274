"""Request models shared by every entry point (HTTP API, CLI, config jobs, built-in API).

Strict pydantic models with unknown fields forbidden: ``"2"`` is not an integer and a typo in a
field name is an error, not a silently ignored key. The same models feed the OpenAPI document
(``api.openapi``), so what is documented is what is validated.

A trigger is the one field pydantic does not judge: ``scheduler.triggers.build_trigger`` does, so
that a bad cron field is named with its range (``trigger.minute``). Its documented shape comes
from the ``*TriggerSpec`` models below, attached to the field as its JSON Schema only. They
describe what ``build_trigger`` accepts and must never be stricter than it: the fuzzing test
sends data that violates them and fails if the API accepts it. An invalid body is answered with
every problem at once: its own fields, and its task, kwargs and trigger (``parse_model``).
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from typing import Annotated, Any, Literal, NotRequired, TypeVar

import pydantic
from pydantic import AwareDatetime, BaseModel, BeforeValidator, ConfigDict, Field, with_config
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

from ..errors import InvalidRequest
from ..scheduler.triggers import TriggerError, build_trigger
from ..tasks import ArgumentError, Task, UnknownTask, registry

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

JobId = Annotated[str, Field(min_length=1, max_length=191,
                             pattern=r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$")]
IsoTime = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
KWARGS_DESCRIPTION = ("The task's keyword arguments, checked against its parameters' JSON "
                      "Schema (GET /api/tasks).")


# -- the trigger's documented shapes (documentation only: build_trigger validates) ------------
# TypedDicts, because a trigger stays the plain object the client sent; an optional key may be
# left out but is never null unless it says so.

_FORBID_EXTRA = ConfigDict(extra="forbid")


@with_config(_FORBID_EXTRA)
class CronTriggerSpec(TypedDict):
    """A crontab expression: minute hour day month weekday (weekday 0 or 7 = Sunday)."""

    type: Literal["cron"]
    expr: Annotated[str, Field(examples=["*/5 * * * *", "0 2 * * 1-5"])]
    timezone: NotRequired[Annotated[str, Field(
        description="IANA time zone; default the SCHEDULER_TIMEZONE setting",
        examples=["Europe/Paris"])]]


_CronField = Annotated[str | int, Field(description="APScheduler cron field syntax")]


@with_config(_FORBID_EXTRA)
class CronFieldsTriggerSpec(TypedDict):
    """APScheduler's cron fields, at least one (``day_of_week``: 0 = Monday, or ``mon``)."""

    type: Literal["cron"]
    year: NotRequired[_CronField]
    month: NotRequired[_CronField]
    day: NotRequired[_CronField]
    week: NotRequired[_CronField]
    day_of_week: NotRequired[_CronField]
    hour: NotRequired[_CronField]
    minute: NotRequired[_CronField]
    second: NotRequired[_CronField]
    start_date: NotRequired[AwareDatetime | None]
    end_date: NotRequired[AwareDatetime | None]
    timezone: NotRequired[str]


_Amount = Annotated[float, Field(ge=0)]


@with_config(_FORBID_EXTRA)
class IntervalTriggerSpec(TypedDict):
    """Every so long (at least one unit; longer than zero), from ``start_date`` (default: one
    interval from now)."""

    type: Literal["interval"]
    weeks: NotRequired[_Amount]
    days: NotRequired[_Amount]
    hours: NotRequired[_Amount]
    minutes: NotRequired[_Amount]
    seconds: NotRequired[_Amount]
    start_date: NotRequired[AwareDatetime | None]
    end_date: NotRequired[AwareDatetime | None]
    timezone: NotRequired[str]


@with_config(_FORBID_EXTRA)
class DateTriggerSpec(TypedDict):
    """Once, at ``run_date``."""

    type: Literal["date"]
    run_date: AwareDatetime
    timezone: NotRequired[str]


# The JSON Schema of a trigger field: pydantic checks only that it is an object (strict), and
# the request handler passes it on to build_trigger.
Trigger = Annotated[dict[str, Any], BeforeValidator(
    lambda value: value,
    json_schema_input_type=CronTriggerSpec | CronFieldsTriggerSpec | IntervalTriggerSpec
    | DateTriggerSpec)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class RunCreate(_Strict):
    """Run a task now, or at ``run_at``."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"task": "demo.echo", "kwargs": {"value": "hello"}},
        {"task": "demo.sleep", "kwargs": {"seconds": 1, "steps": 2}},
    ]})

    task: str = Field(description="Registered task name, e.g. demo.sleep")
    kwargs: dict[str, Any] = Field(default_factory=dict, description=KWARGS_DESCRIPTION)
    run_at: IsoTime | None = Field(default=None, description="ISO 8601 time with offset; "
                                                             "default now")
    # Concurrency controls: each overrides the task's own when present (null: none).
    unique: bool | None = Field(default=None, description=(
        "At most one queued or running run of this task with these kwargs; a duplicate is a "
        "409 already_queued naming the existing run"))
    unique_key: str | None = Field(default=None, description=(
        "At most one queued or running run with this key (any task); a duplicate is a 409 "
        "already_queued naming the existing run"), examples=["invoice:42"])
    concurrency_key: str | None = Field(default=None, description=(
        "At most concurrency_limit runs with this key run at once, cluster-wide; the others "
        "wait in order"), examples=["tenant:42"])
    concurrency_limit: int | None = Field(default=None, description=(
        "How many runs of concurrency_key may run at once (default 1)"))
    rate_limit: str | None = Field(default=None, description=(
        "At most this many starts in any sliding window, cluster-wide: <count>/<s|m|h>"),
        examples=["100/m"])
    rate_key: str | None = Field(default=None, description=(
        "The rate limit's partition (default: the task)"))


class RunBatchCreate(_Strict):
    """Run many tasks at once: all are queued, or none."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"runs": [{"task": "demo.echo", "kwargs": {"value": 1}},
                  {"task": "demo.echo", "kwargs": {"value": 2}, "unique_key": "echo:2"}]},
    ]})

    runs: list[RunCreate] = Field(min_length=1, description=(
        "Each run as POST /api/runs takes it; at most BATCH_MAX_RUNS (default 10,000) and a "
        "body of at most BATCH_MAX_CONTENT_LENGTH (default 16 MiB)"))


class JobCreate(_Strict):
    """Schedule a task on a cron, interval or date trigger."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"id": "hourly-echo", "task": "demo.echo", "kwargs": {"value": "tick"},
         "trigger": {"type": "cron", "expr": "0 * * * 1-5", "timezone": "Europe/Paris"}},
        {"task": "demo.sleep", "kwargs": {"seconds": 1},
         "trigger": {"type": "interval", "minutes": 5}, "paused": True},
    ]})

    id: JobId | None = Field(default=None, description="Generated when absent")
    name: Annotated[str, Field(max_length=200)] | None = None
    task: str = Field(description="Registered task name, e.g. demo.sleep")
    kwargs: dict[str, Any] = Field(default_factory=dict, description=KWARGS_DESCRIPTION)
    trigger: Trigger
    max_instances: Annotated[int, Field(ge=1, le=1000)] | None = None
    coalesce: bool | None = None
    misfire_grace_time: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    paused: bool = False


class JobPatch(_Strict):
    """Change some of a job's fields (at least one); a new trigger reschedules it."""

    model_config = ConfigDict(json_schema_extra={"examples": [
        {"trigger": {"type": "interval", "hours": 1}},
        {"name": "renamed", "max_instances": 2, "coalesce": False},
    ]})

    name: Annotated[str, Field(max_length=200)] | None = None
    kwargs: dict[str, Any] | None = Field(default=None, description=KWARGS_DESCRIPTION)
    trigger: Trigger | None = None
    max_instances: Annotated[int, Field(ge=1, le=1000)] | None = None
    coalesce: bool | None = None
    misfire_grace_time: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None


def parse_model(model: type[M], data: object, *, task: str | None = None) -> M:
    """Validate a decoded JSON body against a request model, or raise InvalidRequest naming
    every bad field at once: the model's own fields and, when the body is invalid, also its
    ``kwargs`` (against the task's signature: the body's ``task``, else ``task``, the job's) and
    its ``trigger``, which the services would otherwise judge only once the rest is valid."""
    if not isinstance(data, dict):
        raise InvalidRequest.field("body", "must be a JSON object")
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        details = []
        for error in exc.errors(include_url=False):
            field = ".".join(str(p) for p in error["loc"]) or "body"
            message = "unexpected field" if error["type"] == "extra_forbidden" else error["msg"]
            details.append({"field": field, "message": message})
    details.extend(content_problems(model, data, task, reported={
        d["field"].split(".")[0] for d in details}))
    raise invalid(details) from None


def collect(problems: list[dict[str, str]], check: Callable[[], T]) -> T | None:
    """The check's value, or None with the fields its InvalidRequest names added to
    ``problems``: how a validation goes on past its first bad field."""
    try:
        return check()
    except InvalidRequest as exc:
        problems.extend(exc.details or [{"field": "body", "message": exc.message}])
        return None


def invalid(problems: list[dict[str, str]]) -> InvalidRequest:
    """One InvalidRequest naming every problem (``field: message; ...``)."""
    return InvalidRequest("; ".join(f"{p['field']}: {p['message']}" for p in problems),
                          details=problems)


def content_problems(model: type[BaseModel], data: dict[str, Any], task: str | None,
                     reported: Collection[str] = ()) -> list[dict[str, str]]:
    """What is wrong with a body's ``task``, ``kwargs`` and ``trigger`` beyond their JSON
    types, skipping the fields in ``reported``: an unknown task, arguments that do not fit
    its signature (size limits aside: the service checks those), a bad trigger."""
    problems: list[dict[str, str]] = []
    fields = model.model_fields
    found: Task | None = None
    name = data.get("task", task) if "task" in fields else task
    if isinstance(name, str) and "task" not in reported:
        try:
            found = registry.get(name)
        except UnknownTask:
            if "task" in data:
                problems.append({"field": "task",
                                 "message": f"unknown task {name!r}; GET /api/tasks lists them"})
    kwargs = data.get("kwargs", {} if "task" in fields else None)
    if found is not None and "kwargs" in fields and "kwargs" not in reported \
            and isinstance(kwargs, dict):
        try:
            found.validate(kwargs)
        except ArgumentError as exc:
            problems.extend(exc.problems)
    trigger = data.get("trigger")
    if "trigger" in fields and "trigger" not in reported and isinstance(trigger, dict):
        try:
            build_trigger(trigger, "UTC")  # the default zone changes no verdict
        except TriggerError as exc:
            problems.extend(exc.problems)
    return problems
