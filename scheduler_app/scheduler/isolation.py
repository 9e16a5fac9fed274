"""Process isolation, the node's side: runs of ``isolation="process"`` tasks execute in a child
process forked by this node's helper (``process_helper``); the run's thread here supervises it.

The node keeps the run context and every database write, exactly as for a thread run: the child
sends its progress, log lines and outcome, and this side feeds them into the same ``RunContext``.
Here too the hard limits live: a cancel or timeout is passed on to the task first, and after
``kill_grace`` seconds its whole process group gets SIGTERM, then SIGKILL; resident memory over
the task's ``memory_limit_mb`` stops it at once (``MemoryLimit``); a child that dies on its own
is a ``WorkerCrashed`` attempt naming the signal or exit code. docs/ARCHITECTURE.md, "Process
isolation".
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pickle
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

from flask import Flask

from ..store import Run, RunState
from ..tasks import RunContext, Task
from . import process_wire as wire

log = logging.getLogger(__name__)

CANCEL_USER, CANCEL_TIMEOUT, CANCEL_SHUTDOWN = "cancelled", "timeout", "shutdown"
POLL = 0.05  # seconds between looks at the cancel flag and the child's memory
TERM_TO_KILL = 0.5  # seconds from the group's SIGTERM to its SIGKILL
HELPER_START_TIMEOUT = 120.0
# After the helper fails to start (most often: the host app cannot be built), isolated runs fail
# at once with that error for this long, doubling on each further failure up to the maximum,
# instead of each run paying for another helper start (and another app build) that fails alike.
HELPER_RETRY_FIRST = 1.0
HELPER_RETRY_MAX = 60.0
HELPER_MAIN = ("import sys; from scheduler_app.scheduler.process_helper import main; "
               "sys.exit(main(sys.argv))")
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096

Outcome = tuple["RunState | None", Any, Any]


def app_ref(app: Flask, configured: str | None) -> str:
    """Where the helper finds the host app: SCHEDULER_PROCESS_APP, else FLASK_APP, else the
    app's import name (the package in which ``flask`` would look for ``app`` or
    ``create_app``); for an app made in the script Python runs (``__main__``), that script's
    file, which the helper imports as a module (its ``if __name__ == "__main__"`` block does
    not run there)."""
    ref = configured or os.environ.get("FLASK_APP") or app.import_name
    if ref == "__main__":
        main_file: str | None = getattr(sys.modules.get("__main__"), "__file__", None)
        if main_file:
            return os.path.abspath(main_file)
    return ref


class IsolationUnavailable(RuntimeError):
    """The helper process that forks isolated runs could not be started."""


class ProcessIsolation:
    """This node's helper process and the supervision of the runs it forks. Thread-safe: each
    run thread calls ``run``; the helper is started on first use (or by ``warm_up``) and again
    if it died."""

    def __init__(self, app_ref: str, *, default: str, kill_grace: float, node_id: str) -> None:
        """``app_ref``: the import string the helper builds the host app from (``module``,
        ``module:app`` or ``module:create_app()``, as ``flask --app`` takes); ``default``:
        the node's isolation for tasks that do not name one."""
        self.app_ref = app_ref
        self.default = default
        self.kill_grace = kill_grace
        self.node_id = node_id
        self._lock = threading.Lock()
        self._helper: subprocess.Popen[bytes] | None = None
        self._control: socket.socket | None = None
        self._closed = False
        self._start_failure: str | None = None
        self._retry_at = 0.0
        self._retry_delay = 0.0

    def applies_to(self, task: Task) -> bool:
        """Whether runs of ``task`` execute in a child process."""
        return (task.isolation or self.default) == "process"

    # -- the helper -------------------------------------------------------------------------
    def warm_up(self) -> None:
        """Start the helper in the background, so the first isolated run does not wait for
        the app to be built."""
        def start() -> None:
            try:
                with self._lock:
                    self._ensure_helper()
            except IsolationUnavailable as exc:
                log.error("%s", exc, extra={"node": self.node_id})

        threading.Thread(target=start, name="isolation-warm-up", daemon=True).start()

    @property
    def helper_pid(self) -> int | None:
        helper = self._helper
        return None if helper is None or helper.poll() is not None else helper.pid

    def _ensure_helper(self) -> socket.socket:
        if self._closed:
            raise IsolationUnavailable("this node is stopping")
        if self._control is not None and self._helper is not None and \
                self._helper.poll() is None:
            return self._control
        self._drop_helper()
        wait = self._retry_at - time.monotonic()
        if self._start_failure is not None and wait > 0:
            raise IsolationUnavailable(
                f"{self._start_failure} (not tried again for another {wait:.1f} s)")
        try:
            control = self._start_helper()
        except IsolationUnavailable as exc:
            self._retry_delay = min(HELPER_RETRY_MAX,
                                    self._retry_delay * 2 or HELPER_RETRY_FIRST)
            self._start_failure, self._retry_at = str(exc), time.monotonic() + self._retry_delay
            raise
        self._start_failure, self._retry_delay = None, 0.0
        return control

    def _start_helper(self) -> socket.socket:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            helper = subprocess.Popen(
                [sys.executable, "-c", HELPER_MAIN, str(theirs.fileno()), self.app_ref,
                 json.dumps(sys.path)],
                pass_fds=[theirs.fileno()], stdin=subprocess.DEVNULL)
        except OSError as exc:
            ours.close()
            raise IsolationUnavailable(f"cannot start the isolation helper: {exc}") from exc
        finally:
            theirs.close()
        ready = wire.readable([ours.fileno()], HELPER_START_TIMEOUT)
        reply = _json(ours.recv(wire.RECV_SIZE)) if ready else None
        if not reply or not reply.get("ready"):
            ours.close()
            with contextlib.suppress(OSError):
                helper.kill()
            helper.wait()
            problem = (reply or {}).get("error") or "it exited or did not answer"
            raise IsolationUnavailable(f"the isolation helper did not start: {problem}")
        self._helper, self._control = helper, ours
        log.info("isolation helper %s started (app %s)", helper.pid, self.app_ref,
                 extra={"node": self.node_id})
        return ours

    def _drop_helper(self) -> None:
        if self._control is not None:
            self._control.close()  # the helper sees the end of its input and exits
            self._control = None
        if self._helper is not None:
            try:
                self._helper.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()
            self._helper = None

    def open(self) -> None:
        """Accept runs again after ``close`` (a node started again), and try the helper at
        once even if it failed to start before."""
        with self._lock:
            self._closed = False
            self._start_failure, self._retry_delay = None, 0.0

    def close(self) -> None:
        """Stop the helper (it kills any child left); runs fail to start until ``open``."""
        with self._lock:
            self._closed = True
            self._drop_helper()

    def _fork(self, spec: bytes, run_sock: socket.socket) -> int:
        with self._lock:
            for attempt in (1, 2):  # a helper found dead is started again, once
                control = self._ensure_helper()
                try:
                    socket.send_fds(control, [spec], [run_sock.fileno()])
                    reply = _json(control.recv(wire.RECV_SIZE))
                except OSError:
                    reply = None
                if reply is not None:
                    break
                self._drop_helper()
                if attempt == 2:
                    raise IsolationUnavailable("the isolation helper stopped answering")
            if "pid" not in reply:
                raise IsolationUnavailable(reply.get("error") or "the helper did not fork")
            return int(reply["pid"])

    # -- one run ----------------------------------------------------------------------------
    def run(self, run: Run, ctx: RunContext, task: Task) -> Outcome:
        """One attempt of ``run`` in a child process; returns (state, result, error) as
        ``call_task`` does, state None for a run stopped by the node's shutdown."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            spec = pickle.dumps({"run": run, "module": task.ref.partition(":")[0],
                                 "node": self.node_id})
            try:
                pid = self._fork(spec, theirs)
            finally:
                theirs.close()
            return _Supervisor(pid, ours, run, ctx, self.kill_grace,
                               task.memory_limit_mb).wait()
        except IsolationUnavailable as exc:
            return RunState.FAILED, None, _error("IsolationUnavailable", str(exc))
        finally:
            ours.close()


class _Supervisor:
    """Watches one child until the helper reports its end: relays what it sends, passes the
    cancel on, and enforces the kill grace and the memory limit."""

    def __init__(self, pid: int, sock: socket.socket, run: Run, ctx: RunContext,
                 kill_grace: float, memory_limit_mb: int | None) -> None:
        self.pid, self.sock, self.run, self.ctx = pid, sock, run, ctx
        self.kill_grace = kill_grace
        self.memory_limit = None if memory_limit_mb is None else memory_limit_mb * 1024 * 1024
        self.outcome: Outcome | None = None
        self.cancel_sent: float | None = None
        self.term_sent: float | None = None
        self.kill_sent = False
        self.memory_used: int | None = None  # bytes, when the limit stopped it
        self._partial = b""

    def wait(self) -> Outcome:
        status: int | None = None
        while True:
            ready = wire.readable([self.sock.fileno()], POLL)
            if ready:
                try:
                    frame = self.sock.recv(wire.RECV_SIZE)
                except OSError:
                    frame = b""
                if not frame:  # the helper died before reporting: make sure the child has too
                    self._signal(signal.SIGKILL)
                    break
                if frame[:1] == wire.EXIT:
                    status = int((_json(frame[1:]) or {}).get("status", 0))
                    break
                self._receive(frame)
                if self.outcome is not None:
                    # The child's last act is sending this, then os._exit: its run need not
                    # wait for the exit (the helper reaps it).
                    break
            self._enforce()
        return self._result(status)

    def _receive(self, frame: bytes) -> None:
        self._partial += frame[1:]
        if frame[:1] != wire.END:
            return
        message, self._partial = _json(self._partial), b""
        if not isinstance(message, list) or not message:
            return
        kind = message[0]
        if kind == "progress":
            self.ctx.progress(message[1], message[2], message[3])
        elif kind == "log":
            self.ctx.record_log(str(message[1]), str(message[2]))
        elif kind == "outcome":
            state = None if message[1] is None else RunState(message[1])
            self.outcome = (state, message[2], message[3])

    def _enforce(self) -> None:
        now = time.monotonic()
        if self.ctx.cancelled and self.cancel_sent is None and self.outcome is None:
            self.cancel_sent = now
            with contextlib.suppress(OSError):
                self.sock.send(wire.CANCEL + (self.ctx.cancel_reason or CANCEL_USER).encode())
        if self.cancel_sent is not None and self.term_sent is None and \
                now - self.cancel_sent >= self.kill_grace:
            self.term_sent = now
            self._signal(signal.SIGTERM)
        if self.term_sent is not None and not self.kill_sent and \
                now - self.term_sent >= TERM_TO_KILL:
            self.kill_sent = True
            self._signal(signal.SIGKILL)
        if self.memory_limit is not None and self.memory_used is None:
            rss = _rss(self.pid)
            if rss is not None and rss > self.memory_limit:
                self.memory_used = rss
                self.kill_sent = True
                self._signal(signal.SIGKILL)

    def _signal(self, sig: int) -> None:
        """Signal the child's whole process group (the task's own subprocesses too)."""
        with contextlib.suppress(OSError):
            os.killpg(self.pid, sig)

    def _result(self, status: int | None) -> Outcome:
        if self.memory_used is not None:
            limit_mb = (self.memory_limit or 0) // (1024 * 1024)
            return RunState.FAILED, None, _error(
                "MemoryLimit", f"the task's process used {self.memory_used // (1024 * 1024)} MB, "
                               f"over its memory_limit_mb of {limit_mb}; it was stopped")
        if self.outcome is not None:
            return self.outcome
        reason = self.ctx.cancel_reason if self.cancel_sent is not None else None
        how = _how_it_ended(status)
        if reason == CANCEL_SHUTDOWN:
            return None, None, None
        if reason == CANCEL_USER:
            return RunState.CANCELLED, None, None
        if reason == CANCEL_TIMEOUT:
            return RunState.FAILED, None, _error(
                "Timeout", f"run exceeded its timeout of {self.run.timeout} s and did not stop "
                           f"within the {self.kill_grace:g} s grace: its process {how}")
        return RunState.FAILED, None, _error("WorkerCrashed", f"the task's process {how}")


def _how_it_ended(status: int | None) -> str:
    if status is None:
        return "was lost with the isolation helper"
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = f"signal {sig}"
        return f"was killed by signal {name} ({sig})"
    if os.WIFEXITED(status):
        return f"exited with code {os.WEXITSTATUS(status)} before the task returned"
    return f"ended with wait status {status}"


def _rss(pid: int) -> int | None:
    """The process's resident memory in bytes (Linux ``/proc``), or None if it is gone."""
    try:
        with open(f"/proc/{pid}/statm", "rb") as f:
            return int(f.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _error(kind: str, message: str) -> dict[str, Any]:
    return {"type": kind, "message": message, "traceback": None}
