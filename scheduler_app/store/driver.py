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

import functools
import sqlite3
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Dialect, Engine
from sqlalchemy.sql.dml import UpdateBase
from sqlalchemy.sql.selectable import Select

from .encoded import EncodedJSON

Statement = UpdateBase | Select[Any]
# The adopted engines, by ``id``: a set lookup at every statement, where a ``WeakSet`` made a
# weak reference for each. An engine's id leaves the set as the engine is collected
# (``weakref.finalize``), before another object can be given it.
_ADOPTED: set[int] = set()
_REQUIRED: Any = object()
T = TypeVar("T")


def adopt(engine: Engine) -> None:
    """Let ``Prepared`` statements use the driver connections of ``engine`` (a SQLite engine
    this service owns). An engine that echoes its statements, or on another SQLite driver
    than the standard ``sqlite3``, keeps ``Connection.execute``."""
    if engine.dialect.name != "sqlite":
        raise ValueError(f"only a SQLite engine can be adopted, not {engine.url}")
    if engine.dialect.driver == "pysqlite" and not engine.echo and id(engine) not in _ADOPTED:
        _ADOPTED.add(id(engine))
        weakref.finalize(engine, _ADOPTED.discard, id(engine))


def disown(engine: Engine) -> None:
    """Send ``engine``'s statements through ``Connection.execute`` again, as a host app's
    engine's go (the tests and the bench compare the two paths)."""
    _ADOPTED.discard(id(engine))


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

    def fetch(self, conn: Connection, params: Mapping[str, Any]) -> Fetched | None:
        """``first``, its row converted only when the caller asks (``Fetched``)."""
        raw = _driver(conn)
        if raw is None:
            found = conn.execute(self.statement, params).mappings().first()
            return None if found is None else Fetched(dict(found), None)
        form = self._form(conn.dialect, params)
        row = form.execute(raw, params).fetchone()
        return None if row is None else Fetched(row, form)

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


class PreparedInsert:
    """An INSERT of one row into ``table`` (whose primary key is one integer column), giving
    that key. On SQLite's driver connection the insert runs without a ``RETURNING`` and the
    key is the cursor's ``lastrowid``: an ``INTEGER PRIMARY KEY`` is the row's rowid, and
    SQLite's ``RETURNING`` (its rows gathered, then a second step for them) cost 8 µs of a
    run's insert in a worker, where caches are cold (bench/README.md). Elsewhere the key comes
    back through ``RETURNING``, as ``Connection.execute`` would give it."""

    __slots__ = ("_returning", "_plain")

    def __init__(self, table: sa.Table) -> None:
        (key,) = table.primary_key.columns
        self._returning = Prepared(table.insert().returning(key))
        self._plain = Prepared(table.insert())

    def inserted_id(self, conn: Connection, params: Mapping[str, Any]) -> int:
        raw = _driver(conn)
        if raw is None:
            return int(self._returning.scalar(conn, params))
        row_id = self._plain._form(conn.dialect, params).execute(raw, params).lastrowid
        assert row_id is not None  # an INSERT that ran has inserted its row
        return row_id


class Fetched:
    """A row a statement returned, converted when its reader asks: one column (``value``),
    for what the transaction itself needs, or every column (``values``), once out of the
    writer's turn. Why: a claimed run's row (28 columns, among them its arguments' JSON and
    four times) took about 25 µs to convert inside the turn every other writer waits for, and
    draining 10,000 queued runs took 5 % less time with it converted after the commit
    (bench/README.md)."""

    __slots__ = ("_row", "_form")

    def __init__(self, row: Any, form: _Form | None) -> None:
        self._row = row  # a driver row for ``form``; or, without a form, a converted dict
        self._form = form

    def value(self, key: str) -> Any:
        if self._form is None:
            return self._row[key]
        return self._form.column(key, self._row)

    def values(self) -> dict[str, Any]:
        """Every column, ``{column key: value}``: a new dict at each call."""
        if self._form is None:
            return dict(self._row)
        return self._form.row(self._row)


