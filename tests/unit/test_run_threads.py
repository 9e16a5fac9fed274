"""RunThreads: the threads a node's runs execute on (scheduler/threads.py)."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from scheduler_app.scheduler.threads import RunThreads

WAIT = 5.0


def test_work_runs_on_a_named_thread_and_an_idle_thread_is_reused() -> None:
    pool = RunThreads(4, "run")
    seen: list[str] = []
    try:
        for _ in range(5):  # one after another: the one thread is idle each time
            done = threading.Event()
            pool.submit(lambda d=done: (seen.append(threading.current_thread().name), d.set()))
            assert done.wait(WAIT)
        assert seen == ["run_0"] * 5
    finally:
        pool.shutdown()


def test_at_most_size_threads_and_work_past_them_waits_for_one() -> None:
    pool = RunThreads(2, "run")
    release = threading.Event()
    started: list[int] = []
    names: set[str] = set()
    lock = threading.Lock()

    def work(n: int) -> None:
        with lock:
            started.append(n)
            names.add(threading.current_thread().name)
        release.wait(WAIT)

    try:
        for n in range(5):
            pool.submit(work, n)
        deadline = time.monotonic() + WAIT
        while len(started) < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)  # give a third thread, if one were made, the time to start work
        assert sorted(started) == [0, 1]  # two threads, busy; 2, 3 and 4 wait
        release.set()
    finally:
        pool.shutdown(wait=True)
    assert sorted(started[2:]) == [2, 3, 4]  # every piece of work ran
    assert names == {"run_0", "run_1"}


def test_work_waiting_for_a_thread_runs_in_the_order_it_was_handed_over() -> None:
    pool = RunThreads(1, "run")
    release = threading.Event()
    order: list[int] = []
    try:
        pool.submit(lambda: (release.wait(WAIT), order.append(0)))
        for n in range(1, 5):
            pool.submit(order.append, n)
        release.set()
    finally:
        pool.shutdown(wait=True)
    assert order == [0, 1, 2, 3, 4]


def test_an_error_escaping_the_work_is_logged_and_the_thread_goes_on(
        caplog: pytest.LogCaptureFixture) -> None:
    pool = RunThreads(1, "run")
    done = threading.Event()

    def broken() -> None:
        raise RuntimeError("boom")

    try:
        with caplog.at_level(logging.ERROR, logger="scheduler_app.scheduler.threads"):
            pool.submit(broken)
            pool.submit(done.set)
            assert done.wait(WAIT)
    finally:
        pool.shutdown()
    failed = [r for r in caplog.records if r.exc_info is not None]
    assert len(failed) == 1 and "boom" in str(failed[0].exc_info[1])


def test_shutdown_finishes_work_in_hand_ends_every_thread_and_refuses_more() -> None:
    pool = RunThreads(3, "run")
    release = threading.Event()
    finished: list[int] = []
    for n in range(3):
        pool.submit(lambda n=n: (release.wait(WAIT), finished.append(n)))
    idle_done = threading.Event()
    threads_before = {t.name for t in threading.enumerate()}
    assert {"run_0", "run_1", "run_2"} <= threads_before

    stopper = threading.Thread(target=pool.shutdown, kwargs={"wait": True})
    stopper.start()
    time.sleep(0.05)
    assert stopper.is_alive(), "shutdown(wait=True) returned with work still running"
    release.set()
    stopper.join(WAIT)
    assert not stopper.is_alive()
    assert sorted(finished) == [0, 1, 2]
    assert not [t for t in threading.enumerate() if t.name.startswith("run_")]
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(idle_done.set)
    assert not idle_done.is_set()


def test_shutdown_ends_idle_threads() -> None:
    pool = RunThreads(2, "run")
    done = threading.Event()
    pool.submit(done.set)
    assert done.wait(WAIT)
    pool.shutdown(wait=True)
    assert not [t for t in threading.enumerate() if t.name.startswith("run_")]


def test_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="size"):
        RunThreads(0, "run")
