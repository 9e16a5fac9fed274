"""The unit tier: the runner's, the pass's and the node's rules, on a SQLite file, with a bare
``Flask`` app object and no server. Fast enough to run on every change."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from flask import Flask

import scheduler_app.tasks.demo  # noqa: F401  (registers demo.*)
import tests.tasks_for_tests  # noqa: F401  (registers testing.*)
from scheduler_app.scheduler.engine import Engine
from scheduler_app.scheduler.runner import Runner
from scheduler_app.store import Run, Store
from tests.conftest import migrated_store

NODE = "unit-host:1:node-a"


@pytest.fixture
def sqlite_store(tmp_path: Any) -> Iterator[Store]:
    """A migrated store on a fresh SQLite file (the unit tier runs on SQLite only)."""
    yield from migrated_store(f"sqlite:///{tmp_path / 'unit.sqlite3'}")


class Events:
    """A ``RunEvents`` listener that remembers what the runner told it."""

    def __init__(self) -> None:
        self.started = 0
        self.settled: list[Run] = []

    def run_started(self) -> None:
        self.started += 1

    def run_settled(self, run: Run) -> None:
        self.settled.append(run)

    def settled_run(self, run_id: int) -> Run | None:
        return next((r for r in self.settled if r.id == run_id), None)


@pytest.fixture
def make_runner(sqlite_store: Store) -> Iterator[Callable[..., tuple[Runner, Events]]]:
    """Build runners for node ``NODE`` on ``sqlite_store``; every one is stopped afterwards."""
    runners: list[Runner] = []

    def build(capacity: int = 2, start: bool = True,
              poll_seconds: float = 0.05) -> tuple[Runner, Events]:
        events = Events()
        runner = Runner(Flask(__name__), sqlite_store, NODE, capacity,
                        poll_seconds=poll_seconds, max_log_lines=100, events=events)
        if start:
            runner.start()
        runners.append(runner)
        return runner, events

    yield build
    for runner in runners:
        runner.stop(grace=2)


def settings(**overrides: Any) -> Any:
    """What ``Engine`` reads of the settings, with short test timings."""
    values: dict[str, Any] = dict(
        role="all", worker_threads=2, heartbeat_seconds=5.0, lease_seconds=30.0,
        tick_seconds=0.05, poll_seconds=0.1, run_log_max_lines=100, timezone="UTC",
        retry_backoff=0.01, coalesce=True, misfire_grace_time=60.0, max_instances=1,
        shutdown_grace_seconds=2.0, isolation="thread", kill_grace_seconds=1.0,
        process_app=None, wakeups=True)
    values.update(overrides)
    values["executes"] = values["role"] in ("all", "worker")
    return SimpleNamespace(**values)


@pytest.fixture
def make_engine(sqlite_store: Store) -> Iterator[Callable[..., Engine]]:
    """Build engines on ``sqlite_store`` (not started); every one is shut down afterwards."""
    engines: list[Engine] = []

    def build(app: Flask | None = None, **overrides: Any) -> Engine:
        engine = Engine(app or Flask(__name__), settings(**overrides), sqlite_store)
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.shutdown()
