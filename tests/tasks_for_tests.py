"""Tasks used by the test-suite (registered under ``testing.*``)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from scheduler_app.tasks import RunContext, task

# Events tests can use to coordinate with a running task, keyed by a name the test picks.
gates: dict[str, threading.Event] = {}


@task(name="testing.flaky", max_attempts=3, retry_backoff=0.05)
def flaky(ctx: RunContext, succeed_on_attempt: int = 3) -> dict[str, int]:
    """Fail until the given attempt."""
    if ctx.attempt < succeed_on_attempt:
        raise ValueError(f"attempt {ctx.attempt} fails")
    return {"attempt": ctx.attempt}


@task(name="testing.stubborn", timeout=0.3)
def stubborn(ctx: RunContext, seconds: float = 1.0) -> str:
    """Runs past its timeout while checking for cancellation."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        ctx.check_cancelled()
        time.sleep(0.01)
    return "finished"


@task(name="testing.logs")
def logs(ctx: RunContext, lines: int = 3) -> int:
    """Writes log lines through ctx.log, ctx.logger and a plain module logger."""
    for i in range(lines):
        ctx.log(f"ctx line {i}")
    ctx.logger.warning("through ctx.logger")
    logging.getLogger("some.library").warning("from a library logger")
    return lines


@task(name="testing.report")
def report(ctx: RunContext, steps: int = 3) -> int:
    """Reports progress and logs a line per step, then returns at once."""
    for i in range(steps):
        ctx.log(f"line {i}")
        ctx.progress(i + 1, steps, f"step {i + 1}")
    return steps


@task(name="testing.not_json")
def not_json(ctx: RunContext) -> Any:
    """Returns a value JSON cannot carry."""
    return {1, 2, 3}


@task(name="testing.wait_gate")
def wait_gate(ctx: RunContext, gate: str, seconds: float = 5.0) -> str:
    """Waits until the named gate opens (or cancellation), for tests that need a run held."""
    event = gates.setdefault(gate, threading.Event())
    deadline = time.monotonic() + seconds
    while not event.wait(0.01):
        ctx.check_cancelled()
        if time.monotonic() > deadline:
            raise TimeoutError(f"gate {gate} never opened")
    return gate


@task(name="testing.single", max_running=1)
def single(ctx: RunContext, seconds: float = 0.2) -> float:
    """At most one of these runs at a time, cluster-wide."""
    ctx.sleep(seconds)
    return seconds


@task(name="testing.long_then_quick", max_attempts=2, retry_backoff=0.05)
def long_then_quick(ctx: RunContext, seconds: float = 30.0) -> dict[str, int]:
    """Long on its first attempt, instant on a retry: shows a lost attempt being retried."""
    if ctx.attempt == 1:
        ctx.sleep(seconds)
    return {"attempt": ctx.attempt}


@task(name="testing.log_around_gate")
def log_around_gate(ctx: RunContext, gate: str) -> str:
    """Logs a line, waits for the named gate, logs another: lets a test flush between them."""
    ctx.log("before the gate")
    gates.setdefault(f"{gate}.logged", threading.Event()).set()
    event = gates.setdefault(gate, threading.Event())
    if not event.wait(5):
        raise TimeoutError(f"gate {gate} never opened")
    ctx.log("after the gate")
    return gate
