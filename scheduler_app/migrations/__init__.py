"""Alembic migrations for the service's own tables, run from code: no ``alembic.ini``.

``upgrade(conn)`` brings the database behind ``conn`` to the newest revision inside the
caller's transaction. ``Database.migrate()`` is that caller: it holds the lock that makes four
workers starting together migrate once (see ``store/db.py``). ``flask --app wsgi db ...``
(``cli_db.py``) is the same path by hand.

An empty database (no version table, none of this service's tables) gets the current schema in
one step, ``metadata.create_all``, and is stamped at head: replaying the history would create
the unprefixed tables of revisions before 0004, which clash with a host app's own ``jobs`` or
``runs``. A database made before migrations existed (``create_all`` of that time: no version
table, the four baseline tables present and recognisably ours) is stamped at the baseline
revision, which is exactly that schema, and then upgraded like any other. A host app's own
``jobs`` or ``runs`` table is neither: it is left alone.

The version lives in ``scheduler_alembic_version``, not Alembic's usual ``alembic_version``:
the service often shares a database with the Flask app it serves, and that app's own Alembic
history (Flask-Migrate) must not be taken for ours, nor ours for its.

A schema change: edit ``store/schema.py`` and add the next revision to ``versions/`` by hand
(``0003_what.py``, ``down_revision`` the newest; ``op.batch_alter_table`` to alter a table, which
SQLite otherwise cannot). Only ever add to the schema (tables, nullable columns, indexes): for a
while during a rolling deploy the old code runs on the new schema. (0004, the table prefix, is
the one exception: every node must be stopped before it runs.) ``tests/test_migrations.py``
fails until the revisions build exactly what the schema module says.
"""

from __future__ import annotations

import logging
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy.engine import Connection, Inspector

from scheduler_app.store.schema import metadata

log = logging.getLogger(__name__)

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
VERSION_TABLE = "scheduler_alembic_version"
BASELINE = "0001"
# The tables create_all made before there were migrations (unprefixed then), each with columns
# that tell it from a host app's table of the same name: all four, ours, mean "at baseline".
BASELINE_TABLES = {
    "runs": frozenset({"fire_time", "scheduled_for", "cancel_requested"}),
    "run_logs": frozenset({"run_id", "at", "level", "message"}),
    "jobs": frozenset({"spec", "next_run_time", "version"}),
    "nodes": frozenset({"heartbeat_at", "stopped_at", "capacity"}),
}


class MigrationError(RuntimeError):
    """The database's schema cannot be brought to this code's revision."""


def alembic_config(conn: Connection | None = None) -> Config:
    """Alembic's configuration, built in code; ``env.py`` runs on ``conn``."""
    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    config.attributes["connection"] = conn
    return config


def head() -> str:
    """The newest revision this code knows."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if revision is None:  # pragma: no cover - the versions folder ships with the code
        raise MigrationError("no migration revisions found")
    return revision


def is_known(revision: str) -> bool:
    """Whether this code has ``revision`` (a database at an unknown one was migrated by newer
    code)."""
    try:
        ScriptDirectory.from_config(alembic_config()).get_revision(revision)
    except CommandError:
        return False
    return True


def current(conn: Connection) -> str | None:
    """The revision the database is at; None if it has never been migrated."""
    context = MigrationContext.configure(conn, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def upgrade(conn: Connection, revision: str = "head") -> str | None:
    """Upgrade to ``revision`` on ``conn`` (in the caller's transaction and lock); return the
    revision the database was at before.

    An empty database upgraded to head is made with ``create_all``; to an older revision (the
    migration tests build old databases so), through the revisions."""
    before = current(conn)
    if before is None:
        inspector = sa.inspect(conn)
        tables = set(inspector.get_table_names())
        baseline = _baseline_tables(inspector, tables)
        newer = sorted(set(metadata.tables) & tables)
        if baseline == set(BASELINE_TABLES) and not newer:
            log.info("database made before migrations existed: stamping it at %s", BASELINE)
            command.stamp(alembic_config(conn), BASELINE)
        elif baseline or newer:
            raise MigrationError(
                f"the database has some of this service's tables "
                f"({', '.join(sorted(baseline) + newer)}) but no {VERSION_TABLE} table, and not "
                f"the four a database made before migrations had; refusing to guess")
        elif revision in ("head", head()):
            metadata.create_all(conn)
            command.stamp(alembic_config(conn), "head")
            return before
    command.upgrade(alembic_config(conn), revision)
    return before


def _baseline_tables(inspector: Inspector, tables: set[str]) -> set[str]:
    """Which of ``BASELINE_TABLES`` the database has, with their columns: a host app's own
    ``jobs`` table is not ours."""
    return {name for name, columns in BASELINE_TABLES.items() if name in tables
            and columns <= {column["name"] for column in inspector.get_columns(name)}}
