"""The bench's task for this service: the same probe, registered as ``bench.noop``."""

from __future__ import annotations

from bench.systems.probe import report
from scheduler_app.tasks import RunContext, task


@task(name="bench.noop")
def noop(ctx: RunContext, key: str, port: int) -> None:
    """Report the start time to the bench client and return."""
    report(key, port)
