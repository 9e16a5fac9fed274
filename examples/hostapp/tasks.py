"""The app's background work. The scheduler runs each task inside this app's app context, so
``db.session`` works here as it does in a view (and is removed after the run)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from scheduler_app import RunContext, current_run

from .extensions import db, scheduler
from .models import Report

CHUNK = 100


@scheduler.task
def build_report(report_id: int, rows: int = 1000) -> dict[str, int]:
    """Build the report a chunk of rows at a time, saying how far it has got."""
    run = current_run()
    report = db.session.get(Report, report_id)
    if report is None:
        raise LookupError(f"no report {report_id}")
    report.status = "building"
    db.session.commit()

    for done in range(0, rows, CHUNK):
        run.sleep(0.01)  # the work of one chunk (raises Cancelled if the run is cancelled)
        run.progress(min(done + CHUNK, rows), rows, "building rows")

    report.rows = rows
    report.status = "finished"
    report.finished_at = datetime.now(UTC)
    report.builds = Report.builds + 1
    db.session.commit()
    return {"report": report_id, "rows": rows}


@scheduler.task("cron", id="purge_reports", hour=3, minute=0)
def purge_reports(ctx: RunContext, older_than_days: int = 30) -> dict[str, int]:
    """Every night: delete the reports finished more than ``older_than_days`` ago."""
    cutoff = datetime.now(UTC) - timedelta(days=older_than_days)
    old = db.session.scalars(sa.select(Report).where(Report.finished_at < cutoff)).all()
    for report in old:
        db.session.delete(report)
    db.session.commit()
    ctx.log(f"deleted {len(old)} report(s) finished before {cutoff:%Y-%m-%d}")
    return {"deleted": len(old)}
