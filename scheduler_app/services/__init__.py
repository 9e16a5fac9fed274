"""The services the API, CLI and dashboard call: validation, then the store, then a wake-up."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from flask import Flask, current_app

from ..scheduler.engine import Engine
from ..settings import Settings
from ..store import Store
from .batch import BatchService
from .jobs import JobService
from .runs import RunService

EXTENSION_KEY = "scheduler_app"


@dataclass(frozen=True)
class Services:
    settings: Settings
    store: Store
    scheduler: Engine
    runs: RunService
    jobs: JobService
    extension: Any  # the scheduler_app.Scheduler these were built by (its role loader)
    batch: BatchService

    @classmethod
    def build(cls, settings: Settings, store: Store, scheduler: Engine,
              extension: Any = None) -> Services:
        runs = RunService(store, scheduler, settings)
        return cls(settings, store, scheduler, runs, JobService(store, scheduler, settings, runs),
                   extension, BatchService(runs))

    def install(self, app: Flask) -> None:
        app.extensions[EXTENSION_KEY] = self


def services(app: Flask | None = None) -> Services:
    """The services of the current (or given) app."""
    return (app or current_app).extensions[EXTENSION_KEY]  # type: ignore[no-any-return]
