"""Webhook alerts kept in the database, so none is lost with the node that settled its run.

An alert's row is written by ``record`` inside the transaction that ends its run (``RunStore``
calls it wherever a run reaches a final state), so the run's end and its alert commit together
or not at all. Any live node's sender then takes a due alert with a lease (``claim``), posts
it, and writes the attempt's outcome (``attempted``). The claim is one conditional update: the
alert must still be ``pending`` and due, and being claimed makes it due only when the lease
ends, so two live nodes never post it at once, and a node killed mid-post leaves it to the next
node once its lease runs out. Why: docs/ARCHITECTURE.md, "Alerts: a row with the run's end".
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, RowMapping

from ..timeutil import utcnow
from .db import Database
from .lifecycle import Run
from .schema import RUN_COLUMNS_AS_STORED, RUN_JSON_COLUMNS, alerts, runs

PENDING = "pending"
DELIVERED = "delivered"
GIVEN_UP = "given_up"

_NEXT_DUE = sa.select(sa.func.min(alerts.c.next_attempt_at)).where(alerts.c.state == PENDING)
_PENDING_COUNT = sa.select(sa.func.count()).select_from(alerts).where(alerts.c.state == PENDING)
# The alerted run's row, its JSON columns decoded here (``_readable``): a row changed by hand
# so that a column is not JSON still yields what can be read of it.
_RUN_AS_STORED = sa.select(*RUN_COLUMNS_AS_STORED).where(runs.c.id == sa.bindparam("run_id"))


@dataclass(frozen=True)
class ClaimedAlert:
    """A pending alert this node holds until ``lease_until``, with the run it announces:
    ``run``, or, when its row cannot be read as a run (changed by hand; it ended
    ``UnreadableRun``), None and ``unreadable``: each column that can be read, JSON-ready, a
    column that cannot as None, and ``unreadable`` saying which and why."""

    id: int
    event: str  # the run's final state: failed, succeeded or cancelled
    attempts: int  # attempts made before this one, by any node
    lease_until: datetime
    run_id: int
    task: str
    job_id: str | None
    run: Run | None
    unreadable: dict[str, Any] | None = None


class AlertStore:
    def __init__(self, db: Database, events: Collection[str] = ()) -> None:
        """``events``: the final run states that get an alert (``ALERT_ON``); empty when this
        process has no ``ALERT_WEBHOOK_URL``, so its runs record none."""
        self.db = db
        self.events = frozenset(events)

    def record(self, conn: Connection, run: Run) -> None:
        """In the transaction that ended ``run``: its alert, if its end is one asked for. A
        failed attempt that will be retried is not an end."""
        if self.events and run.is_final:  # none asked for (the default): nothing to look at
            self.record_end(conn, run.id, run.state._value_)

    def record_end(self, conn: Connection, run_id: int, event: str) -> None:
        """In the transaction that ended run ``run_id`` in the final state ``event``: its
        alert, if that end is one asked for. For a run whose row cannot be read back as a run
        (``RunStore``, ending one ``UnreadableRun``); ``record`` otherwise."""
        if event not in self.events:
            return
        now = utcnow()
        conn.execute(alerts.insert().values(
            run_id=run_id, event=event, state=PENDING, attempts=0, next_attempt_at=now,
            created_at=now))

    # -- delivering -------------------------------------------------------------------------
    def next_due(self) -> datetime | None:
        """When the earliest pending alert is due (a claimed one: when its lease ends); None
        when none is pending. Every sender asks at every poll, so the statement is built
        once."""
        return self.db.poll(_NEXT_DUE)  # type: ignore[no-any-return]

    def claim(self, node: str, lease_seconds: float) -> ClaimedAlert | None:
        """Take the oldest due pending alert for ``node`` until the lease ends; None when none
        is due (or another node took it first)."""
        with self.db.write() as conn:
            now = utcnow()
            # SKIP LOCKED: on PostgreSQL senders claiming at once take different alerts; SQLite
            # writes one transaction at a time anyway (and ignores it).
            candidate = conn.execute(
                sa.select(alerts.c.id)
                .where(alerts.c.state == PENDING, alerts.c.next_attempt_at <= now)
                .order_by(alerts.c.next_attempt_at, alerts.c.id).limit(1)
                .with_for_update(skip_locked=True)).scalar()
            if candidate is None:
                return None
            lease_until = now + timedelta(seconds=lease_seconds)
            # Conditional, so that a claim racing this one (PostgreSQL) finds it taken.
            row = conn.execute(
                alerts.update()
                .where(alerts.c.id == candidate, alerts.c.state == PENDING,
                       alerts.c.next_attempt_at <= now)
                .values(claimed_by=node, next_attempt_at=lease_until)
                .returning(alerts.c.id, alerts.c.run_id, alerts.c.event, alerts.c.attempts)
            ).first()
            if row is None:
                return None
            stored = conn.execute(_RUN_AS_STORED, {"run_id": row.run_id}).mappings().one()
        run, unreadable = _readable(stored)
        return ClaimedAlert(row.id, row.event, row.attempts, lease_until, stored["id"],
                            stored["task"], stored["job_id"], run, unreadable)

    def attempted(self, alert: ClaimedAlert, node: str, *, state: str,
                  error: str | None = None, retry_in: float | None = None,
                  counted: bool = True) -> bool:
        """Write the outcome of ``node``'s attempt: ``delivered``, ``given_up``, or
        ``pending`` again, due ``retry_in`` seconds from now. ``counted``: the attempt counts
        towards the maximum (not one cut short by the node stopping). False when the alert
        was no longer this node's (its lease ran out and another node took it)."""
        now = utcnow()
        values: dict[str, object] = {
            "state": state, "claimed_by": None, "last_error": error,
            "attempts": alerts.c.attempts + 1 if counted else alerts.c.attempts}
        if state == PENDING:
            values["next_attempt_at"] = now + timedelta(seconds=retry_in or 0.0)
        else:
            values["finished_at"] = now
        with self.db.write() as conn:
            result = conn.execute(
                alerts.update()
                .where(alerts.c.id == alert.id, alerts.c.state == PENDING,
                       alerts.c.claimed_by == node)
                .values(**values))
        return result.rowcount == 1

    # -- reading ----------------------------------------------------------------------------
    def pending_count(self) -> int:
        with self.db.read() as conn:
            return int(conn.execute(_PENDING_COUNT).scalar_one())


