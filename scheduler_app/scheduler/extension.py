"""``JobScheduler``: Flask-APScheduler's ``APScheduler`` wired to this service's store and runner.

What it changes in Flask-APScheduler, and why (see DESIGN.md, "Seams and traps"):
- jobs live in the JSON ``SpecJobStore``, and each pass of the loop records its due fires as
  runs in one transaction (``PollingScheduler`` → ``Node.fire_due``), so the database, not
  process memory, is the truth about jobs and runs;
- its REST API is never registered as shipped (it imports any ``module:function`` it is sent);
  ``api.builtin`` serves the same routes behind auth and the task registry;
- ``JOBS`` from the config are not fed to APScheduler's ``add_job`` but validated and upserted
  by ``services.jobs`` at start;
- ``start()`` does not skip itself when Flask's debug flag is set (that check makes the
  scheduler silently never start under ``gunicorn`` with ``FLASK_DEBUG=1``). Which process
  starts a node is decided by the caller: gunicorn's ``post_worker_init`` hook, the
  ``scheduler worker`` CLI command, or the first request a process serves; the reloader's
  watcher process serves no request, so debug mode with the reloader runs jobs once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import datetime

from flask import Flask
from flask_apscheduler import APScheduler

from ..settings import Settings
from ..store import Run, Store
from .executor import RecordOnly
from .jobstore import SpecJobStore
from .loop import FirePass, PollingScheduler
from .node import Node
from .runner import Runner

log = logging.getLogger(__name__)


class JobScheduler(APScheduler):  # type: ignore[misc]
    def __init__(self, app: Flask, settings: Settings, store: Store) -> None:
        self.settings = settings
        self.store = store
        runner = None
        if settings.executes:
            runner = Runner(app, store, node_id="", capacity=settings.worker_threads,
                            poll_seconds=settings.poll_seconds,
                            max_log_lines=settings.run_log_max_lines)
        self.runner = runner
        self.node = Node(store, runner, role=settings.role, capacity=settings.worker_threads,
                         heartbeat_seconds=settings.heartbeat_seconds,
                         lease_seconds=settings.lease_seconds,
                         tick_seconds=settings.tick_seconds,
                         retry_backoff=settings.retry_backoff)
        self.jobstore = SpecJobStore(store.jobs, settings.timezone)
        self._start_lock = threading.Lock()
        self._started = False
        app.config.update(
            SCHEDULER_JOBSTORES={"default": self.jobstore},
            SCHEDULER_EXECUTORS={"default": RecordOnly()},
            SCHEDULER_JOB_DEFAULTS={
                "coalesce": settings.coalesce,
                "misfire_grace_time": settings.misfire_grace_time,
                "max_instances": settings.max_instances,
            },
            SCHEDULER_TIMEZONE=settings.timezone,
        )
        super().__init__(scheduler=PollingScheduler(settings.poll_seconds, self._fire_due),
                         app=app)

    def _fire_due(self, now: datetime) -> FirePass:
        return self.node.fire_due(now, self.jobstore.load, set(self.jobstore.broken))

    # Flask-APScheduler hooks we replace ------------------------------------------------------
    def _load_jobs(self) -> None:
        """Config ``JOBS`` are validated and upserted by ``services.jobs`` at start instead."""

    def _load_api(self) -> None:
        """Never register the shipped API: ``api.builtin`` serves it safely."""

    # Lifecycle -------------------------------------------------------------------------------
    @property
    def started(self) -> bool:
        return self._started

    def start(self, paused: bool = False) -> None:
        """Start this process's node: register it, settle runs lost by dead nodes, start the
        runner (roles ``all`` and ``worker``) and APScheduler's loop (paused for ``web``, which
        writes jobs but never fires them). Idempotent."""
        with self._start_lock:
            if self._started:
                return
            self.node.start()
            self._scheduler.start(paused=paused or self.settings.role == "web")
            self._started = True

    def shutdown(self, wait: bool = True) -> None:
        """Stop firing, then stop the node gracefully (running tasks get the grace period)."""
        with self._start_lock:
            if not self._started:
                return
            self._started = False
            if self._scheduler.running:
                self._scheduler.shutdown(wait=wait)
            self.node.stop(self.settings.shutdown_grace_seconds)

    # What the services call ------------------------------------------------------------------
    def jobs_changed(self) -> None:
        """A job was written: re-read the schedule now rather than at the next wake-up."""
        if self._scheduler.running:
            self._scheduler.wakeup()

    def execute_here(self, create: Callable[[str], Run]) -> Run | None:
        """Create a run already claimed by this node and start it, if a thread is free here;
        None otherwise (the caller queues it for whichever node frees up first)."""
        if self.runner is None or not self._started:
            return None
        return self.runner.run_now(create)

    def runs_queued(self) -> None:
        if self.runner is not None:
            self.runner.wake()

    def cancel_requested(self, run_id: int) -> None:
        if self.runner is not None:
            self.runner.signal_cancel(run_id)

    @property
    def loop_running(self) -> bool:
        return bool(self._scheduler.running)
