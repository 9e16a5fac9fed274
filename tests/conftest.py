"""Shared fixtures: an app on a fresh SQLite file per test, started on demand and always
stopped, and a check that no test leaves a scheduler thread behind."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from scheduler_app import create_app, start_scheduler, stop_scheduler

TASK_MODULES = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance",
                "tests.tasks_for_tests"]
SCHEDULER_THREADS = ("run-dispatcher", "node-maintenance", "node-alerts", "run_")


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


@pytest.fixture(autouse=True, scope="session")
def _quick_listener_stop() -> Iterator[None]:
    """Wake-up listeners look up every ``STOP_CHECK_SECONDS`` (0.5 s) to see whether they were
    told to stop, so every app a test stops waited up to half a second for its listener: about
    a third of the suite's time, spent idle. In this process they look up every 0.05 s; the
    server processes the integration tests start keep the real value."""
    from scheduler_app.store import notify

    real = notify.STOP_CHECK_SECONDS
    notify.STOP_CHECK_SECONDS = 0.05
    yield
    notify.STOP_CHECK_SECONDS = real


PG_ADMIN_URL = os.environ.get("TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test, dropped afterwards. Under CI=true an
    unreachable server fails the test instead of skipping it."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI and unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    name = f"sched_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    url = sa.make_url(PG_ADMIN_URL).set(database=name)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db_url(request: Any, tmp_path: Any) -> str:
    """The same test on a SQLite file and on a real PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'scheduler.sqlite3'}"
    return str(request.getfixturevalue("pg_url"))


def migrated_store(url: str) -> Iterator[Any]:
    """A store on ``url``, migrated; disposed of when the generator is closed."""
    from scheduler_app.store import Database, Store

    db = Database(url)
    db.migrate()
    yield Store(db)
    db.dispose()


@pytest.fixture
def store(any_db_url: str) -> Iterator[Any]:
    """A migrated store on a SQLite file or a PostgreSQL database (see ``any_db_url``)."""
    yield from migrated_store(any_db_url)


def new_run(**overrides: Any) -> Any:
    """A ``NewRun`` of ``demo.echo``, due now, with ``overrides``."""
    from scheduler_app.store import NewRun
    from scheduler_app.timeutil import utcnow

    values: dict[str, Any] = dict(task="demo.echo", kwargs={"value": 1}, max_attempts=1,
                                  retry_backoff=0.01, timeout=None, scheduled_for=utcnow())
    values.update(overrides)
    return NewRun(**values)


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
