"""``RecordOnly``: the executor APScheduler is configured with, which executes nothing. Fires
become runs in the loop's pass; the node's runner executes them."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job


class RecordOnly(BaseExecutor):  # type: ignore[misc]
    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        raise NotImplementedError(
            "fires are recorded by the scheduler loop's pass (scheduler/firepass.py), not "
            "submitted to an executor")

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> Any:  # pragma: no cover
        raise NotImplementedError("fires are recorded as runs; no executor runs a job")
