"""A node: one process that holds a scheduler. Its identity, heartbeat and housekeeping.

The maintenance thread, a few times a second: writes pending progress and log lines of the
runs executing here, delivers cancel requests made on other nodes, enforces timeouts; every
heartbeat interval it refreshes this node's row and settles runs whose node went silent
(``NodeLost``), which is also how a restart settles the runs its previous process left behind.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.job import Job

from ..store import FireSkipped, NewRun, Run, Store
from ..tasks import UnknownTask, registry
from ..timeutil import utcnow
from .runner import Runner

log = logging.getLogger(__name__)


class Companion(Protocol):
    """A per-node service (alert delivery): started with the node and stopped after it, so it
    hears of every run the node settles, including while stopping."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def run_settled(self, run: Run) -> None:
        """This node settled ``run`` (ended, or re-queued for a retry). Must not block."""


class Node:
    def __init__(self, store: Store, runner: Runner | None, *, role: str, capacity: int,
                 heartbeat_seconds: float, lease_seconds: float, tick_seconds: float,
                 retry_backoff: float) -> None:
        self.store = store
        self.runner = runner
        self.role = role
        self.capacity = capacity
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_seconds = lease_seconds
        self.tick_seconds = tick_seconds
        self.retry_backoff = retry_backoff
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self.id = f"{self.host}:{self.pid}:{uuid.uuid4().hex[:6]}"
        if runner is not None:
            runner.node_id = self.id
            runner.on_settled = self._settled
        self._companions: list[Companion] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self.store.nodes.register(self.id, self.host, self.pid, self.role,
                                  self.capacity if self.runner else 0)
        self.settle_lost_runs()  # companions hear of these once they start, just below
        for companion in self._companions:
            companion.start()
        if self.runner is not None:
            self.runner.start()
        self._stop.clear()
        self._thread = threading.Thread(target=self._maintenance_loop, name="node-maintenance",
                                        daemon=True)
        self._thread.start()
        log.info("node %s started (role %s, %s threads)", self.id, self.role, self.capacity,
                 extra={"node": self.id})

    def stop(self, grace: float) -> None:
        if self.runner is not None:
            self.runner.stop(grace)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.nodes.mark_stopped(self.id)
        except Exception:
            log.exception("could not mark node %s stopped", self.id)
        for companion in self._companions:
            companion.stop()
        log.info("node %s stopped", self.id, extra={"node": self.id})

    def attach(self, companion: Companion) -> None:
        """Run ``companion`` alongside this node (call before ``start``)."""
        self._companions.append(companion)

    def _settled(self, run: Run) -> None:
        for companion in self._companions:
            try:
                companion.run_settled(run)
            except Exception:
                log.exception("after settling run %s", run.id,
                              extra={"run_id": run.id, "node": self.id})

    # -- job fires --------------------------------------------------------------------------
    def record_fires(self, job: Job, run_times: list[datetime],
                     job_version: int | None = None) -> None:
        """APScheduler's executor hook: each due fire of ``job`` becomes one queued run.

        ``job_version`` is the job row's version when the loop read it: if the job was paused,
        changed or deleted since, the fire is dropped (the change wins)."""
        extra = {"job_id": job.id, "node": self.id}
        task_name = job.args[0] if job.args else None
        try:
            task = registry.get(task_name)
        except UnknownTask:
            log.warning("job %s fires task %r, which is not registered in this process; "
                        "fire skipped", job.id, task_name, extra=extra)
            return
        if job_version is not None and self.store.jobs.version(job.id) != job_version:
            # Another node fired it first (or it was changed): skip without taking the write
            # lock. record_fire re-checks under the lock, so this is only a shortcut.
            log.debug("job %s changed since it was read; fire left to its new state", job.id,
                      extra=extra)
            return
        now = utcnow()
        for fire_time in run_times:
            fire_time = fire_time.astimezone(UTC)
            late = (now - fire_time).total_seconds()
            grace = job.misfire_grace_time
            if grace is not None and late > grace:
                log.warning("job %s missed its fire at %s by %.1f s (grace %s s)", job.id,
                            fire_time.isoformat(), late, grace, extra=extra)
                self._count_misfire(job.id, task.name, fire_time)
                continue
            new = NewRun(task=task.name, kwargs=dict(job.kwargs),
                         max_attempts=task.max_attempts,
                         retry_backoff=task.retry_backoff or self.retry_backoff,
                         timeout=task.timeout, scheduled_for=fire_time, job_id=job.id,
                         fire_time=fire_time)
            try:
                run = self.store.runs.record_fire(new, job.max_instances, job_version)
            except FireSkipped as skipped:
                log.info("job %s fire at %s skipped: %s", job.id, fire_time.isoformat(),
                         skipped, extra=extra)
                continue
            log.debug("job %s fired run %s", job.id, run.id, extra={**extra, "run_id": run.id})
        if self.runner is not None:
            self.runner.wake()

    def _count_misfire(self, job_id: str, task: str, fire_time: datetime) -> None:
        """For /metrics; a failure to count must not stop the job's other fires."""
        try:
            self.store.stats.record_misfire(job_id, task, fire_time)
        except Exception:
            log.exception("could not count the missed fire of job %s", job_id,
                          extra={"job_id": job_id, "node": self.id})

    # -- housekeeping -----------------------------------------------------------------------
    def settle_lost_runs(self) -> None:
        stale_before = utcnow() - timedelta(seconds=self.lease_seconds)
        dead = self._dead_local_nodes()
        for node_id in dead:  # its process is gone: show it dead now, not after the lease
            self.store.nodes.mark_stopped(node_id)
        for run in self.store.runs.settle_lost(stale_before, dead):
            log.warning("run %s lost its node; now %s (attempt %s of %s)", run.id,
                        run.state.value, run.attempt, run.max_attempts,
                        extra={"run_id": run.id, "job_id": run.job_id, "task": run.task,
                               "node": self.id})
            self._settled(run)

    def _dead_local_nodes(self) -> list[str]:
        """Nodes on this host whose process is gone: no need to wait out their lease."""
        dead = []
        for node in self.store.nodes.all():
            if node.id == self.id or node.host != self.host or node.stopped_at is not None:
                continue
            if not _pid_alive(node.pid) or node.pid == self.pid:
                dead.append(node.id)
        return dead

    def _maintenance_loop(self) -> None:
        next_beat = 0.0
        clock = 0.0
        while not self._stop.wait(self.tick_seconds):
            clock += self.tick_seconds
            try:
                self._tick()
                if clock >= next_beat:
                    next_beat = clock + self.heartbeat_seconds
                    running = self.runner.running if self.runner else 0
                    if not self.store.nodes.heartbeat(self.id, running):
                        self.store.nodes.register(self.id, self.host, self.pid, self.role,
                                                  self.capacity if self.runner else 0)
                    if self.runner is not None:
                        self.settle_lost_runs()
                    self.store.nodes.forget_stopped(utcnow() - timedelta(days=1))
            except Exception:
                log.exception("node maintenance failed; retrying", extra={"node": self.id})

    def _tick(self) -> None:
        if self.runner is None:
            return
        self.runner.flush_all()
        self.runner.enforce_timeouts()
        if self.runner.running:
            for run_id in self.store.runs.cancel_requested_ids(self.id):
                self.runner.signal_cancel(run_id)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
