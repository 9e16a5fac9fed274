"""One pass of the scheduler loop: read the due job rows, plan their fires, record them in one
store call. With a thread free here, the first fire is written claimed by this node and starts
at once."""

from __future__ import annotations

import logging
from datetime import datetime

from ..store import Store
from ..store.fires import FireStore, PassOutcome
from .jobstore import SpecJobStore
from .plan import Missed, plan_fires
from .runner import Runner
from .wakeups import Wakeups

log = logging.getLogger(__name__)


class FirePass:
    def __init__(self, store: Store, jobstore: SpecJobStore, runner: Runner | None,
                 node_id: str, wakeups: Wakeups, *, retry_backoff: float) -> None:
        self.fires = FireStore(store.runs)
        self.stats = store.stats
        self.jobstore = jobstore
        self.runner = runner
        self.node_id = node_id
        self.wakeups = wakeups
        self.retry_backoff = retry_backoff

    def run(self, now: datetime) -> datetime | None:
        """Record every fire due at ``now``; return the next fire time known after it (None:
        no job scheduled). Jobs that cannot be loaded are left alone (``jobstore.broken``);
        a job changed since it was read is left to the next pass."""
        broken = set(self.jobstore.broken)
        upcoming = self.fires.next_fire_time(broken)
        if upcoming is None or upcoming > now:  # nothing due: no write transaction
            return upcoming
        records = self.fires.due_jobs(now, broken)
        loaded = [(record, job) for record in records
                  if (job := self.jobstore.load(record)) is not None]
        plan = plan_fires(loaded, now, self.retry_backoff)
        planned = {item.job_id for item in plan.fires}
        left_out = set(self.jobstore.broken) | {r.id for r in records if r.id not in planned}
        if not plan.fires:
            return self.fires.next_fire_time(left_out)
        reserved = self.runner is not None and self.runner.reserve()
        try:
            outcome = self.fires.record(plan.fires, left_out,
                                        start_on=self.node_id if reserved else None,
                                        claim_only=self._counted_by_the_claim())
        except BaseException:
            if reserved:
                assert self.runner is not None
                self.runner.release()
            raise
        if self.runner is not None:
            if outcome.started is not None:
                self.runner.start_reserved(outcome.started)
            elif reserved:
                self.runner.release()
            if len(outcome.recorded) > (outcome.started is not None):
                self.runner.wake()  # runs were queued: claim them as threads free up
        if len(outcome.recorded) > (outcome.started is not None):
            self.wakeups.runs_queued()  # and other nodes with a free thread, now
        self._report(outcome, [m for m in plan.missed if m.job_id not in outcome.changed])
        return outcome.next_run_time

    def _counted_by_the_claim(self) -> frozenset[str]:
        """Tasks whose runs only a claim may start: their ``max_running`` is counted there."""
        if self.runner is None:
            return frozenset()
        return frozenset(self.runner.task_limits())

    def _report(self, outcome: PassOutcome, missed: list[Missed]) -> None:
        for job_id, fire_time, reason in outcome.skipped:
            log.info("job %s fire at %s skipped: %s", job_id, fire_time.isoformat(), reason,
                     extra={"job_id": job_id, "node": self.node_id})
        for job_id in outcome.changed:
            log.debug("job %s changed since it was read; the next pass takes it", job_id,
                      extra={"job_id": job_id, "node": self.node_id})
        for job_id, fire_time in outcome.recorded:
            log.debug("job %s fired at %s", job_id, fire_time.isoformat(),
                      extra={"job_id": job_id, "node": self.node_id})
        for miss in missed:
            extra = {"job_id": miss.job_id, "node": self.node_id}
            log.warning("job %s missed its fire at %s by %.1f s (grace %s s)", miss.job_id,
                        miss.fire_time.isoformat(), miss.late, miss.grace, extra=extra)
            try:  # for /metrics; a failure to count must not stop the pass
                self.stats.record_misfire(miss.job_id, miss.task, miss.fire_time)
            except Exception:
                log.exception("could not count the missed fire of job %s", miss.job_id,
                              extra=extra)
