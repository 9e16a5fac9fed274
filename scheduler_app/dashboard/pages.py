"""The dashboard's pages: overview, jobs, one job, runs, one run, the forms, and the login page.

Every page needs the ``viewer`` role, judged by ``security.current_role`` like any API read
(a session after a token login, or a loopback client when no token is configured); a caller
who is nobody is sent to the login page. Pages only read: every change is made by the page's
script through the JSON API, so the API's checks (admin role, CSRF token, same origin) are
the only ones there are. Action buttons are rendered for admins only; a viewer gets a job's
form disabled, with no button that would fail.
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    g,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)

from .. import health, security
from ..errors import InvalidRequest, NotFound, Unauthorized
from ..services import services
from ..services.overview import OverviewService
from ..services.views import log_view, run_view
from ..store import RunState
from ..tasks import registry
from .chart import minute_chart

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/dashboard/static")

STATIC = Path(__file__).parent / "static"
PUBLIC_ENDPOINTS = frozenset({"scheduler_app.dashboard.login", "scheduler_app.dashboard.static"})
RUNS_PER_PAGE = 50
JOBS_PER_PAGE = 100
LOG_LINES = 500
MAX_RUN_ID = 9223372036854775807
# Pages run no inline script or style; the page's own files and data: images only.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
       "frame-ancestors 'none'")


# -- who is asking ---------------------------------------------------------------------------
def _prefers_json() -> bool:
    return request.accept_mimetypes.best_match(["application/json", "text/html"]) != "text/html"


@bp.before_request
def _identify() -> Any:
    if request.endpoint in PUBLIC_ENDPOINTS:
        return None
    if request.endpoint == "scheduler_app.dashboard.overview" and _prefers_json():
        # API clients (curl, scripts) asking for / still get the list of endpoints.
        return jsonify(health.index())
    try:
        g.role, g.via = security.current_role()
    except Unauthorized:
        return redirect(url_for("scheduler_app.dashboard.login",
                                next=request.full_path.rstrip("?")))
    return None


@bp.after_request
def _headers(response: Response) -> Response:
    if request.endpoint == "scheduler_app.dashboard.static":
        # The script's modules import each other by plain URL: have browsers revalidate them
        # (a 304 when unchanged) so an upgrade never mixes old and new modules.
        response.headers["Cache-Control"] = "no-cache"
    elif response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.app_template_global()
def asset(name: str) -> str:
    """The URL of a static file with its content hash, so a new release is never mixed with
    a cached old script."""
    return url_for("scheduler_app.dashboard.static", filename=name, v=_digest(name))


@cache
def _digest(name: str) -> str:
    return hashlib.sha256((STATIC / name).read_bytes()).hexdigest()[:12]


@bp.context_processor
def _page_globals() -> dict[str, Any]:
    role = g.get("role")
    return {
        "role": role,
        "via": g.get("via"),
        "can_write": role == "admin",
        "tokens_configured": bool(services().settings.api_tokens),
        "csrf_token": security.csrf_token() if role else "",
        "run_states": [s.value for s in RunState],
    }


@bp.app_template_filter("pretty_json")
def pretty_json(value: Any) -> str:
    return json.dumps(value, indent=2, ensure_ascii=False, sort_keys=False, default=str)


@bp.app_template_filter("duration")
def duration(seconds: float | None) -> str:
    """1.5 → '1.5 s', 75 → '1 min 15 s', 7260 → '2 h 1 min'."""
    if seconds is None:
        return "–"
    if seconds < 60:
        return f"{seconds:.1f} s" if seconds < 10 else f"{seconds:.0f} s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {secs} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min"


def _admin_only(what: str) -> str | None:
    """A page for admins: the 403 page's text for anyone else, or None."""
    if g.get("role") == "admin":
        return None
    return f"{what} needs an admin. You are logged in as a {g.get('role')}."


def _arg(name: str) -> str | None:
    return request.args.get(name) or None


# -- pages -----------------------------------------------------------------------------------
@bp.get("/")
def overview() -> Any:
    svc = services()
    data = OverviewService(svc.store, svc.settings).overview()
    template = "dashboard/_overview_live.html" if request.headers.get(
        "X-Dashboard-Fragment") else "dashboard/overview.html"
    return render_template(template, active="overview", ov=data,
                           chart=minute_chart(data.per_minute),
                           failures=[run_view(r) for r in data.failures])


