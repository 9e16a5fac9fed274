"""Starting, reading and cancelling runs: the one path every entry point goes through."""

from __future__ import annotations

import os
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask
from sqlalchemy import event

from ..errors import AlreadyFinished, InvalidRequest, NotFound
from ..scheduler import eager
from ..scheduler.engine import Engine
from ..settings import Settings
from ..store import FINAL_STATES, LogEntry, NewRun, Run, RunState, Store
from ..tasks import ArgumentError, Task, UnknownTask, registry
from ..tasks.controls import OPTIONS as CONTROL_OPTIONS
from ..tasks.controls import ControlError, Controls
from ..tasks.registry import encode_kwargs
from ..timeutil import parse_aware, utcnow
from .models import RunCreate

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, scoped_session


def resolve_task(name: object, field: str = "task") -> Task:
    try:
        return registry.get(name)
    except UnknownTask:
        raise InvalidRequest.field(field, f"unknown task {name!r}; GET /api/tasks lists them") \
            from None


def validate_kwargs(task: Task, kwargs: object, max_bytes: int | None = None
                    ) -> dict[str, Any]:
    """The arguments as the task will be called with them (``Task.validate``), or
    InvalidRequest naming every bad one, or the size past ``max_bytes`` (KWARGS_MAX_BYTES)."""
    return validate_encoded(task, kwargs, max_bytes)[0]


def validate_encoded(task: Task, kwargs: object, max_bytes: int | None = None
                     ) -> tuple[dict[str, Any], str]:
    """``validate_kwargs``, and ``kwargs`` as the JSON text validated, which the run's insert
    stores as it is (``NewRun.kwargs_json``)."""
    try:
        # Encoded once: its size is measured, pydantic validates the same text, and the
        # insert stores it.
        encoded = encode_kwargs(kwargs) if isinstance(kwargs, dict) else None
        if max_bytes is not None and encoded is not None and len(encoded) > max_bytes:
            raise InvalidRequest.field(
                "kwargs", f"is {len(encoded)} bytes as JSON; at most {max_bytes} "
                "(KWARGS_MAX_BYTES)")
        arguments = task.validate(kwargs, encoded)
    except ArgumentError as exc:
        raise InvalidRequest(str(exc), details=exc.problems) from None
    assert encoded is not None  # else Task.validate refused kwargs: not a JSON object
    return arguments, encoded


def controls_with(task: Task, changes: dict[str, Any]) -> Controls:
    """The task's concurrency controls with one enqueue's ``changes``, or InvalidRequest
    naming every bad option (nothing is stored then)."""
    if not changes:
        return task.controls
    try:
        return task.controls.overridden(changes)
    except ControlError as exc:
        raise InvalidRequest(str(exc), details=exc.problems) from None


def start_time(run_at: str | None) -> datetime:
    """When a run asked for with ``run_at`` (ISO 8601 with an offset; None: now) may start,
    or InvalidRequest naming ``run_at``."""
    if run_at is None:
        return utcnow()
    try:
        return parse_aware(run_at, "run_at")
    except ValueError as exc:
        raise InvalidRequest.field("run_at", str(exc).replace("run_at ", "", 1)) from None
    except OverflowError:  # a valid ISO time whose offset puts it outside years 1-9999
        raise InvalidRequest.field("run_at", "is out of range") from None


def control_changes(request: RunCreate) -> dict[str, Any]:
    """The concurrency controls a request sets (null included: it removes the task's)."""
    given = request.model_fields_set  # a property: read once, not once per option
    return {name: getattr(request, name) for name in CONTROL_OPTIONS if name in given}


