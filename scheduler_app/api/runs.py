"""Runs: start one now (or at a time), list, read, cancel, read its log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from ..services import services
from ..services.models import RunBatchCreate, RunCreate, parse_model
from ..services.views import log_view, run_view
from ..store import RunState
from .common import (
    CURSOR,
    LIMIT,
    body_limit,
    filter_param,
    json_body,
    limit_arg,
    page,
    run_location,
)
from .openapi import operation
from .schemas import LogPage, Run, RunIds, RunPage

bp = Blueprint("runs", __name__)

STATE = filter_param("state", "Only runs in this state",
                     {"type": "string", "enum": [s.value for s in RunState]})

# Ids past a 64-bit integer cannot exist; refusing them in the route keeps them from the driver.
RUN_ID = "<int(max=9223372036854775807):run_id>"


@bp.post("/runs")
@operation({202: Run}, body=RunCreate, errors=(409, 429), location=True)
def create_run() -> Any:
    """Run a task now, or at run_at.

    The run is stored before the answer; an unknown task, invalid kwargs or a bad concurrency
    control is a 400 and nothing is stored; a unique key held by a queued or running run is a
    409 already_queued whose details name that run (run_id); a full queue (MAX_QUEUED_RUNS) is
    a 429 with Retry-After."""
    run = services().runs.submit(parse_model(RunCreate, json_body()))
    return run_view(run), 202, {"Location": run_location(run.id)}


@bp.post("/runs/batch")
@body_limit("batch_max_content_length")
@operation({202: RunIds}, body=RunBatchCreate, errors=(409, 429))
def create_runs() -> Any:
    """Run many tasks at once: every run is queued, or none is.

    The runs are stored in one transaction before the answer, which gives each run's id in
    the batch's order. Any bad item is a 400 naming every bad field of every item as
    runs[<index>].<field>; a unique key that a queued or running run holds, or that an
    earlier item of the batch has, is a 409 already_queued whose details name each such item
    (runs[<index>].unique_key) and the run holding its key (run_id); a queue that cannot take
    the whole batch (MAX_QUEUED_RUNS) is a 429. Nothing is stored in each case. At most
    BATCH_MAX_RUNS runs (default 10,000) and BATCH_MAX_CONTENT_LENGTH bytes (16 MiB)."""
    created = services().batch.submit(json_body())
    return {"ids": [run.id for run in created]}, 202


@bp.get("/runs")
@operation({200: RunPage}, query=(
    STATE, filter_param("task", "Only runs of this task"),
    filter_param("job_id", "Only runs fired by this job"), LIMIT, CURSOR))
def list_runs() -> dict[str, Any]:
    """List runs, newest first."""
    items, cursor = services().runs.find(
        state=request.args.get("state") or None, task=request.args.get("task") or None,
        job_id=request.args.get("job_id") or None, limit=limit_arg(),
        cursor=request.args.get("cursor"))
    return page([run_view(r) for r in items], cursor)


@bp.get(f"/runs/{RUN_ID}")
@operation({200: Run})
def get_run(run_id: int) -> dict[str, Any]:
    """Read a run: its state, progress, result or error."""
    return run_view(services().runs.get(run_id))


@bp.post(f"/runs/{RUN_ID}/cancel")
@operation({202: Run}, errors=(409,))
def cancel_run(run_id: int) -> Any:
    """Cancel a run.

    A queued run is cancelled at once, a running one when its task next looks
    (cancel_requested is true meanwhile); a finished run is a 409 already_finished."""
    return run_view(services().runs.cancel(run_id)), 202


@bp.get(f"/runs/{RUN_ID}/logs")
@operation({200: LogPage}, query=(LIMIT, CURSOR))
def run_logs(run_id: int) -> dict[str, Any]:
    """Read a run's log lines, oldest first."""
    items, cursor = services().runs.logs(run_id, limit=limit_arg(),
                                         cursor=request.args.get("cursor"))
    return page([log_view(e) for e in items], cursor)
