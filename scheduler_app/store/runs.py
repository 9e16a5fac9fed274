"""Runs and their log lines. Every state change of a run is one conditional statement here,
naming the state it expects, so two nodes never both move the same run; the states, records
and row values are in ``lifecycle``.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ..errors import AlreadyQueued, QueueFull
from ..timeutil import utcnow
from .alerts import AlertStore, forget_alerts, has_pending_alert
from .claim import claim_due, claim_named, claim_one_due, unlimited_tasks
from .db import LOCK_CLAIM, Database
from .driver import Fetched, Prepared, PreparedInsert
from .encoded import EncodedJSON
from .group import GroupCommit
from .lifecycle import (
    FINAL_STATES,
    LogEntry,
    NewRun,
    Run,
    RunState,
    new_run_values,
    settle_values,
)
from .schema import ACTIVE_PREDICATE, IS_QUEUED, IS_RUNNING, jobs, nodes, run_logs, runs
from .stats import Tally, forget_misfire_marks

log = logging.getLogger(__name__)

# How far ahead of this node's clock a run named by a wake-up may be due and still be taken:
# the node that queued it said it is due now, by its own clock.
CLOCK_SKEW = timedelta(seconds=1)
# Statements built once, their parameters bound at execution; the insert and the finish are on
# every run's path, so on SQLite they run on the driver (``driver.Prepared``). The insert
# returns only the id: the rest of the row is what was written (``Run.inserted``).
_INSERT_RUN = PreparedInsert(runs)
# Every run queued with MAX_QUEUED_RUNS set (the default) counts the queue first.
_COUNT_QUEUED = Prepared(sa.select(sa.func.count()).select_from(runs)
                         .where(runs.c.state == RunState.QUEUED.value))
_NEXT_DUE = sa.select(sa.func.min(runs.c.scheduled_for)).where(IS_QUEUED)
_SETTLE_CLEANLY = (
    runs.update()
    .where(runs.c.id == sa.bindparam("run_id"), runs.c.node == sa.bindparam("on_node"),
           runs.c.state == RunState.RUNNING.value)
    .values(state=sa.bindparam("new_state"), finished_at=sa.bindparam("ended_at"),
            result=sa.bindparam("outcome", type_=sa.JSON()), error=None)
)
_FINISH_CLEANLY = Prepared(_SETTLE_CLEANLY.returning(*runs.c))
# The columns of a running run that others may change (a cancel asked for, progress flushed)
# or that its settle writes: with the run as it started, the whole row, without reading back
# (and decoding) its arguments, errors and times. Not the result: the settle knows it as it
# reads back (``EncodedJSON.value``).
_CHANGING = ("state", "finished_at", "error", "cancel_requested", "progress_done",
             "progress_total", "progress_message")
_FINISH_KNOWN = Prepared(_SETTLE_CLEANLY.returning(*(runs.c[name] for name in _CHANGING)))


@dataclass(frozen=True)
class NextClaim:
    """What a finish needs to claim the next run for its thread (``finish_and_claim``): the
    node's tasks (it claims runs of those only), their ``max_running`` caps, the runs named
    by wake-ups to try first by their ids (``claim_named``), and whether to look for any due
    run after them (``claim_due``)."""

    tasks: frozenset[str]
    task_limits: dict[str, int]
    named: tuple[int, ...] = ()
    any_due: bool = False

    @functools.cached_property
    def unlimited(self) -> frozenset[str]:
        """The tasks without ``max_running`` (those a run named by id may be of)."""
        return unlimited_tasks(self.tasks, self.task_limits)


@dataclass(frozen=True)
class Handover:
    """What ``finish_and_claim`` did: the run it settled (None: no longer this node's), the
    run it claimed for the thread (None: none), and how many of the named runs it tried (the
    rest are for the caller to offer again)."""

    settled: Run | None
    claimed: Run | None = None
    tried: int = 0


class RunStore:
    def __init__(self, db: Database, alerts: AlertStore | None = None) -> None:
        """``alerts``: where a run's end writes its alert, in the same transaction (none by
        default)."""
        self.db = db
        self.group = GroupCommit(db)
        self.alerts = alerts or AlertStore(db)

    # -- creating ---------------------------------------------------------------------------
    def create(self, new: NewRun, conn: Connection | None = None,
               max_queued: int | None = None, running_on: str | None = None,
               announce: Callable[[Connection, Run], None] | None = None,
               count_wait: bool = True) -> Run:
        """Queue a run. With ``max_queued``, refuse (QueueFull, nothing written) when that many
        runs are already queued, counted in the same transaction. With ``running_on``, the run
        is written already claimed by that node (the node has a thread waiting for it), and
        its queue wait is counted here, unless ``count_wait`` is False: then its settle counts
        it (``finish_and_claim(count_wait=True)``), one statement less before the task
        starts.

        A run with a ``unique_key`` held by a queued or running run is not written:
        ``AlreadyQueued`` is raised, its ``run`` that run (the database's unique index decides,
        so two nodes inserting the same key at once cannot both win).

        Without ``conn``, the write joins the group commit: concurrent creates and finishes
        of this process share a transaction, and this returns once it committed.

        ``announce(conn, run)``: called in the transaction once the run is written (a wake-up
        that the database delivers at commit); called again if the transaction is retried."""
        def insert(conn: Connection, tally: Tally) -> tuple[Run, bool]:
            outcome = self._insert(conn, tally, new, max_queued, running_on, count_wait)
            if outcome[1] and announce is not None:
                announce(conn, outcome[0])
            return outcome

        if conn is not None:
            tally = Tally()
            run, created = insert(conn, tally)
            tally.flush(conn)
        else:
            run, created = self.group.run(insert, serialised=max_queued is not None)
        if not created:
            raise already_queued(run)
        return run

    def insert_in(self, conn: Connection, new: NewRun, max_queued: int | None = None,
                  running_on: str | None = None) -> tuple[Run, bool]:
        """``create`` in the caller's transaction, without raising for a held unique key:
        (the new run, True), or (the active run holding its key, False), counted."""
        tally = Tally()
        outcome = self._insert(conn, tally, new, max_queued, running_on)
        tally.flush(conn)
        return outcome

    @staticmethod
    def _insert(conn: Connection, tally: Tally, new: NewRun, max_queued: int | None,
                running_on: str | None, count_wait: bool = True) -> tuple[Run, bool]:
        if max_queued is not None:
            refuse_past_queue_limit(conn, max_queued)
        now = utcnow()
        values = new_run_values(new, now, running_on)
        bound = _bound(values, new)
        if new.unique_key is None:
            run_id = _INSERT_RUN.inserted_id(conn, bound)
        else:
            outcome = _insert_unique(conn, bound)
            if isinstance(outcome, Run):
                tally.deduplicated(new.task)
                return outcome, False
            run_id = outcome
        if running_on is not None and count_wait:
            tally.waited(new.task, values["scheduled_for"], now)
        return Run.inserted(run_id, values), True

    # -- reading ----------------------------------------------------------------------------
    def get(self, run_id: int) -> Run | None:
        with self.db.read() as conn:
            row = conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().first()
        return None if row is None else Run.from_row(row)

    def find(
        self,
        *,
        state: RunState | None = None,
        task: str | None = None,
        job_id: str | None = None,
        limit: int = 50,
        before_id: int | None = None,
    ) -> list[Run]:
        """Newest first; ``before_id`` is the keyset cursor."""
        query = sa.select(runs).order_by(runs.c.id.desc()).limit(limit)
        if state is not None:
            query = query.where(runs.c.state == state.value)
        if task is not None:
            query = query.where(runs.c.task == task)
        if job_id is not None:
            query = query.where(runs.c.job_id == job_id)
        if before_id is not None:
            query = query.where(runs.c.id < before_id)
        with self.db.read() as conn:
            return [Run.from_row(r) for r in conn.execute(query).mappings()]

    def last_runs(self, job_ids: Sequence[str]) -> dict[str, Run]:
        """The newest run of each given job (of those still in the job table), if it was
        created at or after the job's row: a run older than the row belongs to a deleted job
        that had the same id, and a job recreated since its id last ran has no last run yet.

        One index seek per job (``max(id)`` of its ``ix_scheduler_runs_job`` entries), so a
        page of jobs costs the same however many runs each job has. Ids grow with creation
        time, so when the newest run of the id is older than the row, all of them are."""
        if not job_ids:
            return {}
        with self.db.read() as conn:
            rows = conn.execute(_LAST_RUNS, {"job_ids": list(job_ids)}).mappings()
            return {r["job_id"]: Run.from_row(r) for r in rows}

    def running_with_key(self, concurrency_key: str) -> int:
        """How many runs with this concurrency key are running now (a queued run's view says
        why it waits)."""
        with self.db.read() as conn:
            return int(conn.execute(
                sa.select(sa.func.count()).select_from(runs)
                .where(runs.c.concurrency_key == concurrency_key,
                       runs.c.state == RunState.RUNNING.value)).scalar_one())

    def next_due_time(self) -> datetime | None:
        """When the earliest queued run is due (None: nothing queued). Every node's
        dispatcher asks this at each poll, idle or not, so the statement is built once."""
        return self.db.poll(_NEXT_DUE)  # type: ignore[no-any-return]

    # -- executing --------------------------------------------------------------------------
    def claim(self, node: str, limit: int, task_limits: dict[str, int],
              tasks: Collection[str] | None = None, look_first: bool = True) -> list[Run]:
        """Move up to ``limit`` due queued runs to ``running`` on ``node``, oldest due first.

        ``tasks``: the names of the tasks ``node`` can run; runs of other tasks are left
        queued for a node that has them, rather than failed here as unknown (during a rolling
        deploy that adds a task, the old nodes would use up the new runs' attempts). None:
        any task. ``look_first``: ask with a read whether one of them is due before taking
        the write lock (a caller that was just told runs are due skips it).

        ``task_limits`` caps concurrently running runs per task name across every node; a
        run's concurrency key and rate limit cap it too. Counts and claim happen in one
        serialised transaction so the caps hold (``claim.claim_due``).
        """
        if limit <= 0 or (tasks is not None and not tasks):
            return []
        if tasks is not None and look_first:
            # A due run of a task no node here has is seen at every poll: ask with a read
            # whether one of ours is due, and take the write lock only then.
            with self.db.read() as conn:
                if conn.execute(sa.select(runs.c.id).where(
                        IS_QUEUED, runs.c.scheduled_for <= utcnow(),
                        runs.c.task.in_(sorted(tasks))).limit(1)).first() is None:
                    return []
        with self.db.write(lock=LOCK_CLAIM) as conn:
            # ``now`` is read once the lock is held, so it is after any earlier finish.
            found = claim_due(conn, node, limit, task_limits, tasks, utcnow())
        return [run for run in (self._adopted(f, node) for f in found) if run is not None]

    def claim_named(self, run_id: int, node: str, unlimited: Collection[str],
                    skew: timedelta = CLOCK_SKEW) -> tuple[Run | None, bool]:
        """Claim the run a wake-up named, in one statement, without the serialised claim:
        only if no limit applies to it and ``node`` runs its task (``unlimited``: the tasks
        ``node`` runs without ``max_running``), and only if it is still queued and no other
        node is taking it (``claim.claim_named``). None: the caller's node leaves it (taken,
        cancelled, or for a full claim to weigh). The second value: whether its queue wait
        was counted by the same statement (PostgreSQL); if not, ``count_waits`` counts it
        once the run has started."""
        with self.db.write_one() as conn:
            found, counted = claim_named(conn, run_id, node, unlimited, utcnow(), skew)
        return (None if found is None else self._adopted(found, node)), counted

    def count_waits(self, claimed: Sequence[Run]) -> None:
        """Count the queue waits of runs ``claim_named`` took without counting them, after
        they started (off the hand-off's path; a crash in between loses only these
        observations, never a run)."""
        def count(_conn: Connection, tally: Tally) -> None:
            for run in claimed:
                if run.started_at is not None:
                    tally.waited(run.task, run.scheduled_for, run.started_at)
        if claimed:
            self.group.run(count)

    def claim_run(self, run_id: int, node: str) -> Run | None:
        """Move the queued run ``run_id`` to ``running`` on ``node`` now, due or not (the next
        attempt of an eager run, executed at once by its caller); None if it is not queued."""
        with self.db.write(lock=LOCK_CLAIM) as conn:
            row = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.state == RunState.QUEUED.value)
                .values(state=RunState.RUNNING.value, node=node, started_at=utcnow(),
                        finished_at=None)
                .returning(*runs.c)
            ).mappings().first()
        return None if row is None else Run.from_row(row)

    def save_progress(self, run_id: int, done: float, total: float | None,
                      message: str | None) -> None:
        self.group.run(lambda conn, _tally: _write_progress(conn, run_id, done, total, message))

    def add_logs(self, run_id: int, lines: Iterable[tuple[datetime, str, str]]) -> None:
        """Append log lines; joins the group commit (the node flushes every running run's
        lines on its tick, and a finishing run's with its outcome)."""
        values = _log_rows(run_id, lines)
        if values:
            self.group.run(lambda conn, _tally: conn.execute(run_logs.insert(), values))

    def cancel_requested_ids(self, node: str) -> set[int]:
        with self.db.read() as conn:
            return set(conn.execute(
                sa.select(runs.c.id).where(
                    runs.c.node == node,
                    IS_RUNNING,  # a literal: a seek to the running runs (schema)
                    runs.c.cancel_requested.is_(True),
                )
            ).scalars())

    def finish(
        self,
        run_id: int,
        node: str,
        state: RunState,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        progress: tuple[float, float | None, str | None] | None = None,
        logs: Iterable[tuple[datetime, str, str]] = (),
    ) -> Run | None:
        """Settle the attempt running on ``node``. A failure with attempts left is re-queued
        after a backoff, keeping the error in ``errors``. Returns None if the run was no longer
        this node's to settle (a reaper settled it meanwhile).

        The attempt's last ``progress`` (done, total, message) and log lines not yet written
        go in the same transaction, which joins the group commit: one write per finished run,
        where there were up to three."""
        return self.finish_and_claim(run_id, node, state, result=result, error=error,
                                     progress=progress, logs=logs).settled

    def finish_and_claim(
        self,
        run_id: int,
        node: str,
        state: RunState,
        *,
        result: Any = None,
        error: dict[str, Any] | None = None,
        progress: tuple[float, float | None, str | None] | None = None,
        logs: Iterable[tuple[datetime, str, str]] = (),
        claim_next: NextClaim | None = None,
        started: Run | None = None,
        count_wait: bool = False,
    ) -> Handover:
        """``finish``, and with ``claim_next``, in the same transaction, claim the next run for
        the thread the settled run frees: a run named by a wake-up, by its id, or else any due
        run within every limit (as ``claim`` of one run). A node whose runs queue up hands its
        thread from one run to the next this way, with one write and no hop through the
        dispatcher thread, where a separate claim would cost a second write transaction.

        ``started``: the run as the caller started it; only the columns that may have changed
        since are then read back. ``count_wait``: count its queue wait too (a run written
        already started, ``create(count_wait=False)``), in the statement that writes the
        settle's other statistics."""
        assert state in FINAL_STATES
        log_rows = _log_rows(run_id, logs)
        # Encoded here, before the transaction, unless the caller did (the runner, which
        # encodes a result to check it): nothing is encoded or decoded in the writer's turn.
        outcome = result if result is None or isinstance(result, EncodedJSON) \
            else EncodedJSON.of(result)

        def settle(conn: Connection, tally: Tally) -> tuple[Run | None, Fetched | None, int]:
            if progress is not None:
                _write_progress(conn, run_id, *progress)
            if log_rows:
                conn.execute(run_logs.insert(), log_rows)
            settled = self._settle(conn, tally, run_id, node, state, outcome, error, started)
            if settled is not None:
                self.alerts.record(conn, settled)
                attempt = started or settled  # a retried run's row no longer says when
                if count_wait and attempt.started_at is not None:
                    tally.waited(attempt.task, attempt.scheduled_for, attempt.started_at)
            if settled is None or claim_next is None or not claim_next.tasks:
                return settled, None, 0
            # ``now`` after the settle, so a slot this finish freed counts for the claim.
            now = utcnow()
            for tried, named in enumerate(claim_next.named, start=1):
                claimed, _ = claim_named(conn, named, node, claim_next.unlimited, now,
                                         CLOCK_SKEW, count_wait=False)
                if claimed is not None:
                    tally.waited(claimed.value("task"), claimed.value("scheduled_for"), now)
                    return settled, claimed, tried
            found = None
            if claim_next.any_due:
                found = claim_one_due(conn, node, claim_next.task_limits, claim_next.tasks,
                                      now, tally)
            return settled, found, len(claim_next.named)

        # A full claim counts limits: serialised with the other claims (PostgreSQL).
        settled, claimed, tried = self.group.run(
            settle, serialised=claim_next is not None and claim_next.any_due)
        return Handover(settled, None if claimed is None else self._adopted(claimed, node),
                        tried)

    def _adopted(self, found: Fetched, node: str) -> Run | None:
        """A run just claimed by ``node``, its row converted here, after the claim's commit;
        None if it cannot be read (then it is ended, ``_fail_unreadable``)."""
        try:
            return Run.adopt(found.values())
        except Exception as exc:
            self._fail_unreadable(found, node, exc)
            return None

    def _fail_unreadable(self, found: Fetched, node: str, exc: Exception) -> None:
        """End a run just claimed whose row cannot be read back (what it stores is not what
        this code writes: changed by hand), failed, rather than leave it running on ``node``
        with no thread to run it."""
        run_id = found.value("id")
        log.error("run %s was claimed but cannot be read: %s", run_id, exc)
        error = {"type": "UnreadableRun", "traceback": None,
                 "message": f"the run's stored row cannot be read: {exc}"}
        with self.db.write() as conn:
            ended = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.node == node, IS_RUNNING)
                .values(state=RunState.FAILED.value, finished_at=utcnow(), error=error)
            ).rowcount
            if ended:
                tally = Tally()
                tally.finished(found.value("task"), RunState.FAILED.value)
                tally.flush(conn)
                self.alerts.record_end(conn, run_id, RunState.FAILED.value)

    @staticmethod
    def _settle(conn: Connection, tally: Tally, run_id: int, node: str, state: RunState,
                result: EncodedJSON | None, error: dict[str, Any] | None,
                started: Run | None = None) -> Run | None:
        if error is None:
            # Success or cancel: no retry to decide, so one UPDATE, no read first; with the
            # run as it started, only what may have changed since is read back.
            known = started is not None and started.id == run_id
            row = (_FINISH_KNOWN if known else _FINISH_CLEANLY).first(conn, {
                "run_id": run_id, "on_node": node, "new_state": state._value_,
                "ended_at": utcnow(), "outcome": _NO_RESULT if result is None else result})
            if row is None:
                return None
            if known:
                row["result"] = None if result is None else result.value
            settled = Run.adopt({**vars(started), **row} if known else row)
            assert settled.started_at is not None and settled.finished_at is not None
            tally.attempt(settled.task, settled.started_at, settled.finished_at)
            # ``_value_``: the member's value itself, where ``value`` is a property (two calls).
            tally.finished(settled.task, settled.state._value_)
            return settled
        current = conn.execute(
            sa.select(runs).where(runs.c.id == run_id, runs.c.node == node,
                                  runs.c.state == RunState.RUNNING.value)
        ).mappings().first()
        if current is None:
            return None
        values = settle_values(Run.from_row(current), state, result, error)
        updated = conn.execute(
            runs.update()
            .where(runs.c.id == run_id, runs.c.node == node,
                   runs.c.state == RunState.RUNNING.value)
            .values(**values)
            .returning(*runs.c)
        ).mappings().first()
        if updated is None:
            return None
        settled = Run.from_row(updated)
        tally.attempt(settled.task, current["started_at"], settled.finished_at or utcnow())
        if settled.is_final:
            tally.finished(settled.task, settled.state.value)
        return settled

    def hand_back(self, run_id: int, node: str) -> bool:
        """Return an unfinished run to the queue (graceful stop); the attempt is not spent."""
        with self.db.write() as conn:
            result = conn.execute(
                runs.update()
                .where(runs.c.id == run_id, runs.c.node == node,
                       runs.c.state == RunState.RUNNING.value)
                .values(state=RunState.QUEUED.value, node=None, started_at=None,
                        scheduled_for=utcnow())
            )
        return result.rowcount == 1

    def request_cancel(self, run_id: int) -> tuple[RunState, Run] | None:
        """Cancel a queued run now; flag a running one so its task stops when it next looks.

        Returns the state the run had before, and the run after; None if there is no such run.
        A finished run is left unchanged.
        """
        now = utcnow()
        with self.db.write() as conn:
            # FOR UPDATE: on PostgreSQL a node claiming this run meanwhile waits, so a run
            # cancelled as queued is never also started.
            found = conn.execute(
                sa.select(runs.c.state, runs.c.task).where(runs.c.id == run_id)
                .with_for_update()).first()
            if found is None:
                return None
            before, task = found
            if before == RunState.QUEUED.value:
                conn.execute(runs.update().where(runs.c.id == run_id).values(
                    state=RunState.CANCELLED.value, cancel_requested=True, finished_at=now))
                tally = Tally()
                tally.finished(task, RunState.CANCELLED.value)
                tally.flush(conn)
            elif before == RunState.RUNNING.value:
                conn.execute(runs.update().where(runs.c.id == run_id).values(
                    cancel_requested=True))
            run = Run.from_row(
                conn.execute(sa.select(runs).where(runs.c.id == run_id)).mappings().one())
            if before == RunState.QUEUED.value:
                self.alerts.record(conn, run)
        return RunState(before), run

    def settle_lost(self, stale_before: datetime, dead_nodes: Sequence[str] = ()) -> list[Run]:
        """Settle runs left ``running`` by nodes that stopped heartbeating (or are known dead).

        Each is a failed attempt of type ``NodeLost``, retried like any failure.
        """
        alive = sa.select(nodes.c.id).where(
            nodes.c.heartbeat_at >= stale_before, nodes.c.stopped_at.is_(None)
        )
        condition = sa.or_(runs.c.node.is_(None), runs.c.node.not_in(alive))
        if dead_nodes:
            condition = sa.or_(condition, runs.c.node.in_(list(dead_nodes)))
        # The state as a literal: a generic plan then searches the running runs' index
        # (``IS_RUNNING``), where ``state = $1`` read through every run ever kept.
        lost_filter = (IS_RUNNING, condition)
        with self.db.read() as conn:
            # Every node asks at every heartbeat, and the answer is nearly always none: ask
            # with a read, and take the write lock only when there is something to settle.
            if conn.execute(sa.select(runs.c.id).where(*lost_filter).limit(1)).first() is None:
                return []
        settled: list[Run] = []
        tally = Tally()
        with self.db.write(lock=LOCK_CLAIM) as conn:
            lost = conn.execute(
                sa.select(runs).where(*lost_filter)
            ).mappings().all()
            for row in lost:
                run = Run.from_row(row)
                error = {"type": "NodeLost",
                         "message": f"node {run.node} stopped while running this attempt",
                         "traceback": None}
                values = settle_values(run, RunState.FAILED, None, error)
                updated = conn.execute(
                    runs.update()
                    .where(runs.c.id == run.id, runs.c.state == RunState.RUNNING.value)
                    .values(**values).returning(*runs.c)
                ).mappings().first()
                if updated is not None:
                    settled.append(Run.from_row(updated))
                    self.alerts.record(conn, settled[-1])
                    tally.node_lost(run.task)
                    if settled[-1].is_final:
                        tally.finished(run.task, RunState.FAILED.value)
            tally.flush(conn)
        return settled

    # -- logs and retention -----------------------------------------------------------------
    def logs(self, run_id: int, *, limit: int = 50, after_id: int | None = None) -> list[LogEntry]:
        query = (sa.select(run_logs.c.id, run_logs.c.at, run_logs.c.level, run_logs.c.message)
                 .where(run_logs.c.run_id == run_id).order_by(run_logs.c.id).limit(limit))
        if after_id is not None:
            query = query.where(run_logs.c.id > after_id)
        with self.db.read() as conn:
            return [LogEntry(*row) for row in conn.execute(query).all()]

    def prune(self, finished_before: datetime, batch: int = 500) -> int:
        """Delete finished runs (and their logs and alerts) older than the cut-off, in small
        batches so a big backlog never holds the write lock for long. A run whose alert is
        still pending is kept until the alert is delivered or given up."""
        total = 0
        while True:
            with self.db.write() as conn:
                ids = list(conn.execute(
                    sa.select(runs.c.id).where(
                        runs.c.state.in_(_values(FINAL_STATES)),
                        runs.c.finished_at < finished_before,
                        ~has_pending_alert(),
                    ).limit(batch)
                ).scalars())
                if not ids:
                    forget_misfire_marks(conn)
                    return total
                conn.execute(run_logs.delete().where(run_logs.c.run_id.in_(ids)))
                forget_alerts(conn, ids)
                conn.execute(runs.delete().where(runs.c.id.in_(ids)))
                total += len(ids)


