"""The executor APScheduler is configured with, which executes nothing.

APScheduler needs an executor named ``default`` (without one it starts a thread pool of its
own). Its executors run the function in their pool and count ``max_instances`` in process
memory; under several processes that count means nothing, and a fire that waits in a full pool
can be dropped as a misfire after its date job was already deleted. Here the scheduler loop
(``loop.PollingScheduler``) never submits to an executor: each pass records its due fires as
queued runs in one transaction (unique on job id and fire time, ``max_instances`` counted in
the database), and the node's runner executes queued runs as its threads free up.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job


class RecordOnly(BaseExecutor):  # type: ignore[misc]
    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        raise NotImplementedError(
            "fires are recorded by the scheduler loop's pass (scheduler/loop.py), not submitted")

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> Any:  # pragma: no cover
        raise NotImplementedError("fires are recorded as runs; no executor runs a job")
