"""How runs, jobs, tasks and nodes look from outside (the API contract's JSON shapes).

One place, so the HTTP API, the CLI and the dashboard show the same fields.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from flask import current_app, g, has_app_context

from ..scheduler.triggers import describe
from ..store import NodeRecord, Run, RunState
from ..store.jobs import JobRecord
from ..store.lifecycle import LogEntry
from ..tasks import Task, registry
from ..tasks.context import Progress
from ..timeutil import iso, utcnow


def progress_view(run: Run) -> dict[str, Any] | None:
    """A run's last reported progress as the API shows it, or None."""
    if run.progress_done is None:
        return None
    p = Progress(run.progress_done, run.progress_total, run.progress_message)
    return {"done": p.done, "total": p.total, "percent": p.percent, "message": p.message}


def run_view(run: Run) -> dict[str, Any]:
    """A run as the API shows it. Spelled out, not derived from ``Run``: the contract fixes
    these names and their order, and they are not the row's (one ``progress`` object, a
    computed ``duration_s``, no ``retry_backoff``). ``api.schemas.Run`` describes the same
    keys; ``tests/unit/test_run_shape.py`` checks that the two agree. ``waiting`` and
    ``overdue`` are the fields not read from the run alone: see each."""
    progress = progress_view(run)
    duration = None
    if run.started_at is not None:
        end = run.finished_at or utcnow()
        duration = round((end - run.started_at).total_seconds(), 3)
    return {
        "id": run.id,
        "task": run.task,
        "kwargs": run.kwargs,
        "job_id": run.job_id,
        "state": run.state.value,
        "attempt": run.attempt,
        "max_attempts": run.max_attempts,
        "cancel_requested": run.cancel_requested,
        "progress": progress,
        "result": run.result,
        "error": run.error,
        "errors": run.errors,
        "node": run.node,
        "timeout": run.timeout,
        "fire_time": iso(run.fire_time),
        "created_at": iso(run.created_at),
        "scheduled_for": iso(run.scheduled_for),
        "started_at": iso(run.started_at),
        "finished_at": iso(run.finished_at),
        "duration_s": duration,
        "waiting": waiting(run),
        "overdue": overdue(run),
        "unique_key": run.unique_key,
        "concurrency_key": run.concurrency_key,
        "concurrency_limit": run.concurrency_limit,
        "rate_limit": run.rate_limit,
        "rate_key": run.rate_key,
    }


# The key the services are kept under in ``app.extensions`` (``services.EXTENSION_KEY``; this
# module is imported by the package, so it cannot import the name from there).
_EXTENSION_KEY = "scheduler_app"
# How long what a view reads (the live nodes' task names, a key's running runs) is reused in
# one app context (a CLI command that watches a run keeps one app context for minutes).
_READ_REUSE_SECONDS = 1.0


def waiting(run: Run) -> str | None:
    """Why a queued run that is due is not being picked up: no live node executes its task (a
    node claims only runs of the tasks registered in its process); its rate limit has no slot
    before the time a claim gave it (``throttled_until``); or its concurrency key is at its
    limit. None otherwise.

    Only queued runs are looked at, so a page of finished runs costs nothing. The nodes table
    is not read for a task this process's own node executes (a run-now that found no free
    thread here), and otherwise at most once a second per app context (one request); the
    running runs of a key at most once a second per key and app context; None outside this
    service's app."""
    if run.state is not RunState.QUEUED or not has_app_context():
        return None
    if not _executed_here(run.task):
        live = _live_tasks()
        if live is not None and run.task not in live:
            return f"no live node has task {run.task!r}"
    now = utcnow()
    if run.scheduled_for > now:
        return None
    if run.throttled_until is not None and run.throttled_until > now:
        return f"rate limit {run.rate_limit}, next slot at {iso(run.throttled_until)}"
    if run.concurrency_key is not None and run.concurrency_limit is not None:
        running = _running_with_key(run.concurrency_key)
        if running >= run.concurrency_limit:
            return (f"concurrency key {run.concurrency_key!r} at its limit "
                    f"({running} of {run.concurrency_limit} running)")
    return None


