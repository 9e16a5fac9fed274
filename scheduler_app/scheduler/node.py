"""A node: one process that holds a scheduler. Its identity, its runner, its heartbeat, and the
housekeeping of its maintenance thread (progress and log writes, cancels, timeouts, lost runs).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from typing import Protocol

from flask import Flask

from ..store import Run, Store
from ..store.notify import NoSignals, Signals
from ..tasks import TaskRegistry, registry
from ..timeutil import utcnow
from .isolation import ProcessIsolation
from .runner import Runner
from .wakeups import Wakeups

log = logging.getLogger(__name__)


def new_node_id() -> str:
    """A node id unique across hosts and restarts: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Companion(Protocol):
    """A per-node service (alert delivery): started with the node and stopped after it, so it
    hears of every run the node settles, including while stopping."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def run_settled(self, run: Run) -> None:
        """This node settled ``run`` (ended, or re-queued for a retry). Must not block."""


class Node:
    """This process's node. It builds its own runner when it executes runs (``executes``), and
    is the runner's listener (``RunEvents``)."""

    def __init__(self, app: Flask, store: Store, node_id: str, *, role: str, executes: bool,
                 capacity: int, heartbeat_seconds: float, lease_seconds: float,
                 tick_seconds: float, poll_seconds: float, max_log_lines: int,
                 companions: Sequence[Companion] = (), tasks: TaskRegistry = registry,
                 isolation: ProcessIsolation | None = None,
                 signals: Signals | None = None) -> None:
        """``tasks``: the tasks this node executes (this process's registry); its row says
        which, so a run whose task no live node has can say why it waits. ``signals``: the
        transport of wake-ups between nodes (none: every hand-off waits for the poll)."""
        self.store = store
        self.id = node_id
        self.role = role
        self.capacity = capacity
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_seconds = lease_seconds
        self.tick_seconds = tick_seconds
        self.host = socket.gethostname()
        self.pid = os.getpid()
        self._companions = list(companions)
        self._stop = threading.Event()
        self._nudge = threading.Event()
        self._sleeping = False  # the maintenance thread waits for the next heartbeat
        self._thread: threading.Thread | None = None
        self.runner = Runner(app, store, node_id, capacity, poll_seconds=poll_seconds,
                             max_log_lines=max_log_lines, events=self,
                             tasks=tasks, isolation=isolation) if executes else None
        self.wakeups = Wakeups(signals or NoSignals(), node_id, self.runner)

    # -- lifecycle --------------------------------------------------------------------------
    def start(self, role: str | None = None) -> None:
        """Register this node (as ``role``, default the role it was built with), settle the runs
        of dead nodes, start its companions, its runner and its maintenance thread."""
        if role is not None:
            self.role = role
        # Listening before the node shows alive, so whoever sees it can wake it.
        self.wakeups.start()
        try:
            self._register()
            self.settle_lost_runs()  # companions hear of these once they start, just below
        except BaseException:
            self.wakeups.stop()
            raise
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
        self.wakeups.stop()
        if self.runner is not None:
            busy = self.runner.running > 0
            self.runner.stop(grace)
            if busy:  # runs it handed back: another node takes them now, not at its poll
                self.wakeups.runs_queued()
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

    def _register(self) -> None:
        self.store.nodes.register(self.id, self.host, self.pid, self.role,
                                  self.capacity if self.runner else 0, self._task_names())

    def _task_names(self) -> frozenset[str] | None:
        """What this node's row says it executes: None for a node that executes nothing."""
        return None if self.runner is None else self.runner.task_names()

    # -- what the runner tells this node (RunEvents) ----------------------------------------
    def run_started(self) -> None:
        """A run started here: if the maintenance thread sleeps until the next heartbeat (an
        idle node), it should tick again. While it ticks anyway, nothing to do."""
        if self._sleeping and not self._nudge.is_set():
            self._nudge.set()

    def run_settled(self, run: Run) -> None:
        try:
            self.wakeups.run_settled(run)
        except Exception:
            log.exception("could not send the wake-up for run %s", run.id,
                          extra={"run_id": run.id, "node": self.id})
        for companion in self._companions:
            try:
                companion.run_settled(run)
            except Exception:
                log.exception("after settling run %s", run.id,
                              extra={"run_id": run.id, "node": self.id})

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
            self.run_settled(run)

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
        """Every ``tick_seconds`` while runs execute here (progress, log lines, cancels,
        timeouts), and every ``heartbeat_seconds`` for the heartbeat and the lost-run check.
        An idle node sleeps from one heartbeat to the next."""
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
                    if not self.store.nodes.heartbeat(self.id, running, self._task_names()):
                        self._register()
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
