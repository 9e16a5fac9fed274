"""Response models: the JSON shapes of ``services.views`` (and of the error, auth and health
answers), as pydantic models that feed the OpenAPI document.

The views build plain dicts; these models describe them exactly: every key is required (the
views always send every key, ``null`` when there is nothing) and no other key is allowed, so a
field added to a view and not here fails ``tests/test_openapi.py``, which validates real
answers against these models and against the published document (and, for a run,
``tests/unit/test_run_shape.py``, which compares ``run_view``'s keys with ``Run``'s fields).
Times are ISO 8601 strings with an offset (``AwareDatetime`` documents them as
``format: date-time``).
"""

from __future__ import annotations

from typing import Any, Generic, Literal, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from ..store import RunState

T = TypeVar("T")


class _Exact(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- runs -------------------------------------------------------------------------------------

class Progress(_Exact):
    """What the task last reported through ``ctx.progress(done, total, message)``."""

    done: float
    total: float | None
    percent: float | None
    message: str | None


class RunError(_Exact):
    """Why an attempt failed: the exception's type and message, and its traceback."""

    type: str
    message: str
    traceback: str | None


class AttemptError(RunError):
    """One failed attempt's error, with its attempt number and when it was recorded."""

    attempt: int
    at: AwareDatetime


class Run(_Exact):
    """One execution of a task, from queued to a final state, across its attempts."""

    id: int
    task: str
    kwargs: dict[str, Any]
    job_id: str | None
    state: RunState
    attempt: int
    max_attempts: int
    cancel_requested: bool
    progress: Progress | None
    result: Any = Field(description="The task's return value (any JSON) once it succeeded")
    error: RunError | None = Field(description="The last failed attempt's error")
    errors: list[AttemptError]
    node: str | None = Field(description="The node running (or that ran) the last attempt")
    timeout: float | None
    fire_time: AwareDatetime | None = Field(
        description="The job's scheduled fire time this run stands for; null for run-now")
    created_at: AwareDatetime
    scheduled_for: AwareDatetime
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None
    duration_s: float | None
    waiting: str | None = Field(
        description="Why a queued run is not picked up: no live node has its task (\"no live "
                    "node has task 'reports.build'\"), its concurrency key is at its limit, or "
                    "its rate limit has no slot until a time it names; null otherwise")
    overdue: str | None = Field(
        description="For a running run asked to stop (a cancel, or past its timeout): that it "
                    "is still running, how long past its timeout, and whether it will be "
                    "stopped (a process-isolated run, after the kill grace) or runs on a "
                    "thread until the task looks at its context; null otherwise")
    unique_key: str | None = Field(
        description="No other run with this key may be queued or running meanwhile")
    concurrency_key: str | None = Field(
        description="At most concurrency_limit runs with this key run at once")
    concurrency_limit: int | None
    rate_limit: str | None = Field(description="Starts allowed per sliding window, e.g. 100/m")
    rate_key: str | None = Field(description="The rate limit's partition (default: the task)")


class RunIds(_Exact):
    """The runs of a batch, all queued."""

    ids: list[int] = Field(description="Each item's run id, in the order of the batch's runs")


class LogLine(_Exact):
    id: int = Field(description="The cursor of the log list")
    at: AwareDatetime
    level: str
    message: str


# -- jobs -------------------------------------------------------------------------------------

class JobTrigger(BaseModel):
    """The trigger as it was given (and normalised: an interval's start date is fixed), plus a
    sentence describing it."""

    model_config = ConfigDict(extra="allow")

    description: str | None


class LastRun(_Exact):
    id: int
    state: RunState
    started_at: AwareDatetime | None
    finished_at: AwareDatetime | None


class Job(_Exact):
    """A task on a schedule."""

    id: str
    name: str
    task: str
    kwargs: dict[str, Any]
    trigger: JobTrigger
    next_run_time: AwareDatetime | None = Field(description="null while paused")
    paused: bool
    max_instances: int | None
    coalesce: bool | None
    misfire_grace_time: float | None
    last_run: LastRun | None
    problem: str | None = Field(
        description="Why this deployment will not fire the job (its task is not registered "
                    "here, or its stored definition cannot be read); null when it will")


# -- tasks and nodes --------------------------------------------------------------------------

class Task(_Exact):
    """A registered task: the only things this service runs by name."""

    name: str
    description: str
    parameters: dict[str, Any] = Field(
        description="JSON Schema of the task's keyword arguments")
    timeout: float | None
    max_attempts: int
    max_running: int | None


class Node(_Exact):
    """A process holding a scheduler, alive while its heartbeat is younger than the lease."""

    id: str
    host: str
    pid: int
    role: Literal["all", "web", "worker"]
    started_at: AwareDatetime
    heartbeat_at: AwareDatetime
    stopped_at: AwareDatetime | None
    running: int
    capacity: int
    alive: bool


# -- lists ------------------------------------------------------------------------------------

class Page(_Exact, Generic[T]):
    items: list[T]
    next_cursor: str | None = Field(
        description="Pass as ?cursor= for the next page; null on the last page")


class RunPage(Page[Run]):
    """Runs, newest first."""


class JobPage(Page[Job]):
    """Jobs by next run time (paused jobs last)."""


class LogPage(Page[LogLine]):
    """A run's log lines, oldest first."""


class TaskList(_Exact):
    items: list[Task]


class NodeList(_Exact):
    items: list[Node]


# -- errors -----------------------------------------------------------------------------------

class FieldProblem(_Exact):
    field: str = Field(examples=["kwargs.seconds"])
    message: str


class KeyTaken(_Exact):
    """An item of a batch whose unique key is taken (a 409 already_queued of the batch)."""

    field: str = Field(examples=["runs[3].unique_key"])
    message: str
    unique_key: str
    run_id: int | None = Field(description="The queued or running run holding the key; null "
                                           "when an earlier item of the batch has it")


class HeldBy(_Exact):
    """The run holding a unique key (a 409 already_queued of one run)."""

    run_id: int
    unique_key: str
    state: RunState


class ErrorDetail(_Exact):
    code: str = Field(examples=["invalid_request", "not_found", "unauthorized"])
    message: str
    details: list[FieldProblem | KeyTaken] | HeldBy | None = Field(
        description="For invalid_request: each bad field and what is wrong with it; for "
                    "already_queued: the run holding the key, or for a batch each item whose "
                    "key is taken")


class Error(_Exact):
    """Every 4xx and 5xx answer."""

    error: ErrorDetail


# -- auth and health --------------------------------------------------------------------------

class LoginRequest(BaseModel):
    """A configured API token (JSON, or the ``token`` field of a form)."""

    token: str


class Login(_Exact):
    role: Literal["viewer", "admin"]
    csrf_token: str = Field(description="Send as X-CSRF-Token with every change made with "
                                        "the session cookie")


class Session(Login):
    via: Literal["bearer", "session", "loopback"]


class Health(_Exact):
    status: Literal["ok"]


class Ready(_Exact):
    status: Literal["ok"]
    node: str


class NotReady(_Exact):
    status: Literal["unavailable"]
    reason: str
