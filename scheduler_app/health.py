"""/healthz (the process is up) and /readyz (the database answers and this node schedules),
plus the index page. No auth: load balancers call these."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint

from .api.openapi import operation
from .api.schemas import Health, NotReady, Ready
from .services import services

log = logging.getLogger(__name__)

bp = Blueprint("health", __name__)

ENDPOINTS = [
    ("GET", "/api/tasks", "registered tasks and the JSON Schema of their arguments"),
    ("POST", "/api/runs", "run a task now (or at run_at): {\"task\", \"kwargs\"}"),
    ("GET", "/api/runs", "runs, newest first (?state=&task=&job_id=&limit=&cursor=)"),
    ("GET", "/api/runs/<id>", "one run: state, progress, result, error"),
    ("POST", "/api/runs/<id>/cancel", "cancel a queued or running run"),
    ("GET", "/api/runs/<id>/logs", "a run's log lines"),
    ("POST", "/api/jobs", "schedule a task with a cron, interval or date trigger"),
    ("GET", "/api/jobs", "scheduled jobs by next run time"),
    ("GET|PATCH|DELETE", "/api/jobs/<id>", "read, change or delete a job"),
    ("POST", "/api/jobs/<id>/pause|resume|run", "pause, resume, or run a job now"),
    ("GET", "/api/nodes", "the processes running schedulers, with heartbeats"),
    ("POST", "/api/triggers/preview", "a trigger's next fire times: {\"trigger\", \"count\"}"),
    ("GET", "/api/openapi.json", "this API as an OpenAPI 3.1 document"),
    ("GET", "/api/docs", "the API documentation page (Swagger UI, works offline)"),
    ("GET", "/", "the dashboard in a browser; this list for API clients"),
    ("GET", "/scheduler/jobs", "Flask-APScheduler's API, restricted to registered tasks"),
    ("GET", "/healthz", "liveness"),
    ("GET", "/readyz", "readiness: database reachable and scheduler running"),
]


def index() -> dict[str, Any]:
    """The list of endpoints: what ``GET /`` answers to API clients (the dashboard serves
    browsers there, and calls this for a client that prefers JSON)."""
    prefix = services().settings.url_prefix
    return {
        "service": "scheduler_app",
        "endpoints": [{"method": m, "path": p if p.startswith("/scheduler/") else prefix + p,
                       "description": d} for m, p, d in ENDPOINTS],
    }


@bp.get("/healthz")
@operation({200: Health}, public=True)
def healthz() -> dict[str, str]:
    """Liveness: 200 while the process is up."""
    return {"status": "ok"}


@bp.get("/readyz")
@operation({200: Ready, 503: NotReady}, public=True)
def readyz() -> Any:
    """Readiness: 200 when the database answers and this node's scheduler runs, else 503."""
    svc = services()
    try:
        svc.store.db.ping()
    except Exception as exc:
        # The error's class only: its text may name hosts and databases, and /readyz is public.
        log.warning("readiness: database unreachable: %s", exc)
        return {"status": "unavailable",
                "reason": f"database unreachable ({type(exc).__name__})"}, 503
    if not svc.scheduler.started or not svc.scheduler.loop_running:
        return {"status": "unavailable", "reason": "the scheduler is not running"}, 503
    return {"status": "ok", "node": svc.scheduler.node.id}

