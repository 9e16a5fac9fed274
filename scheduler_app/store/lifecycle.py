"""A run's states, the records that cross layers, and the rule for settling an attempt
(final, or back to the queue after an exponential backoff). Pure: no SQL here; ``runs`` applies
these in its conditional updates.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.engine import RowMapping

from ..timeutil import utcnow

MAX_BACKOFF_SECONDS = 3600.0


class RunState(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINAL_STATES = frozenset({RunState.SUCCEEDED, RunState.FAILED, RunState.CANCELLED})
ACTIVE_STATES = frozenset({RunState.QUEUED, RunState.RUNNING})


@dataclass(frozen=True)
class Run:
    id: int
    task: str
    kwargs: dict[str, Any]
    job_id: str | None
    fire_time: datetime | None
    state: RunState
    attempt: int
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    cancel_requested: bool
    progress_done: float | None
    progress_total: float | None
    progress_message: str | None
    result: Any
    error: dict[str, Any] | None
    errors: list[dict[str, Any]]
    node: str | None
    created_at: datetime
    scheduled_for: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping) -> Run:
        values = dict(row)
        values["state"] = RunState(values["state"])
        values["errors"] = values.get("errors") or []
        return cls(**values)

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass(frozen=True)
class NewRun:
    """What it takes to queue a run; built by the services after validation."""

    task: str
    kwargs: dict[str, Any]
    max_attempts: int
    retry_backoff: float
    timeout: float | None
    scheduled_for: datetime
    job_id: str | None = None
    fire_time: datetime | None = None


@dataclass(frozen=True)
class LogEntry:
    id: int
    at: datetime
    level: str
    message: str


def backoff_delay(base: float, attempt: int) -> float:
    """Exponential backoff before attempt ``attempt + 1``: base, 2×base, 4×base… capped."""
    return float(min(MAX_BACKOFF_SECONDS, base * (2 ** max(0, attempt - 1))))


def settle_values(run: Run, state: RunState, result: Any,
                   error: dict[str, Any] | None) -> dict[str, Any]:
    now = utcnow()
    if state is RunState.FAILED and run.attempt < run.max_attempts and not run.cancel_requested:
        delay = backoff_delay(run.retry_backoff, run.attempt)
        return {
            "state": RunState.QUEUED.value,
            "attempt": run.attempt + 1,
            "scheduled_for": now + timedelta(seconds=delay),
            "error": error,
            "errors": [*run.errors, {**(error or {}), "attempt": run.attempt,
                                     "at": now.isoformat()}],
            "node": None,
            "started_at": None,
            "progress_done": None,
            "progress_total": None,
            "progress_message": None,
        }
    values: dict[str, Any] = {"state": state.value, "finished_at": now, "result": result,
                              "error": error}
    if error is not None:
        values["errors"] = [*run.errors, {**error, "attempt": run.attempt, "at": now.isoformat()}]
    return values
