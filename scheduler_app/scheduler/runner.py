"""The runner: executes runs on a bounded thread pool. It claims queued runs (only as many as it
has free threads, and only of the tasks registered in this process), or is handed a run already
written claimed by this node into a thread it reserved; it runs each task in the app's context
and settles its outcome."""

from __future__ import annotations

import logging
import threading
import traceback
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol

from flask import Flask

from ..logs import bind_run, install_run_log_handler
from ..store import EncodedJSON, NextClaim, Run, RunState, Store
from ..store.claim import unlimited_tasks
from ..tasks import (
    ArgumentError,
    Cancelled,
    RunContext,
    Task,
    TaskRegistry,
    UnknownTask,
    registry,
)
from ..tasks.context import set_current_run
from ..timeutil import utcnow
from .isolation import ProcessIsolation
from .threads import RunThreads

log = logging.getLogger(__name__)

# How many runs named by wake-ups a finishing run's thread tries to take over, by id, in its
# settle's transaction (some may have been taken by another node since).
NAMED_PER_HANDOVER = 4
# How many named runs wait for a free thread at most; past it, the oldest are dropped and the
# next full look at the queue finds them.
MAX_OFFERED = 1024

CANCEL_USER = "cancelled"
CANCEL_TIMEOUT = "timeout"
CANCEL_SHUTDOWN = "shutdown"


class RunEvents(Protocol):
    """What the runner tells its owner (the node): given to the runner when it is built."""

    def run_started(self) -> None:
        """A run was handed to a thread. Must not block."""

    def run_settled(self, run: Run) -> None:
        """A run's outcome was written (ended, or re-queued for a retry). Must not block."""


@dataclass
class _Active:
    run: Run
    ctx: RunContext
    deadline: Any  # datetime | None
    # Held from taking a run's pending log lines until they are committed, by the tick's
    # flush and by the finish alike: without it, lines the finish took after the tick's could
    # commit first, and the run's log (read in insert order) would read out of order.
    writing: threading.Lock = field(default_factory=threading.Lock)
    # False for a run written already started whose queue wait its settle is to count.
    wait_counted: bool = True
    # Its kwargs as validated by its request (run now), for the task's call; None: validate.
    arguments: dict[str, Any] | None = None


@dataclass(frozen=True)
class _Registered:
    """A runner's view of its tasks at one registry version (``limits`` is never changed)."""

    version: int
    names: frozenset[str]
    limits: dict[str, int]
    unlimited: frozenset[str]


