"""Schema migrations on real SQLite files and real PostgreSQL databases: empty to head, an old
create_all database, an upgrade with data in it, a host app's own tables, and four processes
starting at once."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from scheduler_app import migrations
from scheduler_app.migrations import VERSION_TABLE, MigrationError
from scheduler_app.store import Database, NewRun, RunState, Store
from scheduler_app.store.schema import TABLE_PREFIX, metadata, runs
from scheduler_app.timeutil import utcnow
from tests.servers import BIN, REPO, TASK_MODULES

BASELINE_TABLES = ("runs", "run_logs", "jobs", "nodes")
# How the four tables' indexes changed after the baseline (revision 0003).
INDEXES_ADDED_SINCE_BASELINE = {"ix_runs_state_id", "ix_jobs_next_run"}


def unprefixed(name: str) -> str:
    """A table's, index's or constraint's name before revision 0004 (``ix_runs_task``)."""
    return name.replace(TABLE_PREFIX, "", 1)


# How the revisions after 0004 changed the schema module's tables: undone, they give 0004's.
INDEXES_ADDED_SINCE_0004 = {"ix_scheduler_jobs_task_next_run", "uq_scheduler_runs_unique_active",
                            "ix_scheduler_runs_concurrency"}
INDEXES_DROPPED_SINCE_0004 = {"ix_scheduler_jobs_task": ("scheduler_jobs", ["task"]),
                              "ix_scheduler_runs_node_state": ("scheduler_runs",
                                                               ["node", "state"])}
COLUMNS_ADDED_SINCE_0004 = {("scheduler_nodes", "tasks"), *(
    ("scheduler_runs", name) for name in ("unique_key", "concurrency_key", "concurrency_limit",
                                          "rate_limit", "rate_key", "throttled_until"))}
TABLES_ADDED_SINCE_0004 = {"scheduler_alerts", "scheduler_rate_starts"}
# Unique constraints that a revision after 0004 made partial unique indexes (0011).
CONSTRAINTS_MADE_INDEXES_SINCE_0004 = {
    "uq_scheduler_runs_job_fire": ("scheduler_runs", ["job_id", "fire_time"])}


def legacy_metadata() -> sa.MetaData:
    """The schema module's tables as revision 0004 left them, under the names they had before
    it."""
    legacy = sa.MetaData()
    for table in metadata.sorted_tables:
        if table.name in TABLES_ADDED_SINCE_0004:
            continue
        dropped = [sa.Index(unprefixed(name), *columns)
                   for name, (on, columns) in INDEXES_DROPPED_SINCE_0004.items()
                   if on == table.name]
        sa.Table(
            unprefixed(table.name), legacy,
            *(sa.Column(column.name, column.type, *(
                sa.ForeignKey(unprefixed(fk.target_fullname), ondelete=fk.ondelete)
                for fk in column.foreign_keys), primary_key=column.primary_key,
                nullable=column.nullable, autoincrement=column.autoincrement)
              for column in table.columns
              if (table.name, column.name) not in COLUMNS_ADDED_SINCE_0004),
            *(sa.Index(unprefixed(str(index.name)), *(c.name for c in index.columns))
              for index in table.indexes if index.name not in INDEXES_ADDED_SINCE_0004
              and index.name not in CONSTRAINTS_MADE_INDEXES_SINCE_0004),
            *dropped,
            *(sa.UniqueConstraint(*(c.name for c in unique.columns),
                                  name=unprefixed(str(unique.name)))
              for unique in table.constraints if isinstance(unique, sa.UniqueConstraint)),
            *(sa.UniqueConstraint(*columns, name=unprefixed(name))
              for name, (on, columns) in CONSTRAINTS_MADE_INDEXES_SINCE_0004.items()
              if on == table.name))
    return legacy


LEGACY = legacy_metadata()


def legacy_columns(table: sa.Table) -> list[sa.Column[Any]]:
    """``table``'s columns that 0004's version of it has (every row compared across revisions
    is compared on these)."""
    names = set(LEGACY.tables[unprefixed(table.name)].columns.keys())
    return [column for column in table.columns if column.name in names]


def baseline_metadata() -> sa.MetaData:
    """The four tables as ``create_all`` made them before there were migrations: the schema
    module's under their old names, less the indexes added since, plus the one dropped
    since."""
    baseline = sa.MetaData()
    for name in BASELINE_TABLES:
        copy = LEGACY.tables[name].to_metadata(baseline)
        for index in [i for i in copy.indexes if i.name in INDEXES_ADDED_SINCE_BASELINE]:
            copy.indexes.discard(index)
    sa.Index("ix_jobs_next_run_time", baseline.tables["jobs"].c.next_run_time)
    return baseline