class _Form:
    """One compilation: the SQL, each positional parameter's key, fixed value and bind
    processor, and each returned column's key and result processor; and, built from them
    once, the two functions every execution calls (``parameters``, ``row``)."""

    __slots__ = ("sql", "keys", "results", "parameters", "row", "_positions", "_nulls")

    def __init__(self, statement: Statement, dialect: Dialect, keys: frozenset[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
        positions = compiled.positiontup
        if positions is None or compiled.insert_prefetch or compiled.update_prefetch \
                or compiled.literal_execute_params or compiled.post_compile_params:
            # Column defaults computed in Python, expanding IN lists: not what this is for.
            raise ValueError(f"cannot run on the driver as prepared: {compiled.string}")
        self.sql = compiled.string
        binds: list[tuple[str, Any, Any]] = []
        for name in positions:
            bind = compiled.binds[name]
            process = bind.type.dialect_impl(dialect).bind_processor(dialect)
            fixed = _REQUIRED if bind.required else bind.effective_value
            binds.append((bind.key, fixed, process))
        columns = list(getattr(statement, "exported_columns", ()))
        self.keys = [c.key for c in columns]
        self.results = [c.type.dialect_impl(dialect).result_processor(dialect, None)
                        for c in columns]
        # Whether each column's processor turns NULL into something else (asked once, here:
        # most leave it as it is, so a row's NULLs skip the call).
        self._nulls = [process is not None and _converts_null(process)
                       for process in self.results]
        missing = [key for key, fixed, _ in binds if fixed is _REQUIRED and key not in keys]
        self.parameters: Callable[[Mapping[str, Any]], list[Any]] = (
            functools.partial(_missing, self.sql, missing[0]) if missing
            else _parameters_function(binds, keys))
        self.row: Callable[[Sequence[Any]], dict[str, Any]] = _row_function(
            self.keys, self.results, self._nulls, [isinstance(c.type, sa.JSON) for c in columns])
        self._positions = {key: i for i, key in enumerate(self.keys)}

    def column(self, key: str, row: Sequence[Any]) -> Any:
        """One column of a returned row, converted as ``row`` converts it."""
        i = self._positions[key]
        value, process = row[i], self.results[i]
        if process is None or (value is None and not self._nulls[i]):
            return value
        return process(value)

    def execute(self, raw: sqlite3.Connection, params: Mapping[str, Any]) -> sqlite3.Cursor:
        try:
            return raw.execute(self.sql, self.parameters(params))
        except sqlite3.Error as exc:
            raise _wrapped(self.sql, params, exc) from exc


# Why these two functions are generated, once per form: they run for every statement on a
# run's path, twice or more a run, inside the writer's turn. Looping over a form's binds and
# columns (a value looked up, tested and converted per step) took 16 µs for a claim's twelve
# parameters and 26 µs for its row of 28 columns between its statements in a worker, where
# caches are cold (bench/README.md); the generated function does only what that form needs:
# a value no caller can give is converted once, here; a value bound twice (a claim's ``now``)
# is converted once per call; a column without a processor is copied as it is.


def _parameters_function(binds: Sequence[tuple[str, Any, Any]], keys: frozenset[str]
                         ) -> Callable[[Mapping[str, Any]], list[Any]]:
    """``params`` → the positional values, converted by the binds' processors. Every key of
    ``keys`` is in each ``params`` (a form is chosen by its parameters' keys)."""
    names: dict[str, Any] = {}
    converted: dict[tuple[str, int], str] = {}  # (key, id(processor)) → its local
    lines, items = [], []
    for n, (key, fixed, process) in enumerate(binds):
        if key not in keys:  # a fixed value, the same at every call
            names[f"c{n}"] = fixed if process is None else process(fixed)
            items.append(f"c{n}")
            continue
        names[f"k{n}"] = key
        if process is None:
            items.append(f"p[k{n}]")
            continue
        local = converted.get((key, id(process)))
        if local is None:
            local = converted[key, id(process)] = f"v{n}"
            names[f"f{n}"] = process
            if _gives_encoded_text(process):
                # A value already encoded (a run's kwargs, a result) is bound as its text,
                # which is what the processor makes of it, without two calls to say so.
                lines.append(f"    {local} = p[k{n}]")
                lines.append(f"    {local} = _text({local}) if type({local}) is _Encoded "
                             f"else f{n}({local})")
            else:
                lines.append(f"    {local} = f{n}(p[k{n}])")
        items.append(local)
    source = "\n".join(["def parameters(p):", *lines, f"    return [{', '.join(items)}]"])
    names.update(_Encoded=EncodedJSON, _text=str.__str__)
    return _defined(source, "parameters", names)  # type: ignore[no-any-return]


_PROBE = EncodedJSON.made('{"probe": [1, "two"]}', {"probe": [1, "two"]})


def _gives_encoded_text(process: Callable[[Any], Any]) -> bool:
    """Whether a bind processor makes an ``EncodedJSON`` into its text, as the JSON type's does
    with the service's serializer (``encoded.dumps``), asked once of a probe: a processor of
    another type refuses it or makes something else of it."""
    try:
        made = process(_PROBE)
    except Exception:
        return False
    return type(made) is str and made == str.__str__(_PROBE)


def _row_function(keys: Sequence[str], results: Sequence[Any], nulls: Sequence[bool],
                  json: Sequence[bool]) -> Callable[[Sequence[Any]], dict[str, Any]]:
    """A returned row → ``{column key: value}``, converted by the columns' processors. A NULL
    skips the processors that leave it as it is (``nulls``: those that do not), as do most of
    a run's optional columns; so does a ``json`` column's JSON ``null`` (what a run's result
    and error hold while there is none), which its processor would parse into None."""
    if not keys:
        return lambda row: {}
    names: dict[str, Any] = {}
    items = []
    for n, (key, process, converts_null, is_json) in enumerate(
            zip(keys, results, nulls, json, strict=True)):
        names[f"k{n}"] = key
        if process is None:
            items.append(f"k{n}: r{n}")
            continue
        names[f"f{n}"] = process
        if converts_null:
            items.append(f"k{n}: f{n}(r{n})")
        elif is_json and process("null") is None:
            items.append(f"k{n}: None if r{n} is None or r{n} == 'null' else f{n}(r{n})")
        else:
            items.append(f"k{n}: None if r{n} is None else f{n}(r{n})")
    unpacked = ", ".join(f"r{n}" for n in range(len(keys)))
    source = (f"def row(row):\n    ({unpacked},) = row\n"
              f"    return {{{', '.join(items)}}}")
    return _defined(source, "row", names)  # type: ignore[no-any-return]


def _defined(source: str, name: str, names: dict[str, Any]) -> Any:
    """The function ``name`` that ``source`` defines, its free names bound from ``names``."""
    namespace = dict(names)
    exec(compile(source, f"<driver.{name}>", "exec"), namespace)  # noqa: S102
    return namespace[name]


def _missing(sql: str, key: str, params: Mapping[str, Any]) -> list[Any]:
    """A form whose parameters leave out a value the statement requires: the error
    ``Connection.execute`` raises."""
    missing = sa.exc.InvalidRequestError(f"A value is required for bind parameter {key!r}")
    raise sa.exc.StatementError(str(missing), sql, params, missing)


def _converts_null(process: Any) -> bool:
    """Whether a result processor turns NULL into something else (then it is called for NULL
    too, as ``Connection.execute`` calls it)."""
    try:
        return process(None) is not None
    except Exception:
        return True


@contextmanager
def write_transaction(conn: Connection) -> Iterator[None]:
    """``BEGIN IMMEDIATE`` … ``COMMIT`` sent to the driver connection under ``conn`` (an
    adopted engine's), not through SQLAlchemy's transaction object and its events: a third of
    what a write transaction costs around its statements in a hot loop (5 of 17 µs), and a
    run makes two. A statement run through ``conn.execute`` inside begins SQLAlchemy's own
    transaction on the one already open (the ``begin`` listener sends no second ``BEGIN``),
    and SQLAlchemy then commits or rolls it back. On any other engine, ``conn.begin()``."""
    raw = _driver(conn)
    if raw is None:
        try:
            with conn.begin():
                yield
        except BaseException:
            _end_left_open(conn)
            raise
        return
    _execute(raw, "BEGIN IMMEDIATE")
    try:
        yield
        _commit(conn, raw)
    except BaseException:
        _roll_back(conn, raw)
        raise


def in_write_transaction(conn: Connection, body: Callable[[Connection], T]) -> T:
    """``body(conn)`` inside ``write_transaction(conn)``; its value. The same transaction as a
    function, not a generator: the group commit's write, on every run's path, where the
    context managers around its statements cost more than their work in a worker."""
    raw = _driver(conn)
    if raw is None:
        with write_transaction(conn):
            return body(conn)
    _execute(raw, "BEGIN IMMEDIATE")
    try:
        value = body(conn)
        _commit(conn, raw)
    except BaseException:
        _roll_back(conn, raw)
        raise
    return value


def _commit(conn: Connection, raw: sqlite3.Connection) -> None:
    """Commit the write transaction begun on ``raw``: through SQLAlchemy when a statement run
    through ``conn.execute`` began its transaction on it, else on the driver."""
    if conn.in_transaction():
        conn.commit()
    else:
        _execute(raw, "COMMIT")


def _roll_back(conn: Connection, raw: sqlite3.Connection) -> None:
    """Roll back the write transaction begun on ``raw``; also after a COMMIT that failed (a
    full disk), which leaves the transaction open."""
    if conn.in_transaction():
        conn.rollback()
    if raw.in_transaction:
        raw.rollback()


def _end_left_open(conn: Connection) -> None:
    """Roll back what SQLAlchemy left open on a SQLite connection: after a failed ``COMMIT``
    (a full disk, a deferred foreign key) the transaction stays open in SQLite while
    SQLAlchemy counts it as ended, and the next ``BEGIN`` on that connection, the process's
    one writer, would fail ("cannot start a transaction within a transaction") until the
    process restarts."""
    try:
        dbapi = conn.connection.dbapi_connection
    except sa.exc.SQLAlchemyError:  # closed or invalidated: nothing is open on it
        return
    if isinstance(dbapi, sqlite3.Connection) and dbapi.in_transaction:
        dbapi.rollback()


def _execute(raw: sqlite3.Connection, sql: str) -> None:
    try:
        raw.execute(sql)
    except sqlite3.Error as exc:
        raise _wrapped(sql, (), exc) from exc


def _driver(conn: Connection) -> sqlite3.Connection | None:
    """The driver connection under ``conn`` if its engine was adopted, else None."""
    if id(conn.engine) not in _ADOPTED:
        return None
    raw = conn.connection.dbapi_connection
    return raw if isinstance(raw, sqlite3.Connection) else None


def _wrapped(sql: str, params: Any, exc: sqlite3.Error) -> sa.exc.StatementError:
    """The error ``Connection.execute`` would raise (``IntegrityError``, ``OperationalError``…)."""
    return sa.exc.DBAPIError.instance(sql, params, exc, sqlite3.Error)