class Runner:
    def __init__(self, app: Flask, store: Store, node_id: str, capacity: int, *,
                 poll_seconds: float, max_log_lines: int, events: RunEvents,
                 tasks: TaskRegistry = registry,
                 isolation: ProcessIsolation | None = None) -> None:
        """``tasks``: the tasks this runner executes (this process's registry); it claims
        runs of those only. ``isolation``: where runs of process-isolated tasks execute (None:
        every run on a thread here)."""
        self.app = app
        self.tasks = tasks
        self.store = store
        self.node_id = node_id
        self.capacity = capacity
        self.poll_seconds = poll_seconds
        self.max_log_lines = max_log_lines
        self.events = events
        self.isolation = isolation
        self._active: dict[int, _Active] = {}
        self._reserved = 0  # threads promised by reserve() or to a claim in progress
        self._registered_tasks: _Registered | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        # Whether queued runs may be waiting: the last queue read found some, or a run was
        # queued here since. A finished run wakes the dispatcher only then.
        self._backlog = True
        # Runs named by wake-ups since the dispatcher last looked (``offer``), and whether a
        # full look was asked for too (``wake``).
        self._offered: list[int] = []
        self._asked = False
        self._accepting = False
        self._stopped = threading.Event()
        self._pool: RunThreads | None = None
        self._thread: threading.Thread | None = None
        # How many times the dispatcher has looked and gone to sleep (tests wait for its
        # first look, after which only a wake-up or the poll makes it look again).
        self.looks = 0

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        install_run_log_handler()
        self._pool = RunThreads(self.capacity, "run")
        self._accepting = True
        self._stopped.clear()
        self._thread = threading.Thread(target=self._dispatch_loop, name="run-dispatcher",
                                        daemon=True)
        self._thread.start()
        if self.isolation is not None:
            self.isolation.open()
            if self.isolation.default == "process":
                self.isolation.warm_up()  # else the first isolated run starts the helper

    def stop(self, grace: float) -> None:
        """Stop claiming, ask running tasks to stop, wait up to ``grace`` seconds, then hand
        every unfinished run back to the queue for another node (or the next start)."""
        self._accepting = False
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        for active in self.active():
            active.ctx.request_cancel(CANCEL_SHUTDOWN)
        pool = self._pool
        if pool is not None:
            done = threading.Event()

            def drain() -> None:
                pool.shutdown(wait=True)
                done.set()

            threading.Thread(target=drain, name="run-drain", daemon=True).start()
            done.wait(timeout=grace)
        for active in self.active():
            self.flush(active)
            if self.store.runs.hand_back(active.run.id, self.node_id):
                log.warning("run %s handed back: still running at shutdown", active.run.id,
                            extra={"run_id": active.run.id})
        if self.isolation is not None:
            self.isolation.close()

    def wake(self) -> None:
        """Look at the queue now: a full claim, as at a poll."""
        self._backlog = True
        self._asked = True
        self._wake.set()

    def offer(self, run_id: int, task_name: str) -> None:
        """A node (this one, or another) queued run ``run_id`` of ``task_name``, due now and
        free of every limit (no concurrency key, no rate limit). With a thread free, the
        dispatcher takes it by its id, one statement that the nodes that lose the race skip
        at once, instead of a full claim on every node for one run; without, the next thread
        to free up takes it over in its run's settle. A task this node does not run is left
        to the others; one it caps (``max_running``, maybe not capped where the run was
        queued) gets a full look."""
        if task_name not in self.tasks:
            return
        if self.tasks.get(task_name).max_running is not None:
            self.wake()
            return
        with self._lock:
            self._offered.append(run_id)
            if len(self._offered) > MAX_OFFERED:
                del self._offered[:-MAX_OFFERED]
                self._backlog = True  # the next full look finds the ones dropped
        self._wake.set()

    # -- what the node's maintenance loop calls ---------------------------------------------
    def active(self) -> list[_Active]:
        with self._lock:
            return list(self._active.values())

    @property
    def running(self) -> int:
        return len(self._active)

    def signal_cancel(self, run_id: int, reason: str = CANCEL_USER) -> bool:
        with self._lock:
            active = self._active.get(run_id)
        if active is None:
            return False
        active.ctx.request_cancel(reason)
        return True

    def enforce_timeouts(self) -> None:
        now = utcnow()
        for active in self.active():
            if active.deadline is not None and now >= active.deadline:
                active.ctx.request_cancel(CANCEL_TIMEOUT)

    def flush(self, active: _Active) -> None:
        """Write a run's pending progress and log lines (throttled by the caller's cadence)."""
        with active.writing:
            progress = active.ctx.take_progress()
            if progress is not None:
                self.store.runs.save_progress(active.run.id, progress.done, progress.total,
                                              progress.message)
            lines = active.ctx.take_logs()
            if lines:
                self.store.runs.add_logs(active.run.id, [(ln.at, ln.level, ln.message)
                                                         for ln in lines])

    def flush_all(self) -> None:
        self._count_started_waits()
        for active in self.active():
            try:
                self.flush(active)
            except Exception:
                log.exception("could not save progress of run %s", active.run.id)

    def _count_started_waits(self) -> None:
        """Count the queue waits of the runs written already started (run now) whose settle
        has not counted them yet, in one write: a long run's wait is in the metrics within a
        tick of its start, a short one's comes with its settle."""
        uncounted = []
        for active in self.active():
            with active.writing:  # the settle decides under it too
                if not active.wait_counted:
                    active.wait_counted = True
                    uncounted.append(active.run)
        try:
            self.store.runs.count_waits(uncounted)
        except Exception:
            log.exception("could not count the queue waits of runs %s",
                          [run.id for run in uncounted])

    # -- dispatching ------------------------------------------------------------------------
    def _dispatch_loop(self) -> None:
        woken = False
        due: datetime | None = None  # when the next queued run is due, as last read
        while not self._stopped.is_set():
            self._wake.clear()
            with self._lock:
                offered, self._offered = self._offered, []
                asked, self._asked = self._asked, False
            timeout = self.poll_seconds
            free = claimed = 0
            try:
                looked = self._free() > 0
                named_only = woken and bool(offered) and not asked
                if named_only:
                    # Woken only for runs named by other nodes: take those by their ids; the
                    # queue was not read, so the sleep below is the last read's.
                    free, claimed = self._claim_offered(offered)
                elif looked and woken:
                    # Woken (runs were queued, here or on another node): claim at once, with
                    # no read first of what is due; the next due time is read after.
                    free, claimed = self._claim(look_first=False)
                    due = self.store.runs.next_due_time() if claimed < free else utcnow()
                else:
                    # One read decides both whether to claim (only then take the write lock)
                    # and how long to sleep until the next queued run is due.
                    due = self.store.runs.next_due_time() if looked else None
                    if due is not None and due <= utcnow():
                        free, claimed = self._claim()
                        if claimed < free:
                            due = self.store.runs.next_due_time()  # what is left after it
                if looked and not named_only:
                    # Queued runs left (found here, maybe queued by another node): a thread
                    # freeing up comes back for them at once, not at the next poll.
                    self._backlog = due is not None
                # Sleep until the next run is due; a due run held back (max_running, taken by
                # another node) waits for a wake-up or the poll, never a busy loop.
                if due is not None and due > utcnow():
                    timeout = min(timeout, (due - utcnow()).total_seconds())
            except Exception:
                log.exception("run dispatcher: database error; retrying")
            if free > 0 and claimed == free:
                continue
            self.looks += 1
            woken = self._wake.wait(timeout)

    def _free(self) -> int:
        with self._lock:
            return self._free_locked()

    def _free_locked(self) -> int:
        if not self._accepting:
            return 0
        return max(0, self.capacity - len(self._active) - self._reserved)

    def _claim_offered(self, offered: list[int]) -> tuple[int, int]:
        """Take the named runs by id, as many as there are free threads; return (free,
        claimed). Runs left over for want of a thread are looked for when one frees up."""
        wanted = list(dict.fromkeys(offered))
        with self._lock:
            free = self._free_locked()
            taking = min(free, len(wanted))
            self._reserved += taking
        started: list[Run] = []
        uncounted: list[Run] = []
        try:
            unlimited = self._unlimited_task_names()
            for run_id in wanted[:taking]:
                run, counted = self.store.runs.claim_named(run_id, self.node_id, unlimited)
                if run is not None:
                    self._submit(run, reserved=True)
                    started.append(run)
                    if not counted:
                        uncounted.append(run)
        finally:
            with self._lock:
                self._reserved -= taking - len(started)
                # The rest wait for a thread: the next to free up (a finishing run's takes
                # them over in its settle) or the next look.
                self._offered[:0] = wanted[taking:]
        try:
            self.store.runs.count_waits(uncounted)
        except Exception:
            log.exception("could not count the queue waits of runs %s",
                          [run.id for run in uncounted])
        return free, len(started)

    def _claim(self, look_first: bool = True) -> tuple[int, int]:
        """Claim as many due runs as there are free threads; return (free, claimed).

        The free threads are reserved for the claim only, not for the read before it, so a
        ``reserve()`` on another thread cannot take one of them meanwhile and push this node
        past its capacity, yet is not turned away while the dispatcher merely looks."""
        with self._lock:
            free = self._free_locked()
            self._reserved += free
        runs: list[Run] = []
        try:
            if free > 0:
                runs = self.store.runs.claim(self.node_id, free, self.task_limits(),
                                             tasks=self.task_names(), look_first=look_first)
            for run in runs:
                self._submit(run, reserved=True)
        finally:
            with self._lock:
                self._reserved -= free - len(runs)
        return free, len(runs)

    def task_names(self) -> frozenset[str]:
        """The names of the tasks this runner executes, as registered now (a task module may
        be imported after the node started)."""
        return self._registered().names

    def _unlimited_task_names(self) -> frozenset[str]:
        return self._registered().unlimited

    def task_limits(self) -> dict[str, int]:
        """Each task's ``max_running``, for those that have one (counted by the claim)."""
        return dict(self._registered().limits)

    def _registered(self) -> _Registered:
        """The tasks as registered now, derived again only after a registration (the
        registry's version), not at every settle that claims."""
        known = self._registered_tasks
        version = self.tasks.version  # read first: a registration meanwhile is seen next time
        if known is None or known.version != version:
            tasks = self.tasks.all()
            limits = {t.name: t.max_running for t in tasks if t.max_running is not None}
            names = frozenset(t.name for t in tasks)
            known = self._registered_tasks = _Registered(
                version, names, limits, unlimited_tasks(names, limits))
        return known

    # -- the fast path: a run written already claimed by this node ----------------------------
    def reserve(self) -> bool:
        """Promise a free thread to a run about to be written claimed by this node (a run-now
        request, a scheduler pass). False when none is free. A reservation ends with
        ``start_reserved`` (the run was written) or ``release`` (it was not)."""
        with self._lock:
            if self._free_locked() == 0:
                return False
            self._reserved += 1
            return True

    def release(self) -> None:
        """Give back a reserved thread that no run came to."""
        with self._lock:
            self._reserved -= 1

    def start_reserved(self, run: Run, wait: float = 0.0, wait_counted: bool = True,
                       arguments: dict[str, Any] | None = None) -> None:
        """Start ``run`` (written claimed by this node) on the thread reserved for it.

        ``wait``: on a node running nothing else, return once the run's thread has begun,
        or after that many seconds. A caller about to answer its request (run now) gives the
        run's thread the interpreter first, as ``threading.Thread.start`` does, so the task
        starts before the answer is built rather than after it. On a busy node the answer is
        not held back: each wait costs a thread switch, which under load is throughput.
        ``wait_counted``: False when the run's queue wait was not counted as it was written
        (its settle counts it). ``arguments``: its kwargs as already validated."""
        self._submit(run, reserved=True, wait=wait, wait_counted=wait_counted,
                     arguments=arguments)

    def _submit(self, run: Run, reserved: bool = False, wait: float = 0.0,
                wait_counted: bool = True, arguments: dict[str, Any] | None = None) -> None:
        ctx = self._track(run, reserved, wait_counted=wait_counted, arguments=arguments)
        assert self._pool is not None
        began = _began() if wait > 0 and len(self._active) == 1 else None
        self._pool.submit(self._execute, run, ctx, began)
        if began is not None:
            began.acquire(timeout=wait)
        # After the wait: a nudge wakes the node's maintenance thread, which would compete
        # with the run's own start for the interpreter.
        self.events.run_started()

    def _track(self, run: Run, reserved: bool, replacing: int | None = None,
               wait_counted: bool = True, arguments: dict[str, Any] | None = None
               ) -> RunContext:
        """Count ``run`` as running here (on a reserved thread, or on the thread of the run
        ``replacing``, which it takes over) and give it its context."""
        ctx = RunContext(run.id, run.task, run.attempt, max_log_lines=self.max_log_lines)
        if run.cancel_requested:
            ctx.request_cancel(CANCEL_USER)
        deadline = None
        if run.timeout is not None and run.started_at is not None:
            deadline = run.started_at + timedelta(seconds=run.timeout)
        with self._lock:
            if replacing is not None:
                self._active.pop(replacing, None)
            self._active[run.id] = _Active(run, ctx, deadline, wait_counted=wait_counted,
                                           arguments=arguments)
            if reserved:
                self._reserved -= 1
        return ctx

    def _execute(self, run: Run, ctx: RunContext, began: threading.Lock | None = None
                 ) -> None:
        """Execute ``run`` and settle it; while queued runs wait, each settle claims the next
        one in its transaction and this thread executes it too. ``began``: set first thing,
        for a caller waiting for this thread to begin (``start_reserved``)."""
        if began is not None:
            began.release()
        following: tuple[Run, RunContext] | None = (run, ctx)
        while following is not None:
            following = self._execute_one(*following)

    def _execute_one(self, run: Run, ctx: RunContext) -> tuple[Run, RunContext] | None:
        """One run on this thread; the next run this thread takes over, if its settle claimed
        one."""
        extra = {"run_id": run.id, "job_id": run.job_id, "task": run.task, "node": self.node_id}
        log.debug("run %s started (attempt %s)", run.id, run.attempt, extra=extra)
        with self._lock:
            active = self._active.get(run.id)
        with bind_run(**extra):  # the task's own log lines name the run too
            state, result, error = self._call_task(
                run, ctx, None if active is None else active.arguments)
        following: tuple[Run, RunContext] | None = None
        try:
            if state is None:  # stopped by shutdown: not this attempt's fault
                if active is not None:
                    self.flush(active)
                self.store.runs.hand_back(run.id, self.node_id)
                settled = None
            else:
                # After any flush of this run in flight has committed, so its last lines
                # follow the ones the tick took before them.
                claim_next = self._next_claim()
                try:
                    with active.writing if active is not None else nullcontext():
                        progress = ctx.take_progress()
                        handover = self.store.runs.finish_and_claim(
                            run.id, self.node_id, state, result=result, error=error,
                            progress=None if progress is None else (
                                progress.done, progress.total, progress.message),
                            logs=[(ln.at, ln.level, ln.message) for ln in ctx.take_logs()],
                            claim_next=claim_next,
                            started=None if active is None else active.run,
                            count_wait=active is not None and not active.wait_counted)
                        if active is not None:
                            active.wait_counted = True  # a tick must not count it again
                except BaseException:
                    if claim_next is not None:
                        self._offer_again(claim_next.named, claim_next.any_due)
                    raise
                settled, claimed = handover.settled, handover.claimed
                if claimed is not None:
                    # The thread passes from the settled run to the claimed one: the place
                    # is never free in between, so the node stays within its capacity.
                    following = claimed, self._track(claimed, False, replacing=run.id)
                    if not self._accepting:
                        # Stopping began while it was claimed: ``stop`` may have asked the
                        # running runs to stop already, so it goes back to the queue unrun.
                        following = None
                        try:
                            self.store.runs.hand_back(claimed.id, self.node_id)
                        finally:
                            with self._lock:
                                self._active.pop(claimed.id, None)
                if claim_next is not None:
                    self._offer_again(claim_next.named[handover.tried:], False)
                if claimed is None and claim_next is not None and claim_next.any_due:
                    # Nothing was due for this thread as of that transaction: the dispatcher
                    # would find nothing either (a run queued since wakes it on its own).
                    self._backlog = False
        except Exception:
            log.exception("could not record the outcome of run %s", run.id, extra=extra)
            settled = None
        finally:
            # The run holds its place until its outcome is written: while the database says
            # "running", it counts against this node's capacity (a run accepted the moment
            # the task returned would make the node look over capacity in the runs' times).
            if following is None:
                with self._lock:
                    self._active.pop(run.id, None)
                if self._backlog or self._offered:
                    self._wake.set()
        if settled is not None:
            if settled.state is RunState.FAILED and settled.error:
                log.warning("run %s failed: %s: %s", run.id, settled.error.get("type"),
                            settled.error.get("message"), extra=extra)
            else:
                log.info("run %s %s", run.id, settled.state.value, extra=extra)
            self.events.run_settled(settled)
        if following is not None:
            self.events.run_started()
        return following

    def _next_claim(self) -> NextClaim | None:
        """What a settle needs to claim the next run for its thread, while this runner takes
        runs: the runs named by wake-ups not taken yet (a few, tried by id in turn), and a
        full look when queued runs may be waiting (the last look at the queue found some, or
        runs were queued since). None when there is neither."""
        if not self._accepting:
            return None
        with self._lock:
            named = tuple(self._offered[:NAMED_PER_HANDOVER])
            del self._offered[:NAMED_PER_HANDOVER]
        if not named and not self._backlog:
            return None
        known = self._registered()
        return NextClaim(known.names, known.limits, named, self._backlog)

    def _offer_again(self, named: tuple[int, ...], look: bool) -> None:
        """Put back the named runs a handover did not try (first in line again), and wake the
        dispatcher for them, or for a full look, if a thread is free."""
        if named:
            with self._lock:
                self._offered[:0] = named
        if look:
            self._backlog = True
        if named or look:
            self._wake.set()

    def _call_task(self, run: Run, ctx: RunContext, arguments: dict[str, Any] | None = None
                   ) -> tuple[RunState | None, Any, Any]:
        task = None
        if self.isolation is not None and run.task in self.tasks:
            task = self.tasks.get(run.task)
            if self.isolation.applies_to(task):
                return self.isolation.run(run, ctx, task)
        return call_task(self.app, run, ctx, self.tasks, arguments, task)


