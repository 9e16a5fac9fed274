"""The run context: what a running task receives as its first argument, and the run bound to
the current thread. It does no I/O: ``progress`` and ``log`` record into memory for the node
to write; cancelling sets a flag the task looks at (docs/ARCHITECTURE.md, "The store").
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import dataclass
from datetime import datetime

from ..timeutil import utcnow


class Cancelled(BaseException):  # noqa: N818 - the name says what happened to the run
    """The run was asked to stop.

    A BaseException, like ``asyncio.CancelledError``, so a task's ``except Exception`` does not
    swallow it by accident.
    """


@dataclass(frozen=True)
class Progress:
    done: float
    total: float | None
    message: str | None

    @property
    def percent(self) -> float | None:
        if not self.total:
            return None
        return round(max(0.0, min(100.0, 100.0 * self.done / self.total)), 2)


@dataclass(frozen=True)
class LogLine:
    at: datetime
    level: str
    message: str


class RunContext:
    """Handed to a task as its first parameter for one attempt of one run."""

    def __init__(
        self, run_id: int, task: str, attempt: int, *, max_log_lines: int = 1000
    ) -> None:
        self.run_id = run_id
        self.task = task
        self.attempt = attempt
        self.logger = _task_loggers.get(task) or _new_task_logger(task)
        # Made by the first ``sleep`` (most tasks never sleep on it): an Event is a lock and a
        # condition, built for every run otherwise. The reason, set once under the lock, is
        # the flag.
        self._cancel_event: threading.Event | None = None
        self._cancel_reason: str | None = None
        self._cancel_at: float | None = None  # time.monotonic() of the first request
        self._lock = threading.Lock()
        self._reported: tuple[float, float | None, str | None] = (0, None, None)
        self._taken: tuple[float, float | None, str | None] = self._reported  # by identity
        self._logs: list[LogLine] = []
        self._log_count = 0
        self._max_log_lines = max_log_lines

    # -- what tasks call -------------------------------------------------------------------
    def progress(self, done: float, total: float | None = None, message: str | None = None) -> None:
        """Report how far the run has got; ``total`` makes a percentage. Cheap to call often:
        a check of the types and one assignment, no lock.
        ``x - x == 0`` is the finiteness test: false for infinities and NaN, and cheaper than
        a call to ``math.isfinite``."""
        if type(done) is not int and not (type(done) is float and done - done == 0):
            _check_number("done", done)
        if total is not None and type(total) is not int and not (
                type(total) is float and total - total == 0):
            _check_number("total", total)
        if message is not None and type(message) is not str:
            raise TypeError("progress message must be a string")
        # Only the task's thread writes this; the node reads it (take_progress). The tuple is
        # replaced whole, so a reader never sees half an update, and each call makes a new
        # one, so the node tells a new report by identity.
        self._reported = (done, total, message)

    @property
    def cancelled(self) -> bool:
        """True once the run has been asked to stop (cancel, timeout or shutdown)."""
        return self._cancel_reason is not None

    def check_cancelled(self) -> None:
        """Raise ``Cancelled`` if the run has been asked to stop."""
        if self._cancel_reason is not None:
            raise Cancelled(self._cancel_reason)

    def sleep(self, seconds: float) -> None:
        """Sleep, waking early and raising ``Cancelled`` if the run is asked to stop."""
        with self._lock:  # request_cancel sets the reason, then the event, under it too
            if self._cancel_reason is None and self._cancel_event is None:
                self._cancel_event = threading.Event()
            event = self._cancel_event
        if self._cancel_reason is not None or (
                event is not None and event.wait(max(0.0, seconds))):
            raise Cancelled(self._cancel_reason or "cancelled")

    def log(self, message: str, level: str | int = logging.INFO) -> None:
        """Write a line to this run's log (and to the process log, through ``self.logger``)."""
        numeric = level if isinstance(level, int) else logging.getLevelName(level.upper())
        if not isinstance(numeric, int):
            raise ValueError(f"unknown log level {level!r}")
        self.logger.log(numeric, "%s", message)

    # -- what the node calls ---------------------------------------------------------------
    def request_cancel(self, reason: str) -> None:
        """Ask the task to stop; the first reason given wins (a timeout stays a timeout)."""
        with self._lock:
            if self._cancel_reason is None:
                self._cancel_reason, self._cancel_at = reason, time.monotonic()
            event = self._cancel_event
        if event is not None:
            event.set()

    @property
    def cancel_reason(self) -> str | None:
        return self._cancel_reason

    @property
    def seconds_since_cancel(self) -> float | None:
        """How long ago the task was first asked to stop (None: it was not)."""
        at = self._cancel_at
        return None if at is None else time.monotonic() - at

    def record_log(self, level: str, message: str) -> None:
        """Keep a log line for the run, up to the cap; past it, one line says lines were cut."""
        with self._lock:
            self._log_count += 1
            if self._log_count <= self._max_log_lines:
                self._logs.append(LogLine(utcnow(), level, message[:10_000]))
            elif self._log_count == self._max_log_lines + 1:
                self._logs.append(LogLine(utcnow(), "WARNING",
                                          f"log truncated after {self._max_log_lines} lines"))

    def take_progress(self) -> Progress | None:
        """The latest progress if it changed since the last call, else None."""
        reported = self._reported
        if reported is self._taken:
            return None
        self._taken = reported
        done, total, message = reported
        return Progress(float(done), None if total is None else float(total),
                        None if message is None else message[:1000])

    def take_logs(self) -> list[LogLine]:
        with self._lock:
            lines, self._logs = self._logs, []
            return lines


# Each task's logger, by task name: ``logging.getLogger`` takes logging's module lock at
# every call, and every run's context asks for its task's.
_task_loggers: dict[str, logging.Logger] = {}


def _new_task_logger(task: str) -> logging.Logger:
    logger = _task_loggers[task] = logging.getLogger(f"scheduler_app.runs.{task}")
    return logger


def _check_number(label: str, value: object) -> None:
    """The slow path of ``progress``: accept other real numbers, explain what is wrong."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"progress {label} must be a number")
    if not math.isfinite(value):
        raise ValueError(f"progress {label} must be finite")


_current = threading.local()


def current_run() -> RunContext | None:
    """The context of the run executing on this thread, if any (used to capture its logging)."""
    return getattr(_current, "ctx", None)


def set_current_run(ctx: RunContext | None) -> None:
    _current.ctx = ctx


def require_current_run() -> RunContext:
    """The context of the run executing on this thread: what a task that takes no ``ctx``
    parameter calls (``scheduler_app.current_run()``). RuntimeError outside a run."""
    ctx = current_run()
    if ctx is None:
        raise RuntimeError("current_run() was called outside a run of a task")
    return ctx
