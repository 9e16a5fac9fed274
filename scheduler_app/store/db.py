"""The one seam to the database: the engine, and short read and write transactions.

SQLite runs in WAL mode with one writer at a time (``BEGIN IMMEDIATE``, writers queued on a
lock); PostgreSQL takes an advisory lock where a read-then-write must be atomic across hosts.
``migrate()`` brings the schema to this code's revision. Why: docs/ARCHITECTURE.md, "The store".
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from .. import migrations
from . import driver, encoded

try:
    import fcntl
except ImportError:  # not POSIX: SQLite's busy handler alone queues the processes
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)
T = TypeVar("T")

# How long dispose waits for a thread still using a connection (a poll query, a write) before
# leaving that connection open.
CLOSE_PATIENCE = 5.0
# Keys for pg_advisory_xact_lock; arbitrary, but fixed and distinct.
LOCK_SCHEMA = 0x5C_0001
LOCK_CLAIM = 0x5C_0002


# This process's id, kept up to date across ``fork``: every write asks whether its connection
# and locks are this process's own (three times), and ``os.getpid`` is a system call each time.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forked)


def current_pid() -> int:
    """This process's id without a system call (``_pid``, for the other modules of the store;
    this one reads the global itself)."""
    return _pid


class Database:
    """Owns the engine; hands out read and write transactions."""

    def __init__(self, url: str, *, pool_size: int = 10, echo: bool = False) -> None:
        self.url = sa.make_url(url)
        self.is_sqlite = self.url.get_backend_name() == "sqlite"
        # A result the runner encoded is written as it is (store/encoded.py).
        kwargs: dict[str, Any] = {"echo": echo, "future": True, "json_serializer": encoded.dumps}
        if self.is_sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            if self.url.database in (None, "", ":memory:"):
                raise ValueError("an in-memory SQLite database cannot be shared; give a file path")
        kwargs.update(pool_size=pool_size, max_overflow=2 * pool_size)
        self.engine: Engine = sa.create_engine(self.url, **kwargs)
        if self.dialect == "postgresql":
            _check_before_use(self.engine)
        self._sqlite_writer = threading.Lock()
        self._writer_conn: Connection | None = None
        self._writer_pid = 0
        self._across_processes: _FileLock | None = None
        self._checkpointer: _Checkpointer | None = None
        self._polls: dict[sa.Select[Any], tuple[str, Any]] = {}
        self._poll_conns = threading.local()  # each polling thread's own driver connection
        self._poll_open: list[_PollConnection] = []
        self._poll_lock = threading.Lock()
        if self.is_sqlite:
            _configure_sqlite(self.engine)
            driver.adopt(self.engine)
            if fcntl is not None:
                self._across_processes = _FileLock(f"{self.url.database}.writer-lock")
            self._checkpointer = _Checkpointer(str(self.url.database), self._hold_writers)

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
        if self.is_sqlite:
            # Writers queue here, not in SQLite's busy handler.
            with self._hold_writers():
                conn = self._writer()
                try:
                    with driver.write_transaction(conn):
                        yield conn
                except BaseException:
                    self._drop_if_broken(conn)
                    raise
            assert self._checkpointer is not None
            self._checkpointer.wrote()
            return
        with self.engine.connect() as conn, conn.begin():
            if lock is not None:
                conn.execute(sa.select(sa.func.pg_advisory_xact_lock(lock)))
            yield conn

    def _writer(self) -> Connection:
        """This process's SQLite write connection, kept open (SQLite only; with the writer lock
        held). Only the lock's holder uses it, so one is enough, and a write transaction skips
        the pool's checkout, reset and checkin, which cost as much as a run's insert."""
        conn = self._writer_conn
        if conn is None or conn.closed or conn.invalidated or self._writer_pid != _pid:
            # After a fork the parent's connection is left alone: it is the parent's.
            conn = self.engine.connect().execution_options(sqlite_immediate=True)
            self._writer_conn, self._writer_pid = conn, _pid
        return conn

    def _drop_if_broken(self, conn: Connection) -> None:
        """After a failed write: if the driver connection broke, a new one next time."""
        if conn.invalidated:
            self._writer_conn = None
            conn.close()

    def write_in_turn(self, gather: Callable[[], int | None], body: Callable[[Connection], T]
                      ) -> T:
        """``gather()`` once this process's turn to write has come, then ``body(conn)`` in a
        write transaction (``write``) with the lock ``gather`` returns; body's value.

        Why the turn: on SQLite it is the file's writer lock, and a group commit gathers the
        operations that queued while it waited for the file, so the file's one writer commits
        more of them at once (store/group.py); on PostgreSQL nothing is waited for. Why one
        function, not ``write`` inside a context manager of the turn: the group commit's write
        is on every run's path, and those context managers (five, nested) cost 25 µs of a
        run-now's insert in a worker, where caches are cold (bench/README.md)."""
        if not self.is_sqlite:
            lock = gather()
            with self.write(lock=lock) as conn:
                return body(conn)
        # ``_hold_writers``' two locks, taken here without its generator.
        with self._sqlite_writer, self._across_processes or contextlib.nullcontext():
            gather()
            conn = self._writer()
            try:
                value = driver.in_write_transaction(conn, body)
            except BaseException:
                self._drop_if_broken(conn)
                raise
        assert self._checkpointer is not None
        self._checkpointer.wrote()
        return value

    @contextmanager
    def write_one(self) -> Iterator[Connection]:
        """A write of one statement, committed as it runs. On PostgreSQL in autocommit, so it
        costs one round trip, not three (``BEGIN``, the statement, ``COMMIT``); on SQLite an
        ordinary write transaction, as every writer queues for the file anyway."""
        if self.is_sqlite:
            with self.write() as conn:
                yield conn
            return
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            yield conn

    @contextmanager
    def _hold_writers(self) -> Iterator[None]:
        """Be this file's one writer: first among this process's threads, then among the
        processes (SQLite only; the lock file where the platform has ``flock``)."""
        with self._sqlite_writer, self._across_processes or contextlib.nullcontext():
            yield

    def migrate(self) -> tuple[str | None, str | None]:
        """Upgrade the schema to this code's newest revision; return (before, after).

        Safe when several processes start at once: the first to take the lock migrates, the
        others wait for it and then find nothing to do. An up-to-date database (every restart
        but the first after a deploy) is recognised without taking the lock.

        A database at a revision this code does not know was migrated by newer code: during a
        rolling deploy the old workers still restart (``max_requests``, a crash), so they log a
        warning and run on it; revisions only ever add to the schema for that reason.
        """
        target = migrations.head()
        before = self.schema_revision()
        if before == target:
            return before, target
        if before is not None and not migrations.is_known(before):
            log.warning("the database schema is at %s, which this code does not know (its "
                        "newest is %s): newer code migrated it; running on it as it is",
                        before, target)
            return before, before
        before = self._migrate_sqlite() if self.is_sqlite else self._migrate_locked()
        if before != target:
            log.info("upgraded the database schema from %s to %s", before or "nothing", target)
        return before, target

    def schema_revision(self) -> str | None:
        """The revision the database is at (None: never migrated)."""
        with self.engine.connect() as conn:
            return migrations.current(conn)

    def schema_problem(self) -> str | None:
        """Why this code cannot run on the database's schema (it is behind, or was never
        migrated), in words an operator can act on; None when it can."""
        current, head = self.schema_revision(), migrations.head()
        if current == head or (current is not None and not migrations.is_known(current)):
            return None  # up to date, or migrated by newer code (which only adds)
        return (f"the database schema is at {current or 'nothing (never migrated)'} and this "
                f"code needs {head}: run 'flask scheduler db upgrade'")

    def _migrate_locked(self) -> str | None:
        """PostgreSQL: a session-level advisory lock, taken on the migrating connection and
        held across the whole upgrade; the server releases it if this process dies."""
        with self.engine.connect() as conn:
            locking = self.dialect == "postgresql"
            if locking:
                conn.execute(sa.select(sa.func.pg_advisory_lock(LOCK_SCHEMA)))
                conn.commit()
            try:
                with conn.begin():
                    return migrations.upgrade(conn)
            finally:
                if locking and not conn.invalidated:
                    conn.execute(sa.select(sa.func.pg_advisory_unlock(LOCK_SCHEMA)))
                    conn.commit()

    def _migrate_sqlite(self) -> str | None:
        """SQLite: the whole upgrade is one ``BEGIN IMMEDIATE`` transaction, which is the
        database-wide write lock; the other processes wait in the busy timeout.

        Foreign keys are off while it runs, as SQLite's documentation prescribes for schema
        changes: rebuilding a table (Alembic's batch mode) drops the old copy, which with
        ``ON DELETE CASCADE`` enforced would delete every run's log lines. They are checked
        before commit instead.
        """
        with self.engine.connect().execution_options(sqlite_immediate=True) as conn:
            raw = conn.connection.dbapi_connection
            assert raw is not None
            # Outside any transaction: inside one, SQLite ignores this pragma.
            raw.cursor().execute("PRAGMA foreign_keys=OFF")
            try:
                with conn.begin():
                    before = migrations.upgrade(conn)
                    broken = conn.exec_driver_sql("PRAGMA foreign_key_check").first()
                    if broken is not None:
                        raise migrations.MigrationError(
                            f"the migration left a dangling foreign key: {tuple(broken)}")
                    return before
            finally:
                raw.cursor().execute("PRAGMA foreign_keys=ON")

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))

    def poll(self, statement: sa.Select[Any]) -> Any:
        """The single value of a constant ``statement`` that a loop asks again and again.

        On SQLite the statement is compiled once and run on the thread's own driver
        connection, converted by its column's type; elsewhere it is an ordinary read.
        """
        if not self.is_sqlite:
            with self.read() as conn:
                return conn.execute(statement).scalar()
        compiled = self._polls.get(statement)
        if compiled is None:
            sql = str(statement.compile(dialect=self.engine.dialect,
                                        compile_kwargs={"literal_binds": True}))
            column_type = statement.selected_columns[0].type.dialect_impl(self.engine.dialect)
            convert = column_type.result_processor(self.engine.dialect, None)
            compiled = self._polls[statement] = (sql, convert)
        sql, convert = compiled
        own: _PollConnection | None = getattr(self._poll_conns, "own", None)
        if own is None or own.closed:
            own = self._poll_conns.own = _PollConnection(str(self.url.database))
            with self._poll_lock:
                self._poll_open.append(own)
        with own.using:
            value = own.conn.execute(sql).fetchone()[0]
        return value if convert is None or value is None else convert(value)

    def dispose(self) -> None:
        """Close every connection. A poll connection is closed only once no thread is using
        it: closing a ``sqlite3`` connection under a running query crashes the interpreter,
        and a loop left behind by a stuck shutdown may still be polling."""
        if self._checkpointer is not None:
            self._checkpointer.stop()
        with self._poll_lock:
            left, self._poll_open = self._poll_open, []
        for own in left:
            own.close(patience=CLOSE_PATIENCE)
        self._poll_conns = threading.local()
        # The write connection likewise, once no writer holds it.
        if self._writer_conn is not None:
            if self._sqlite_writer.acquire(timeout=CLOSE_PATIENCE):
                try:
                    if self._writer_pid == _pid:
                        self._writer_conn.close()
                    self._writer_conn = None
                finally:
                    self._sqlite_writer.release()
            else:
                log.warning("the write connection still in use after %.0f s was left open",
                            CLOSE_PATIENCE)
        self.engine.dispose()


