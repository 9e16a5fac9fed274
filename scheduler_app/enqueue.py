"""What ``@scheduler.task`` returns: the function, plus ``enqueue`` and ``using``.

``build_report.enqueue(customer_id=7)`` validates the arguments as the HTTP API does, writes
the run, and returns its ``RunHandle``: the run is durable when it returns.
``build_report.enqueue_many([{"customer_id": 7}, {"customer_id": 8}])`` does so for many runs
in one transaction, all or none.
``using(run_after=..., session=..., unique_key=..., ...)`` returns a configured copy, as
``django.tasks`` does; a run whose unique key an active run holds raises ``AlreadyQueued``
with that run's handle.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .errors import AlreadyQueued, InvalidRequest
from .handles import RunHandle
from .services.runs import controls_with
from .tasks import Task
from .tasks.controls import Controls
from .timeutil import utcnow

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, scoped_session

    from .extension import Scheduler
    from .services import Services

    AnySession = Session | scoped_session[Any]  # Flask-SQLAlchemy's db.session is scoped


@dataclass(frozen=True)
class TaskCall:
    """A task with the options of one enqueue: when it may start, whose transaction, and its
    concurrency controls."""

    scheduler: Scheduler
    task: Task
    run_after: datetime | timedelta | None = None
    session: AnySession | None = None
    controls: Controls | None = None  # None: the task's own

    def using(self, *, run_after: datetime | timedelta | None = None,
              session: AnySession | None = None, **controls: Any) -> TaskCall:
        """A copy with these options changed (``run_after``: an aware datetime, or a delay;
        ``session``: a SQLAlchemy session whose transaction the run joins). ``controls``
        override the task's concurrency controls for this enqueue: ``unique``, ``unique_key``,
        ``concurrency_key``, ``concurrency_limit``, ``rate_limit``, ``rate_key`` (None removes
        one; ``unique=False`` makes the run not unique). A bad one raises a ``ValueError``
        naming it, here, before anything is stored."""
        changes: dict[str, Any] = {}
        if run_after is not None:
            changes["run_after"] = run_after
        if session is not None:
            changes["session"] = session
        if controls:
            base = self.task if self.controls is None else replace(self.task,
                                                                   controls=self.controls)
            changes["controls"] = controls_with(base, controls)
        return replace(self, **changes)

    def enqueue(self, **kwargs: Any) -> RunHandle:
        """Queue a run with these keyword arguments and return its handle. Bad arguments
        raise a ``ValueError`` (``InvalidRequest``) naming every bad field; nothing is
        stored then."""
        svc = self.scheduler.services()
        when = _start_time(self.run_after)
        try:
            if svc.settings.eager:  # the host's tests: run now, whatever the transaction does
                run = svc.runs.execute_eagerly(self.scheduler.app_of(svc), self.task, kwargs,
                                               when, self.controls)
            elif self.session is not None:
                run = svc.runs.queue_in_transaction(self.task, kwargs, when, self.session,
                                                    self.controls)
            else:
                run = svc.runs.enqueue(self.task, kwargs, when, self.controls)
        except AlreadyQueued as exc:
            with_handle(exc, svc)
            raise
        return RunHandle(run, svc)

    def enqueue_many(self, calls: Iterable[Mapping[str, Any]]) -> list[RunHandle]:
        """Queue one run per item of ``calls`` (each a dict of keyword arguments, as
        ``enqueue`` takes them) with these options, all or none, and return their handles in
        that order: one transaction (the host's, with ``session``), one insert, one wake-up.

        Nothing is stored when any call is bad: ``InvalidRequest`` (a ``ValueError``) names
        every bad field of every call (``runs[3].kwargs.customer_id``). A unique key that an
        active run holds, or that an earlier call of the batch has, raises ``BatchConflict``
        (an ``AlreadyQueued``) whose ``conflicts`` name each such call and the run holding its
        key. Under ``SCHEDULER_EAGER`` every call is checked, then each runs in turn as
        ``enqueue`` would run it."""
        svc = self.scheduler.services()
        when = _start_time(self.run_after)
        try:
            if svc.settings.eager:
                runs = svc.batch.execute_eagerly(self.scheduler.app_of(svc), self.task, calls,
                                                 when, self.controls)
            else:
                runs = svc.batch.enqueue(self.task, calls, when, self.controls, self.session)
        except AlreadyQueued as exc:  # an eager call's key held: as enqueue raises it
            if exc.run is not None:
                with_handle(exc, svc)
            raise
        return [RunHandle(run, svc) for run in runs]


class TaskFunction:
    """A registered task. Calling it calls the function, as if undecorated."""

    def __init__(self, scheduler: Scheduler, task: Task) -> None:
        self.scheduler = scheduler
        self.task = task
        functools.update_wrapper(self, task.function or task.fn)

    @property
    def name(self) -> str:
        return self.task.name

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return (self.task.function or self.task.fn)(*args, **kwargs)

    def using(self, *, run_after: datetime | timedelta | None = None,
              session: AnySession | None = None, **controls: Any) -> TaskCall:
        """A configured copy (see ``TaskCall.using``)."""
        return TaskCall(self.scheduler, self.task).using(run_after=run_after, session=session,
                                                         **controls)

    def enqueue(self, **kwargs: Any) -> RunHandle:
        """Queue a run now (see ``TaskCall.enqueue``)."""
        return TaskCall(self.scheduler, self.task).enqueue(**kwargs)

    def enqueue_many(self, calls: Iterable[Mapping[str, Any]]) -> list[RunHandle]:
        """Queue many runs now, all or none (see ``TaskCall.enqueue_many``)."""
        return TaskCall(self.scheduler, self.task).enqueue_many(calls)

    def __repr__(self) -> str:
        return f"<task {self.name}>"


def with_handle(exc: AlreadyQueued, svc: Services) -> AlreadyQueued:
    """``exc`` as Python callers get it: its ``run`` the ``RunHandle`` of the run holding the
    key (the store gives the run's record)."""
    if not isinstance(exc.run, RunHandle):
        exc.run = RunHandle(exc.run, svc)
    return exc


def _start_time(run_after: datetime | timedelta | None) -> datetime:
    if run_after is None:
        return utcnow()
    if isinstance(run_after, timedelta):
        return utcnow() + run_after
    if isinstance(run_after, datetime):
        if run_after.tzinfo is None or run_after.utcoffset() is None:
            raise InvalidRequest.field("run_after", "must be an aware datetime (with a time "
                                                    "zone), or a timedelta")
        return run_after
    raise InvalidRequest.field("run_after", f"must be a datetime or a timedelta, not "
                                            f"{type(run_after).__name__}")
