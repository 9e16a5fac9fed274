"""Runs: start one now (or at a time), list, read, cancel, read its log."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, url_for

from ..services import services
from ..services.models import RunCreate, parse_model
from ..services.views import log_view, run_view
from .common import json_body, limit_arg, page

bp = Blueprint("runs", __name__)

# Ids past a 64-bit integer cannot exist; refusing them in the route keeps them from the driver.
RUN_ID = "<int(max=9223372036854775807):run_id>"


@bp.post("/runs")
def create_run() -> Any:
    run = services().runs.submit(parse_model(RunCreate, json_body()))
    return run_view(run), 202, {"Location": url_for("api.runs.get_run", run_id=run.id)}


@bp.get("/runs")
def list_runs() -> dict[str, Any]:
    items, cursor = services().runs.find(
        state=request.args.get("state") or None, task=request.args.get("task") or None,
        job_id=request.args.get("job_id") or None, limit=limit_arg(),
        cursor=request.args.get("cursor"))
    return page([run_view(r) for r in items], cursor)


@bp.get(f"/runs/{RUN_ID}")
def get_run(run_id: int) -> dict[str, Any]:
    return run_view(services().runs.get(run_id))


@bp.post(f"/runs/{RUN_ID}/cancel")
def cancel_run(run_id: int) -> Any:
    return run_view(services().runs.cancel(run_id)), 202


@bp.get(f"/runs/{RUN_ID}/logs")
def run_logs(run_id: int) -> dict[str, Any]:
    items, cursor = services().runs.logs(run_id, limit=limit_arg(),
                                         cursor=request.args.get("cursor"))
    return page([log_view(e) for e in items], cursor)