class _PollConnection:
    """One polling thread's own ``sqlite3`` connection, with the lock its queries hold so that
    ``Database.dispose`` never closes it under one."""

    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, timeout=30, isolation_level=None,
                                    check_same_thread=False)
        self.using = threading.Lock()
        self.closed = False

    def close(self, patience: float) -> None:
        if not self.using.acquire(timeout=patience):
            log.warning("a poll connection still in use after %.0f s was left open", patience)
            return
        try:
            self.closed = True
            self.conn.close()
        finally:
            self.using.release()


class _FileLock:
    """An exclusive ``flock`` on a file beside the database, held by one process at a time.

    Opened lazily in each process (a descriptor inherited over ``fork`` would share its lock
    with the parent). Only this code takes it; SQLite's own locking is untouched, so another
    program writing the file still meets the busy timeout as before.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self._fd: int | None = None
        self._pid = 0

    def __enter__(self) -> None:
        if self._pid != _pid:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            self._pid = _pid
        fcntl.flock(self._fd, fcntl.LOCK_EX)  # type: ignore[arg-type]

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)  # type: ignore[arg-type]


class _Checkpointer:
    """Copies the write-ahead log back into the database file from a background thread, so
    no commit waits for a checkpoint.

    ``interval`` seconds after a write, a ``PASSIVE`` checkpoint; past ``RESTART_PAGES`` of
    log, one more with the writers held back, so the log can start over. SQLite's own
    checkpoint is the backstop at ``BACKSTOP_PAGES``. Started by the first write of each
    process (a thread does not survive ``fork``).
    """

    RESTART_PAGES = 1_000
    BACKSTOP_PAGES = 10_000  # ~40 MB of log

    def __init__(self, path: str, hold_writers: Callable[[], AbstractContextManager[None]],
                 interval: float = 0.2) -> None:
        self.path = path
        self.interval = interval
        self._hold_writers = hold_writers
        self._dirty = threading.Event()
        self._pid = 0
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def wrote(self) -> None:
        if self._pid != _pid:
            self._start()
        if not self._dirty.is_set():
            self._dirty.set()

    def _start(self) -> None:
        with self._lock:
            if self._pid == _pid or self._stopping.is_set():
                return
            self._pid = _pid
            self._thread = threading.Thread(target=self._loop, name="sqlite-checkpoint",
                                            daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        conn = sqlite3.connect(self.path, timeout=5, isolation_level=None,
                               check_same_thread=False)
        try:
            while True:
                self._dirty.wait()  # asleep while nothing is written
                if self._stopping.wait(self.interval):  # then let a few commits gather
                    return
                self._dirty.clear()
                try:
                    self._checkpoint(conn)
                except sqlite3.Error as exc:  # busy or gone: the next round or the backstop
                    log.debug("background checkpoint skipped: %s", exc)
        finally:
            conn.close()

    def _checkpoint(self, conn: sqlite3.Connection) -> None:
        _busy, log_pages, copied = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        if log_pages >= self.RESTART_PAGES and copied < log_pages:
            # Only when writers kept it from catching up: a log copied whole starts over at
            # the next write by itself. Holding them back anyway, 0.2 s apart under a steady
            # stream of writes, made a write wait up to 1.6 ms for a checkpoint with nothing
            # left to copy but what came meanwhile, and its fsync.
            with self._hold_writers():
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    def stop(self) -> None:
        self._stopping.set()
        self._dirty.set()
        thread = self._thread
        if thread is not None and self._pid == _pid:
            thread.join(5)


def _check_before_use(engine: Engine) -> None:
    """Find the pooled connections a server dropped before handing them out, without a round
    trip on every checkout (SQLAlchemy's ``pool_pre_ping`` sends ``SELECT 1`` each time: a
    third of a run-now's round trips on a web node). A server that ends a session (restart,
    ``pg_terminate_backend``, an idle timeout) writes its reason and closes the socket, so an
    idle connection whose socket has anything to read, or has failed, is pinged, and replaced
    if the ping fails; a quiet one is handed out as it is. A peer that vanished without a word
    (a cut network) is found as before: by the statement that fails, which invalidates the
    pool (SQLAlchemy's disconnect handling)."""

    @sa.event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_conn: Any, _record: Any, _proxy: Any) -> None:
        if not _quiet(dbapi_conn):
            try:
                engine.dialect.do_ping(dbapi_conn)
            except Exception as exc:
                raise sa.exc.DisconnectionError(f"connection dropped: {exc}") from exc


