"""``RunThreads``: the threads a node's runs execute on, each handed its work directly.

Why not ``concurrent.futures.ThreadPoolExecutor``: its ``submit`` makes a ``Future`` (a
``Condition`` and its lock), puts a work item on a shared queue and asks a ``Semaphore`` whether
a thread is idle, and every run paid for it between its commit and its task's first line, where
a run-now request waits: 36 µs of the 126 µs there in a worker, and nobody read the ``Future``
(an error escaping the run's code was lost in it). Here an idle thread sleeps on a lock of its
own, and a hand-off is a list pop and that lock's release; a thread finishing its work takes
the next one waiting before it goes idle. The same guarantees: at most ``size`` threads, started
as they are first needed, every piece of work handed over runs, in order of hand-over when all
are busy, and ``shutdown`` lets the running ones finish.
"""

from __future__ import annotations

import atexit
import logging
import threading
import weakref
from collections import deque
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

Work = tuple[Callable[..., Any], tuple[Any, ...]]


class _Thread:
    """One thread of the pool: the work it was handed, and the lock it sleeps on when idle."""

    __slots__ = ("work", "wake")

    def __init__(self, work: Work | None) -> None:
        self.work = work
        self.wake = threading.Lock()
        self.wake.acquire()


class RunThreads:
    def __init__(self, size: int, name: str) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self.name = name
        self._lock = threading.Lock()
        self._idle: list[_Thread] = []
        self._waiting: deque[Work] = deque()  # handed over while every thread was busy
        self._threads: list[threading.Thread] = []
        self._closed = False
        _open.add(self)

    def submit(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on an idle thread, a new one while there are fewer than ``size``,
        or else on the first thread to finish its work. RuntimeError after ``shutdown``."""
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.name}: cannot take work after shutdown")
            if self._idle:
                idle = self._idle.pop()  # the one idle the shortest time: its caches are warm
                idle.work = (fn, args)
            else:
                self._waiting.append((fn, args))
                if len(self._threads) < self.size:
                    self._start_thread()
                return
        idle.wake.release()

    def shutdown(self, wait: bool = True) -> None:
        """Take no more work; idle threads end, busy ones once their work and any work
        waiting is done. ``wait``: return once every thread has ended."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
            threads = list(self._threads)
        for thread in idle:
            thread.work = None
            thread.wake.release()
        if wait:
            for started in threads:
                if started is not threading.current_thread():
                    started.join()

    def _start_thread(self) -> None:
        """Start a thread for the work waiting (with ``_lock`` held)."""
        thread = threading.Thread(target=self._serve, args=(_Thread(None),),
                                  name=f"{self.name}_{len(self._threads)}")
        self._threads.append(thread)
        thread.start()

    def _serve(self, me: _Thread) -> None:
        while True:
            work = self._next(me)
            if work is None:
                return
            fn, args = work
            try:
                fn(*args)
            except BaseException:
                # The runner settles every run itself; what escapes it is a bug, said here
                # rather than lost, and the thread goes on serving.
                log.exception("%s: work %r failed", threading.current_thread().name, fn)
            del work, fn, args  # not kept alive while idle

    def _next(self, me: _Thread) -> Work | None:
        """This thread's next work: what it was handed, what waits, or, once idle, what it is
        handed next. None: the pool is shut down."""
        work, me.work = me.work, None
        if work is not None:
            return work
        with self._lock:
            if self._waiting:
                return self._waiting.popleft()
            if self._closed:
                return None
            self._idle.append(me)
        me.wake.acquire()
        work, me.work = me.work, None
        return work


# Pools not shut down by their owner, closed as the interpreter exits (before it joins its
# threads, as ``concurrent.futures`` does for its own), so an idle thread never holds exit up.
_open: weakref.WeakSet[RunThreads] = weakref.WeakSet()


def _close_all() -> None:
    for pool in list(_open):
        pool.shutdown(wait=False)


getattr(threading, "_register_atexit", atexit.register)(_close_all)