def already_queued(run: Run) -> AlreadyQueued:
    """The error for a run refused because ``run`` holds its unique key; ``details`` names
    that run for HTTP clients, ``run`` is it for Python callers."""
    return AlreadyQueued(
        f"a run with unique key {run.unique_key!r} is already {run.state.value}: run {run.id}",
        details={"run_id": run.id, "unique_key": run.unique_key, "state": run.state.value},
        run=run)


# The dialects whose unique runs are held by a partial unique index (``INSERT … ON CONFLICT``
# naming it): the two this service runs on.
_CONFLICT_INSERTS: dict[str, Any] = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}


def refuse_past_queue_limit(conn: Connection, max_queued: int, adding: int = 1) -> None:
    """Raise QueueFull (in the writing transaction, before anything is written) when queuing
    ``adding`` more runs would leave more than ``max_queued`` waiting (MAX_QUEUED_RUNS)."""
    queued = _COUNT_QUEUED.scalar(conn, {})
    if queued + adding <= max_queued:
        return
    if adding == 1:
        raise QueueFull(f"{queued} runs are already queued (MAX_QUEUED_RUNS)")
    raise QueueFull(f"{queued} runs are queued and the batch adds {adding}; at most "
                    f"{max_queued} may wait (MAX_QUEUED_RUNS)")