def _quiet(dbapi_conn: Any) -> bool:
    """Whether an idle psycopg connection is open and its server has sent nothing since."""
    if getattr(dbapi_conn, "closed", True) or getattr(dbapi_conn, "broken", False):
        return False
    try:
        fd = dbapi_conn.pgconn.socket
    except Exception:
        return False
    poller = select.poll()  # not select(): descriptors past 1,024 in a busy process
    poller.register(fd, select.POLLIN | select.POLLERR | select.POLLHUP)
    return not poller.poll(0)


def _configure_sqlite(engine: Engine) -> None:
    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Let SQLAlchemy's begin() below decide when transactions start (pysqlite's own
        # implicit BEGIN would defeat BEGIN IMMEDIATE).
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        _enable_wal(cursor)
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA wal_autocheckpoint={_Checkpointer.BACKSTOP_PAGES}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        # Straight to the driver: no execution context for this one statement, as it runs
        # once per transaction.
        raw = conn.connection.dbapi_connection
        assert raw is not None
        if raw.in_transaction:
            # The writer's transaction, begun on the driver (``driver.write_transaction``),
            # which a statement through ``Connection.execute`` now joins.
            return
        raw.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")


def _enable_wal(cursor: Any, patience: float = 30.0) -> None:
    """Put the file in WAL mode (it stays so; later connections find it set).

    Switching modes needs the file to itself and SQLite answers "database is locked" at once,
    without its busy handler, when another process is mid-transaction (four gunicorn workers
    starting together, one of them migrating). Such a worker would fail to boot and take the
    gunicorn master down with it, so wait and retry instead.
    """
    deadline = time.monotonic() + patience
    while True:
        try:
            if str(cursor.execute("PRAGMA journal_mode").fetchone()[0]).lower() == "wal":
                return
            cursor.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)
