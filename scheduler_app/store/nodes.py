"""The nodes table: who is alive, judged by heartbeats."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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

    def alive(self, lease: float, now: datetime | None = None) -> bool:
        now = now or utcnow()
        return self.stopped_at is None and now - self.heartbeat_at <= timedelta(seconds=lease)


class NodeStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def register(self, node_id: str, host: str, pid: int, role: str, capacity: int) -> None:
        now = utcnow()
        with self.db.write() as conn:
            conn.execute(nodes.delete().where(nodes.c.id == node_id))
            conn.execute(nodes.insert().values(
                id=node_id, host=host, pid=pid, role=role, started_at=now, heartbeat_at=now,
                stopped_at=None, running=0, capacity=capacity))

    def heartbeat(self, node_id: str, running: int) -> bool:
        """Refresh this node's heartbeat; False if its row is gone or marked stopped."""
        with self.db.write() as conn:
            result = conn.execute(
                nodes.update().where(nodes.c.id == node_id, nodes.c.stopped_at.is_(None))
                .values(heartbeat_at=utcnow(), running=running))
        return result.rowcount == 1

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
