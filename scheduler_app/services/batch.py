"""Many runs at once: ``POST /api/runs/batch`` and ``Task.enqueue_many``.

Every item is validated as ``POST /api/runs`` (or ``enqueue``) would validate it, and every
problem of every item is reported at once, named ``runs[<index>].<field>``, before anything is
written. A valid batch is written in one transaction with one multi-row insert
(``store.batch``), all or nothing, and then one wake-up tells the idle nodes to claim.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from flask import Flask

from ..errors import InvalidRequest
from ..scheduler import eager
from ..store import NewRun, Run
from ..store.batch import create_many, insert_many
from ..tasks import Task
from ..tasks.controls import Controls
from .models import RunCreate, invalid, parse_model
from .runs import (
    RunService,
    control_changes,
    controls_with,
    resolve_task,
    start_time,
    validate_kwargs,
)

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, scoped_session

FIELD = "runs"


def item_field(index: int, field: str) -> str:
    """``runs[3].kwargs.seconds``: a field of one item of a batch."""
    return f"{FIELD}[{index}]" if field in ("", "body") else f"{FIELD}[{index}].{field}"


class BatchService:
    def __init__(self, runs: RunService) -> None:
        self.runs = runs
        self.settings = runs.settings

    # -- HTTP ---------------------------------------------------------------------------------
    def submit(self, body: object) -> list[Run]:
        """Validate ``{"runs": [<POST /api/runs body>, ...]}`` and queue every run, or raise
        with nothing written: InvalidRequest naming every bad field of every item,
        ``BatchConflict`` (409) naming every item whose unique key is taken, ``QueueFull``
        (429) when the queue cannot take the whole batch."""
        items = self._items(body)
        news: list[NewRun] = []
        problems: list[dict[str, str]] = []
        for index, item in enumerate(items):
            try:
                news.append(self._new_run(item))
            except InvalidRequest as exc:
                problems.extend(_prefixed(index, exc))
        if problems:
            raise invalid(problems)
        return self._queue(news)

    def _items(self, body: object) -> list[Any]:
        if not isinstance(body, dict):
            raise InvalidRequest.field("body", "must be a JSON object")
        unexpected = sorted(set(body) - {FIELD})
        if unexpected:
            raise invalid([{"field": name, "message": "unexpected field"}
                           for name in unexpected])
        items = body.get(FIELD)
        if not isinstance(items, list):
            raise InvalidRequest.field(FIELD, "must be a list of runs, as POST /api/runs takes "
                                              "them")
        check_size(len(items), self.settings.batch_max_runs)
        return items

    def _new_run(self, item: object) -> NewRun:
        if not isinstance(item, dict):
            raise InvalidRequest.field("body", "must be a JSON object")
        request = parse_model(RunCreate, item)
        task = resolve_task(request.task)
        validate_kwargs(task, request.kwargs, self.settings.kwargs_max_bytes)
        when = start_time(request.run_at)
        controls = controls_with(task, control_changes(request))
        return self.runs.new_run(task, request.kwargs, when, controls=controls)

    def _queue(self, news: Sequence[NewRun]) -> list[Run]:
        created = create_many(self.runs.store.db, news, self.settings.max_queued_runs)
        self.runs.scheduler.runs_queued()
        return created

    # -- Python -------------------------------------------------------------------------------
    def enqueue(self, task: Task, calls: Iterable[Mapping[str, Any]], when: datetime,
                controls: Controls | None = None,
                session: Session | scoped_session[Any] | None = None) -> list[Run]:
        """Validate each of ``calls`` (a run's keyword arguments) and queue them all, in the
        host's ``session`` if given (a rollback leaves none), else in a transaction of their
        own; raise as ``submit`` does, nothing written."""
        news = self._new_runs(task, calls, when, controls)
        if session is None:
            return self._queue(news)
        conn = self.runs.host_connection(session)
        created = insert_many(conn, news, self.settings.max_queued_runs)
        self.runs.wake_after_commit(session)
        return created

    def execute_eagerly(self, app: Flask, task: Task, calls: Iterable[Mapping[str, Any]],
                        when: datetime, controls: Controls | None = None) -> list[Run]:
        """``SCHEDULER_EAGER``: validate every call first (a bad one runs none), then record
        and run each in turn, as ``enqueue`` would one by one."""
        news = self._new_runs(task, calls, when, controls)
        store = self.runs.store
        done = []
        for new in news:
            run = store.runs.create(new, running_on=eager.NODE)
            done.append(eager.execute_now(app, store, run,
                                          max_log_lines=self.settings.run_log_max_lines))
        return done

    def _new_runs(self, task: Task, calls: Iterable[Mapping[str, Any]], when: datetime,
                  controls: Controls | None) -> list[NewRun]:
        if isinstance(calls, Mapping | str | bytes):
            raise InvalidRequest.field(FIELD, "must be a list of keyword-argument dicts, one "
                                              "per run, not a single "
                                              f"{type(calls).__name__}")
        try:
            items = list(calls)
        except TypeError:
            raise InvalidRequest.field(FIELD, "must be a list of keyword-argument dicts, one "
                                              "per run") from None
        check_size(len(items), self.settings.batch_max_runs)
        news: list[NewRun] = []
        problems: list[dict[str, str]] = []
        for index, kwargs in enumerate(items):
            if not isinstance(kwargs, Mapping):
                problems.append({"field": item_field(index, ""), "message": (
                    f"must be a dict of keyword arguments, not {type(kwargs).__name__}")})
                continue
            try:
                validate_kwargs(task, dict(kwargs), self.settings.kwargs_max_bytes)
            except InvalidRequest as exc:
                problems.extend(_prefixed(index, exc))
                continue
            news.append(self.runs.new_run(task, dict(kwargs), when, controls=controls))
        if problems:
            raise invalid(problems)
        return news


def check_size(count: int, most: int) -> None:
    if count == 0:
        raise InvalidRequest.field(FIELD, "must hold at least one run")
    if count > most:
        raise InvalidRequest.field(FIELD, f"holds {count} runs; at most {most} per batch "
                                          "(BATCH_MAX_RUNS)")


def _prefixed(index: int, exc: InvalidRequest) -> list[dict[str, str]]:
    details = exc.details or [{"field": "body", "message": exc.message}]
    return [{**d, "field": item_field(index, d["field"])} for d in details]
