"""``Engine``: this process's scheduler, holding its parts: the node (with its runner), the job
store, the fire pass and APScheduler's loop. The one object the services call."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from apscheduler.schedulers import SchedulerNotRunningError
from flask import Flask
from sqlalchemy.engine import Connection

from ..errors import InvalidRequest
from ..settings import Settings
from ..store import NewRun, Run, Store
from ..store.notify import signals_for
from ..tasks import TaskRegistry, registry
from .firepass import FirePass
from .isolation import ProcessIsolation, app_ref
from .jobstore import SpecJobStore
from .loop import PollingScheduler
from .node import Companion, Node, new_node_id
from .runner import Runner

# How long a run-now request waits for its run's thread to begin before it answers (it gives
# that thread the interpreter first; a busy pool never holds the answer back longer).
START_WAIT = 0.05


class Engine:
    def __init__(self, app: Flask, settings: Settings, store: Store, *,
                 node_id: str | None = None, companions: Sequence[Companion] = (),
                 tasks: TaskRegistry = registry) -> None:
        """Build every part (nothing starts). ``node_id``: made here unless the caller made
        it first (to give it to a companion); ``companions`` run alongside the node;
        ``tasks``: the tasks this node executes, this process's registry unless given (a test
        gives two nodes of one process different ones)."""
        self.settings = settings
        self.store = store
        node_id = node_id or new_node_id()
        isolation = ProcessIsolation(
            app_ref(app, settings.process_app), default=settings.isolation,
            kill_grace=settings.kill_grace_seconds, node_id=node_id)
        self.node = Node(app, store, node_id, role=settings.role,
                         executes=settings.executes, capacity=settings.worker_threads,
                         heartbeat_seconds=settings.heartbeat_seconds,
                         lease_seconds=settings.lease_seconds,
                         tick_seconds=settings.tick_seconds, poll_seconds=settings.poll_seconds,
                         max_log_lines=settings.run_log_max_lines, companions=companions,
                         tasks=tasks, isolation=isolation,
                         signals=signals_for(store.db, settings.wakeups))
        self.runner: Runner | None = self.node.runner
        self.jobstore = SpecJobStore(store.jobs, settings.timezone)
        self._loop = PollingScheduler(
            FirePass(store, self.jobstore, self.runner, self.node.id, self.node.wakeups,
                     retry_backoff=settings.retry_backoff),
            poll_seconds=settings.poll_seconds, jobstore=self.jobstore,
            job_defaults={"coalesce": settings.coalesce,
                          "misfire_grace_time": settings.misfire_grace_time,
                          "max_instances": settings.max_instances},
            timezone=settings.timezone)
        self.node.wakeups.on_jobs_changed = self._reread_schedule
        self._start_lock = threading.Lock()
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def start(self, paused: bool = False, *, as_worker: bool = False) -> None:
        """Start this process's node: register it, settle runs lost by dead nodes, start the
        runner (roles ``all`` and ``worker``) and the scheduler loop (paused for ``web``,
        which writes jobs but never fires them). ``as_worker``: this process serves no HTTP
        (the CLI's worker); its node registers with the role ``worker``. Idempotent."""
        if as_worker and self.runner is None:
            raise ValueError(f"a node of role {self.settings.role!r} cannot execute runs")
        with self._start_lock:
            if self._started:
                return
            self.node.start(role="worker" if as_worker else None)
            self._loop.start(paused=paused or self.settings.role == "web")
            self._started = True

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing, then stop the node gracefully (running tasks get the grace period)."""
        with self._start_lock:
            if not self._started:
                return
            self._started = False
            grace = self.settings.shutdown_grace_seconds
            try:
                if self._loop.running:
                    # A pass stuck on a locked database gets the grace, then is left behind
                    # (its thread is a daemon): waiting for it would keep the node's running
                    # tasks from being asked to stop, and the process from exiting.
                    self._loop.shutdown(wait=wait, timeout=grace)
            finally:
                self.node.stop(grace)

    @property
    def loop_running(self) -> bool:
        return bool(self._loop.running)

    @property
    def loop_passes(self) -> int:
        """How many passes the scheduler loop has made (each ends by sleeping until the next
        fire, a wake-up or the poll)."""
        return int(self._loop.passes)

    # -- what the services call -------------------------------------------------------------
    def jobs_changed(self) -> None:
        """A job was written and committed: this node's loop and every other node's (told
        through the wake-ups) re-read the schedule now rather than at their next poll."""
        self._reread_schedule()
        self.node.wakeups.jobs_changed()

    def _reread_schedule(self) -> None:
        if self._loop.running:
            self._loop.wakeup()

    def run_here(self, new: NewRun, arguments: dict[str, Any] | None = None) -> Run | None:
        """If a thread is free here, write ``new`` already claimed by this node and start it at
        once; None otherwise (the caller queues it for whichever node frees up first). Only
        a task this node executes: the services check it against this process's registry.
        ``arguments``: its kwargs as already validated, for the task's call."""
        if self.runner is None or not self._started or new.task not in self.runner.tasks \
                or not self.runner.reserve():
            return None
        try:
            # Its queue wait is counted by its settle: one statement less before it starts.
            run = self.store.runs.create(new, running_on=self.node.id, count_wait=False)
        except BaseException:
            self.runner.release()
            raise
        self.runner.start_reserved(run, wait=START_WAIT, wait_counted=False,
                                   arguments=arguments)
        return run

    def executes(self, task: str) -> bool:
        """Whether this process's node is started and executes ``task``: then a live node has
        it, this one, and nobody needs to read the nodes table to know."""
        return self._started and self.runner is not None and task in self.runner.tasks

    def runs_queued(self, run: Run | None = None, announced: bool = False) -> None:
        """Runs were queued and committed: this node's runner looks at once, and so does every
        other node's, told through the wake-ups. ``run``: the one run queued, due now and
        free of every limit (the message names it, so one node takes it by its id).
        ``announced``: the other nodes were told in the transaction (``announce_in``)."""
        if self.runner is not None:
            if run is not None:
                self.runner.offer(run.id, run.task)  # taken by id by the first free thread
            else:
                self.runner.wake()
        if not announced:
            self.node.wakeups.runs_queued(run)

    def announce_in(self, conn: Connection, run: Run | None = None) -> bool:
        """Tell the other nodes, in the transaction writing ``run``, that it was queued: the
        database delivers it at commit, with no round trips after it (PostgreSQL). False:
        ``runs_queued`` must tell them after the commit."""
        return self.node.wakeups.runs_queued_in(conn, run)

    def cancel_requested(self, run_id: int) -> None:
        """A cancel of a running run was committed: tell its task now, here or on the node
        that executes it."""
        if self.runner is None or not self.runner.signal_cancel(run_id):
            self.node.wakeups.cancel_requested(run_id)

    # -- for api.builtin: Flask-APScheduler's /scheduler routes -----------------------------
    allowed_hosts = ("*",)  # Flask-APScheduler's default; no host is refused here

    @property
    def host_name(self) -> str:
        return self.node.host.lower()

    @property
    def state(self) -> int:
        """APScheduler's state of the loop (``STATE_STOPPED``, ``_RUNNING``, ``_PAUSED``)."""
        return int(self._loop.state)

    def pause(self) -> None:
        """Stop firing jobs until ``resume``; runs go on. InvalidRequest when the loop is not
        running."""
        try:
            self._loop.pause()
        except SchedulerNotRunningError:
            raise InvalidRequest("the scheduler is not running") from None

    def resume(self) -> None:
        try:
            self._loop.resume()
        except SchedulerNotRunningError:
            raise InvalidRequest("the scheduler is not running") from None