class RunService:
    def __init__(self, store: Store, scheduler: Engine, settings: Settings) -> None:
        self.store = store
        self.scheduler = scheduler
        self.settings = settings

    def submit(self, request: RunCreate) -> Run:
        """Validate and queue a run; it is durable before this returns."""
        task = resolve_task(request.task)
        arguments, encoded = validate_encoded(task, request.kwargs,
                                              self.settings.kwargs_max_bytes)
        when = start_time(request.run_at)
        return self.queue(task, request.kwargs, when,
                          controls=controls_with(task, control_changes(request)),
                          arguments=arguments, kwargs_json=encoded)

    def enqueue(self, task: Task, kwargs: dict[str, Any], when: datetime,
                controls: Controls | None = None) -> Run:
        """Validate and queue a run of ``task`` (``Task.enqueue`` from Python); ``controls``:
        its concurrency controls, the task's own unless given (``using(...)``)."""
        arguments, encoded = validate_encoded(task, kwargs, self.settings.kwargs_max_bytes)
        return self.queue(task, kwargs, when, controls=controls, arguments=arguments,
                          kwargs_json=encoded)

    def execute_eagerly(self, app: Flask, task: Task, kwargs: dict[str, Any],
                        when: datetime, controls: Controls | None = None) -> Run:
        """Validate, record and run every attempt now in the caller (``SCHEDULER_EAGER``).
        A unique key is held as anywhere else; a concurrency key or rate limit does not
        delay an eager run (the caller asked for it now), but is recorded."""
        validate_kwargs(task, kwargs, self.settings.kwargs_max_bytes)
        run = self.store.runs.create(self.new_run(task, kwargs, when, controls=controls),
                                     running_on=eager.NODE)
        return eager.execute_now(app, self.store, run,
                                 max_log_lines=self.settings.run_log_max_lines)

    def queue_in_transaction(self, task: Task, kwargs: dict[str, Any], when: datetime,
                             session: Session | scoped_session[Any],
                             controls: Controls | None = None) -> Run:
        """Validate and insert a run through ``session``'s connection, in its transaction: a
        rollback leaves no run, and once it commits this node's runner looks for it and the
        other nodes are woken to (``Engine.runs_queued``)."""
        validate_kwargs(task, kwargs, self.settings.kwargs_max_bytes)
        conn = self.host_connection(session)
        run = self.store.runs.create(self.new_run(task, kwargs, when, controls=controls),
                                     conn=conn,
                                     max_queued=self.settings.max_queued_runs)
        self.wake_after_commit(session)
        return run

    def host_connection(self, session: Session | scoped_session[Any]) -> sa.Connection:
        """The connection of a host's ``session``, if it is on the scheduler's database
        (else InvalidRequest naming ``session``)."""
        conn = session.connection()
        ours = self.store.db.engine.url
        if not same_database(conn.engine.url, ours):
            raise InvalidRequest.field(
                "session", "is on another database than the scheduler "
                f"({conn.engine.url.render_as_string()} vs {ours.render_as_string()}); "
                "set SCHEDULER_DATABASE_URL to the session's database to enqueue in its "
                "transaction")
        return conn

    def wake_after_commit(self, session: Session | scoped_session[Any]) -> None:
        """Once the host's ``session`` commits, this node's runner looks for the runs it
        queued and the other nodes are woken to (``Engine.runs_queued``)."""
        target = session() if callable(session) else session  # a scoped_session's session
        event.listen(target, "after_commit", lambda _: self.scheduler.runs_queued(), once=True)

    def new_run(self, task: Task, kwargs: dict[str, Any], when: datetime,
                 job_id: str | None = None, controls: Controls | None = None,
                 kwargs_json: str | None = None) -> NewRun:
        """The row-to-be of a validated run of ``task``; ``kwargs_json``: ``kwargs`` as their
        validation encoded them (``validate_encoded``)."""
        return NewRun(
            task=task.name, kwargs=kwargs, max_attempts=task.max_attempts,
            retry_backoff=task.retry_backoff or self.settings.retry_backoff,
            timeout=task.timeout, scheduled_for=when, job_id=job_id, kwargs_json=kwargs_json,
            **(task.controls if controls is None else controls).row_values(task.name, kwargs))

    def queue(self, task: Task, kwargs: dict[str, Any], when: datetime,
              job_id: str | None = None, controls: Controls | None = None,
              arguments: dict[str, Any] | None = None, kwargs_json: str | None = None
              ) -> Run:
        """Queue a run (or start it here at once). A unique key held by an active run raises
        ``AlreadyQueued``, whose ``run`` is that run, and nothing is written. ``arguments``:
        ``kwargs`` as validated (``validate_kwargs``); a run started here at once is called
        with them, not validated a second time on its thread. ``kwargs_json``: ``kwargs`` as
        their validation encoded them, stored as it is."""
        new = self.new_run(task, kwargs, when, job_id, controls, kwargs_json)
        unlimited_now = task.max_running is None and not new.needs_claim and when <= utcnow()
        if unlimited_now:
            # Due now and this node has a free thread: skip the queue (one write, no hop).
            started = self.scheduler.run_here(new, arguments)
            if started is not None:
                return started
        # The other nodes are told in the insert's transaction where the store can (delivered
        # at its commit); a run due now that no limit holds back is named: one node takes it.
        announced: list[bool] = []

        def announce(conn: sa.Connection, written: Run) -> None:
            announced.append(self.scheduler.announce_in(conn, written if unlimited_now
                                                        else None))

        run = self.store.runs.create(new, max_queued=self.settings.max_queued_runs,
                                     announce=announce)
        self.scheduler.runs_queued(run if unlimited_now else None,
                                   announced=bool(announced) and announced[-1])
        return run

    def get(self, run_id: int) -> Run:
        run = self.store.runs.get(run_id)
        if run is None:
            raise NotFound(f"no run with id {run_id}")
        return run

    def find(self, *, state: str | None, task: str | None, job_id: str | None, limit: int,
             cursor: str | None) -> tuple[list[Run], str | None]:
        run_state = None
        if state is not None:
            try:
                run_state = RunState(state)
            except ValueError:
                raise InvalidRequest.field(
                    "state", f"must be one of {', '.join(s.value for s in RunState)}") from None
        before = _int_cursor(cursor)
        if unstorable(task) or unstorable(job_id):
            return [], None
        items = self.store.runs.find(state=run_state, task=task, job_id=job_id, limit=limit,
                                     before_id=before)
        next_cursor = str(items[-1].id) if len(items) == limit else None
        return items, next_cursor

    def cancel(self, run_id: int) -> Run:
        outcome = self.store.runs.request_cancel(run_id)
        if outcome is None:
            raise NotFound(f"no run with id {run_id}")
        before, run = outcome
        if before in FINAL_STATES:
            raise AlreadyFinished(f"run {run_id} already finished ({before.value})")
        if run.state is RunState.RUNNING:
            self.scheduler.cancel_requested(run_id)
        return run

    def logs(self, run_id: int, *, limit: int, cursor: str | None
             ) -> tuple[list[LogEntry], str | None]:
        self.get(run_id)
        items = self.store.runs.logs(run_id, limit=limit, after_id=_int_cursor(cursor))
        return items, (str(items[-1].id) if len(items) == limit else None)


def same_database(a: sa.URL, b: sa.URL) -> bool:
    """Whether two URLs reach one database (drivers aside: ``sqlite://`` and
    ``sqlite+pysqlite://`` to one file are the same database)."""
    if a.get_backend_name() != b.get_backend_name():
        return False
    if a.get_backend_name() == "sqlite":
        return bool(a.database) and bool(b.database) and \
            os.path.realpath(a.database or "") == os.path.realpath(b.database or "")
    return (a.host or "localhost", a.port, a.database) == (b.host or "localhost", b.port,
                                                           b.database)


def unstorable(text: str | None) -> bool:
    """Whether no row can hold ``text``: PostgreSQL refuses NUL characters in text, so no id,
    task name or job id contains one. A lookup by such a value is answered here, as finding
    nothing (what SQLite answers), instead of a query PostgreSQL would fail."""
    return text is not None and "\x00" in text


def _int_cursor(cursor: str | None) -> int | None:
    if cursor is None or cursor == "":
        return None
    if not (cursor.isascii() and cursor.isdigit()) or len(cursor) > 18:
        raise InvalidRequest.field("cursor", "is not a cursor this API gave out")
    return int(cursor)