@bp.get("/runs")
def runs() -> Any:
    filters = {"state": _arg("state"), "task": _arg("task"), "job_id": _arg("job_id")}
    cursor = _arg("cursor")
    error = None
    try:
        found, next_cursor = services().runs.find(**filters, limit=RUNS_PER_PAGE,
                                                  cursor=cursor)
    except InvalidRequest as exc:
        found, next_cursor, error = [], None, exc.message
    task_names = [t.name for t in registry.all()]
    if filters["task"] and filters["task"] not in task_names:
        task_names.append(filters["task"])
    return render_template(
        "dashboard/runs.html", active="runs", runs=[run_view(r) for r in found],
        filters=filters, cursor=cursor, next_cursor=next_cursor, error=error,
        task_names=task_names, limit=RUNS_PER_PAGE), 400 if error else 200


@bp.get(f"/runs/<int(max={MAX_RUN_ID}):run_id>")
def run(run_id: int) -> Any:
    svc = services()
    try:
        found = svc.runs.get(run_id)
    except NotFound:
        return render_template("dashboard/message.html", title="Not found",
                               message=f"There is no run {run_id}. It may have been pruned."), 404
    lines, more = svc.runs.logs(run_id, limit=LOG_LINES, cursor=None)
    return render_template("dashboard/run.html", active="runs", run=run_view(found),
                           logs=[log_view(e) for e in lines], logs_more=more is not None)


@bp.get("/runs/new")
def new_run() -> Any:
    refused = _admin_only("Running a task")
    if refused:
        return render_template("dashboard/message.html", title="Admins only",
                               message=refused), 403
    return render_template("dashboard/run_new.html", active="new-run",
                           tasks=registry.all(), selected=_arg("task"))


@bp.get("/jobs")
def jobs() -> Any:
    svc = services()
    cursor = _arg("cursor")
    error = None
    try:
        records, next_cursor = svc.jobs.find(task=None, paused=None, limit=JOBS_PER_PAGE,
                                             cursor=cursor)
    except InvalidRequest as exc:
        records, next_cursor, error = [], None, exc.message
    views = svc.jobs.views(records)
    return render_template("dashboard/jobs.html", active="jobs", jobs=views, cursor=cursor,
                           next_cursor=next_cursor, error=error, created=_arg("created"),
                           limit=JOBS_PER_PAGE), 400 if error else 200


@bp.get("/jobs/new")
def new_job() -> Any:
    refused = _admin_only("Creating a job")
    if refused:
        return render_template("dashboard/message.html", title="Admins only",
                               message=refused), 403
    svc = services()
    return render_template("dashboard/job_new.html", active="jobs", tasks=registry.all(),
                           selected=_arg("task"), server_timezone=svc.settings.timezone,
                           job=None, editable=True)


@bp.get("/jobs/<job_id>/edit")
def job(job_id: str) -> Any:
    """One job in the form that creates jobs: filled, saved as a PATCH by an admin, read-only
    for a viewer. Under ``/edit`` so that a job whose id is ``new`` has a page too."""
    svc = services()
    try:
        record = svc.jobs.get(job_id)
    except NotFound:
        return render_template("dashboard/message.html", title="Not found",
                               message=f"There is no job {job_id!r}. It may have been "
                                       "deleted."), 404
    view = svc.jobs.views([record])[0]
    return render_template("dashboard/job.html", active="jobs", job=view, tasks=registry.all(),
                           selected=view["task"], task_locked=True,
                           server_timezone=svc.settings.timezone,
                           editable=g.get("role") == "admin")


@bp.get("/login")
def login() -> Any:
    try:
        g.role, g.via = security.current_role()
    except Unauthorized:
        g.role = g.via = None
    return render_template("dashboard/login.html", active="login",
                           next=_safe_next(request.args.get("next")),
                           loopback=security.is_loopback(request.remote_addr))


def _safe_next(target: str | None) -> str:
    """Where to go after logging in: a path on this site, never another site."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return url_for("scheduler_app.dashboard.overview")
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or parts.path.startswith("/auth/"):
        return url_for("scheduler_app.dashboard.overview")
    return target
