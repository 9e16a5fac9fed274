"""Claiming due runs: the one place where the limits on starting a run are held, all counted
and applied inside the claim's serialised transaction (``LOCK_CLAIM`` on PostgreSQL; SQLite's
single writer), so they hold across every node of the cluster:

- a task's ``max_running``: runs of the task running at once;
- a run's concurrency key: at most its ``concurrency_limit`` running runs with that key;
- a run's rate limit: at most ``count`` starts per ``period`` in any sliding window, per rate
  key, counted from ``rate_starts`` (every start of an attempt, a retry's included).

A run that none of these limits applies to (no concurrency key, no rate limit, a task without
``max_running``) can also be claimed by its id, without that lock (``claim_named``): a wake-up
names the run it announces, and the node that hears it first takes it in one statement.

A run held back stays queued in its place. A concurrency key at its limit is left out by the
query itself, so its queued runs never crowd out other keys' runs; a run a rate limit holds
back gets ``throttled_until``, the time its key's next free slot opens (the n-th held-back run
of a key, the n-th slot), and later claims pass it over until then without counting it again.
Why: docs/ARCHITECTURE.md, "Concurrency controls".
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection

from ..tasks.controls import parse_rate
from ..timeutil import utcnow
from .driver import Fetched, Prepared
from .lifecycle import RunState
from .schema import (
    IS_QUEUED,
    IS_RUNNING,
    RUN_COLUMNS_AS_STORED,
    RUN_JSON_COLUMNS,
    rate_starts,
    runs,
    stats,
)
from .stats import QUEUE_WAIT, QUEUE_WAIT_BUCKETS, SUM, Tally, bound_label

# Starts older than the longest period (an hour) count for no window.
LONGEST_PERIOD = timedelta(hours=1)
# How many due runs a claim reads at a time, per free thread, and how many such pages it reads
# at most (runs held back by a rate limit are passed over within the claim).
PAGE_PER_THREAD = 4
MAX_PAGES = 8

_QUEUED = RunState.QUEUED.value
_RUNNING = RunState.RUNNING.value
_other = runs.alias("other")
# Runs of the candidate's concurrency key running now; evaluated only for runs with a key.
_RUNNING_OF_KEY = (sa.select(sa.func.count()).select_from(_other)
                   .where(_other.c.concurrency_key == runs.c.concurrency_key,
                          _other.c.state == _RUNNING)
                   .scalar_subquery())
# Due queued runs, oldest due first, a page at a time, leaving out runs a rate limit holds back
# until a later slot and runs whose concurrency key is at its limit. Built once, its values
# (``now``, ``page``; ``tasks``; where a page ends) bound at execution.
_DUE = (sa.select(runs.c.id, runs.c.task, runs.c.scheduled_for, runs.c.concurrency_key,
                  runs.c.concurrency_limit, runs.c.rate_limit, runs.c.rate_key,
                  runs.c.throttled_until)
        .where(IS_QUEUED, runs.c.scheduled_for <= sa.bindparam("now"),
               sa.or_(runs.c.throttled_until.is_(None),
                      runs.c.throttled_until <= sa.bindparam("now")),
               sa.or_(runs.c.concurrency_key.is_(None),
                      runs.c.concurrency_limit > _RUNNING_OF_KEY))
        .order_by(runs.c.scheduled_for, runs.c.id)
        .limit(sa.bindparam("page", type_=sa.Integer())))
_AFTER = (sa.tuple_(runs.c.scheduled_for, runs.c.id)
          > sa.tuple_(sa.bindparam("after_due", type_=runs.c.scheduled_for.type),
                      sa.bindparam("after_id", type_=runs.c.id.type)))
_DUE_AFTER = _DUE.where(_AFTER)
_START = (runs.update()
          .where(runs.c.id.in_(sa.bindparam("ids", expanding=True)), runs.c.state == _QUEUED)
          .values(state=_RUNNING, node=sa.bindparam("on_node"), started_at=sa.bindparam("at"),
                  finished_at=None, throttled_until=None)
          .returning(*RUN_COLUMNS_AS_STORED))  # converted by the caller (``StoredRun``)
# One named run, if it is still queued, free of every limit, of a task the claiming node runs
# without ``max_running``, and due by the claiming node's clock give or take ``skew``: the
# sender said it is due now, and hosts' clocks differ by a little. A run another node is
# claiming at this moment is skipped rather than waited for (PostgreSQL's SKIP LOCKED; SQLite
# has one writer at a time, so never meets a locked row).
_NAMED = (sa.select(runs.c.id)
          .where(runs.c.id == sa.bindparam("run_id"), runs.c.state == _QUEUED,
                 runs.c.scheduled_for <= sa.bindparam("due_by"),
                 runs.c.throttled_until.is_(None), runs.c.concurrency_key.is_(None),
                 runs.c.rate_limit.is_(None),
                 runs.c.task.in_(sa.bindparam("unlimited", expanding=True)))
          .with_for_update(skip_locked=True)
          .scalar_subquery())
_START_NAMED = (runs.update()
                .where(runs.c.id == _NAMED, runs.c.state == _QUEUED)
                .values(state=_RUNNING, node=sa.bindparam("on_node"),
                        started_at=sa.bindparam("at"), finished_at=None)
                .returning(*runs.c))



def _counting_wait(start: Any) -> Any:
    """PostgreSQL: ``start`` (an ``UPDATE … RETURNING`` the run) with the started run's queue
    wait added to the statistics in the same statement (a data-modifying CTE), as
    ``Tally.waited`` would in a second one: its bucket, then its sum, the order every
    transaction locks those rows in."""
    started = start.cte("started")
    wait = sa.func.greatest(0.0, sa.cast(sa.extract(
        "epoch", sa.bindparam("at", type_=runs.c.started_at.type) - started.c.scheduled_for),
        sa.Float))
    bucket = sa.case(*[(wait <= bound, bound_label(bound)) for bound in QUEUE_WAIT_BUCKETS],
                     else_=bound_label(math.inf))
    rows = sa.union_all(
        sa.select(sa.literal(QUEUE_WAIT), started.c.task, bucket, sa.literal(1.0)),
        sa.select(sa.literal(QUEUE_WAIT), started.c.task, sa.literal(SUM), wait))
    insert = postgresql.insert(stats).from_select(["metric", "task", "label", "value"], rows)
    counted = insert.on_conflict_do_update(
        index_elements=[stats.c.metric, stats.c.task, stats.c.label],
        set_={"value": stats.c.value + insert.excluded.value}).cte("counted")
    return sa.select(started).add_cte(counted)


_START_NAMED_COUNTED = _counting_wait(_START_NAMED)
_OF_TASKS = runs.c.task.in_(sa.bindparam("tasks", expanding=True))
_DUE_OF_TASKS = (_DUE.where(_OF_TASKS), _DUE.where(_OF_TASKS, _AFTER))


@dataclass
class _Window:
    """One rate key's starts in the window of one period, and the slots handed out in this
    claim to the runs it held back."""

    count: int
    period: timedelta
    starts: list[datetime]  # oldest first, within the period before now
    held_back: list[datetime] = field(default_factory=list)  # slots given, in order

    def has_slot(self, started_here: int) -> bool:
        """``started_here``: runs of the key this claim starts (at now)."""
        return len(self.starts) + started_here < self.count

    def next_slot(self, now: datetime, started_here: int) -> datetime:
        """When the next run held back may start, assuming each one before it starts at its
        own slot: slot n is ``period`` after the start (or slot) ``count`` places before it."""
        timeline = self.starts + [now] * started_here + self.held_back
        slot = timeline[len(timeline) - self.count] + self.period
        self.held_back.append(slot)
        return slot


def claim_due(conn: Connection, node: str, limit: int, task_limits: dict[str, int],
              tasks: Collection[str] | None, now: datetime, tally: Tally | None = None
              ) -> list[Fetched]:
    """In the caller's serialised write transaction: move up to ``limit`` due queued runs to
    ``running`` on ``node``, oldest due first, within every limit above. Each run comes back
    as its row (``Fetched``: as the driver fetched it for a run free of every limit, a
    ``StoredRun`` for one claimed with its limits counted), for the caller to convert after
    the commit: out of the writer's turn, and so that a row that cannot be read (changed by
    hand) fails alone instead of rolling back the whole claim at every poll. ``tally``: the
    transaction's statistics, written by the caller (else written here), so a transaction
    writes them once, in the order every transaction locks their rows."""
    counts = Tally() if tally is None else tally
    claimed = _claim(conn, node, limit, task_limits, tasks, now, counts)
    if tally is None:
        counts.flush(conn)
    return claimed


def claim_one_due(conn: Connection, node: str, task_limits: dict[str, int],
                  tasks: Collection[str], now: datetime, tally: Tally
                  ) -> Fetched | None:
    """``claim_due`` of one run, for the thread a settle frees (``RunStore.finish_and_claim``),
    as its row, for the caller to convert after the commit."""
    found = _claim(conn, node, 1, task_limits, tasks, now, tally)
    return found[0] if found else None


def _claim(conn: Connection, node: str, limit: int, task_limits: dict[str, int],
           tasks: Collection[str] | None, now: datetime, tally: Tally
           ) -> list[Fetched]:
    """The oldest due runs free of every limit first, then the rest counted; their rows."""
    claimed: list[Fetched] = list(
        _claim_free_oldest(conn, node, limit, task_limits, tasks, now, tally))
    if len(claimed) < limit:
        claimed += _claim_counted(conn, node, limit - len(claimed), task_limits, tasks, now,
                                  tally)
    return claimed


def _claim_free_oldest(conn: Connection, node: str, limit: int, task_limits: dict[str, int],
                       tasks: Collection[str] | None, now: datetime, tally: Tally
                       ) -> list[Fetched]:
    """SQLite: take the oldest due runs while each is free of every limit, one statement a
    run on the driver (``_free_oldest``), stopping at the first that is not; ``_claim_counted``
    weighs the rest. The same runs in the same order as it would take them: the oldest due
    run (of ``tasks``), when no limit applies to it, is the one it takes first too. Why: the
    counted claim goes through SQLAlchemy's execution layer, a page read and an ``IN`` list
    expanded at every call, and was 44 % of a worker's time draining a batch of queued runs
    (bench/README.md). Each run's row is returned as fetched; only its task and due time are
    read here, for the statistics."""
    if conn.dialect.name != "sqlite" or not tasks:
        return []
    unlimited = unlimited_tasks(tasks, task_limits)
    if not unlimited:
        return []
    statement = _free_oldest(frozenset(tasks), unlimited)
    taken: list[Fetched] = []
    while len(taken) < limit:
        found = statement.fetch(conn, {"now": now, "on_node": node, "at": now})
        if found is None:
            break
        tally.waited(found.value("task"), found.value("scheduled_for"), now)
        taken.append(found)
    return taken


def unlimited_tasks(tasks: Collection[str], task_limits: dict[str, int]) -> frozenset[str]:
    """The tasks of ``tasks`` without a ``max_running`` cap: those a claim need not count."""
    return frozenset(t for t in tasks if t not in task_limits)


def _literal_in(column: sa.Column[Any], values: frozenset[str]) -> sa.ColumnElement[bool]:
    """``column IN (…)`` with each value a bound value of its own, not an ``IN`` list expanded
    at execution: a statement that can run on the driver as prepared (``driver.Prepared``)."""
    return column.in_([sa.literal(v) for v in sorted(values)])


# Built once per set of tasks (they change only as task modules register tasks).
@functools.lru_cache(maxsize=64)
def _free_oldest(tasks: frozenset[str], unlimited: frozenset[str]) -> Prepared:
    """Take the oldest due run of ``tasks`` if no limit applies to it: no concurrency key, no
    rate limit, a task of ``unlimited`` (without ``max_running``)."""
    oldest = (sa.select(runs.c.id)
              .where(IS_QUEUED, runs.c.scheduled_for <= sa.bindparam("now"),
                     sa.or_(runs.c.throttled_until.is_(None),
                            runs.c.throttled_until <= sa.bindparam("now")),
                     _literal_in(runs.c.task, tasks))
              .order_by(runs.c.scheduled_for, runs.c.id)
              .limit(sa.literal(1, sa.Integer()))
              .scalar_subquery())
    return Prepared(
        runs.update()
        .where(runs.c.id == oldest, runs.c.state == _QUEUED,
               runs.c.concurrency_key.is_(None), runs.c.rate_limit.is_(None),
               _literal_in(runs.c.task, unlimited))
        .values(state=_RUNNING, node=sa.bindparam("on_node"), started_at=sa.bindparam("at"),
                finished_at=None, throttled_until=None)
        .returning(*runs.c))


def _claim_counted(conn: Connection, node: str, limit: int, task_limits: dict[str, int],
                   tasks: Collection[str] | None, now: datetime, tally: Tally
                   ) -> list[Fetched]:
    """``claim_due``, every limit counted."""
    running: dict[str, int] = {}
    if task_limits:
        running = dict(conn.execute(  # type: ignore[arg-type]
            sa.select(runs.c.task, sa.func.count())
            .where(IS_RUNNING, runs.c.task.in_(list(task_limits)))
            .group_by(runs.c.task)).all())
    full = [t for t, cap in task_limits.items() if running.get(t, 0) >= cap]
    params: dict[str, Any] = {"now": now, "page": limit * PAGE_PER_THREAD}
    if tasks is not None:
        first, after_page = _DUE_OF_TASKS
        params["tasks"] = sorted(set(tasks) - set(full))
    elif full:
        first = _DUE.where(runs.c.task.not_in(full))
        after_page = first.where(_AFTER)
    else:
        first, after_page = _DUE, _DUE_AFTER
    page_size = limit * PAGE_PER_THREAD
    by_key: dict[str, int] = {}
    windows: dict[tuple[str, str], _Window] = {}
    started_by_rate_key: dict[str, int] = {}
    chosen: list[Any] = []
    throttled: dict[int, tuple[datetime, bool, str]] = {}  # id -> (until, first time, task)
    query = first
    for _ in range(MAX_PAGES):
        page = conn.execute(query, params).all()
        _count_keys(conn, page, by_key)
        for row in page:
            cap = task_limits.get(row.task)
            if cap is not None and running.get(row.task, 0) >= cap:
                continue
            key = row.concurrency_key
            if key is not None and by_key[key] >= (row.concurrency_limit or 1):
                continue
            if row.rate_limit is not None:
                window = _window(conn, windows, row, now)
                started_here = started_by_rate_key.get(row.rate_key, 0)
                if not window.has_slot(started_here):
                    throttled[row.id] = (window.next_slot(now, started_here),
                                         row.throttled_until is None, row.task)
                    continue
                started_by_rate_key[row.rate_key] = started_here + 1
            if cap is not None:
                running[row.task] = running.get(row.task, 0) + 1
            if key is not None:
                by_key[key] += 1
            chosen.append(row)
            if len(chosen) == limit:
                break
        if len(chosen) == limit or len(page) < page_size:
            break
        query = after_page
        params.update(after_due=page[-1].scheduled_for, after_id=page[-1].id)
    _hold_back(conn, throttled, tally)
    # The start time is read after the counts: on PostgreSQL a finish that committed while
    # this claim read may be what freed a slot, and its finished_at must not be later than
    # the start it made room for.
    return _start(conn, node, [row.id for row in chosen], utcnow(), tally)


def claim_named(conn: Connection, run_id: int, node: str, unlimited: Collection[str],
                now: datetime, skew: timedelta, count_wait: bool = True
                ) -> tuple[Fetched | None, bool]:
    """Move the queued run ``run_id`` to ``running`` on ``node`` in one statement, if no limit
    applies to it (``unlimited``: the tasks ``node`` runs that have no ``max_running``) and it
    is due by ``now`` plus ``skew``: its row, for the caller to convert after the commit (see
    ``claim_due``); None otherwise, or when another node has it (taken, or being taken).
    Needs no serialised transaction: no limit is counted. The second value: whether the run's
    queue wait was counted too (PostgreSQL, in the same statement, unless ``count_wait`` is
    false: a caller whose transaction counts other statistics counts it with them, in the
    order every transaction locks their rows)."""
    if not unlimited:
        return None, False
    if conn.dialect.name == "sqlite":
        found = _named_free(frozenset(unlimited)).fetch(
            conn, {"run_id": run_id, "due_by": now + skew, "on_node": node, "at": now})
        return found, False
    counting = count_wait and conn.dialect.name == "postgresql"
    row = conn.execute(_START_NAMED_COUNTED if counting else _START_NAMED, {
        "run_id": run_id, "due_by": now + skew, "unlimited": sorted(unlimited),
        "on_node": node, "at": now}).mappings().first()
    return (None, False) if row is None else (Fetched(dict(row), None), counting)


@functools.lru_cache(maxsize=64)
def _named_free(unlimited: frozenset[str]) -> Prepared:
    """SQLite's ``_START_NAMED``: nothing to skip with one writer at a time, and the tasks
    bound as values, so that it runs on the driver as prepared."""
    return Prepared(
        runs.update()
        .where(runs.c.id == sa.bindparam("run_id"), runs.c.state == _QUEUED,
               runs.c.scheduled_for <= sa.bindparam("due_by"),
               runs.c.throttled_until.is_(None), runs.c.concurrency_key.is_(None),
               runs.c.rate_limit.is_(None), _literal_in(runs.c.task, unlimited))
        .values(state=_RUNNING, node=sa.bindparam("on_node"), started_at=sa.bindparam("at"),
                finished_at=None)
        .returning(*runs.c))


def _count_keys(conn: Connection, page: Sequence[Any], by_key: dict[str, int]) -> None:
    """The running runs of each concurrency key in ``page`` not counted yet (one query)."""
    keys = sorted({row.concurrency_key for row in page
                   if row.concurrency_key is not None and row.concurrency_key not in by_key})
    if not keys:
        return
    by_key.update(dict.fromkeys(keys, 0))
    by_key.update(conn.execute(  # type: ignore[arg-type]
        sa.select(runs.c.concurrency_key, sa.func.count())
        .where(runs.c.concurrency_key.in_(keys), runs.c.state == _RUNNING)
        .group_by(runs.c.concurrency_key)).all())


def _window(conn: Connection, windows: dict[tuple[str, str], _Window], row: Any,
            now: datetime) -> _Window:
    """The window of the row's rate key and rate, read once per claim."""
    found = windows.get((row.rate_key, row.rate_limit))
    if found is None:
        rate = parse_rate(row.rate_limit)
        period = timedelta(seconds=rate.period)
        starts = list(conn.execute(
            sa.select(rate_starts.c.started_at)
            .where(rate_starts.c.rate_key == row.rate_key,
                   rate_starts.c.started_at > now - period)
            .order_by(rate_starts.c.started_at)).scalars())
        found = windows[row.rate_key, row.rate_limit] = _Window(rate.count, period, starts)
    return found