def _readable(stored: RowMapping | Mapping[str, Any]) -> tuple[Run | None, dict[str, Any] | None]:
    """The run of a row read with its JSON columns as text: (the run, None); or, if the row
    cannot be read as a run, (None, what can be read of it: each column JSON-ready, one that
    is not JSON as None, and ``unreadable`` naming the problem)."""
    values = dict(stored)
    broken = []
    for key in RUN_JSON_COLUMNS:
        try:
            values[key] = None if values[key] is None else json.loads(values[key])
        except ValueError:
            values[key] = None
            broken.append(key)
    problem = f"not JSON: {', '.join(broken)}" if broken else None
    if problem is None:
        try:
            return Run.from_row(values), None
        except Exception as exc:  # a value this code never writes (a state it does not know)
            problem = str(exc) or type(exc).__name__
    seen = {k: v.isoformat() if isinstance(v, datetime) else v for k, v in values.items()}
    return None, {**seen, "unreadable": f"the run's stored row cannot be read: {problem}"}


def forget_alerts(conn: Connection, run_ids: Sequence[int]) -> None:
    """Delete the alerts of runs being pruned (in the pruning transaction)."""
    conn.execute(alerts.delete().where(alerts.c.run_id.in_(list(run_ids))))


def has_pending_alert() -> sa.Exists:
    """For a query on runs: the run has an alert not yet delivered or given up (pruning
    keeps such a run, so the alert can still be built from it)."""
    return sa.exists().where(alerts.c.run_id == runs.c.id, alerts.c.state == PENDING)
