"""Many runs written at once (``POST /api/runs/batch``, ``Task.enqueue_many``): one
transaction, one multi-row insert, all or nothing.

A batch is refused whole, with nothing written, when the queue cannot take all of it
(``QueueFull``) or when any of its unique keys is taken (``BatchConflict``): by an active run
already stored, or by an earlier run of the same batch. Every conflicting run is named, so a
caller can fix its batch in one go, or learn the ids of runs an earlier attempt of the same
batch stored (a retry after a lost answer is refused naming them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from ..errors import BatchConflict, KeyConflict
from ..timeutil import utcnow
from .db import Database
from .driver import Prepared
from .lifecycle import NewRun, Run, new_run_values
from .runs import insert_if_free, refuse_past_queue_limit
from .schema import ACTIVE_PREDICATE, runs
from .stats import Tally

# Where the ids are not known before the insert (a host's SQLite session), they come back in
# the order of the rows given (SQLAlchemy's "insertmanyvalues" sorts them), so the answer's
# ids[i] is still the run of the batch's item i.
_INSERT = runs.insert().returning(runs.c.id, sort_by_parameter_order=True)
_HOLDERS = sa.select(runs.c.id, runs.c.unique_key, runs.c.state).where(
    runs.c.unique_key.in_(sa.bindparam("keys", expanding=True)), ACTIVE_PREDICATE)
# How often a batch whose key holders all ended between its insert and its read is tried again
# before it is refused anyway (each try needs a holder to end in a window of microseconds).
_TRIES = 3


def duplicates_within(news: Sequence[NewRun]) -> list[KeyConflict]:
    """The items whose unique key an earlier item of the same batch has."""
    first: dict[str, int] = {}
    conflicts = []
    for index, new in enumerate(news):
        key = new.unique_key
        if key is None:
            continue
        if key in first:
            conflicts.append(KeyConflict(index, key, duplicate_of=first[key]))
        else:
            first[key] = index
    return conflicts


def create_many(db: Database, news: Sequence[NewRun], max_queued: int | None = None
                ) -> list[Run]:
    """Queue every run of ``news`` in one write transaction, or none (see the module). The
    runs come back in the order given."""
    for attempt in range(_TRIES):
        try:
            with db.write() as conn:
                return insert_many(conn, news, max_queued, last_try=attempt == _TRIES - 1,
                                   own_writer=True)
        except BatchConflict as refused:
            _count_refused(db, news, refused)
            raise
        except _HoldersEnded:
            continue
    raise AssertionError("unreachable: the last try raises BatchConflict")  # pragma: no cover


def insert_many(conn: Connection, news: Sequence[NewRun], max_queued: int | None = None,
                *, last_try: bool = True, own_writer: bool = False) -> list[Run]:
    """``create_many`` in the caller's transaction (a host's session). A refused batch leaves
    no row of its own in that transaction, whatever the caller then does with it."""
    inside = duplicates_within(news)
    if inside:
        raise BatchConflict(inside)
    if max_queued is not None:
        refuse_past_queue_limit(conn, max_queued, adding=len(news))
    now = utcnow()
    rows = [new_run_values(new, now) for new in news]
    keyed = any(new.unique_key is not None for new in news)
    given = _allocate_ids(conn, len(rows), own_writer)
    ids: list[int | None]
    if given is not None:
        # Ids known before the insert: a plain multi-row insert (on PostgreSQL, psycopg's
        # pipelined executemany), with no RETURNING to sort back into the items' order.
        for row, run_id in zip(rows, given, strict=True):
            row["id"] = run_id
        if not keyed:
            _INSERT_GIVEN.many(conn, rows)
            ids = list(given)
        else:
            # The index decides, as for one run: a key taken meanwhile by another transaction
            # makes its row insert nothing here (no error that would end the transaction).
            came_in = set(conn.execute(insert_if_free(conn.dialect.name), rows)
                          .scalars())
            ids = [run_id if run_id in came_in else None for run_id in given]
    elif not keyed:
        ids = list(conn.execute(_INSERT, rows).scalars())
    else:
        statement = insert_if_free(conn.dialect.name, ordered=True)
        ids = _aligned(news, conn.execute(statement, rows).all())
    if None in ids:
        refused = _refusal(conn, news, ids, last_try)
        # Take back what did go in: a host that catches the error and commits its own work
        # anyway must not commit part of the batch.
        conn.execute(runs.delete().where(runs.c.id.in_(
            [run_id for run_id in ids if run_id is not None])))
        raise refused
    return [Run.inserted(run_id, values)  # type: ignore[arg-type]
            for run_id, values in zip(ids, rows, strict=True)]


def _aligned(news: Sequence[NewRun], returned: Sequence[Any]) -> list[int | None]:
    """Each item's id, None for an item the insert left out: the rows come back in the
    items' order without the left-out ones, and carry their key (unique in the batch, or
    null for a run without one, which is never left out)."""
    ids: list[int | None] = []
    rest = iter(returned)
    pending = next(rest, None)
    for new in news:
        if pending is not None and pending[1] == new.unique_key:
            ids.append(pending[0])
            pending = next(rest, None)
        else:
            ids.append(None)
    if pending is not None:
        raise AssertionError("the insert returned rows out of the batch's order")
    return ids


class _HoldersEnded(Exception):
    """Keys were held at the insert, and their runs ended before they could be named."""


def _refusal(conn: Connection, news: Sequence[NewRun], ids: Sequence[int | None],
             last_try: bool) -> BatchConflict:
    ours = {run_id for run_id in ids if run_id is not None}
    left_out = [index for index, run_id in enumerate(ids) if run_id is None]
    holders = {key: (run_id, state) for run_id, key, state in conn.execute(
        _HOLDERS, {"keys": sorted({str(news[i].unique_key) for i in left_out})})
        if run_id not in ours}
    conflicts = []
    for index in left_out:
        key = news[index].unique_key
        assert key is not None
        holder = holders.get(key)
        if holder is None and not last_try:
            raise _HoldersEnded()
        run_id, state = holder if holder is not None else (None, "ended")
        conflicts.append(KeyConflict(index, key, run_id=run_id, state=state))
    return BatchConflict(conflicts)


def _count_refused(db: Database, news: Sequence[NewRun], refused: BatchConflict) -> None:
    """Count the refused items whose key an active run holds as deduplicated (the metric
    ``scheduler_runs_deduplicated_total``, as a refused single run is), in a transaction of its
    own: the batch's was rolled back."""
    held = [c for c in refused.conflicts if c.run_id is not None]
    if held:
        tally = Tally()
        for conflict in held:
            tally.deduplicated(news[conflict.index].task)
        with db.write() as conn:
            tally.flush(conn)


