"""A run's states, the records that cross layers, and the values a run's row gets when it is
made and when an attempt settles. Pure: no SQL here; ``runs`` and ``fires`` write these values.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
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
    """A run as its row holds it: one field per column of ``schema.runs``, by the same name
    (``tests/unit/test_run_shape.py`` fails when the two differ)."""

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
    unique_key: str | None
    concurrency_key: str | None
    concurrency_limit: int | None
    rate_limit: str | None
    rate_key: str | None
    throttled_until: datetime | None

    @classmethod
    def from_row(cls, row: RowMapping | Mapping[str, Any]) -> Run:
        return cls._from_values(dict(row))

    @classmethod
    def adopt(cls, values: dict[str, Any]) -> Run:
        """The run of ``values``, a dict of every column that no one else holds (a row just
        converted, a merge just built): taken as it is, not copied first as ``from_row`` copies
        a row it does not own. A claim and a settle build one each inside their transaction."""
        return cls._from_values(values)

    @classmethod
    def inserted(cls, run_id: int, values: Mapping[str, Any]) -> Run:
        """The run just inserted with ``values`` (``new_run_values``) as reading it back would
        give it: the columns the insert leaves out are NULL."""
        return cls._from_values({**_UNWRITTEN, **values, "id": run_id})

    @classmethod
    def _from_values(cls, values: dict[str, Any]) -> Run:
        """``values`` is a fresh dict of every column, converted in place.

        It becomes the instance's attributes as it is: a frozen dataclass's ``__init__`` sets
        each of the 30 fields through ``object.__setattr__``, which cost more than reading
        the row (every claim and settle builds one, inside the write transaction)."""
        values["state"] = _STATES.get(values["state"]) or RunState(values["state"])
        values["errors"] = values.get("errors") or []
        if values.keys() != _FIELD_NAMES:
            raise TypeError(f"a run's values must name each of its fields: "
                            f"{sorted(values.keys() ^ _FIELD_NAMES)} differ")
        run = object.__new__(cls)
        run.__dict__.update(values)
        return run

    @property
    def is_final(self) -> bool:
        return self.state in FINAL_STATES


# Each state by its value: a dict lookup, where ``RunState(value)`` goes through the enum's
# metaclass (1 µs of every run's insert, claim and settle); a value that is none of them still
# goes there, to fail as it did.
_STATES = {state.value: state for state in RunState}
_QUEUED, _RUNNING = RunState.QUEUED.value, RunState.RUNNING.value
_UNWRITTEN = dict.fromkeys((f.name for f in fields(Run)), None)
_FIELD_NAMES = frozenset(_UNWRITTEN)


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
    # Concurrency controls as the row stores them (``tasks.controls.Controls.row_values``).
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_limit: str | None = None
    rate_key: str | None = None
    # ``kwargs`` as the JSON text their validation encoded (None: not encoded yet): the insert
    # stores it as it is rather than encode the same arguments again on a run's path.
    kwargs_json: str | None = None

    @property
    def needs_claim(self) -> bool:
        """Whether only a claim may start it (its concurrency key or rate limit is counted
        there), so it must be queued, never written already running on a node."""
        return self.concurrency_key is not None or self.rate_limit is not None


@dataclass(frozen=True)
class LogEntry:
    id: int
    at: datetime
    level: str
    message: str


def backoff_delay(base: float, attempt: int) -> float:
    """Exponential backoff before attempt ``attempt + 1``: base, 2×base, 4×base… capped."""
    return float(min(MAX_BACKOFF_SECONDS, base * (2 ** max(0, attempt - 1))))


def new_run_values(new: NewRun, now: datetime, running_on: str | None = None
                   ) -> dict[str, Any]:
    """The row of a run made from ``new`` at ``now``: queued, or already running on the node
    ``running_on``. Times are in UTC, as the columns give them back."""
    values = {
        **vars(new),
        "fire_time": None if new.fire_time is None else new.fire_time.astimezone(UTC),
        "scheduled_for": new.scheduled_for.astimezone(UTC),
        "state": _QUEUED if running_on is None else _RUNNING,
        "node": running_on,
        "started_at": None if running_on is None else now,
        "attempt": 1,
        "cancel_requested": False,
        "errors": [],
        "created_at": now,
    }
    del values["kwargs_json"]
    return values


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
