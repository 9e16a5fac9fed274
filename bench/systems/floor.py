"""The durable floor: the least a run recorded before its ``202`` can cost on SQLite, the
baseline that shows how much of this service's dispatch is the record itself and how much is
the service.

The route commits one row (task, arguments, state, time) to a SQLite file in WAL mode with
``synchronous=NORMAL`` (this service's settings) through ``sqlite3`` directly, then starts a
``threading.Thread`` whose target reports and settles the row in a transaction of its own. No
validation, no API, no model, no pool: what is left is the write any design that keeps "durable
before 202, started after the commit, settled once" must make. The writers of one process take
turns on a lock and the processes on ``flock`` (as this service's do), so a waiting writer
sleeps on a lock rather than in SQLite's busy handler, which polls in steps of milliseconds.
"""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from datetime import UTC, datetime
from typing import IO

from flask import Flask, request

from bench.systems.probe import report

DATABASE = os.environ.get("BENCH_FLOOR_DB", "floor.sqlite3")
TABLE = "runs"
_SCHEMA = (f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, task TEXT NOT NULL, "
           "kwargs TEXT NOT NULL, state TEXT NOT NULL, created_at TEXT NOT NULL, "
           "finished_at TEXT)")

_turn = threading.Lock()
_conn: sqlite3.Connection | None = None
_lock_file: IO[str] | None = None


@contextmanager
def _write() -> Iterator[sqlite3.Connection]:
    """One write transaction on the process's one connection (its writers take turns on a
    lock, so one is enough; a connection per thread would open one for every run's settle,
    each in a thread of its own), the processes in turns on ``flock``."""
    global _conn, _lock_file
    with _turn:
        if _conn is None or _lock_file is None:
            _conn = sqlite3.connect(DATABASE, isolation_level=None, timeout=30,
                                    check_same_thread=False)
            _conn.execute("PRAGMA synchronous=NORMAL")
            _lock_file = open(DATABASE + ".lock", "a")  # noqa: SIM115 (the process's, kept)
        fcntl.flock(_lock_file, fcntl.LOCK_EX)
        try:
            _conn.execute("BEGIN IMMEDIATE")
            try:
                yield _conn
            except BaseException:
                _conn.execute("ROLLBACK")
                raise
            _conn.execute("COMMIT")
        finally:
            fcntl.flock(_lock_file, fcntl.LOCK_UN)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _run(run_id: int, key: str, port: int) -> None:
    report(key, port)
    with _write() as conn:
        conn.execute(f"UPDATE {TABLE} SET state = 'succeeded', finished_at = ? WHERE id = ?",
                     (_now(), run_id))


def durable() -> tuple[str, int]:
    body = request.get_json(force=True)
    with _write() as conn:
        run_id = conn.execute(
            f"INSERT INTO {TABLE} (task, kwargs, state, created_at) VALUES (?, ?, ?, ?)",
            ("bench.noop", json.dumps(body), "running", _now())).lastrowid
    threading.Thread(target=_run, args=(run_id, body["key"], body["port"])).start()
    return "", 202


def _create() -> None:
    """The table, in WAL mode, made by whichever worker comes first. Switching to WAL needs the
    file to itself and SQLite answers "locked" at once, without its busy handler, while the
    other worker is creating it: so try again."""
    deadline = time.monotonic() + 30
    while True:
        try:
            with closing(sqlite3.connect(DATABASE, isolation_level=None, timeout=30)) as conn:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute(_SCHEMA)
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.02)



def create_app() -> Flask:
    """The app (``gunicorn 'bench.systems.floor:create_app()'``), its table made first: made on
    the call, not on import, so that the bench can import ``TABLE`` without a database."""
    _create()
    app = Flask(__name__)
    app.post("/durable")(durable)
    return app