def schema_diff(db: Database, target: sa.MetaData = metadata) -> list[Any]:
    """What Alembic's autogenerate would change to make the database match ``target``."""
    with db.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={
            "compare_type": True, "version_table": VERSION_TABLE})
        return list(compare_metadata(context, target))


def version_rows(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalars())


def upgrade_to(db: Database, revision: str) -> None:
    with db.engine.begin() as conn:
        migrations.upgrade(conn, revision)


def index_definitions(db: Database, names: Iterable[str] | None = None) -> dict[str, str]:
    """The SQL each of the runs table's indexes ``names`` (None: all, but those SQLite makes
    itself for a table's constraints, which have no SQL) has as the database keeps it
    (SQLite's ``sqlite_master``, PostgreSQL's ``pg_indexes``), its whitespace collapsed."""
    with db.engine.connect() as conn:
        if db.is_sqlite:
            rows = conn.execute(sa.text("SELECT name, sql FROM sqlite_master WHERE type = "
                                        "'index' AND tbl_name = 'scheduler_runs'")).all()
        else:
            rows = conn.execute(sa.text("SELECT indexname, indexdef FROM pg_indexes WHERE "
                                        "tablename = 'scheduler_runs'")).all()
    wanted = None if names is None else set(names)
    return {name: " ".join(sql.split()) for name, sql in rows
            if sql is not None and (wanted is None or name in wanted)}


def run_row(now: datetime, **columns: Any) -> dict[str, Any]:
    """A row of the runs table as revisions 0008 and later hold it, inserted raw (no store
    code of the revision under test): a run of ``demo.echo`` with every column a row needs,
    ``columns`` on top."""
    return {"task": "demo.echo", "kwargs": {}, "state": "queued", "attempt": 1,
            "max_attempts": 1, "retry_backoff": 2.0, "cancel_requested": False, "errors": [],
            "created_at": now, "scheduled_for": now, **columns}


def downgrade_to(db: Database, revision: str) -> None:
    """Downgrade the way ``Database.migrate`` upgrades: on SQLite with foreign keys off, so
    that copying a table (batch mode) cannot cascade into the tables referring to it."""
    _foreign_keys_off(db, command.downgrade, revision)


def migrate_to(db: Database, revision: str) -> None:
    """Upgrade to ``revision`` as ``Database.migrate`` upgrades to head: on SQLite with
    foreign keys off (``upgrade_to`` keeps the engine's on)."""
    _foreign_keys_off(db, command.upgrade, revision)


def _foreign_keys_off(db: Database, step: Any, revision: str) -> None:
    with db.engine.connect() as conn:
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if db.is_sqlite:
            raw.cursor().execute("PRAGMA foreign_keys=OFF")
        try:
            with conn.begin():
                step(migrations.alembic_config(conn), revision)
        finally:
            if db.is_sqlite:
                raw.cursor().execute("PRAGMA foreign_keys=ON")


def table_names(db: Database) -> set[str]:
    return set(sa.inspect(db.engine).get_table_names()) - {VERSION_TABLE}



def test_empty_database_upgrades_to_exactly_the_schema(db: Database) -> None:
    """In one step (``create_all``, stamped at head); the revisions' own path to the same
    schema is checked by the upgrade tests below."""
    assert db.migrate() == (None, migrations.head())
    assert schema_diff(db) == []
    assert version_rows(db) == [migrations.head()]
    assert db.migrate() == (migrations.head(), migrations.head())  # a second start: nothing
    assert version_rows(db) == [migrations.head()]


def test_baseline_revision_is_what_create_all_made(db: Database) -> None:
    """The baseline revision builds the four tables exactly as the schema module defines them,
    so stamping a create_all database at the baseline is truthful."""
    upgrade_to(db, migrations.BASELINE)
    assert schema_diff(db, baseline_metadata()) == []


def test_database_made_by_create_all_is_stamped_and_upgraded(db: Database) -> None:
    baseline = baseline_metadata()
    baseline.create_all(db.engine)  # what the old code did
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(baseline.tables["runs"].insert(), [{
            "id": 1, "task": "demo.echo", "kwargs": {"value": 1}, "job_id": None,
            "fire_time": None, "state": "queued", "attempt": 1, "max_attempts": 1,
            "retry_backoff": 1.0, "timeout": None, "cancel_requested": False, "errors": [],
            "created_at": now, "scheduled_for": now}])
    assert db.migrate() == (None, migrations.head())
    assert version_rows(db) == [migrations.head()]
    assert schema_diff(db) == []
    run = Store(db).runs.get(1)
    assert run is not None
    assert (run.task, run.kwargs, run.state, run.scheduled_for) == (
        "demo.echo", {"value": 1}, RunState.QUEUED, now)


