"""Group commit: the small writes of a process's threads share one transaction and one
commit; each call returns once the transaction holding its operation committed.
The design: docs/ARCHITECTURE.md, "The store".
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Generic, TypeVar

from sqlalchemy.engine import Connection

from .db import LOCK_CLAIM, Database
from .stats import Tally

T = TypeVar("T")
_UNSET: Any = object()
Operation = Callable[[Connection, Tally], T]


class _Pending(Generic[T]):
    __slots__ = ("operation", "serialised", "done", "value", "error", "_wakeup")

    def __init__(self, operation: Operation[T], serialised: bool) -> None:
        self.operation = operation
        self.serialised = serialised
        self.done = False
        self.value: Any = _UNSET
        self.error: BaseException | None = None
        self._wakeup = threading.Lock()
        self._wakeup.acquire()

    def wait(self) -> None:
        """Block until this operation is done, or its thread is asked to lead the next batch."""
        self._wakeup.acquire()

    def wake(self) -> None:
        self._wakeup.release()


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
                self._queue.append(pending)
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
        process's turn to write comes (``Database.turn``): on SQLite, while the leader waited
        for the file another process was writing, and the more a transaction takes in, the
        fewer commits the file's one writer makes."""
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
        with self.db.turn():
            with self._mutex:
                room = self.max_batch - len(batch)
                batch.extend(self._queue[:room])
                del self._queue[:room]
            lock = LOCK_CLAIM if any(p.serialised for p in batch) else None
            with self.db.write(lock=lock) as conn:
                tally = Tally()
                values = [pending.operation(conn, tally) for pending in batch]
                tally.flush(conn)
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
