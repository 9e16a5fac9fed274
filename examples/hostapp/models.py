"""The app's own tables. Besides ``reports`` it has a ``jobs`` and a ``runs`` table, names a
scheduler would like too: the scheduler keeps its tables apart (``scheduler_*``)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, String
from sqlalchemy.orm import Mapped, mapped_column

from .extensions import db


def _now() -> datetime:
    return datetime.now(UTC)


class Report(db.Model):  # type: ignore[name-defined,misc]
    """A report for a customer, built in the background by ``tasks.build_report``."""

    __tablename__ = "reports"

    id: Mapped[int] = mapped_column(primary_key=True)
    customer: Mapped[str] = mapped_column(String(100))
    status: Mapped[str] = mapped_column(String(20), default="queued")
    rows: Mapped[int] = mapped_column(default=0)
    # How many times a build finished: 1 for every report, or something ran twice.
    builds: Mapped[int] = mapped_column(default=0)
    run_id: Mapped[int | None]
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))

    def to_dict(self) -> dict[str, object]:
        return {
            "id": self.id,
            "customer": self.customer,
            "status": self.status,
            "rows": self.rows,
            "builds": self.builds,
            "run_id": self.run_id,
            "created_at": self.created_at.isoformat(),
            "finished_at": self.finished_at.isoformat() if self.finished_at else None,
        }


class Job(db.Model):  # type: ignore[name-defined,misc]
    """A job opening the app lists (nothing to do with scheduling)."""

    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))


class Run(db.Model):  # type: ignore[name-defined,misc]
    """A delivery run of the app's drivers (nothing to do with scheduling)."""

    __tablename__ = "runs"

    id: Mapped[int] = mapped_column(primary_key=True)
    route: Mapped[str] = mapped_column(String(200))
    stops: Mapped[int] = mapped_column(default=0)