def overdue(run: Run) -> str | None:
    """What a running run that was asked to stop (a cancel, or its timeout passed) is doing
    about it, in plain words; None for any other run. A thread cannot be killed: such a run
    keeps running until the task looks at its context or returns, and this says so, and how
    long past its deadline it is. A process-isolated run is stopped after the kill grace."""
    if run.state is not RunState.RUNNING:
        return None
    past = None
    if run.timeout is not None and run.started_at is not None:
        past = (utcnow() - run.started_at).total_seconds() - run.timeout
    if past is not None and past > 0:
        what = f"Still running {past:.0f} s past its {run.timeout:g} s timeout"
    elif run.cancel_requested:
        what = "Still running after it was asked to cancel"
    else:
        return None
    settings = _settings()
    task = registry.get(run.task) if run.task in registry else None
    isolation = (task.isolation if task else None) or (settings.isolation if settings else None)
    if isolation == "process" and settings is not None:
        return (f"{what}: its process is stopped (SIGTERM, then SIGKILL) "
                f"{settings.kill_grace_seconds:g} s after it was asked.")
    return (f"{what}: it runs on a thread, which cannot be stopped; it ends when the task "
            "next checks its context (ctx.cancelled, ctx.check_cancelled(), ctx.sleep()) or "
            "returns. Mark the task isolation=\"process\" to make cancels and timeouts "
            "stop it.")


def _settings() -> Any:
    if not has_app_context():
        return None
    svc = current_app.extensions.get(_EXTENSION_KEY)
    return None if svc is None else svc.settings


def _running_with_key(key: str) -> int:
    """Running runs of a concurrency key, read at most once a second per app context: a page
    of runs waiting on one key asks once, not once per run."""
    counts: dict[str, tuple[float, int]] = g.setdefault("_scheduler_app_running_with_key", {})
    cached = counts.get(key)
    if cached is not None and time.monotonic() - cached[0] < _READ_REUSE_SECONDS:
        return cached[1]
    svc = current_app.extensions.get(_EXTENSION_KEY)
    running = 0 if svc is None else svc.store.runs.running_with_key(key)
    counts[key] = (time.monotonic(), running)
    return running


def _executed_here(task: str) -> bool:
    """Whether this process's own node executes ``task``: a run just queued by a request to
    an executing node (every run-now that found no free thread) is answered without a read of
    the nodes table."""
    svc = current_app.extensions.get(_EXTENSION_KEY)
    return svc is not None and bool(svc.scheduler.executes(task))


def _live_tasks() -> frozenset[str] | None:
    svc = current_app.extensions.get(_EXTENSION_KEY)
    if svc is None:
        return None
    cached: tuple[float, frozenset[str] | None] | None = g.get("_scheduler_app_live_tasks")
    if cached is not None and time.monotonic() - cached[0] < _READ_REUSE_SECONDS:
        return cached[1]
    stale_before = utcnow() - timedelta(seconds=svc.settings.lease_seconds)
    live: frozenset[str] | None = svc.store.nodes.live_tasks(stale_before)
    g._scheduler_app_live_tasks = (time.monotonic(), live)
    return live


def job_view(record: JobRecord, last_run: Run | None, problem: str | None) -> dict[str, Any]:
    # A row written by other code may hold anything: show what can be shown, never fail.
    spec = record.spec if isinstance(record.spec, dict) else {}
    given = spec.get("trigger")
    trigger = dict(given) if isinstance(given, dict) else {}
    trigger["description"] = describe(trigger) if trigger else None
    return {
        "id": record.id,
        "name": spec.get("name", record.id),
        "task": record.task,
        "kwargs": spec.get("kwargs", {}),
        "trigger": trigger,
        "next_run_time": iso(record.next_run_time),
        "paused": record.next_run_time is None,
        "max_instances": spec.get("max_instances"),
        "coalesce": spec.get("coalesce"),
        "misfire_grace_time": spec.get("misfire_grace_time"),
        "last_run": None if last_run is None else {
            "id": last_run.id, "state": last_run.state.value,
            "started_at": iso(last_run.started_at), "finished_at": iso(last_run.finished_at)},
        "problem": problem,
    }


def task_view(task: Task) -> dict[str, Any]:
    return {
        "name": task.name,
        "description": task.description,
        "parameters": task.json_schema(),
        "timeout": task.timeout,
        "max_attempts": task.max_attempts,
        "max_running": task.max_running,
    }


def log_view(entry: LogEntry) -> dict[str, Any]:
    return {"id": entry.id, "at": iso(entry.at), "level": entry.level, "message": entry.message}


def node_view(node: NodeRecord, lease_seconds: float) -> dict[str, Any]:
    return {
        "id": node.id,
        "host": node.host,
        "pid": node.pid,
        "role": node.role,
        "started_at": iso(node.started_at),
        "heartbeat_at": iso(node.heartbeat_at),
        "stopped_at": iso(node.stopped_at),
        "running": node.running,
        "capacity": node.capacity,
        "alive": node.alive(lease_seconds),
    }
