"""Alembic's environment, driven from code.

``scheduler_app.migrations`` passes an open connection, already inside the transaction and the
lock ``Database.migrate()`` holds, in ``config.attributes["connection"]``; this script only
runs the revisions on it. Autogenerate compares the service's own tables and nothing else, so
the tables of an app sharing the database are never proposed for dropping.
"""

from __future__ import annotations

from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from scheduler_app.migrations import VERSION_TABLE
from scheduler_app.store.schema import metadata


def include_object(obj: Any, name: str | None, type_: str, reflected: bool,
                   compare_to: Any) -> bool:
    if type_ == "table":
        return name in metadata.tables
    return True


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        version_table=VERSION_TABLE,
        include_object=include_object,
        compare_type=True,
        # SQLite cannot ALTER most things: autogenerate writes batch (copy-and-move) ops there.
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations through scheduler_app (flask --app wsgi db upgrade), "
                       "which passes the connection and holds the migration lock")
run_migrations(connection)