def _hold_back(conn: Connection, throttled: dict[int, tuple[datetime, bool, str]],
               tally: Tally) -> None:
    """Write each held-back run's ``throttled_until``; count a run's first wait only."""
    if not throttled:
        return
    conn.execute(runs.update().where(runs.c.id == sa.bindparam("run_id"))
                 .values(throttled_until=sa.bindparam("until")),
                 [{"run_id": run_id, "until": until}
                  for run_id, (until, _, _) in throttled.items()])
    for _, first, task in throttled.values():
        if first:
            tally.throttled(task)


def _start(conn: Connection, node: str, chosen: list[int], now: datetime,
           tally: Tally) -> list[Fetched]:
    """Move the chosen runs to ``running``; record the starts of the rate-limited ones (and
    forget starts past every window). Each run comes back as its row (``StoredRun``), for the
    caller to convert after the commit."""
    if not chosen:
        return []
    rows = conn.execute(_START, {"ids": chosen, "on_node": node, "at": now}).mappings().all()
    started = [StoredRun(dict(row)) for row in rows]
    limited = [run for run in started if run.value("rate_key") is not None]
    if limited:
        conn.execute(rate_starts.insert(), [
            {"rate_key": run.value("rate_key"), "started_at": now, "run_id": run.value("id")}
            for run in limited])
        conn.execute(rate_starts.delete().where(
            rate_starts.c.rate_key.in_(sorted({run.value("rate_key") for run in limited})),
            rate_starts.c.started_at < now - LONGEST_PERIOD))
    for run in started:
        tally.waited(run.value("task"), run.value("scheduled_for"), now)
    return sorted(started, key=lambda r: (r.value("scheduled_for"), r.value("id")))


class StoredRun(Fetched):
    """A run's row returned with its JSON columns as the text stored
    (``schema.RUN_COLUMNS_AS_STORED``), every other column converted: ``value`` of those is
    what the claim's transaction reads; ``values`` decodes the JSON, after the commit, and
    raises for a row changed by hand so that a column is not JSON."""

    __slots__ = ()

    def __init__(self, row: dict[str, Any]) -> None:
        super().__init__(row, None)

    def values(self) -> dict[str, Any]:
        values = super().values()
        for key in RUN_JSON_COLUMNS:
            if values[key] is not None:
                values[key] = json.loads(values[key])
        return values
