"""Group commit: the small writes of a process's threads share one transaction and one
commit; each call returns once the transaction holding its operation committed.
The design: docs/ARCHITECTURE.md, "The store".
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from .db import LOCK_CLAIM, Database, current_pid
from .stats import Tally

T = TypeVar("T")
_UNSET: Any = object()
Operation = Callable[[Connection, Tally], T]


class _LockSignal:
    """One wake-up from another thread, on a lock: where the platform has no eventfd."""

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wait(self) -> None:
        self._lock.acquire()

    def send(self) -> None:
        self._lock.release()


class _ThreadEventfd:
    """The eventfd one thread of one process sleeps on while its operation waits: made at the
    thread's first operation, closed once neither the thread nor a signal holds it. Not one per
    operation: an eventfd made and closed for each cost 30-40 µs of CPU in a busy worker, more
    than the write it carries (an idle process makes one in 1 µs)."""

    __slots__ = ("fd", "pid")

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_CLOEXEC)
        self.pid = current_pid()

    def __del__(self) -> None:
        os.close(self.fd)


_thread_eventfd = threading.local()


class _EventfdSignal:
    """One wake-up from another thread, on the waiting thread's eventfd (Linux). Why not a
    lock: a lock's release keeps the GIL while the kernel wakes the sleeper, and the sleeper,
    woken on the waker's core, often takes it over, so the process's GIL stays held by a thread
    that is not running. Writing to an eventfd lets go of the GIL around the system call. A
    leader waking its followers this way: a wake-up 55 µs on average → gone from the GIL's
    profile; draining 10,000 queued runs 5 % faster (bench/README.md). Past its first
    operation (which makes its eventfd), a thread that never waits (an idle node's, leading
    alone) makes no system call, as with a lock."""

    __slots__ = ("_owned",)

    def __init__(self) -> None:
        owned = getattr(_thread_eventfd, "owned", None)
        if owned is None or owned.pid != current_pid():  # first here, or a forked child
            owned = _thread_eventfd.owned = _ThreadEventfd()
        self._owned = owned

    def wait(self) -> None:
        try:
            os.eventfd_read(self._owned.fd)
        except BaseException:
            # Interrupted: this operation's wake-up may still come, and must not wake the
            # thread's next one, which sleeps on a new eventfd (this one is closed once the
            # operation that may still be woken is dropped).
            _thread_eventfd.owned = None
            raise

    def send(self) -> None:
        os.eventfd_write(self._owned.fd, 1)


_Signal: type[_LockSignal] | type[_EventfdSignal] = (
    _EventfdSignal if hasattr(os, "eventfd") else _LockSignal)


class _Pending(Generic[T]):
    __slots__ = ("operation", "serialised", "done", "value", "error", "_wakeup")

    def __init__(self, operation: Operation[T], serialised: bool) -> None:
        self.operation = operation
        self.serialised = serialised
        self.done = False
        self.value: Any = _UNSET
        self.error: BaseException | None = None
        # Made by ``queue`` for an operation that waits: a leader (most operations of an idle
        # node's) never does.
        self._wakeup: _LockSignal | _EventfdSignal | None = None

    def queue(self, queue: list[_Pending[Any]]) -> None:
        """Join ``queue`` (the group's, with its mutex held), ready to be woken."""
        self._wakeup = _Signal()
        queue.append(self)

    def wait(self) -> None:
        """Block until this operation is done, or its thread is asked to lead the next batch."""
        assert self._wakeup is not None
        self._wakeup.wait()

    def wake(self) -> None:
        assert self._wakeup is not None
        self._wakeup.send()


class GroupCommit:
    def __init__(self, db: Database, max_batch: int = 64) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.db = db
        self.max_batch = max_batch
        self._mutex = threading.Lock()
        self._queue: list[_Pending[Any]] = []
        self._committing = False
        self.batches = 0  # how many transactions were committed (for tests and the bench)
        self.operations = 0

    def run(self, operation: Operation[T], *, serialised: bool = False) -> T:
        """Run ``operation(conn, tally)`` in a committed write transaction; return its value.

        The operation may share the transaction with other threads' operations. It must only
        read and write through the connection it is given, raise before it writes when it
        refuses (``QueueFull``), and never call ``run`` itself. If any operation of a batch
        raises, the batch is rolled back and each operation retried alone, so a failure
        reaches only its own caller.

        ``serialised``: the operation reads then writes and must be atomic with other such
        writers across hosts (PostgreSQL's ``LOCK_CLAIM`` advisory lock; on SQLite every write
        transaction is already exclusive).

        Each waiting thread is woken exactly once: when its operation is done, or, if it is
        first in line when a batch ends, to lead the next batch itself (the leadership is
        handed over, so no thread ever polls or races for it).
        """
        pending: _Pending[T] = _Pending(operation, serialised)
        with self._mutex:
            leading = not self._committing
            if leading:
                self._committing = True
            else:
                pending.queue(self._queue)
        if not leading:
            pending.wait()
        if not pending.done:
            self._lead(pending)
        if pending.error is not None:
            raise pending.error
        return pending.value  # type: ignore[no-any-return]

    def _lead(self, pending: _Pending[Any]) -> None:
        batch = [pending]
        try:
            self._commit(batch)
        finally:
            for follower in batch[1:]:
                follower.wake()
            with self._mutex:
                if self._queue:
                    self._queue.pop(0).wake()  # it leads the next batch
                else:
                    self._committing = False

    def _commit(self, batch: list[_Pending[Any]]) -> None:
        """Commit ``batch`` (its leader) with the operations queued by the time this
        process's turn to write comes (``Database.write_in_turn``): on SQLite, while the
        leader waited for the file another process was writing, and the more a transaction
        takes in, the fewer commits the file's one writer makes."""
        try:
            try:
                values = self._together(batch)
            except Exception as exc:
                if len(batch) == 1:
                    batch[0].error = exc
                    return
                for pending in batch:  # one failed: each again alone, so it fails alone
                    self._alone(pending)
                return
            for pending, value in zip(batch, values, strict=True):
                pending.value = value
        finally:
            for pending in batch:
                if pending.value is _UNSET and pending.error is None:
                    # Only when something beyond Exception (an interrupt) stopped the leader:
                    # its followers must not wait for ever.
                    pending.error = RuntimeError("the group commit was interrupted")
                pending.done = True

    def _together(self, batch: list[_Pending[Any]]) -> list[Any]:
        def gather() -> int | None:
            with self._mutex:
                room = self.max_batch - len(batch)
                batch.extend(self._queue[:room])
                del self._queue[:room]
            for pending in batch:
                if pending.serialised:
                    return LOCK_CLAIM
            return None

        def operate(conn: Connection) -> list[Any]:
            tally = Tally()
            values = [pending.operation(conn, tally) for pending in batch]
            tally.flush(conn)
            return values

        values = self.db.write_in_turn(gather, operate)
        self._count(len(batch))
        return values

    def _alone(self, pending: _Pending[Any]) -> None:
        try:
            with self.db.write(lock=LOCK_CLAIM if pending.serialised else None) as conn:
                tally = Tally()
                pending.value = pending.operation(conn, tally)
                tally.flush(conn)
            self._count(1)
        except Exception as exc:
            pending.value = _UNSET
            pending.error = exc

    def _count(self, operations: int) -> None:
        self.batches += 1
        self.operations += operations
