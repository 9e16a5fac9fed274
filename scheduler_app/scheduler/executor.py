"""The APScheduler executor: a job firing becomes a queued run record, nothing more.

APScheduler's own executors run the function in their pool and count ``max_instances`` in
process memory; under several processes that count means nothing, and a fire that waits in a
full pool can be dropped as a misfire after its date job was already deleted. Here a fire is
one insert (unique on job id and fire time, max_instances counted in the database) and the
node's runner executes queued runs as its threads free up.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job


class RunRecorder(BaseExecutor):  # type: ignore[misc]
    def __init__(self, on_fire: Callable[[Job, list[datetime]], None]) -> None:
        super().__init__()
        self._on_fire = on_fire

    def submit_job(self, job: Job, run_times: list[datetime]) -> None:
        # No in-memory max_instances check: the database decides (see RunStore.record_fire).
        self._on_fire(job, run_times)

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> Any:  # pragma: no cover
        raise NotImplementedError("RunRecorder records runs; it does not execute jobs")