def call_task(app: Flask, run: Run, ctx: RunContext, tasks: TaskRegistry = registry,
              arguments: dict[str, Any] | None = None, task: Task | None = None
              ) -> tuple[RunState | None, Any, Any]:
    """One attempt of ``run``: its task (from ``tasks``, unless the caller looked it up
    already: ``task``) called inside ``app``'s app context (torn down after). Returns the
    outcome (state, result, error); state None: stopped by a shutdown. ``arguments``: its
    kwargs as its request validated them (run now); None: validated here, from what the row
    holds."""
    set_current_run(ctx)
    try:
        if task is None:
            task = tasks.get(run.task)
        kwargs = task.validate(run.kwargs) if arguments is None else arguments
        with app.app_context():
            value = task.fn(ctx, **kwargs)
        result = _jsonable(value)
        if ctx.cancel_reason in (CANCEL_USER, CANCEL_TIMEOUT):
            ctx.record_log("WARNING", _stop_ignored(run, ctx))
        return RunState.SUCCEEDED, result, None
    except UnknownTask as exc:
        return RunState.FAILED, None, _error("UnknownTask", str(exc), None)
    except ArgumentError as exc:
        return RunState.FAILED, None, _error("InvalidArguments", str(exc), None)
    except ResultNotJSON as exc:
        return RunState.FAILED, None, _error("ResultNotJSON", str(exc), None)
    except BaseException as exc:
        reason = ctx.cancel_reason
        if reason == CANCEL_SHUTDOWN:
            return None, None, None
        if reason == CANCEL_TIMEOUT:
            return RunState.FAILED, None, _error(
                "Timeout", f"run exceeded its timeout of {run.timeout} s",
                traceback.format_exc())
        if reason == CANCEL_USER or isinstance(exc, Cancelled):
            return RunState.CANCELLED, None, None
        if not isinstance(exc, Exception):
            raise
        return RunState.FAILED, None, _error(type(exc).__name__, str(exc),
                                             traceback.format_exc())
    finally:
        set_current_run(None)


