"""The run context a task receives: progress is validated, cheap, and read once per change."""

from __future__ import annotations

import threading
import time

import pytest

from scheduler_app.tasks import Cancelled, RunContext
from tests.conftest import wait_for


@pytest.mark.parametrize("args, error", [
    (("a",), TypeError), ((True,), TypeError), ((float("nan"),), ValueError),
    ((1, float("inf")), ValueError), ((1, "10"), TypeError), ((1, 2, 3), TypeError)])
def test_bad_progress_is_refused(args, error):
    ctx = RunContext(1, "t.t", 1)
    with pytest.raises(error):
        ctx.progress(*args)
    assert ctx.take_progress() is None


def test_latest_progress_is_taken_once():
    ctx = RunContext(1, "t.t", 1)
    assert ctx.take_progress() is None
    for step in range(1, 101):
        ctx.progress(step, 100, f"step {step}")
    taken = ctx.take_progress()
    assert (taken.done, taken.total, taken.percent, taken.message) == (100.0, 100.0, 100.0,
                                                                       "step 100")
    assert ctx.take_progress() is None
    ctx.progress(5)
    assert ctx.take_progress().percent is None


def test_cancel_is_seen_and_the_first_reason_wins():
    ctx = RunContext(1, "t.t", 1)
    assert not ctx.cancelled
    ctx.request_cancel("timeout")
    ctx.request_cancel("cancelled")
    assert ctx.cancelled and ctx.cancel_reason == "timeout"
    with pytest.raises(Cancelled):
        ctx.check_cancelled()
    with pytest.raises(Cancelled):
        ctx.sleep(5)


def test_a_cancel_wakes_a_sleeping_task_at_once_and_a_later_sleep_raises():
    """The sleep's event is made by the first sleep: a cancel from another thread while the
    task sleeps wakes it (not the sleep's end), and every sleep after raises at once."""
    ctx = RunContext(1, "t.t", 1)
    ctx.sleep(0)  # nothing asked yet: returns
    woke: list[float] = []

    def sleeper() -> None:
        started = time.monotonic()
        try:
            ctx.sleep(30)
        except Cancelled:
            woke.append(time.monotonic() - started)

    thread = threading.Thread(target=sleeper)
    thread.start()
    wait_for(lambda: ctx._cancel_event is not None, message="the task to sleep")
    ctx.request_cancel("cancelled")
    thread.join(5)
    assert woke and woke[0] < 5
    with pytest.raises(Cancelled):
        ctx.sleep(30)
