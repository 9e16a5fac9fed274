"""The scheduler loop: APScheduler 3's ``BackgroundScheduler`` thread, whose every pass is one
``FirePass`` and whose sleep is capped at ``poll_seconds``. A database error is logged and the
pass retried; it never ends the thread."""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Protocol

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.schedulers.base import STATE_PAUSED
from apscheduler.schedulers.blocking import BlockingScheduler

from ..timeutil import utcnow
from .executor import RecordOnly
from .jobstore import SpecJobStore

log = logging.getLogger(__name__)


class Pass(Protocol):
    def run(self, now: datetime) -> datetime | None:
        """Fire what is due at ``now``; return the next fire time known (None: none)."""


class PollingScheduler(BackgroundScheduler):  # type: ignore[misc]
    """Held by ``Engine``, never handed out: only ``start``, ``shutdown``, ``pause``,
    ``resume``, ``wakeup``, ``running`` and ``state`` are used from outside."""

    def __init__(self, fire_pass: Pass, *, poll_seconds: float, jobstore: SpecJobStore,
                 job_defaults: dict[str, Any], timezone: str) -> None:
        self.fire_pass = fire_pass
        self.poll_seconds = poll_seconds
        # Passes done, whatever their outcome (tests wait for the first, after which only a
        # wake-up or the poll starts another).
        self.passes = 0
        super().__init__(jobstores={"default": jobstore}, executors={"default": RecordOnly()},
                         job_defaults=job_defaults, timezone=timezone)

    def shutdown(self, wait: bool = True, timeout: float | None = None) -> None:
        """APScheduler's ``BackgroundScheduler.shutdown``, but waiting at most ``timeout``
        seconds for the loop's thread (APScheduler joins it with no limit), and logging it if
        a pass is still going then."""
        BlockingScheduler.shutdown(self, wait)  # stops the loop and wakes it
        thread: threading.Thread = self._thread  # type: ignore[has-type]
        thread.join(timeout)
        if thread.is_alive():
            log.warning("scheduler loop still in a pass %s s after shutdown; not waiting for it",
                        timeout)
        else:
            self._thread = None

    def _process_jobs(self) -> float:
        """Replaces ``BaseScheduler._process_jobs``, which ``_main_loop`` calls after each
        wait: one pass, then the seconds to wait before the next (at most ``poll_seconds``)."""
        if self.state == STATE_PAUSED:
            return self.poll_seconds
        try:
            upcoming = self.fire_pass.run(utcnow())
        except Exception:
            log.exception("scheduler loop: job processing failed; retrying shortly")
            return self.poll_seconds
        finally:
            self.passes += 1
        if upcoming is None:
            return self.poll_seconds
        return min(self.poll_seconds, max(0.0, (upcoming - utcnow()).total_seconds()))
