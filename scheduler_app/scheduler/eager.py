"""Eager runs (``SCHEDULER_EAGER``, for a host app's own tests): every attempt of a run executed
at once in the caller's thread, and recorded exactly as a node records it."""

from __future__ import annotations

import os
import socket

from flask import Flask

from ..logs import bind_run, install_run_log_handler
from ..store import Run, RunState, Store
from ..tasks import RunContext
from .runner import call_task

NODE = f"eager:{socket.gethostname()}:{os.getpid()}"


def execute_now(app: Flask, store: Store, run: Run, *, max_log_lines: int) -> Run:
    """Run ``run`` (written as running on ``NODE``) to its end: a failed attempt with attempts
    left is retried at once, without its backoff. Returns the run as finally recorded."""
    install_run_log_handler()  # the task's own logging lands in the run's log, as on a node
    while True:
        ctx = RunContext(run.id, run.task, run.attempt, max_log_lines=max_log_lines)
        with bind_run(run_id=run.id, job_id=run.job_id, task=run.task, node=NODE):
            state, result, error = call_task(app, run, ctx)
        progress = ctx.take_progress()
        settled = store.runs.finish(
            run.id, NODE, state or RunState.CANCELLED, result=result, error=error,
            progress=None if progress is None else (progress.done, progress.total,
                                                    progress.message),
            logs=[(line.at, line.level, line.message) for line in ctx.take_logs()])
        again = None
        if settled is not None and not settled.is_final:
            again = store.runs.claim_run(run.id, NODE)
        if again is None:
            final = store.runs.get(run.id)
            assert final is not None
            return final
        run = again