def test_upgrade_from_previous_revision_keeps_every_row(db: Database) -> None:
    """Through every revision from the baseline: they build exactly the schema module's
    tables, as ``create_all`` does for an empty database."""
    upgrade_to(db, migrations.BASELINE)
    now = utcnow()
    with db.engine.begin() as conn:
        conn.execute(LEGACY.tables["runs"].insert(), legacy_run_rows(now))
        conn.execute(LEGACY.tables["run_logs"].insert(), [
            {"run_id": 1, "at": now, "level": "INFO", "message": f"line {i}"} for i in range(3)])
        conn.execute(LEGACY.tables["jobs"].insert(), [{
            "id": "nightly", "task": "demo.echo", "spec": {"task": "demo.echo", "kwargs": {}},
            "next_run_time": now.timestamp() + 60, "version": 7, "created_at": now,
            "updated_at": now}])
        conn.execute(LEGACY.tables["nodes"].insert(), [{
            "id": "h:1:a", "host": "h", "pid": 1, "role": "all", "started_at": now,
            "heartbeat_at": now, "stopped_at": None, "running": 0, "capacity": 4}])

    def everything(tables: sa.MetaData) -> dict[str, list[Any]]:
        with db.engine.connect() as conn:
            return {unprefixed(t.name): [tuple(r) for r in conn.execute(
                sa.select(*legacy_columns(t)).order_by(*t.primary_key.columns))]
                for t in tables.sorted_tables if unprefixed(t.name) in BASELINE_TABLES}

    before = everything(LEGACY)
    assert sum(len(rows) for rows in before.values()) == 7
    assert db.migrate() == (migrations.BASELINE, migrations.head())
    assert everything(metadata) == before
    assert schema_diff(db) == []

    # The upgraded database works: the queued run is claimed, settled and counted.
    store = Store(db)
    with db.engine.begin() as conn:
        conn.execute(runs.update().where(runs.c.id == 2).values(scheduled_for=now))
    assert [r.id for r in store.runs.claim("h:1:a", 5, {})] == [2]
    store.runs.finish(2, "h:1:a", RunState.SUCCEEDED)
    assert store.stats.snapshot(30).runs_finished == {("demo.fail", "succeeded"): 1}

    # And the revisions can be taken back without touching the older tables' rows.
    after = everything(metadata)
    downgrade_to(db, migrations.BASELINE)
    assert table_names(db) == set(BASELINE_TABLES)
    assert everything(LEGACY) == after
    assert db.migrate() == (migrations.BASELINE, migrations.head())


@pytest.mark.parametrize("name", ["runs", "scheduler_runs"])
def test_half_a_schema_is_refused(db: Database, name: str) -> None:
    """Our runs table alone, as the code before migrations or this code made it."""
    {**LEGACY.tables, **metadata.tables}[name].create(db.engine)
    with pytest.raises(MigrationError, match="some of this service's tables"):
        db.migrate()


def test_a_host_apps_own_jobs_and_runs_tables_are_left_alone(db: Database) -> None:
    """The host app's ``jobs`` and ``runs`` are not ours: our tables are made beside them."""
    host = sa.MetaData()
    host_jobs = sa.Table("jobs", host, sa.Column("id", sa.Integer, primary_key=True),
                         sa.Column("title", sa.String(100), nullable=False))
    host_runs = sa.Table("runs", host, sa.Column("id", sa.Integer, primary_key=True),
                         sa.Column("job_id", sa.Integer, sa.ForeignKey("jobs.id")),
                         sa.Column("outcome", sa.String(20)))
    host.create_all(db.engine)
    with db.engine.begin() as conn:
        conn.execute(host_jobs.insert(), [{"id": 1, "title": "Plumber, Leeds"}])
        conn.execute(host_runs.insert(), [{"id": 1, "job_id": 1, "outcome": "hired"}])

    assert db.migrate() == (None, migrations.head())
    assert table_names(db) == {"jobs", "runs"} | set(metadata.tables)
    assert [d for d in schema_diff(db) if d[0] != "remove_table"] == []
    with db.engine.connect() as conn:
        assert [tuple(r) for r in conn.execute(sa.select(host_jobs))] == [(1, "Plumber, Leeds")]
        assert [tuple(r) for r in conn.execute(sa.select(host_runs))] == [(1, 1, "hired")]
    run = Store(db).runs.create(NewRun(task="demo.echo", kwargs={"value": 1}, max_attempts=1,
                                       retry_backoff=1.0, timeout=None, scheduled_for=utcnow()))
    assert run.id == 1
    with db.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(host_runs)).scalar() == 1
    assert db.migrate() == (migrations.head(), migrations.head())


