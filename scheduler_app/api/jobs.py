"""Jobs: scheduled tasks with a cron, interval or date trigger."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, url_for

from ..services import services
from ..services.models import JobCreate, JobPatch, parse_model
from ..services.views import job_view, run_view
from ..store import JobRecord
from .common import bool_arg, json_body, limit_arg, page

bp = Blueprint("jobs", __name__)


def _views(records: list[JobRecord]) -> list[dict[str, Any]]:
    jobs = services().jobs
    last = jobs.last_runs(records)
    return [job_view(r, last.get(r.id), jobs.problem(r)) for r in records]


def _view(record: JobRecord) -> dict[str, Any]:
    return _views([record])[0]


@bp.post("/jobs")
def create_job() -> Any:
    record = services().jobs.create(parse_model(JobCreate, json_body()))
    return _view(record), 201, {"Location": url_for("api.jobs.get_job", job_id=record.id)}


@bp.get("/jobs")
def list_jobs() -> dict[str, Any]:
    items, cursor = services().jobs.find(
        task=request.args.get("task") or None, paused=bool_arg("paused"), limit=limit_arg(),
        cursor=request.args.get("cursor"))
    return page(_views(items), cursor)


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return _view(services().jobs.get(job_id))


@bp.patch("/jobs/<job_id>")
def update_job(job_id: str) -> dict[str, Any]:
    services().jobs.get(job_id)  # an unknown id is 404 before the body is judged
    return _view(services().jobs.update(job_id, parse_model(JobPatch, json_body())))


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Any:
    services().jobs.delete(job_id)
    return "", 204


@bp.post("/jobs/<job_id>/pause")
def pause_job(job_id: str) -> dict[str, Any]:
    return _view(services().jobs.pause(job_id))


@bp.post("/jobs/<job_id>/resume")
def resume_job(job_id: str) -> dict[str, Any]:
    return _view(services().jobs.resume(job_id))


@bp.post("/jobs/<job_id>/run")
def run_job(job_id: str) -> Any:
    run = services().jobs.run_now(job_id)
    return run_view(run), 202, {"Location": url_for("api.runs.get_run", run_id=run.id)}
