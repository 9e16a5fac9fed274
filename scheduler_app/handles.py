"""``RunHandle``: one run seen from Python, as ``enqueue`` and ``get_run`` return it."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from .errors import AlreadyFinished
from .services.views import progress_view, run_view
from .store import Run

if TYPE_CHECKING:
    from .services import Services

# wait() polls the database: quickly at first (a short task ends within milliseconds), then
# at most this far apart.
_FIRST_POLL = 0.005
_LONGEST_POLL = 0.25


class RunHandle:
    """A run: ``id``, ``task``, ``state``, ``result``, ``error``, ``progress``; ``refresh()``,
    ``wait(timeout)`` and ``cancel()``. Its fields are as of the last read; ``refresh()``
    reads them again."""

    def __init__(self, run: Run, services: Services) -> None:
        self._run = run
        self._services = services

    # -- what the run is ------------------------------------------------------------------------
    @property
    def id(self) -> int:
        return self._run.id

    @property
    def task(self) -> str:
        return self._run.task

    @property
    def state(self) -> str:
        """``"queued"``, ``"running"``, ``"succeeded"``, ``"failed"`` or ``"cancelled"``."""
        return self._run.state.value

    @property
    def finished(self) -> bool:
        return self._run.is_final

    @property
    def result(self) -> Any:
        """The task's return value once it succeeded (JSON: dicts, lists, numbers...)."""
        return self._run.result

    @property
    def error(self) -> dict[str, Any] | None:
        """``{"type", "message", "traceback"}`` of the last failed attempt, or None."""
        return self._run.error

    @property
    def progress(self) -> dict[str, Any] | None:
        """``{"done", "total", "percent", "message"}`` as last reported, or None."""
        return progress_view(self._run)

    @property
    def attempt(self) -> int:
        return self._run.attempt

    def as_dict(self) -> dict[str, Any]:
        """The run as ``GET /api/runs/<id>`` shows it."""
        return run_view(self._run)

    # -- what can be done with it ---------------------------------------------------------------
    def refresh(self) -> RunHandle:
        """Read the run again; return this handle."""
        self._run = self._services.runs.get(self._run.id)
        return self

    def wait(self, timeout: float | None = None) -> RunHandle:
        """Block until the run has finished (succeeded, failed or cancelled) and return this
        handle; raise ``TimeoutError`` after ``timeout`` seconds (None: no limit)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        pause = _FIRST_POLL
        while not self.refresh().finished:
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"run {self.id} is still {self.state} after "
                                       f"{timeout} s")
                pause = min(pause, left)
            time.sleep(pause)
            pause = min(pause * 2, _LONGEST_POLL)
        return self

    def cancel(self) -> RunHandle:
        """Ask the run to stop: a queued run is cancelled at once, a running one when its task
        next looks (``ctx.cancelled``). A run already finished is left as it was."""
        try:
            self._run = self._services.runs.cancel(self._run.id)
        except AlreadyFinished:
            self.refresh()
        return self

    def __repr__(self) -> str:
        return f"<RunHandle {self.id} {self.task} {self.state}>"
