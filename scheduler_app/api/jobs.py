"""Jobs: scheduled tasks with a cron, interval or date trigger."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, url_for

from ..services import services
from ..services.models import JobCreate, JobPatch, parse_model
from ..services.views import run_view
from ..store import JobRecord
from .common import (
    CURSOR,
    LIMIT,
    bool_arg,
    bool_param,
    filter_param,
    json_body,
    limit_arg,
    page,
    run_location,
)
from .openapi import operation
from .schemas import Job, JobPage, Run

bp = Blueprint("jobs", __name__)


def _views(records: list[JobRecord]) -> list[dict[str, Any]]:
    return services().jobs.views(records)


def _view(record: JobRecord) -> dict[str, Any]:
    return _views([record])[0]


@bp.post("/jobs")
@operation({201: Job}, body=JobCreate, errors=(409,), location=True)
def create_job() -> Any:
    """Schedule a task with a cron, interval or date trigger.

    An existing id is a 409 conflict (job_limit_reached when MAX_JOBS jobs exist); an unknown
    task, invalid kwargs or an invalid trigger is a 400 naming every bad field at once, a bad
    cron field by its name and range (``trigger.minute``: ``99 is out of range 0-59``)."""
    record = services().jobs.create(parse_model(JobCreate, json_body()))
    return _view(record), 201, {
        "Location": url_for("scheduler_app.api.jobs.get_job", job_id=record.id)}


@bp.get("/jobs")
@operation({200: JobPage}, query=(
    filter_param("task", "Only jobs of this task"),
    bool_param("paused", "Only paused (true) or scheduled (false) jobs"), LIMIT, CURSOR))
def list_jobs() -> dict[str, Any]:
    """List jobs by next run time."""
    items, cursor = services().jobs.find(
        task=request.args.get("task") or None, paused=bool_arg("paused"), limit=limit_arg(),
        cursor=request.args.get("cursor"))
    return page(_views(items), cursor)


@bp.get("/jobs/<job_id>")
@operation({200: Job})
def get_job(job_id: str) -> dict[str, Any]:
    """Read a job."""
    return _view(services().jobs.get(job_id))


@bp.patch("/jobs/<job_id>")
@operation({200: Job}, body=JobPatch, errors=(409,))
def update_job(job_id: str) -> dict[str, Any]:
    """Change a job; a new trigger reschedules it (a paused job stays paused)."""
    record = services().jobs.get(job_id)  # an unknown id is 404 before the body is judged
    patch = parse_model(JobPatch, json_body(), task=record.task)
    return _view(services().jobs.update(job_id, patch))


@bp.delete("/jobs/<job_id>")
@operation({204: None})
def delete_job(job_id: str) -> Any:
    """Delete a job: later fires stop, runs already started go on."""
    services().jobs.delete(job_id)
    return "", 204


@bp.post("/jobs/<job_id>/pause")
@operation({200: Job}, errors=(409,))
def pause_job(job_id: str) -> dict[str, Any]:
    """Pause a job: paused is true and next_run_time null until it is resumed."""
    return _view(services().jobs.pause(job_id))


@bp.post("/jobs/<job_id>/resume")
@operation({200: Job}, errors=(409,))
def resume_job(job_id: str) -> dict[str, Any]:
    """Resume a job; one with no future fire time is a 409."""
    return _view(services().jobs.resume(job_id))


@bp.post("/jobs/<job_id>/run")
@operation({202: Run}, errors=(409, 429), location=True)
def run_job(job_id: str) -> Any:
    """Run a job's task now, in the background; the schedule is unchanged."""
    run = services().jobs.run_now(job_id)
    return run_view(run), 202, {"Location": run_location(run.id)}
