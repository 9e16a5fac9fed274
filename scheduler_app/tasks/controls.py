"""A run's concurrency controls: its unique key, its concurrency key and limit, its rate limit
and rate key (``shared/PYTHON_API.md``, "Concurrency controls").

Pure: the options as a task declares them, as ``using(...)`` or an HTTP body overrides them,
checked once here for every entry point, and turned into the values a run's row carries. The
database holds the limits themselves (``store/runs.py``); nothing here counts anything.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, replace
from typing import Any

# Longest key a caller may give. Keys are indexed; a key derived from a task's arguments
# (``unique=True``) is the task name plus a digest, so it never needs more than the column.
KEY_MAX_LENGTH = 200
KEY_COLUMN_LENGTH = 300
# A concurrency limit above this is no limit worth a row of its own; it also keeps the value
# inside every database's integer.
LIMIT_MAX = 100_000
RATE_COUNT_MAX = 1_000_000

PERIODS = {"s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"^\s*([0-9]{1,7})\s*/\s*([smh])\s*$")
OPTIONS = ("unique", "unique_key", "concurrency_key", "concurrency_limit", "rate_limit",
           "rate_key")


class ControlError(ValueError):
    """A concurrency control has a value that cannot be used.

    ``problems`` is a list of ``{"field": <option name>, "message": ...}``."""

    def __init__(self, problems: list[dict[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in problems))


@dataclass(frozen=True)
class Rate:
    """``count`` starts per ``period`` seconds; ``text`` is how it is shown (``100/m``)."""

    count: int
    period: float
    text: str


def parse_rate(value: str) -> Rate:
    """``"100/m"`` (also ``/s``, ``/h``) as a ``Rate``; ValueError saying what is accepted."""
    match = _RATE.match(value) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{value!r} is not a rate; write <count>/<s|m|h>, e.g. '100/m'")
    count, unit = int(match.group(1)), match.group(2)
    if not 1 <= count <= RATE_COUNT_MAX:
        raise ValueError(f"the count must be from 1 to {RATE_COUNT_MAX}, not {count}")
    return Rate(count, PERIODS[unit], f"{count}/{unit}")


@dataclass(frozen=True)
class Controls:
    """The options as given (a task's, or a task's with one enqueue's overrides)."""

    unique: bool = False
    unique_key: str | None = None
    concurrency_key: str | None = None
    concurrency_limit: int | None = None
    rate_limit: str | None = None
    rate_key: str | None = None

    @classmethod
    def checked(cls, **options: Any) -> Controls:
        """Controls from options, or ControlError naming every bad one."""
        controls = cls(**options)
        problems = controls.problems()
        if problems:
            raise ControlError(problems)
        return controls

    def overridden(self, changes: dict[str, Any]) -> Controls:
        """These controls with one enqueue's ``changes`` (only the options it names), checked.
        ``unique=False`` also drops an inherited ``unique_key``: the run is simply not
        unique."""
        unknown = sorted(set(changes) - set(OPTIONS))
        if unknown:
            raise ControlError([{"field": name, "message": "is not a concurrency control"}
                                for name in unknown])
        if changes.get("unique") is False and "unique_key" not in changes:
            changes = {**changes, "unique_key": None}
        merged = replace(self, **changes)
        problems = merged.problems()
        if problems:
            raise ControlError(problems)
        return merged

    def problems(self) -> list[dict[str, str]]:
        problems: list[dict[str, str]] = []
        if not isinstance(self.unique, bool):
            problems.append({"field": "unique", "message": "must be true or false"})
        for name in ("unique_key", "concurrency_key", "rate_key"):
            message = _key_problem(getattr(self, name))
            if message is not None:
                problems.append({"field": name, "message": message})
        limit = self.concurrency_limit
        if limit is not None:
            if isinstance(limit, bool) or not isinstance(limit, int):
                problems.append({"field": "concurrency_limit", "message": "must be an integer"})
            elif not 1 <= limit <= LIMIT_MAX:
                problems.append({"field": "concurrency_limit",
                                 "message": f"must be from 1 to {LIMIT_MAX}, not {limit}"})
        # A limit without a key is allowed: a task may set the limit and each enqueue the key
        # (``@task(concurrency_limit=2)``, then ``using(concurrency_key=f"tenant:{id}")``).
        if self.rate_limit is not None:
            try:
                parse_rate(self.rate_limit)
            except ValueError as exc:
                problems.append({"field": "rate_limit", "message": str(exc)})
        if self.rate_key is not None and self.rate_limit is None:
            problems.append({"field": "rate_key", "message": "needs a rate_limit to apply to"})
        return problems

    def row_values(self, task: str, kwargs: dict[str, Any]) -> dict[str, Any]:
        """What a run of ``task`` with ``kwargs`` stores: the unique key (derived from the task
        and its arguments for ``unique=True``), the concurrency key with its limit (default 1),
        the rate limit as shown (``100/m``) with its key (default: the task's name)."""
        unique_key = self.unique_key
        if unique_key is None and self.unique:
            unique_key = derived_unique_key(task, kwargs)
        rate = None if self.rate_limit is None else parse_rate(self.rate_limit)
        return {
            "unique_key": unique_key,
            "concurrency_key": self.concurrency_key,
            "concurrency_limit": None if self.concurrency_key is None
            else (self.concurrency_limit or 1),
            "rate_limit": None if rate is None else rate.text,
            "rate_key": None if rate is None else (self.rate_key or task),
        }


NO_CONTROLS = Controls()


def derived_unique_key(task: str, kwargs: dict[str, Any]) -> str:
    """The key of ``unique=True``: the task's name and a digest of its arguments as canonical
    JSON, so the same call made twice (keys in any order) has the same key."""
    canonical = json.dumps(kwargs, sort_keys=True, separators=(",", ":"), default=str)
    return f"{task}:{hashlib.sha256(canonical.encode()).hexdigest()}"


def _key_problem(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str):
        return "must be a string"
    if not key.strip():
        return "must not be empty"
    if len(key) > KEY_MAX_LENGTH:
        return f"is {len(key)} characters; at most {KEY_MAX_LENGTH}"
    if "\x00" in key:
        return "must not contain NUL characters"
    return None
