"""Statements run on SQLite's driver (``store.driver``) store and read back exactly what
``Connection.execute`` does, fail with SQLAlchemy's errors, and are used only on the service's
own engine."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database, RunState, Store, driver
from scheduler_app.store.schema import runs, stats
from tests.conftest import new_run

MOMENT = datetime(2026, 3, 4, 5, 6, 7, 891011, tzinfo=UTC)


def sqlite_store(path: Path, adopted: bool) -> Iterator[Store]:
    db = Database(f"sqlite:///{path}")
    db.migrate()
    if not adopted:
        driver.disown(db.engine)  # what a host app's engine is: not ours
    yield Store(db)
    db.dispose()


@pytest.fixture
def both(tmp_path: Path) -> Iterator[tuple[Store, Store]]:
    ours = sqlite_store(tmp_path / "driver.sqlite3", adopted=True)
    plain = sqlite_store(tmp_path / "plain.sqlite3", adopted=False)
    yield next(ours), next(plain)
    for gen in (ours, plain):
        gen.close()


def stored(store: Store) -> list[list[tuple[Any, ...]]]:
    """Every stored value of the runs and stats tables as the file holds them (text, numbers,
    NULLs), without any type conversion."""
    with store.db.engine.connect() as conn:
        return [conn.exec_driver_sql(f"SELECT * FROM {t.name} ORDER BY 1, 2, 3").all()
                for t in (runs, stats)]


def test_runs_written_on_the_driver_are_stored_and_read_back_as_through_sqlalchemy(
        both: tuple[Store, Store], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("scheduler_app.store.runs.utcnow", lambda: MOMENT)
    ours, plain = both
    assert driver._driver(ours.db.engine.connect()) is not None
    settled = []
    for store in (ours, plain):
        values = dict(kwargs={"text": "é\x00'\"", "n": [1, 2.5, None], "deep": {"a": True}},
                      scheduled_for=MOMENT, timeout=1.5, max_attempts=3)
        running = store.runs.create(new_run(**values), running_on="node-a")
        queued = store.runs.create(new_run(**values))
        done = store.runs.finish(running.id, "node-a", RunState.SUCCEEDED,
                                 result={"ok": [1, "two", None]})
        none = store.runs.create(new_run(**values), running_on="node-a")
        empty = store.runs.finish(none.id, "node-a", RunState.SUCCEEDED, result=None)
        # Its kwargs as their validation encoded them (compact), stored as that text.
        encoded = store.runs.create(new_run(**{**values, "kwargs_json": '{"text":"x","n":[]}',
                                               "kwargs": {"text": "x", "n": []}}))
        settled.append((running, queued, done, empty,
                        store.runs.get(running.id), store.runs.get(none.id),
                        store.runs.get(encoded.id)))
    assert settled[0] == settled[1]
    running, queued, done, empty, read, read_none, read_encoded = settled[0]
    assert read_encoded is not None and read_encoded.kwargs == {"text": "x", "n": []}
    assert done == read and empty == read_none
    assert (done.state, done.result, done.finished_at, done.kwargs["text"]) == (
        RunState.SUCCEEDED, {"ok": [1, "two", None]}, MOMENT, "é\x00'\"")
    assert (running.started_at, running.created_at, queued.state) == (
        MOMENT, MOMENT, RunState.QUEUED)
    assert stored(ours) == stored(plain)


def test_a_finish_that_matches_no_row_returns_none_on_the_driver(both: tuple[Store, Store]
                                                                   ) -> None:
    for store in both:
        run = store.runs.create(new_run(), running_on="node-a")
        assert store.runs.finish(run.id, "node-b", RunState.SUCCEEDED) is None
        assert store.runs.get(run.id).state is RunState.RUNNING  # type: ignore[union-attr]


def test_a_failing_statement_raises_sqlalchemys_error_and_writes_nothing(
        both: tuple[Store, Store]) -> None:
    from scheduler_app.store.lifecycle import new_run_values
    from scheduler_app.store.runs import _FINISH_CLEANLY, _INSERT_RUN

    for store in both:
        values = new_run_values(new_run(), MOMENT)
        values["task"] = None  # NOT NULL
        with pytest.raises(sa.exc.IntegrityError, match="NOT NULL"), \
                store.db.write() as conn:
            _INSERT_RUN.inserted_id(conn, values)
        with pytest.raises(sa.exc.StatementError, match="required.*'run_id'"), \
                store.db.write() as conn:
            _FINISH_CLEANLY.first(conn, {"on_node": "x", "new_state": "succeeded",
                                         "ended_at": MOMENT, "outcome": None})
        assert stored(store)[0] == []


def test_only_an_adopted_sqlite_engine_that_does_not_echo_goes_to_the_driver(
        tmp_path: Path) -> None:
    echoing = Database(f"sqlite:///{tmp_path / 'echo.sqlite3'}", echo=True)
    try:
        with echoing.engine.connect() as conn:
            assert driver._driver(conn) is None
    finally:
        echoing.dispose()
    with pytest.raises(ValueError, match="SQLite"):
        driver.adopt(sa.create_engine("postgresql+psycopg://nobody@127.0.0.1/none"))


class _NullAsText(sa.TypeDecorator[str]):
    """A type whose reading turns NULL into a value, as a host's custom type may."""

    impl = sa.String
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Any) -> str:
        return "was null" if value is None else f"read {value}"


