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
import time
import uuid
from collections.abc import Callable, Collection
from datetime import UTC, datetime, timedelta
from typing import Protocol

from apscheduler.job import Job

from ..store import JobRecord, NewRun, Run, Store
from ..store.fires import FireStore, JobFires, PassOutcome, Plan
from ..tasks import UnknownTask, registry
from ..timeutil import utcnow
from .loop import DueJob, FirePass, due_fires
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
        self.fires = FireStore(store.runs)
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
            runner.on_started = self._wake_maintenance
        self._companions: list[Companion] = []
        self._stop = threading.Event()
        self._nudge = threading.Event()
        self._sleeping = False  # the maintenance thread waits for the next heartbeat
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
        self._nudge.set()
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
    def fire_due(self, now: datetime, load: Callable[[JobRecord], Job | None],
                 broken: Collection[str] = ()) -> FirePass:
        """The scheduler loop's pass, in one transaction (``FireStore.fire_due``): every due
        fire becomes a run and every due job moves to its next fire time. With a thread free
        here, the first fire is written already claimed by this node and starts at once, as a
        run-now request does (``Runner.run_now``); the others are queued for whichever node
        has a thread first.

        ``load`` turns a job row into its APScheduler job (None: it cannot be loaded, and it is
        left alone, as are the ids in ``broken``). A fire later than the job's misfire grace
        time is counted as missed instead; a job whose task is not registered in this process
        still moves on, without a run."""
        fired: list[DueJob] = []
        missed: list[tuple[str, str, datetime]] = []

        def plan(records: list[JobRecord]) -> list[JobFires]:
            fired.clear()
            missed.clear()
            decided = []
            for record in records:
                job = load(record)
                due = None if job is None else due_fires(job, now)
                if due is None:
                    continue
                fired.append(due)
                decided.append(JobFires(record.id, due.next_run_time,
                                        tuple(self._new_runs(due, missed)),
                                        due.job.max_instances))
            return decided

        outcome = self._record_pass(now, plan, broken)
        for job_id, fire_time, reason in outcome.skipped:
            log.info("job %s fire at %s skipped: %s", job_id, fire_time.isoformat(), reason,
                     extra={"job_id": job_id, "node": self.id})
        for job_id, task_name, fire_time in missed:
            self._count_misfire(job_id, task_name, fire_time)
        for job_id, fire_time in outcome.recorded:
            log.debug("job %s fired at %s", job_id, fire_time.isoformat(),
                      extra={"job_id": job_id, "node": self.id})
        queued = len(outcome.recorded) - (outcome.started is not None)
        if queued and self.runner is not None:
            self.runner.wake()
        return FirePass(fired, outcome.next_run_time)

    def _record_pass(self, now: datetime, plan: Plan, broken: Collection[str]) -> PassOutcome:
        upcoming = self.fires.next_fire_time(broken)
        if upcoming is None or upcoming > now:  # nothing due: no write transaction, no thread
            return PassOutcome(next_run_time=upcoming)
        if self.runner is None:
            return self.fires.fire_due(now, plan, broken)
        done: list[PassOutcome] = []

        def create(node_id: str) -> Run:
            outcome = self.fires.fire_due(now, plan, broken, start_on=node_id)
            done.append(outcome)
            if outcome.started is None:
                raise _NoRunToStart  # run_now releases the thread it reserved
            return outcome.started

        try:
            if self.runner.run_now(create) is None:  # no thread free here
                return self.fires.fire_due(now, plan, broken)
        except _NoRunToStart:
            pass
        return done[0]

    def _new_runs(self, due: DueJob, missed: list[tuple[str, str, datetime]]) -> list[NewRun]:
        job = due.job
        extra = {"job_id": job.id, "node": self.id}
        task_name = job.args[0] if job.args else None
        try:
            task = registry.get(task_name)
        except UnknownTask:
            log.warning("job %s fires task %r, which is not registered in this process; "
                        "fire skipped", job.id, task_name, extra=extra)
            return []
        now = utcnow()
        new_runs = []
        for fire_time in due.run_times:
            fire_time = fire_time.astimezone(UTC)
            late = (now - fire_time).total_seconds()
            grace = job.misfire_grace_time
            if grace is not None and late > grace:
                log.warning("job %s missed its fire at %s by %.1f s (grace %s s)", job.id,
                            fire_time.isoformat(), late, grace, extra=extra)
                missed.append((job.id, task.name, fire_time))
                continue
            new_runs.append(NewRun(task=task.name, kwargs=dict(job.kwargs),
                                   max_attempts=task.max_attempts,
                                   retry_backoff=task.retry_backoff or self.retry_backoff,
                                   timeout=task.timeout, scheduled_for=fire_time,
                                   job_id=job.id, fire_time=fire_time))
        return new_runs

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

    def _wake_maintenance(self) -> None:
        """A run started here: if the maintenance thread sleeps until the next heartbeat (an
        idle node), it should tick again. While it ticks anyway, nothing to do."""
        if self._sleeping and not self._nudge.is_set():
            self._nudge.set()

    def _maintenance_loop(self) -> None:
        """Every ``tick_seconds`` while runs execute here (progress, log lines, cancels,
        timeouts), and every ``heartbeat_seconds`` for the heartbeat and the lost-run check.
        An idle node sleeps from one heartbeat to the next: a worker woken four times a second
        for nothing was a third of an idle node's CPU (bench/README.md, "Scale")."""
        next_beat = next_forget = time.monotonic()
        while not self._stop.is_set():
            self._sleeping = True  # before looking: a run starting from here on nudges
            busy = self.runner is not None and self.runner.running > 0
            if busy:
                self._sleeping = False
            wait = self.tick_seconds if busy else next_beat - time.monotonic()
            nudged = wait > 0 and self._nudge.wait(min(wait, self.heartbeat_seconds))
            self._sleeping = False
            if nudged:
                # A run started: tick from now on, the first tick a tick from now (ticking at
                # once would compete with the run's own start for the GIL and the database).
                self._nudge.clear()
                if not self._stop.is_set() and time.monotonic() < next_beat:
                    continue
            if self._stop.is_set():
                return
            try:
                self._tick()
                if time.monotonic() >= next_beat:
                    next_beat = time.monotonic() + self.heartbeat_seconds
                    running = self.runner.running if self.runner else 0
                    if not self.store.nodes.heartbeat(self.id, running):
                        self.store.nodes.register(self.id, self.host, self.pid, self.role,
                                                  self.capacity if self.runner else 0)
                    if self.runner is not None:
                        self.settle_lost_runs()
                    if time.monotonic() >= next_forget:  # rows of nodes gone a day: hourly
                        next_forget = time.monotonic() + 3600
                        self.store.nodes.forget_stopped(utcnow() - timedelta(days=1))
            except Exception:
                log.exception("node maintenance failed; retrying", extra={"node": self.id})
                self._stop.wait(self.tick_seconds)

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


class _NoRunToStart(Exception):
    """A pass given a thread recorded no run to start on it (nothing due, all skipped)."""
