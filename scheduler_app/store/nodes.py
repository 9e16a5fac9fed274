"""The nodes table: who is alive, judged by heartbeats, and which tasks each one executes."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from ..timeutil import utcnow
from .db import Database
from .schema import nodes


@dataclass(frozen=True)
class NodeRecord:
    id: str
    host: str
    pid: int
    role: str
    started_at: datetime
    heartbeat_at: datetime
    stopped_at: datetime | None
    running: int
    capacity: int
    # The tasks it executes; None: it executes nothing, or its code does not say.
    tasks: list[str] | None = None

    def alive(self, lease: float, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return self.stopped_at is None and now - self.heartbeat_at <= timedelta(seconds=lease)


class NodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, node_id: str, host: str, pid: int, role: str, capacity: int,
                 tasks: Collection[str] | None = None) -> None:
        """Write this node's row afresh; ``tasks``: the names of the tasks it executes."""
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(nodes.delete().where(nodes.c.id == node_id))
            conn.execute(nodes.insert().values(
                id=node_id, host=host, pid=pid, role=role, started_at=now, heartbeat_at=now,
                stopped_at=None, running=0, capacity=capacity, tasks=_names(tasks)))

    def heartbeat(self, node_id: str, running: int, tasks: Collection[str] | None = None
                  ) -> bool:
        """Refresh this node's heartbeat (and its task names: a task may be registered after
        the node started); False if its row is gone or marked stopped."""
        values: dict[str, Any] = {"heartbeat_at": utcnow(), "running": running}
        if tasks is not None:
            values["tasks"] = _names(tasks)
        with self.db.write() as conn:
            result = conn.execute(
                nodes.update().where(nodes.c.id == node_id, nodes.c.stopped_at.is_(None))
                .values(**values))
        return result.rowcount == 1

    def live_tasks(self, stale_before: datetime) -> frozenset[str] | None:
        """The names of the tasks that some live node (heartbeat since ``stale_before``, not
        stopped) executes; None when a live executing node does not say which (code from
        before revision 0006), since it may run any."""
        with self.db.read() as conn:
            rows = conn.execute(sa.select(nodes.c.tasks).where(
                nodes.c.heartbeat_at >= stale_before, nodes.c.stopped_at.is_(None),
                nodes.c.capacity > 0)).scalars().all()
        if any(names is None for names in rows):
            return None
        return frozenset(name for names in rows for name in names)

    def mark_stopped(self, node_id: str) -> None:
        with self.db.write() as conn:
            conn.execute(nodes.update().where(nodes.c.id == node_id)
                         .values(stopped_at=utcnow(), running=0))

    def all(self) -> list[NodeRecord]:
        with self.db.read() as conn:
            rows = conn.execute(sa.select(nodes).order_by(nodes.c.started_at)).mappings()
            return [NodeRecord(**r) for r in rows]

    def forget_stopped(self, before: datetime) -> None:
        """Drop rows of nodes that stopped or went silent long ago, so the list stays short."""
        with self.db.write() as conn:
            conn.execute(nodes.delete().where(sa.or_(
                nodes.c.stopped_at < before, nodes.c.heartbeat_at < before)))


def _names(tasks: Collection[str] | None) -> list[str] | None:
    return None if tasks is None else sorted(tasks)
