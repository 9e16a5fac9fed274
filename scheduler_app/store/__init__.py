"""Layer 2: SQLAlchemy Core tables and every query the service makes. Knows nothing of Flask."""

from __future__ import annotations

from collections.abc import Collection

from .alerts import AlertStore, ClaimedAlert
from .db import Database
from .encoded import EncodedJSON
from .jobs import JobExists, JobRecord, JobStoreQueries
from .lifecycle import (
    ACTIVE_STATES,
    FINAL_STATES,
    LogEntry,
    NewRun,
    Run,
    RunState,
)
from .nodes import NodeRecord, NodeStore
from .runs import Handover, NextClaim, RunStore
from .stats import StatsStore


class Store:
    """The query sets over one database."""

    def __init__(self, db: Database, alert_on: Collection[str] = ()) -> None:
        """``alert_on``: the final run states whose end writes an alert (none unless this
        process has ``ALERT_WEBHOOK_URL``)."""
        self.db = db
        self.alerts = AlertStore(db, alert_on)
        self.runs = RunStore(db, self.alerts)
        self.jobs = JobStoreQueries(db)
        self.nodes = NodeStore(db)
        self.stats = StatsStore(db)


__all__ = [
    "ACTIVE_STATES",
    "AlertStore",
    "ClaimedAlert",
    "FINAL_STATES",
    "Database",
    "EncodedJSON",
    "Handover",
    "JobExists",
    "JobRecord",
    "JobStoreQueries",
    "LogEntry",
    "NewRun",
    "NextClaim",
    "NodeRecord",
    "NodeStore",
    "Run",
    "RunState",
    "RunStore",
    "StatsStore",
    "Store",
]