def _began() -> threading.Lock:
    """A lock held until a run's thread begins, which releases it: what a caller waiting for
    that (``start_reserved``) acquires. A plain lock, not an ``Event``, whose ``set`` and
    ``wait`` go through a ``Condition`` on both threads, on the way to a run's first line."""
    began = threading.Lock()
    began.acquire()
    return began


def _stop_ignored(run: Run, ctx: RunContext) -> str:
    """The run's last log line when its task returned normally after it was asked to stop: a
    thread cannot be stopped, so the run ends succeeded with its result, and says why."""
    late = ctx.seconds_since_cancel or 0.0
    asked = (f"its timeout of {run.timeout} s passed" if ctx.cancel_reason == CANCEL_TIMEOUT
             else "it was asked to cancel")
    return (f"{asked}, but the task did not look at its context and ended on its own "
            f"{late:.1f} s later: a run on a thread cannot be stopped, so it succeeded and "
            f"its result is kept (isolation=\"process\" stops such a task)")


class ResultNotJSON(TypeError):
    """A task returned a value that JSON cannot carry."""


def _jsonable(value: Any) -> EncodedJSON | None:
    """The task's return value encoded, once: the settle writes this text as it is."""
    if value is None:  # most tasks return nothing
        return None
    try:
        return EncodedJSON.of(value)
    except (TypeError, ValueError) as exc:
        raise ResultNotJSON(f"the task's return value is not JSON: {exc}") from None


def _error(kind: str, message: str, tb: str | None) -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": tb}