def test_a_row_read_on_the_driver_converts_what_sqlalchemy_converts_nulls_included(
        tmp_path: Path) -> None:
    """NULLs skip the processors that leave NULL as it is (most of a run's optional columns),
    and go through those that turn it into something else."""
    db = Database(f"sqlite:///{tmp_path / 'scratch.sqlite3'}")
    table = sa.Table("scratch", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("custom", _NullAsText), sa.Column("doc", sa.JSON),
                     sa.Column("flag", sa.Boolean), sa.Column("at", runs.c.started_at.type))
    try:
        table.create(db.engine)
        with db.write() as conn:
            conn.execute(table.insert(), [
                {"id": 1, "custom": None, "doc": None, "flag": None, "at": None},
                {"id": 2, "custom": "x", "doc": {"a": [1]}, "flag": True, "at": MOMENT}])
        for row_id in (1, 2):
            query = sa.select(table).where(table.c.id == sa.bindparam("row_id"))
            with db.write() as conn:
                assert driver._driver(conn) is not None
                ours = driver.Prepared(query).first(conn, {"row_id": row_id})
                theirs = dict(conn.execute(query, {"row_id": row_id}).mappings().one())
            assert ours == theirs
        assert ours is not None and theirs["custom"] == "read x"
        with db.write() as conn:
            first = driver.Prepared(query).first(conn, {"row_id": 1})
        assert first == {"id": 1, "custom": "was null", "doc": None, "flag": None, "at": None}
    finally:
        db.dispose()


def run_count(store: Store) -> int:
    with store.db.engine.connect() as conn:
        return int(conn.exec_driver_sql("SELECT count(*) FROM scheduler_runs").scalar_one())


def test_a_write_mixing_driver_and_sqlalchemy_statements_is_one_transaction(
        both: tuple[Store, Store]) -> None:
    """A statement through ``Connection.execute`` joins the transaction begun on the driver:
    both commit together, and a failure after both rolls both back."""
    from scheduler_app.store.lifecycle import new_run_values
    from scheduler_app.store.runs import _INSERT_RUN

    for store in both:
        with store.db.write() as conn:
            _INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT))
            conn.execute(runs.insert().values(new_run_values(new_run(), MOMENT)))
        assert run_count(store) == 2
        with pytest.raises(RuntimeError, match="after both"), store.db.write() as conn:
            conn.execute(runs.insert().values(new_run_values(new_run(), MOMENT)))
            _INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT))
            raise RuntimeError("after both")
        assert run_count(store) == 2
        with pytest.raises(RuntimeError, match="driver only"), store.db.write() as conn:
            _INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT))
            raise RuntimeError("driver only")
        assert run_count(store) == 2
        with store.db.write() as conn:  # the writer is usable after each
            _INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT))
        assert run_count(store) == 3


