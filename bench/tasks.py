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
