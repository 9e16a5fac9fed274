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

# Every route of the standalone service, as ``GET /`` lists it to API clients (paths before
# SCHEDULER_URL_PREFIX; ``/scheduler`` ones before SCHEDULER_API_PREFIX, listed only when that
# API is enabled). tests/test_readme.py fails when a route is missing here.
ENDPOINTS = [
    ("GET", "/api/tasks", "registered tasks and the JSON Schema of their arguments"),
    ("POST", "/api/runs", "run a task now (or at run_at): {\"task\", \"kwargs\"}"),
    ("POST", "/api/runs/batch", "many runs at once, all or none: {\"runs\": [...]}"),
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
    ("GET", "/metrics", "Prometheus metrics of the whole cluster (viewer)"),
    ("POST", "/auth/login", "a browser session from an API token: {\"token\"}"),
    ("GET", "/auth/session", "the session's role and CSRF token"),
    ("POST", "/auth/logout", "end the browser session"),
    ("GET", "/", "the dashboard in a browser; this list for API clients"),
    ("GET", "/jobs", "dashboard: jobs"),
    ("GET", "/jobs/new", "dashboard: new job form"),
    ("GET", "/jobs/<id>/edit", "dashboard: one job's form, to edit (admin) or read (viewer)"),
    ("GET", "/runs", "dashboard: runs"),
    ("GET", "/runs/<id>", "dashboard: one run, live"),
    ("GET", "/runs/new", "dashboard: run a task"),
    ("GET", "/login", "dashboard: log in with an API token"),
    ("GET", "/healthz", "liveness"),
    ("GET", "/readyz", "readiness: database reachable and scheduler running"),
    ("GET", "/scheduler", "Flask-APScheduler's API: the answering worker's scheduler"),
    ("GET|POST", "/scheduler/jobs",
     "Flask-APScheduler's API: jobs, restricted to registered tasks"),
    ("GET|PATCH|DELETE", "/scheduler/jobs/<id>", "Flask-APScheduler's API: one job"),
    ("POST", "/scheduler/jobs/<id>/pause|resume|run", "Flask-APScheduler's API: pause, resume, "
     "or run a job now"),
    ("POST", "/scheduler/pause|resume|start|shutdown", "Flask-APScheduler's API: acts on the "
     "answering worker's node only"),
]


def _is_builtin(path: str) -> bool:
    """A path of Flask-APScheduler's API (under SCHEDULER_API_PREFIX, not URL_PREFIX)."""
    return path == "/scheduler" or path.startswith("/scheduler/")


def index() -> dict[str, Any]:
    """The list of endpoints: what ``GET /`` answers to API clients (the dashboard serves
    browsers there, and calls this for a client that prefers JSON)."""
    settings = services().settings
    endpoints = []
    for method, path, description in ENDPOINTS:
        if _is_builtin(path):
            if not settings.api_enabled:
                continue
            path = settings.api_prefix + path[len("/scheduler"):]
        else:
            path = settings.url_prefix + path
        endpoints.append({"method": method, "path": path, "description": description})
    return {"service": "scheduler_app", "endpoints": endpoints}


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
        problem = svc.store.db.schema_problem()
        return {"status": "unavailable",
                "reason": problem or "the scheduler is not running"}, 503
    return {"status": "ok", "node": svc.scheduler.node.id}