@pytest.mark.parametrize("orphan_through", ["driver", "sqlalchemy"])
def test_a_commit_that_fails_raises_sqlalchemys_error_and_keeps_nothing(
        both: tuple[Store, Store], orphan_through: str) -> None:
    """A foreign key checked at COMMIT (deferred) fails the COMMIT itself: SQLAlchemy's
    IntegrityError, nothing of the transaction kept, and the next write goes through, whether
    the transaction was the driver's alone or SQLAlchemy's too."""
    from scheduler_app.store.lifecycle import new_run_values
    from scheduler_app.store.runs import _INSERT_RUN
    from scheduler_app.store.schema import run_logs

    orphan = (f"INSERT INTO {run_logs.name} (run_id, at, level, message) "
              "VALUES (999999, '2026-01-01 00:00:00', 'INFO', 'no such run')")
    for store in both:
        with pytest.raises(sa.exc.IntegrityError, match="FOREIGN KEY"), \
                store.db.write() as conn:
            conn.connection.dbapi_connection.execute("PRAGMA defer_foreign_keys=ON")
            _INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT))
            if orphan_through == "driver":
                conn.connection.dbapi_connection.execute(orphan)
            else:
                conn.execute(sa.text(orphan))
        assert run_count(store) == 0
        with store.db.write() as conn:
            _INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT))
        assert run_count(store) == 1


def test_values_bound_twice_fixed_or_overridden_are_bound_as_sqlalchemy_binds_them(
        tmp_path: Path) -> None:
    """A value used twice (a claim's ``now``) is converted for both places; a fixed value
    (a literal, a ``values(...)`` constant) is bound as fixed unless the caller gives it."""
    db = Database(f"sqlite:///{tmp_path / 'scratch.sqlite3'}")
    table = sa.Table("scratch", sa.MetaData(), sa.Column("id", sa.Integer, primary_key=True),
                     sa.Column("kind", sa.String), sa.Column("at", runs.c.started_at.type),
                     sa.Column("doc", sa.JSON))
    later = MOMENT.replace(year=2027)
    query = (sa.select(table.c.id, table.c.doc)
             .where(table.c.at >= sa.bindparam("at"), table.c.at <= sa.bindparam("at"),
                    table.c.kind == sa.literal("a"))
             .order_by(table.c.id))
    insert = table.insert().values(kind=sa.bindparam("kind", "a"))
    try:
        table.create(db.engine)
        with db.write() as conn:
            driver.Prepared(insert).many(conn, [
                {"id": 1, "at": MOMENT, "doc": {"n": 1}}, {"id": 2, "at": later, "doc": None}])
            driver.Prepared(insert).many(conn, [{"id": 3, "at": MOMENT, "kind": "b",
                                                 "doc": [1]}])
            for at in (MOMENT, later):
                ours = driver.Prepared(query).first(conn, {"at": at})
                theirs = dict(conn.execute(query, {"at": at}).mappings().one())
                assert ours == theirs
        assert ours == {"id": 2, "doc": None}
        with db.engine.connect() as conn:
            assert conn.exec_driver_sql("SELECT id, kind, doc FROM scratch ORDER BY id").all() \
                == [(1, "a", '{"n": 1}'), (2, "a", "null"), (3, "b", "[1]")]
    finally:
        db.dispose()


def test_an_insert_gives_the_id_of_the_row_it_wrote_on_the_driver_as_through_sqlalchemy(
        both: tuple[Store, Store]) -> None:
    """On the driver the id is the cursor's lastrowid, not RETURNING: it must still be the id
    of the row this insert wrote, after rows were deleted and with another connection
    writing in between."""
    from scheduler_app.store.lifecycle import new_run_values
    from scheduler_app.store.runs import _INSERT_RUN

    given: list[list[int]] = []
    for store in both:
        ids = []
        for n in range(3):
            with store.db.write() as conn:
                ids.append(_INSERT_RUN.inserted_id(conn, new_run_values(new_run(), MOMENT)))
            if n == 1:  # the newest row gone, and a row written by another connection
                with store.db.engine.connect() as other, other.begin():
                    other.execute(runs.delete().where(runs.c.id == ids[-1]))
                    others = other.execute(runs.insert().values(
                        new_run_values(new_run(task="other"), MOMENT)).returning(
                        runs.c.id)).scalar_one()
        with store.db.read() as conn:
            rows = dict(conn.execute(sa.select(runs.c.id, runs.c.task)).all())
        assert rows == {ids[0]: "demo.echo", others: "other", ids[2]: "demo.echo"}
        given.append([*ids, others])
    assert given[0] == given[1]
