"""The helper process of process-isolated runs, and the child it forks for each run.

A node starts one helper (a fresh interpreter running ``main``). It builds the host app once
from its import string, closes every database connection the build opened, and then,
single-threaded, forks one child per run on the node's request. A fork of this clean, idle
process costs a few milliseconds and inherits the built app but no connection, no pool in use
and no thread (forking the node itself, a multi-threaded gunicorn worker, is unsafe). The
helper reaps its children (and, as a subreaper, theirs) and tells the node how each ended.
docs/ARCHITECTURE.md, "Process isolation", says why.

The wire format between the three is in ``process_wire``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import logging
import os
import pickle
import signal
import socket
import sys
import threading
import time
from typing import Any

from .process_wire import CANCEL, CHUNK, END, EXIT, MORE, RECV_SIZE, readable

CHILD_NICE = 19  # the lowest: against the web worker at 0, the kernel weighs it 15 to 1024
PROGRESS_EVERY = 0.1  # seconds between progress messages from a child

log = logging.getLogger(__name__)

_building = False


def building_helper_app() -> bool:
    """True while the helper builds the host app: the extension then skips what only a node
    needs (migrating the schema)."""
    return _building


# -- the helper ------------------------------------------------------------------------------
def main(argv: list[str]) -> int:
    control = socket.socket(fileno=int(argv[1]))
    app_ref = argv[2]
    sys.path[:] = json.loads(argv[3])
    try:
        app = build_app(app_ref)
        _close_databases()
    except BaseException as exc:  # noqa: BLE001 - reported to the node, which fails the run
        control.send(json.dumps({"error": f"cannot build the app from {app_ref!r}: "
                                          f"{type(exc).__name__}: {exc}"}).encode())
        return 1
    control.send(json.dumps({"ready": True, "pid": os.getpid()}).encode())
    _become_subreaper()
    wake_r, wake_w = os.pipe()
    os.set_blocking(wake_w, False)
    signal.set_wakeup_fd(wake_w)
    signal.signal(signal.SIGCHLD, lambda *_: None)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # gunicorn's group SIGTERM: the node says
    signal.signal(signal.SIGINT, signal.SIG_IGN)   # when to stop (by closing the control socket)
    children: dict[int, socket.socket] = {}
    try:
        while True:
            ready = readable([control.fileno(), wake_r], 1.0)
            if wake_r in ready:
                with contextlib.suppress(BlockingIOError):
                    os.read(wake_r, 512)
            if control.fileno() in ready and not _serve(control, app, children, (wake_r, wake_w)):
                return 0
            _reap(children)
    finally:
        for pid in list(children):
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while children and time.monotonic() < deadline:
            _reap(children)
            time.sleep(0.01)


def build_app(app_ref: str) -> Any:
    """The app ``app_ref`` names, found as ``flask --app`` finds it: ``module``,
    ``module:app`` or ``module:create_app(...)`` with literal arguments."""
    from flask.cli import locate_app, prepare_import

    global _building
    module, _, name = app_ref.partition(":")
    _building = True
    try:
        return locate_app(prepare_import(module), name or None)
    finally:
        _building = False


def _close_databases() -> None:
    """Close every connection and pool the app's build opened (ours and the host's SQLAlchemy
    engines alike), so no child inherits one: each opens its own when it needs one."""
    import sqlalchemy as sa

    from ..store.db import Database

    for obj in gc.get_objects():
        if isinstance(obj, Database):
            obj.dispose()
        elif isinstance(obj, sa.engine.Engine):
            obj.dispose()


def _become_subreaper() -> None:
    """Orphaned grandchildren (a task's own subprocesses) come to this process to be reaped,
    so none is left a zombie whatever the container's init does. Linux only."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER


def _serve(control: socket.socket, app: Any, children: dict[int, socket.socket],
           own: tuple[int, int]) -> bool:
    """Answer one fork request; False when the node closed the control socket."""
    try:
        message, fds, _, _ = socket.recv_fds(control, 1 << 20, 1)
    except OSError:
        return False
    if not message:
        return False
    if not fds:
        control.send(json.dumps({"error": "no run socket was passed"}).encode())
        return True
    run_sock = socket.socket(fileno=fds[0])
    try:
        pid = os.fork()
    except OSError as exc:
        run_sock.close()
        control.send(json.dumps({"error": f"fork failed: {exc}"}).encode())
        return True
    if pid == 0:  # the child: never returns
        inherited = [control.fileno(), *own, *(s.fileno() for s in children.values())]
        _child(app, message, run_sock, inherited)
    with contextlib.suppress(OSError):
        os.setpgid(pid, pid)  # also done by the child: whichever runs first
    children[pid] = run_sock
    control.send(json.dumps({"pid": pid}).encode())
    return True


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        run_sock = children.pop(pid, None)
        if run_sock is not None:
            with contextlib.suppress(OSError):
                run_sock.send(EXIT + json.dumps({"status": status}).encode())
            run_sock.close()


# -- the child -------------------------------------------------------------------------------
def _child(app: Any, spec_bytes: bytes, sock: socket.socket, inherited: list[int]) -> None:
    code = 0
    try:
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for fd in inherited:
            with contextlib.suppress(OSError):
                os.close(fd)
        with contextlib.suppress(OSError):
            os.setpgid(0, 0)
        os.nice(CHILD_NICE)
        _run_in_child(app, pickle.loads(spec_bytes), sock)
    except BaseException:  # noqa: BLE001 - whatever happens, this process must not return
        code = 70
        with contextlib.suppress(Exception):
            import traceback
            traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class _Channel:
    """The child's end of the run's socket: JSON messages out, cancel requests in."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.lock = threading.Lock()

    def send(self, message: Any) -> None:
        data = json.dumps(message, default=str).encode()
        with self.lock:
            for start in range(0, max(len(data), 1), CHUNK):
                last = start + CHUNK >= len(data)
                self.sock.send((END if last else MORE) + data[start:start + CHUNK])


def _run_in_child(app: Any, spec: dict[str, Any], sock: socket.socket) -> None:
    from ..logs import bind_run, install_run_log_handler
    from ..tasks import RunContext
    from .runner import call_task

    channel = _Channel(sock)
    run = spec["run"]

    class ChildContext(RunContext):
        """A run context that sends its log lines and (throttled) progress to the node."""

        _sent_at = 0.0

        def progress(self, done: float, total: float | None = None,
                     message: str | None = None) -> None:
            super().progress(done, total, message)
            now = time.monotonic()
            if now - self._sent_at >= PROGRESS_EVERY:
                self._sent_at = now
                self.send_progress()

        def send_progress(self) -> None:
            p = self.take_progress()
            if p is not None:
                channel.send(["progress", p.done, p.total, p.message])

        def record_log(self, level: str, message: str) -> None:
            channel.send(["log", level, message[:10_000]])

    ctx = ChildContext(run.id, run.task, run.attempt)
    threading.Thread(target=_listen, args=(sock, ctx), name="run-cancel", daemon=True).start()
    install_run_log_handler()
    module = spec.get("module")
    if module:
        with contextlib.suppress(ImportError):  # an unknown task is reported by call_task
            importlib.import_module(module)
    with bind_run(run_id=run.id, job_id=run.job_id, task=run.task, node=spec.get("node")):
        state, result, error = call_task(app, run, ctx)
    ctx.send_progress()
    # The result's value, not the text the runner encoded it to: the message is JSON itself.
    channel.send(["outcome", None if state is None else state.value,
                  None if result is None else result.value, error])


def _listen(sock: socket.socket, ctx: Any) -> None:
    """Deliver the node's cancel requests; a node gone is a shutdown."""
    while True:
        try:
            frame = sock.recv(RECV_SIZE)
        except OSError:
            frame = b""
        if not frame:
            ctx.request_cancel("shutdown")
            return
        if frame[:1] == CANCEL:
            ctx.request_cancel(frame[1:].decode() or "cancelled")
