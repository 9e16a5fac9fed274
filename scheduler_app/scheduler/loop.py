"""APScheduler's BackgroundScheduler with the two guards a shared job table needs.

- A bounded wait: APScheduler sleeps until the next fire time it knows of (forever when there
  is none), so a job added by another process would go unnoticed. The wait is capped at
  ``poll_seconds``, so every node sees other nodes' changes within about a second.
- A loop that cannot die: APScheduler 3 has no exception handling around the job store calls
  in ``_process_jobs``; one database hiccup there would end the scheduler thread for good.
"""

from __future__ import annotations

import logging
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

log = logging.getLogger(__name__)


class PollingScheduler(BackgroundScheduler):  # type: ignore[misc]
    def __init__(self, poll_seconds: float, **options: Any) -> None:
        self.poll_seconds = poll_seconds
        super().__init__(**options)

    def _process_jobs(self) -> float:
        try:
            wait = super()._process_jobs()
        except Exception:
            log.exception("scheduler loop: job processing failed; retrying shortly")
            return self.poll_seconds
        return self.poll_seconds if wait is None else min(wait, self.poll_seconds)