@functools.cache
def insert_if_free(dialect: str, ordered: bool = False) -> Any:
    """``INSERT … ON CONFLICT (unique_key) WHERE <active> DO NOTHING RETURNING id``, built once
    per dialect: a held key inserts nothing and raises nothing, so the transaction (a group
    commit's, a scheduler pass's, a batch's) goes on. ``ordered`` (a batch whose ids are not
    known before its insert, ``store.batch``): the rows come back in the items' order, with
    their key, to say which rows came in."""
    insert = _CONFLICT_INSERTS.get(dialect)
    if insert is None:
        raise NotImplementedError(f"unique runs need SQLite or PostgreSQL, not {dialect}")
    statement = insert(runs).on_conflict_do_nothing(index_elements=[runs.c.unique_key],
                                                    index_where=ACTIVE_PREDICATE)
    if ordered:
        return statement.returning(runs.c.id, runs.c.unique_key, sort_by_parameter_order=True)
    return statement.returning(runs.c.id)


_ACTIVE_WITH_KEY = sa.select(runs).where(runs.c.unique_key == sa.bindparam("key"),
                                         ACTIVE_PREDICATE)


# A new run's errors, as every insert binds them; and a settled run's result when its task
# returned None (most do), as the JSON type stores it (``null``), without encoding it again.
_NO_ERRORS = EncodedJSON.of([])
_NO_RESULT = EncodedJSON.of(None)


