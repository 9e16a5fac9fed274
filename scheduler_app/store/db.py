"""The one seam to the database: engine set-up and short, explicit transactions.

SQLite is used the careful way: WAL so readers never block the writer, a busy timeout so
writers queue instead of failing, and write transactions opened with ``BEGIN IMMEDIATE`` so two
writers never deadlock upgrading a read lock. PostgreSQL gets ordinary transactions plus a
transaction-level advisory lock where a read-then-write must be atomic across hosts.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .schema import metadata

# Keys for pg_advisory_xact_lock; arbitrary, but fixed and distinct.
LOCK_SCHEMA = 0x5C_0001
LOCK_CLAIM = 0x5C_0002


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        kwargs: dict[str, Any] = {"echo": echo, "future": True}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if self.url.database in (None, "", ":memory:"):
                raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
        kwargs.update(pool_size=pool_size, max_overflow=2 * pool_size, pool_pre_ping=True)
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A short read transaction (a consistent snapshot under WAL and PostgreSQL)."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def write(self, lock: int | None = None) -> Iterator[Connection]:
        """A write transaction; ``lock`` serialises it with others holding the same key.

        On SQLite every write transaction is already exclusive (``BEGIN IMMEDIATE``), so the key
        only matters on PostgreSQL, where it becomes ``pg_advisory_xact_lock``.
        """
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn:
            with conn.begin():
                if lock is not None and self.dialect == "postgresql":
                    conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
                yield conn

    def create_schema(self) -> None:
        """Create missing tables; safe when several processes start at once."""
        with self.write(lock=LOCK_SCHEMA) as conn:
            metadata.create_all(conn, checkfirst=True)

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def dispose(self) -> None:
        self.engine.dispose()


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin() below decide when transactions start (pysqlite's own
        # implicit BEGIN would defeat BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
