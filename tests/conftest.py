"""Shared fixtures: an app on a fresh SQLite file per test, started on demand and always
stopped, and a check that no test leaves a scheduler thread behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask

from scheduler_app import create_app, start_scheduler, stop_scheduler

TASK_MODULES = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance",
                "tests.tasks_for_tests"]
SCHEDULER_THREADS = ("run-dispatcher", "node-maintenance", "run_")


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.02,
             message: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; fail the test after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


@pytest.fixture
def db_url(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path / 'scheduler.sqlite3'}"


@pytest.fixture
def make_app(db_url: str, tmp_path: Any) -> Iterator[Callable[..., Flask]]:
    """Build apps on this test's database; every app built is stopped at teardown."""
    apps: list[Flask] = []

    def build(start: bool = True, **overrides: Any) -> Flask:
        from config.settings import TestingConfig

        config = {k: getattr(TestingConfig, k) for k in dir(TestingConfig) if k.isupper()}
        config.update(DATABASE_URL=db_url, TASK_MODULES=TASK_MODULES)
        config.update(overrides)
        app = create_app(config)
        apps.append(app)
        if start:
            start_scheduler(app)
        return app

    yield build
    for app in apps:
        stop_scheduler(app)
        from scheduler_app.services import services

        services(app).store.db.dispose()


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> Any:
    return app.test_client()


@pytest.fixture(autouse=True)
def _no_leftover_scheduler_threads() -> Iterator[None]:
    yield
    def leftovers() -> list[str]:
        return [t.name for t in threading.enumerate()
                if t.is_alive() and t.name.startswith(SCHEDULER_THREADS)]
    deadline = time.monotonic() + 5
    while leftovers() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not leftovers(), f"test left scheduler threads running: {leftovers()}"