def _bound(values: dict[str, Any], new: NewRun) -> dict[str, Any]:
    """A new run's ``values`` as its insert binds them: its kwargs as the JSON text their
    validation made (``NewRun.kwargs_json``) and its empty errors as a constant, not encoded
    again, inside the writer's turn, by the columns' JSON type: 12 µs of a run-now's insert
    in a worker, where caches are cold (bench/README.md). ``values`` itself keeps the values,
    for the run it returns."""
    kwargs = values["kwargs"] if new.kwargs_json is None else \
        EncodedJSON.made(new.kwargs_json, values["kwargs"])
    return {**values, "kwargs": kwargs, "errors": _NO_ERRORS}


def _insert_unique(conn: Connection, values: dict[str, Any]) -> int | Run:
    """Insert the run of ``values`` unless an active run holds its unique key: the new run's
    id, or the run holding the key.

    Never a read-then-write: the insert itself asks the index. On PostgreSQL an insert that
    meets a key another transaction is inserting waits for it; if that run has finished by the
    time it is read back (the key is free again), the insert is simply tried again."""
    statement = insert_if_free(conn.dialect.name)
    while True:
        run_id: int | None = conn.execute(statement, values).scalar()
        if run_id is not None:
            return run_id
        row = conn.execute(_ACTIVE_WITH_KEY, {"key": values["unique_key"]}).mappings().first()
        if row is not None:
            return Run.from_row(row)


def _write_progress(conn: Connection, run_id: int, done: float, total: float | None,
                    message: str | None) -> None:
    conn.execute(
        runs.update()
        .where(runs.c.id == run_id, runs.c.state == RunState.RUNNING.value)
        .values(progress_done=done, progress_total=total, progress_message=message))


def _log_rows(run_id: int, lines: Iterable[tuple[datetime, str, str]]) -> list[dict[str, Any]]:
    return [{"run_id": run_id, "at": at, "level": level, "message": message}
            for at, level, message in lines]


def _values(states: Iterable[RunState]) -> list[str]:
    return [s.value for s in states]


def _last_runs_query() -> sa.Select[Any]:
    """``last_runs``' statement, built once."""
    older = runs.alias("older")
    newest = (sa.select(sa.func.max(older.c.id)).where(older.c.job_id == jobs.c.id)
              .correlate(jobs).scalar_subquery())
    return (sa.select(runs).select_from(jobs.join(runs, runs.c.id == newest))
            .where(jobs.c.id.in_(sa.bindparam("job_ids", expanding=True)),
                   runs.c.created_at >= jobs.c.created_at))


_LAST_RUNS = _last_runs_query()
