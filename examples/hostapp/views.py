"""The app's pages: reports are created here and built in the background."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request, session, url_for

from .extensions import db, scheduler
from .models import Report
from .tasks import build_report

bp = Blueprint("reports", __name__)


class SimulatedFailure(RuntimeError):
    """``?fail=1``: the request fails after the build was queued, so its transaction is rolled
    back, and with it the report and the queued run."""


@bp.get("/")
def index() -> dict[str, Any]:
    return {"app": "hostapp", "reports": db.session.query(Report).count()}


@bp.get("/visits")
def visits() -> dict[str, Any]:
    session["visits"] = session.get("visits", 0) + 1
    return {"visits": session["visits"]}


@bp.post("/reports")
def create_report() -> tuple[dict[str, Any], int, dict[str, str]] | tuple[dict[str, Any], int]:
    """Create a report and queue its build in the same transaction: both are stored, or
    neither is."""
    data = request.get_json(silent=True) or {}
    report = Report(customer=str(data.get("customer", "anonymous")))
    db.session.add(report)
    try:
        db.session.flush()  # gives the report its id
        run = build_report.using(session=db.session).enqueue(
            report_id=report.id, rows=int(data.get("rows", 1000)))
        report.run_id = run.id
        if request.args.get("fail"):
            raise SimulatedFailure("failed after queueing the build")
        db.session.commit()
    except SimulatedFailure as exc:
        db.session.rollback()
        return {"error": str(exc)}, 500
    location = url_for("reports.show_report", report_id=report.id)
    return {"report": report.id, "run": run.id}, 202, {"Location": location}


@bp.get("/reports/<int:report_id>")
def show_report(report_id: int) -> dict[str, Any]:
    report = db.get_or_404(Report, report_id)
    body = report.to_dict()
    if report.run_id is not None:
        run = scheduler.get_run(report.run_id)
        body["run"] = {"id": run.id, "state": run.state, "progress": run.progress}
    return body
