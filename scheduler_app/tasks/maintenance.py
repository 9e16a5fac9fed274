"""Maintenance tasks shipped with the service."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from flask import current_app
from pydantic import Field

from ..timeutil import utcnow
from .context import RunContext
from .registry import task


@task(name="maintenance.prune_runs")
def prune_runs(
    ctx: RunContext, older_than_days: Annotated[int, Field(ge=1, le=36_500)] = 30
) -> dict[str, int]:
    """Delete finished runs (and their log lines) that finished more than `older_than_days` ago.

    Installed by default as a daily cron job (setting PRUNE_RUNS_CRON); queued and running
    runs are never touched.
    """
    store = current_app.extensions["scheduler_app"].store
    cutoff = utcnow() - timedelta(days=older_than_days)
    deleted = store.runs.prune(cutoff)
    ctx.log(f"deleted {deleted} runs finished before {cutoff.isoformat()}")
    return {"deleted": deleted}
