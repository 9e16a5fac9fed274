"""The queries behind the dashboard's overview: runs queued and running now, runs finished
by final state since a time and per minute, and the latest failures. Each is one indexed
statement, so the page stays cheap on a large table.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from .db import Database
from .lifecycle import FINAL_STATES, Run, RunState
from .schema import IS_ACTIVE, runs


@dataclass(frozen=True)
class MinuteCount:
    """Runs that finished in the minute starting at ``start``, by final state."""

    start: datetime
    succeeded: int
    failed: int
    cancelled: int

    @property
    def total(self) -> int:
        return self.succeeded + self.failed + self.cancelled


class OverviewQueries:
    def __init__(self, db: Database) -> None:
        self.db = db

    def active_counts(self) -> dict[RunState, int]:
        """Runs queued and running right now."""
        query = (sa.select(runs.c.state, sa.func.count())
                 .where(IS_ACTIVE)
                 .group_by(runs.c.state))
        with self.db.read() as conn:
            found = {RunState(state): count for state, count in conn.execute(query)}
        return {state: found.get(state, 0) for state in (RunState.QUEUED, RunState.RUNNING)}

    def finished_counts(self, since: datetime) -> dict[RunState, int]:
        """Runs that reached each final state at or after ``since``."""
        query = (sa.select(runs.c.state, sa.func.count())
                 .where(runs.c.finished_at >= since)
                 .group_by(runs.c.state))
        with self.db.read() as conn:
            found = {RunState(state): count for state, count in conn.execute(query)
                     if state in FINAL_STATES}
        return {state: found.get(state, 0)
                for state in (RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED)}

    def per_minute(self, now: datetime, minutes: int = 60) -> list[MinuteCount]:
        """Finished runs per minute for the ``minutes`` whole minutes up to ``now``, oldest
        first, one entry per minute (zeros included)."""
        current = now.replace(second=0, microsecond=0)
        first = current - timedelta(minutes=minutes - 1)
        first_epoch = int(first.timestamp()) // 60
        counts: Counter[tuple[int, str]] = Counter()
        bucket = self._minute_bucket()
        with self.db.read() as conn:
            if bucket is None:
                finished = conn.execute(sa.select(runs.c.finished_at, runs.c.state)
                                        .where(runs.c.finished_at >= first))
                for finished_at, state in finished:
                    counts[int(finished_at.timestamp()) // 60, state] += 1
            else:
                grouped = conn.execute(sa.select(bucket, runs.c.state, sa.func.count())
                                       .where(runs.c.finished_at >= first)
                                       .group_by(bucket, runs.c.state))
                for minute, state, count in grouped:
                    counts[int(minute), state] += count
        out = []
        for i in range(minutes):
            minute = first_epoch + i
            out.append(MinuteCount(
                start=first + timedelta(minutes=i),
                succeeded=counts[minute, RunState.SUCCEEDED.value],
                failed=counts[minute, RunState.FAILED.value],
                cancelled=counts[minute, RunState.CANCELLED.value]))
        return out

    def recent_failures(self, since: datetime, limit: int = 10) -> tuple[list[Run], int]:
        """The newest runs that failed at or after ``since``, and how many there are in all."""
        where = sa.and_(runs.c.state == RunState.FAILED.value, runs.c.finished_at >= since)
        with self.db.read() as conn:
            total = conn.execute(sa.select(sa.func.count()).where(where)).scalar_one()
            rows = conn.execute(sa.select(runs).where(where)
                                .order_by(runs.c.finished_at.desc(), runs.c.id.desc())
                                .limit(limit)).mappings()
            return [Run.from_row(r) for r in rows], int(total)

    def _minute_bucket(self) -> Any:
        """An SQL expression for the epoch minute a run finished in, or None (the caller then
        buckets in Python). SQLite stores naive UTC text, which ``strftime('%s', ...)`` turns
        into epoch seconds."""
        if self.db.dialect == "sqlite":
            seconds = sa.cast(sa.func.strftime("%s", runs.c.finished_at), sa.Integer)
            return seconds // 60
        if self.db.dialect == "postgresql":
            epoch = sa.extract("epoch", runs.c.finished_at)
            return sa.cast(sa.func.floor(epoch / 60), sa.BigInteger)
        return None
