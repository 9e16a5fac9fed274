"""Statements on every run's path, run on SQLite's driver connection: compiled once, their
values converted by SQLAlchemy's own type processors, executed without SQLAlchemy's per-call
execution layer.

Why: on SQLite that layer (the statement's cache key, an execution context, the parameters'
and the result's set-up, per call) costs several times the statement itself: an insert plus
commit took about 235 µs through ``Connection.execute`` against 33 µs through ``sqlite3``
(bench/README.md). A run's insert (and the queue's count before it), its finish and the
metrics' upsert run once per run. The SQL is the statement's, compiled by the dialect, and
values go through the same bind and result processors, so what is stored and read back is what
``Connection.execute`` stores and reads.

Only on connections of a ``Database``'s own SQLite engine (``adopt``), which does not echo;
anywhere else (PostgreSQL, the session of a host app's engine) the statement goes through
``Connection.execute`` as before, with that engine's events and logging.
"""

from __future__ import annotations

import sqlite3
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

Statement = UpdateBase | Select[Any]
_ADOPTED: weakref.WeakSet[Engine] = weakref.WeakSet()
_REQUIRED: Any = object()


def adopt(engine: Engine) -> None:
    """Let ``Prepared`` statements use the driver connections of ``engine`` (a SQLite engine
    this service owns). An engine that echoes its statements, or on another SQLite driver
    than the standard ``sqlite3``, keeps ``Connection.execute``."""
    if engine.dialect.name != "sqlite":
        raise ValueError(f"only a SQLite engine can be adopted, not {engine.url}")
    if engine.dialect.driver == "pysqlite" and not engine.echo:
        _ADOPTED.add(engine)


class Prepared:
    """A Core statement, compiled for SQLite once per set of parameter names it is given."""

    __slots__ = ("statement", "_forms")

    def __init__(self, statement: Statement) -> None:
        self.statement = statement
        self._forms: dict[frozenset[str], _Form] = {}

    def scalar(self, conn: Connection, params: Mapping[str, Any]) -> Any:
        """The first column of the first row the statement returns (None: no row)."""
        raw = _driver(conn)
        if raw is None:
            return conn.execute(self.statement, params).scalar()
        row = self._form(conn.dialect, params).execute(raw, params).fetchone()
        return None if row is None else row[0]

    def first(self, conn: Connection, params: Mapping[str, Any]) -> dict[str, Any] | None:
        """The first row the statement returns, ``{column key: value}`` (None: no row)."""
        raw = _driver(conn)
        if raw is None:
            found = conn.execute(self.statement, params).mappings().first()
            return None if found is None else dict(found)
        form = self._form(conn.dialect, params)
        row = form.execute(raw, params).fetchone()
        return None if row is None else form.row(row)

    def many(self, conn: Connection, rows: Sequence[Mapping[str, Any]]) -> None:
        """Execute once per row (``executemany``); every row has the same keys."""
        raw = _driver(conn)
        if raw is None:
            conn.execute(self.statement, list(rows))
            return
        if not rows:
            return
        form = self._form(conn.dialect, rows[0])
        try:
            raw.executemany(form.sql, [form.parameters(r) for r in rows])
        except sqlite3.Error as exc:
            raise _wrapped(form.sql, rows, exc) from exc

    def _form(self, dialect: Dialect, params: Mapping[str, Any]) -> _Form:
        keys = frozenset(params)
        form = self._forms.get(keys)
        if form is None:
            form = self._forms[keys] = _Form(self.statement, dialect, keys)
        return form


class _Form:
    """One compilation: the SQL, each positional parameter's key, fixed value and bind
    processor, and each returned column's key and result processor."""

    __slots__ = ("sql", "binds", "keys", "results")

    def __init__(self, statement: Statement, dialect: Dialect, keys: frozenset[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
        positions = compiled.positiontup
        if positions is None or compiled.insert_prefetch or compiled.update_prefetch \
                or compiled.literal_execute_params or compiled.post_compile_params:
            # Column defaults computed in Python, expanding IN lists: not what this is for.
            raise ValueError(f"cannot run on the driver as prepared: {compiled.string}")
        self.sql = compiled.string
        self.binds = []
        for name in positions:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            fixed = _REQUIRED if bind.required else bind.effective_value
            self.binds.append((bind.key, fixed, process))
        columns = list(getattr(statement, "exported_columns", ()))
        self.keys = [c.key for c in columns]
        self.results = [c.type.dialect_impl(dialect).result_processor(dialect, None)
                        for c in columns]

    def parameters(self, params: Mapping[str, Any]) -> list[Any]:
        values = []
        for key, fixed, process in self.binds:
            value = params.get(key, fixed)
            if value is _REQUIRED:  # as Connection.execute says it
                missing = sa.exc.InvalidRequestError(
                    f"A value is required for bind parameter {key!r}")
                raise sa.exc.StatementError(str(missing), self.sql, params, missing)
            values.append(value if process is None else process(value))
        return values

    def execute(self, raw: sqlite3.Connection, params: Mapping[str, Any]) -> sqlite3.Cursor:
        try:
            return raw.execute(self.sql, self.parameters(params))
        except sqlite3.Error as exc:
            raise _wrapped(self.sql, params, exc) from exc

    def row(self, row: Sequence[Any]) -> dict[str, Any]:
        return {key: value if process is None else process(value)
                for key, value, process in zip(self.keys, row, self.results, strict=True)}


def _driver(conn: Connection) -> sqlite3.Connection | None:
    """The driver connection under ``conn`` if its engine was adopted, else None."""
    if conn.engine not in _ADOPTED:
        return None
    raw = conn.connection.dbapi_connection
    return raw if isinstance(raw, sqlite3.Connection) else None


def _wrapped(sql: str, params: Any, exc: sqlite3.Error) -> sa.exc.StatementError:
    """The error ``Connection.execute`` would raise (``IntegrityError``, ``OperationalError``…)."""
    return sa.exc.DBAPIError.instance(sql, params, exc, sqlite3.Error)