def _allocate_ids(conn: Connection, count: int, own_writer: bool) -> list[int] | None:
    """``count`` new run ids, ascending, before the insert; None where they cannot be known.

    PostgreSQL: drawn from the ids' sequence, in any transaction. SQLite: the ids it would give
    itself (the largest id plus one, and on: the table has no AUTOINCREMENT), only when this
    transaction is the file's one writer since its start (``own_writer``: ``Database.write``
    began it IMMEDIATE), so no other insert can take them first; a host's session may have
    read outside its transaction, so it gets its ids back from the insert instead."""
    if conn.dialect.name == "postgresql":
        table = conn.dialect.identifier_preparer.format_table(runs)
        return sorted(conn.execute(_NEXT_IDS, {"table": table, "count": count}).scalars())
    if conn.dialect.name == "sqlite" and own_writer:
        top = conn.execute(_LAST_ID).scalar() or 0
        return list(range(top + 1, top + 1 + count))
    return None


_NEXT_IDS = sa.text("SELECT nextval(pg_get_serial_sequence(:table, 'id')) "
                    "FROM generate_series(1, :count)")
_LAST_ID = sa.select(sa.func.max(runs.c.id))
# On SQLite through the driver connection (``store.driver``): SQLAlchemy's per-row parameter
# set-up cost more than the insert itself.
_INSERT_GIVEN = Prepared(runs.insert())
