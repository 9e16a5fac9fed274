"""The bench's tasks for this service: the same probe, registered as ``bench.noop``, and
``bench.stamp``, which reports its run id (the bench looks up the run's fire time), and
``bench.idle``, which does nothing at all (bench/scale.py's memory soak)."""

from __future__ import annotations

from bench.systems.probe import report
from scheduler_app.tasks import RunContext, task


@task(name="bench.noop")
def noop(ctx: RunContext, key: str, port: int) -> None:
    """Report the start time to the bench client and return."""
    report(key, port)


@task(name="bench.stamp")
def stamp(ctx: RunContext, port: int) -> None:
    """Report this run's id and start time to the bench client (bench/accuracy.py)."""
    report(str(ctx.run_id), port)


@task(name="bench.idle")
def idle(ctx: RunContext, key: str = "") -> None:
    """Do nothing; ``key`` only tells runs apart when the bench counts them."""


@task(name="bench.spin")
def spin(ctx: RunContext, seconds: float = 20.0) -> int:
    """Pure-Python CPU work on a thread of the node, looking at its context between slices."""
    return _spin(ctx, seconds)


@task(name="bench.spin_process", isolation="process")
def spin_process(ctx: RunContext, seconds: float = 20.0) -> int:
    """The same work in a child process (bench/isolation.py)."""
    return _spin(ctx, seconds)


@task(name="bench.noop_process", isolation="process")
def noop_process(ctx: RunContext) -> None:
    """Nothing, in a child process: the cost of isolation itself."""


@task(name="bench.noop_thread")
def noop_thread(ctx: RunContext) -> None:
    """Nothing, on a thread of the node."""


@task(name="bench.sleep_process", isolation="process", timeout=1)
def sleep_process(ctx: RunContext, seconds: float = 30.0) -> None:
    """One C call that never looks at its context: only a signal stops it (timeout 1 s)."""
    import time

    time.sleep(seconds)


def _spin(ctx: RunContext, seconds: float) -> int:
    import time

    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline and not ctx.cancelled:
        n += sum(range(2000))
    return n
