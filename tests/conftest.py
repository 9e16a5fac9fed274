"""Shared fixtures: an app on a fresh SQLite file per test, started on demand and always
stopped, and a check that no test leaves a scheduler thread behind."""

from __future__ import annotations

import os
import re
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


@pytest.fixture
def db(any_db_url: str) -> Iterator[Any]:
    """A ``Database`` on ``any_db_url``, not migrated (the migration tests move it between
    revisions themselves); disposed of after the test."""
    from scheduler_app.store import Database

    database = Database(any_db_url)
    yield database
    database.dispose()


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


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[Any]:
    """A migrated store on a PostgreSQL database of this test's own."""
    yield from migrated_store(pg_url)


def new_run(**overrides: Any) -> Any:
    """A ``NewRun`` of ``demo.echo``, due now, with ``overrides``."""
    from scheduler_app.store import NewRun
    from scheduler_app.timeutil import utcnow

    values: dict[str, Any] = dict(task="demo.echo", kwargs={"value": 1}, max_attempts=1,
                                  retry_backoff=0.01, timeout=None, scheduled_for=utcnow())
    values.update(overrides)
    return NewRun(**values)


def queue_unreadable(store: Any, seconds_due: float = 2.0, **overrides: Any) -> int:
    """On a SQLite store: a run queued ``seconds_due`` ago whose stored arguments are then made
    not JSON, by hand (SQLite's text column takes them, PostgreSQL's JSON column would not), so
    that its row cannot be read as a run; its id."""
    from datetime import timedelta

    from scheduler_app.store.schema import runs
    from scheduler_app.timeutil import utcnow

    run_id: int = store.runs.create(
        new_run(scheduled_for=utcnow() - timedelta(seconds=seconds_due), **overrides)).id
    with store.db.engine.begin() as conn:
        conn.exec_driver_sql(f"UPDATE {runs.name} SET kwargs = '{{not json' WHERE id = ?",
                             (run_id,))
    return run_id


def end_a_run_unreadable(store: Any) -> int:
    """On a SQLite store: a run ``queue_unreadable`` made is taken over by a settle on
    ``node-a``, cannot be read, and ends failed ``UnreadableRun``; its id."""
    from scheduler_app.store import NextClaim, RunState

    finishing = store.runs.create(new_run(), running_on="node-a")
    bad = queue_unreadable(store)
    handover = store.runs.finish_and_claim(
        finishing.id, "node-a", RunState.SUCCEEDED,
        claim_next=NextClaim(frozenset({"demo.echo"}), {}, any_due=True))
    assert handover.claimed is None and store.runs.get(finishing.id) is not None
    return bad


def add_finished_runs(store: Any, count: int, node: str) -> None:
    """``count`` runs started on ``node`` and succeeded: the settled rows a long-lived file has
    most of, which a query must not read through."""
    from scheduler_app.store import RunState

    for _ in range(count):
        done = store.runs.create(new_run(), running_on=node, count_wait=False)
        store.runs.finish(done.id, node, RunState.SUCCEEDED)


def captured_statements(store: Any, call: Callable[[], Any]) -> list[tuple[str, Any]]:
    """(SQL, parameters) of each statement ``call`` runs on ``store``'s engine, in order: those
    through SQLAlchemy (an ``executemany``'s parameters are its list of rows) and those on the
    driver (``store.driver``), each as prepared and with its parameters as bound, not as
    expanded text, which would name every value as a literal whatever the query said."""
    from scheduler_app.store import driver

    statements: list[tuple[str, Any]] = []
    on_driver = driver._Form.execute

    def execute(form: Any, raw: Any, params: Any) -> Any:
        statements.append((form.sql, tuple(form.parameters(params))))
        return on_driver(form, raw, params)

    def capture(_conn: Any, _cursor: Any, sql: str, params: Any, *_: Any) -> None:
        statements.append((sql, params))

    driver._Form.execute = execute  # type: ignore[method-assign]
    sa.event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        call()
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", capture)
        driver._Form.execute = on_driver  # type: ignore[method-assign]
    return statements


def query_plans(store: Any, call: Callable[[], Any], keep: Callable[[str], bool]
                ) -> list[tuple[str, str]]:
    """The plan (``plan_of``) of each statement ``call`` runs whose SQL ``keep`` accepts, as
    (statement, plan)."""
    return [(sql, plan_of(store, sql, params))
            for sql, params in captured_statements(store, call) if keep(sql)]


def plan_of(store: Any, sql: str, params: Any = ()) -> str:
    """SQLite's plan of ``sql`` (``query_plan``), or on PostgreSQL its generic plan
    (``generic_plan``)."""
    if store.db.engine.dialect.name == "postgresql":
        return generic_plan(store, sql, params)
    return query_plan(store, sql, params)


def query_plan(store: Any, sql: str, params: Any = ()) -> str:
    """SQLite's query plan of ``sql``, its steps joined by " / "."""
    with store.db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, params).all()
    return " / ".join(row[3] for row in rows)


def generic_plan(store: Any, sql: str, params: Any = None, *, seqscan: bool = False) -> str:
    """PostgreSQL's generic plan of ``sql`` (as psycopg is given it, ``%(name)s`` parameters),
    its lines joined by " / ": the plan a server-side prepared statement settles on once
    psycopg prepares it (after five runs on a connection) and the server stops planning it for
    each set of values. It cannot know the values, so a partial index serves a query only if
    the query names its predicate as literals. Sequential scans are priced out (unless
    ``seqscan``), so an index the query can use is used however few rows the table has.
    ``params`` is not needed: the plan is the same for any values."""
    numbers: dict[str, int] = {}

    def numbered(match: re.Match[str]) -> str:
        return f"${numbers.setdefault(match.group(1), len(numbers) + 1)}"

    text = re.sub(r"%\((\w+)\)s", numbered, sql).replace("%%", "%")
    nulls = f"({', '.join(['NULL'] * len(numbers))})" if numbers else ""
    # A connection of its own, closed after: the prepared statement and the settings are the
    # session's, and must not reach a pooled connection.
    engine = sa.create_engine(store.db.engine.url, poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
            if not seqscan:
                conn.exec_driver_sql("SET enable_seqscan = off")
            conn.exec_driver_sql(f"PREPARE plan_probe AS {text}")
            rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE plan_probe{nulls}").all()
            conn.rollback()
    finally:
        engine.dispose()
    return " / ".join(row[0].strip() for row in rows)


def custom_plan(store: Any, sql: str, params: Any) -> str:
    """PostgreSQL's plan of ``sql`` for these ``params`` (psycopg's, as captured), lines joined
    by " / ": what the server plans for each execution before it settles on a generic plan,
    and keeps planning while the generic one costs more."""
    with store.db.engine.connect() as conn:
        rows = conn.exec_driver_sql("EXPLAIN " + sql, params).all()
        conn.rollback()
    return " / ".join(row[0].strip() for row in rows)


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
