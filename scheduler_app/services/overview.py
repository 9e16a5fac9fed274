"""The cluster at a glance: run counts over the last hour and day, runs per minute, recent
failures and the nodes. What the dashboard's overview page shows, gathered in one call."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from ..settings import Settings
from ..store import NodeRecord, Run, RunState, Store
from ..store.overview import MinuteCount, OverviewQueries
from ..timeutil import utcnow

CHART_MINUTES = 60


@dataclass(frozen=True)
class NodeStatus:
    node: NodeRecord
    alive: bool


@dataclass(frozen=True)
class Overview:
    at: datetime
    active: dict[RunState, int]
    last_hour: dict[RunState, int]
    last_day: dict[RunState, int]
    per_minute: list[MinuteCount]
    failures: list[Run]
    failure_count: int
    nodes: list[NodeStatus]

    @property
    def nodes_alive(self) -> int:
        return sum(1 for n in self.nodes if n.alive)

    @property
    def nodes_dead(self) -> int:
        return len(self.nodes) - self.nodes_alive

    @property
    def busy(self) -> int:
        """Threads running tasks on live nodes."""
        return sum(n.node.running for n in self.nodes if n.alive)

    @property
    def capacity(self) -> int:
        """Threads for tasks on live nodes."""
        return sum(n.node.capacity for n in self.nodes if n.alive)


class OverviewService:
    def __init__(self, store: Store, settings: Settings) -> None:
        self.queries = OverviewQueries(store.db)
        self.store = store
        self.settings = settings

    def overview(self, failures: int = 10) -> Overview:
        now = utcnow()
        lease = self.settings.lease_seconds
        failed, failure_count = self.queries.recent_failures(now - timedelta(days=1), failures)
        return Overview(
            at=now,
            active=self.queries.active_counts(),
            last_hour=self.queries.finished_counts(now - timedelta(hours=1)),
            last_day=self.queries.finished_counts(now - timedelta(days=1)),
            per_minute=self.queries.per_minute(now, CHART_MINUTES),
            failures=failed,
            failure_count=failure_count,
            nodes=[NodeStatus(n, n.alive(lease, now)) for n in self.store.nodes.all()],
        )