def test_a_revision_from_newer_code_is_left_alone(db: Database,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    db.migrate()
    with db.engine.begin() as conn:
        conn.execute(sa.text(f"UPDATE {VERSION_TABLE} SET version_num = '9999'"))
    with caplog.at_level(logging.WARNING, "scheduler_app.store.db"):
        assert db.migrate() == ("9999", "9999")
    assert "newer code migrated it" in caplog.text
    assert version_rows(db) == ["9999"]


START_AT_ONCE = """
import sys, time
from pathlib import Path
from scheduler_app import create_app          # every import done before the race starts
url, go, task_modules = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
while not go.exists():
    time.sleep(0.002)
create_app({"DATABASE_URL": url, "SCHEDULER_AUTOSTART": False, "TESTING": True,
            "PRUNE_RUNS_CRON": "", "TASK_MODULES": __import__("json").loads(task_modules)})
print("started")
"""


def test_four_processes_starting_at_once_migrate_once(db: Database, any_db_url: str,
                                                      tmp_path: Path) -> None:
    go = tmp_path / "go"
    procs = [subprocess.Popen(
        [sys.executable, "-c", START_AT_ONCE, any_db_url, str(go), json.dumps(TASK_MODULES)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}) for _ in range(4)]
    try:
        go.touch()  # the processes poll for it, so they all start migrating within ms
        outputs = [proc.communicate(timeout=60) for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0 and out.strip() == "started", err
    upgraded = [err for _, err in outputs if "upgraded the database schema" in err]
    assert len(upgraded) == 1, [err for _, err in outputs]
    assert version_rows(db) == [migrations.head()]
    assert schema_diff(db) == []


def test_db_commands(make_app: Any, caplog: pytest.LogCaptureFixture) -> None:
    """With SCHEMA_AUTO_UPGRADE off, start-up leaves the schema alone and says so; `db upgrade`
    is the deploy step."""
    with caplog.at_level(logging.ERROR, "scheduler_app"):
        app = make_app(start=False, SCHEMA_AUTO_UPGRADE=False)
    assert "run 'flask scheduler db upgrade'" in caplog.text
    runner = app.test_cli_runner()
    result = runner.invoke(args=["db", "current"])
    assert result.exit_code == 0 and result.output.startswith("none: "), result.output
    result = runner.invoke(args=["db", "upgrade"])
    assert result.exit_code == 0, result.output
    assert result.output.strip() == f"{migrations.head()} (head): upgraded from an empty database"
    assert runner.invoke(args=["db", "current"]).output.strip() == f"{migrations.head()} (head)"
    result = runner.invoke(args=["db", "upgrade"])
    assert result.output.strip() == f"{migrations.head()} (head): already up to date"


def test_flask_db_upgrade_command_in_a_real_process(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO),
           "FLASK_DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
           "FLASK_SCHEMA_AUTO_UPGRADE": "false", "FLASK_PRUNE_RUNS_CRON": ""}
    result = subprocess.run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], cwd=REPO,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"{migrations.head()} (head): upgraded from an empty database"
    db = Database(env["FLASK_DATABASE_URL"])
    try:
        assert version_rows(db) == [migrations.head()]
    finally:
        db.dispose()


def legacy_run_rows(now: Any, ids: bool = True) -> list[dict[str, Any]]:
    """Two runs as the tables before 0004 held them: a succeeded fire of job ``nightly`` and a
    failed attempt queued for a retry (ids 1 and 2, given or from the id sequence)."""
    rows = [
        {"task": "demo.echo", "kwargs": {"value": [1, "ü"]}, "job_id": "nightly",
         "fire_time": now, "state": "succeeded", "attempt": 1, "max_attempts": 1,
         "retry_backoff": 2.0, "timeout": None, "cancel_requested": False,
         "progress_done": 1.0, "progress_total": 1.0, "progress_message": "done",
         "result": {"ok": True}, "error": None, "errors": [], "node": "h:1:a",
         "created_at": now, "scheduled_for": now, "started_at": now, "finished_at": now},
        {"task": "demo.fail", "kwargs": {}, "job_id": None, "fire_time": None,
         "state": "queued", "attempt": 2, "max_attempts": 3, "retry_backoff": 2.0,
         "timeout": 5.0, "cancel_requested": False, "progress_done": None,
         "progress_total": None, "progress_message": None, "result": None,
         "error": {"type": "RuntimeError", "message": "boom", "traceback": "tb"},
         "errors": [{"type": "RuntimeError", "attempt": 1}], "node": None,
         "created_at": now, "scheduled_for": now + timedelta(hours=1), "started_at": None,
         "finished_at": None},
    ]
    return [{"id": n, **row} for n, row in enumerate(rows, 1)] if ids else rows
