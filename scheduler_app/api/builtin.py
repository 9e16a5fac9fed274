"""Flask-APScheduler's REST API (``/scheduler`` by default), with its routes and JSON shapes,
served over this service's task registry and job service.

Why it is not the shipped ``flask_apscheduler.api``: that module passes the request body to
``add_job(**data)``, and APScheduler resolves a ``func`` string with ``__import__``, so anyone
who can reach the API can run ``os:system`` (remote code execution); its ``run`` endpoint calls
the job's function inside the HTTP request; and most bad input (a non-JSON body, an unknown
trigger, a wrong type) ends as a 500. Here:

- ``func`` must name a registered task, by its task name (``demo.sleep``) or by the exact
  ``module:function`` reference of one (``scheduler_app.tasks.demo:sleep``). The string is
  only looked up in the registry; nothing is ever imported or resolved from it.
- The body is translated into the same ``JobCreate`` / ``JobPatch`` requests ``/api/jobs``
  takes, so validation, storage and wake-ups are the job service's, and every problem is a 4xx
  naming the field as the client sent it (``minute``, ``args.0``, ``func``).
- ``POST /jobs/<id>/run`` queues a run and answers 202 with the job and that run.
- Auth is the ``/api`` auth (viewer reads, admin writes), and error bodies carry the
  contract's ``{"error": {...}}`` plus Flask-APScheduler's legacy ``"error_message"``.

Arguments: a job stores keyword arguments only. Positional ``args`` are mapped onto the task's
parameters in signature order, so a job always reads back with ``args: []``. Arguments given
in a PATCH (``args``, ``kwargs`` or both) replace the job's arguments as a whole.

A job's task cannot change (the job service has no such write): ``replace_existing`` or a PATCH
with another task's ``func`` is a 400 naming ``func``; delete the job and add it again.
"""

from __future__ import annotations

import socket
from typing import Any

from flask import Blueprint, Response, current_app

from ..errors import InvalidRequest
from ..scheduler.engine import Engine
from ..scheduler.triggers import crontab_as_fields
from ..services import compat, services
from ..services.views import run_view
from ..store import JobRecord
from ..tasks import registry
from ..timeutil import iso
from .auth import require_role
from .common import json_body, run_location

bp = Blueprint("scheduler_app_apscheduler", __name__)
bp.before_request(require_role)

JOB_LIST_PAGE = 500


@bp.after_request
def _legacy_error_message(response: Response) -> Response:
    """Add Flask-APScheduler's ``error_message`` to every error body answered here.

    An ``after_request`` hook rather than error handlers, so the body itself is still built by
    ``api.errors`` (the one mapping) whatever the error: a ServiceError, a 413 from Werkzeug,
    an unexpected 500."""
    if response.status_code < 400 or not response.is_json:
        return response
    body = response.get_json(silent=True)
    if isinstance(body, dict) and isinstance(body.get("error"), dict) \
            and "error_message" not in body:
        body["error_message"] = body["error"].get("message")
        response.set_data(current_app.json.dumps(body))
    return response


# -- the scheduler ----------------------------------------------------------------------------

@bp.get("")
def get_scheduler_info() -> dict[str, Any]:
    scheduler = services().scheduler
    return {"current_host": socket.gethostname(), "allowed_hosts": ["*"],
            "running": scheduler.started}


@bp.post("/pause")
def pause_scheduler() -> Any:
    """Pause this node's job loop: it fires nothing until resumed. Runs go on."""
    _running_scheduler().pause()
    return "", 204


@bp.post("/resume")
def resume_scheduler() -> Any:
    scheduler = _running_scheduler()
    if services().settings.role == "web":
        raise InvalidRequest("this node's role is 'web': its job loop stays paused")
    scheduler.resume()
    return "", 204


@bp.post("/start", endpoint="start_scheduler")
def start_scheduler_view() -> Any:
    if services().scheduler.started:
        raise InvalidRequest("the scheduler is already running")
    services().extension.start(app=current_app._get_current_object())  # type: ignore[attr-defined]
    return "", 204


