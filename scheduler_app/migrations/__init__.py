"""Alembic migrations for the service's own tables, run from code: no ``alembic.ini``.

``upgrade(conn)`` brings the database behind ``conn`` to the newest revision inside the
caller's transaction. ``Database.migrate()`` is that caller: it holds the lock that makes four
workers starting together migrate once (see ``store/db.py``). ``flask --app wsgi db ...``
(``cli_db.py``) is the same path by hand.

A database made before migrations existed (``metadata.create_all``, no version table, the four
tables present) is stamped at the baseline revision, which is exactly that schema, and then
upgraded like any other.

The version lives in ``scheduler_alembic_version``, not Alembic's usual ``alembic_version``:
the service often shares a database with the Flask app it serves, and that app's own Alembic
history (Flask-Migrate) must not be taken for ours, nor ours for its.

A schema change: edit ``store/schema.py`` and add the next revision to ``versions/`` by hand
(``0003_what.py``, ``down_revision`` the newest; ``op.batch_alter_table`` to alter a table, which
SQLite otherwise cannot). Only ever add to the schema (tables, nullable columns, indexes): for a
while during a rolling deploy the old code runs on the new schema. ``tests/test_migrations.py``
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
from sqlalchemy.engine import Connection

log = logging.getLogger(__name__)

SCRIPT_LOCATION = str(Path(__file__).resolve().parent)
VERSION_TABLE = "scheduler_alembic_version"
BASELINE = "0001"
# The tables create_all made before there were migrations: all of them mean "at baseline".
BASELINE_TABLES = frozenset({"runs", "run_logs", "jobs", "nodes"})


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
    revision the database was at before."""
    before = current(conn)
    if before is None:
        present = BASELINE_TABLES & set(sa.inspect(conn).get_table_names())
        if present == BASELINE_TABLES:
            log.info("database made before migrations existed: stamping it at %s", BASELINE)
            command.stamp(alembic_config(conn), BASELINE)
        elif present:
            raise MigrationError(
                f"the database has some of this service's tables ({', '.join(sorted(present))})"
                f" but not all of them, and no {VERSION_TABLE} table; refusing to guess")
    command.upgrade(alembic_config(conn), revision)
    return before
