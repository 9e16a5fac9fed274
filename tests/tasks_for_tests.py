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


# -- process isolation (tests/test_isolation.py) ------------------------------------------------
@task(name="testing.proc_report", isolation="process")
def proc_report(ctx: RunContext, steps: int = 3, fail: bool = False) -> dict[str, Any]:
    """Reports progress and log lines from a child process, then returns what it sees of its
    process: its pid, niceness, process group, the app it runs in, and its open files."""
    import os

    from flask import current_app

    for i in range(steps):
        ctx.progress(i + 1, steps, f"step {i + 1}")
        ctx.log(f"ctx line {i}")
    logging.getLogger("some.library").warning("from a library logger")
    if fail:
        raise ValueError("the task failed on purpose")
    fds = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            fds.append(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    import gc

    import sqlalchemy as sa

    pools = [o.pool for o in gc.get_objects() if isinstance(o, sa.engine.Engine)]
    return {"pid": os.getpid(), "nice": os.nice(0), "pgid": os.getpgid(0),
            "app": current_app.import_name, "fds": fds,
            "database_url": current_app.config.get("SCHEDULER_DATABASE_URL"),
            "engines": len(pools),
            "pooled_connections": sum(p.checkedin() + p.checkedout() for p in pools
                                      if hasattr(p, "checkedin"))}


@task(name="testing.proc_sleep", isolation="process")
def proc_sleep(ctx: RunContext, seconds: float = 30.0) -> str:
    """Sleeps in one C call, never looking at its context: only a signal can stop it."""
    time.sleep(seconds)
    return "woke up"


@task(name="testing.proc_sleep_timeout", isolation="process", timeout=1)
def proc_sleep_timeout(ctx: RunContext, seconds: float = 30.0) -> str:
    """As proc_sleep, with a 1 s timeout."""
    time.sleep(seconds)
    return "woke up"


@task(name="testing.proc_sleep_polite", isolation="process")
def proc_sleep_polite(ctx: RunContext, seconds: float = 30.0) -> str:
    """Sleeps through ctx.sleep, so a cancel stops it without a signal."""
    ctx.sleep(seconds)
    return "woke up"


@task(name="testing.proc_crash", isolation="process", max_attempts=2, retry_backoff=0.05)
def proc_crash(ctx: RunContext, how: str = "ok", attempts_crashing: int = 2) -> str:
    """Crashes its process (``abort``, ``null`` read through ctypes, ``exit`` with code 3) on
    its first ``attempts_crashing`` attempts; ``ok`` returns."""
    import ctypes
    import os

    if how != "ok" and ctx.attempt <= attempts_crashing:
        if how == "abort":
            os.abort()
        elif how == "null":
            ctypes.string_at(0)
        elif how == "exit":
            os._exit(3)
    return f"survived attempt {ctx.attempt}"


@task(name="testing.proc_memory", isolation="process", memory_limit_mb=150)
def proc_memory(ctx: RunContext, mb: int = 400) -> int:
    """Allocates ``mb`` megabytes, 10 at a time, touching every page; the limit is 150 MB.
    Logs the wall-clock time just before the allocation that takes it over the limit."""
    import os

    held = []
    crossed = False
    for _ in range(mb // 10):
        with open("/proc/self/statm") as f:
            rss = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        if not crossed and rss + 10 * 1024 * 1024 > 150 * 1024 * 1024:
            crossed = True  # logged before the allocation that crosses (the node may stop
            ctx.log(f"crossed {time.time()}")  # the process during it)
        held.append(bytearray(10 * 1024 * 1024))
        time.sleep(0.01)
    return len(held)


@task(name="testing.proc_spin", isolation="process")
def proc_spin(ctx: RunContext, seconds: float = 1.0) -> int:
    """Burns CPU in pure Python for ``seconds``."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += sum(range(1000))
    return n


@task(name="testing.whereami")
def whereami(ctx: RunContext) -> int:
    """The pid of the process the run executes in (isolation: the node's default)."""
    import os

    return os.getpid()


@task(name="testing.whereami_thread", isolation="thread")
def whereami_thread(ctx: RunContext) -> int:
    """As whereami, always on a thread of the node."""
    import os

    return os.getpid()


@task(name="testing.thread_sleep", timeout=0.5)
def thread_sleep(ctx: RunContext, seconds: float = 3.0) -> str:
    """Sleeps on a thread in one C call, never looking at its context: past its timeout, it
    runs on (a thread cannot be killed)."""
    time.sleep(seconds)
    return "woke up"


@task(name="testing.thread_sleep_untimed")
def thread_sleep_untimed(ctx: RunContext, seconds: float = 3.0) -> str:
    """As thread_sleep, with no timeout."""
    time.sleep(seconds)
    return "woke up"
@task(name="testing.unique_sleep", unique=True)
def unique_sleep(ctx: RunContext, seconds: float = 1.0) -> float:
    """Sleeps (honouring cancel); at most one queued or running run per set of arguments."""
    ctx.sleep(seconds)
    return seconds


def create_app_touching_db(config: dict[str, Any]) -> Any:
    """An app factory that queries the database while it builds (as a host's ``create_app``
    calling ``db.create_all()`` does), leaving a connection in the pool: the isolation helper
    must close it before forking (tests/test_isolation.py)."""
    import sqlalchemy as sa

    from scheduler_app import create_app
    from scheduler_app.services import services

    app = create_app(config)
    with services(app).store.db.read() as conn:
        conn.execute(sa.text("SELECT 1"))
    return app


@task(name="testing.thread_sleep_2s", timeout=2)
def thread_sleep_2s(ctx: RunContext, seconds: float = 4.0) -> str:
    """As thread_sleep, with a 2 s timeout: time for a page to load before the deadline."""
    time.sleep(seconds)
    return "woke up"


# How often ``testing.count`` ran with each key: a batch's test checks every run ran once.
counts: dict[str, int] = {}
_counts_lock = threading.Lock()


@task(name="testing.count")
def count(ctx: RunContext, key: str) -> str:
    with _counts_lock:
        counts[key] = counts.get(key, 0) + 1
    return key


@task(name="testing.tally")
def tally(ctx: RunContext, path: str) -> int:
    """Appends "<run id> <pid>" to ``path`` each time it executes (tests count executions
    across processes); returns the pid."""
    import os

    with open(path, "a") as out:
        out.write(f"{ctx.run_id} {os.getpid()}\n")
    return os.getpid()