@bp.post("/shutdown")
def shutdown_scheduler() -> Any:
    """Stop this node gracefully (running tasks get the shutdown grace period)."""
    _running_scheduler()
    services().extension.shutdown(app=current_app._get_current_object())  # type: ignore[attr-defined]
    return "", 204


def _running_scheduler() -> Engine:
    scheduler = services().scheduler
    if not scheduler.started:
        raise InvalidRequest("the scheduler is not running")
    return scheduler


# -- jobs -------------------------------------------------------------------------------------

@bp.post("/jobs")
def add_job() -> Any:
    return _job_dict(compat.add(services().jobs, _object_body()))


@bp.get("/jobs")
def get_jobs() -> Any:
    """Every job, as Flask-APScheduler lists them: a plain array, not a page."""
    records: list[JobRecord] = []
    cursor: str | None = None
    while True:
        items, cursor = services().jobs.find(task=None, paused=None, limit=JOB_LIST_PAGE,
                                             cursor=cursor)
        records.extend(items)
        if cursor is None:
            return [_job_dict(r) for r in records]


@bp.get("/jobs/<job_id>")
def get_job(job_id: str) -> dict[str, Any]:
    return _job_dict(services().jobs.get(job_id))


@bp.delete("/jobs/<job_id>")
def delete_job(job_id: str) -> Any:
    services().jobs.delete(job_id)
    return "", 204


@bp.patch("/jobs/<job_id>")
def update_job(job_id: str) -> dict[str, Any]:
    services().jobs.get(job_id)  # an unknown id is 404 before the body is judged
    return _job_dict(compat.modify(services().jobs, job_id, _object_body()))


@bp.post("/jobs/<job_id>/pause")
def pause_job(job_id: str) -> dict[str, Any]:
    return _job_dict(services().jobs.pause(job_id))


@bp.post("/jobs/<job_id>/resume")
def resume_job(job_id: str) -> dict[str, Any]:
    return _job_dict(services().jobs.resume(job_id))


@bp.post("/jobs/<job_id>/run")
def run_job(job_id: str) -> Any:
    """Queue a run of the job now, in the background; the schedule is unchanged."""
    record = services().jobs.get(job_id)
    run = services().jobs.run_now(job_id)
    body = {**_job_dict(record), "run": run_view(run)}
    return body, 202, {"Location": run_location(run.id)}


# -- reading a Flask-APScheduler body ---------------------------------------------------------

def _object_body() -> dict[str, Any]:
    body = json_body()
    if not isinstance(body, dict):
        raise InvalidRequest.field("body", "must be a JSON object")
    return body


# -- the job as Flask-APScheduler shows it (``utils.job_to_dict``) ----------------------------

def _job_dict(record: JobRecord) -> dict[str, Any]:
    spec = record.spec
    return {
        "id": record.id,
        "name": spec.get("name", record.id),
        "func": _func_ref(record.task),
        "args": [],
        "kwargs": spec.get("kwargs") or {},
        **_trigger_fields(spec.get("trigger") or {}),
        "misfire_grace_time": spec.get("misfire_grace_time"),
        "max_instances": spec.get("max_instances"),
        "coalesce": spec.get("coalesce"),
        "next_run_time": iso(record.next_run_time),
    }


def _func_ref(task_name: str) -> str:
    """The task's ``module:function`` reference; its name if not registered here."""
    return registry.get(task_name).ref if task_name in registry else task_name


def _trigger_fields(spec: dict[str, Any]) -> dict[str, Any]:
    """``trigger`` and its arguments at the top level, as stored (times are ISO strings).

    A crontab ``expr`` is shown as APScheduler's fields, read from the trigger it builds, so
    its weekdays are APScheduler's (``mon``…) and sending them back means the same schedule."""
    fields = {"trigger": spec.get("type")}
    fields.update((key, value) for key, value in spec.items() if key not in ("type", "expr"))
    if spec.get("type") == "cron" and "expr" in spec:
        as_fields = crontab_as_fields(spec["expr"])
        fields.update(as_fields if as_fields is not None else {"expr": spec["expr"]})
    return fields
