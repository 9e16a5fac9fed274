"""Real server processes for integration tests: gunicorn and ``flask run`` in a subprocess.

Each server gets a free loopback port, the test's own SQLite file and a clean environment
(no ``FLASK_*``, ``GUNICORN_*`` or ``WERKZEUG_*`` variable leaks in from the caller). It runs in
its own process group, so stopping it also stops the children it forked (gunicorn's workers,
the reloader's serving process), and ``Servers`` stops every server it started (SIGTERM, then
SIGKILL) even when the test failed. Server output goes to a file whose tail is printed at
teardown, so a failing test shows what the server said.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

REPO = Path(__file__).resolve().parent.parent
BIN = REPO / ".venv" / "bin"
TASK_MODULES = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance",
                "tests.tasks_for_tests"]
LEAKY_PREFIXES = ("FLASK_", "GUNICORN_", "WERKZEUG_")
HTTP_TIMEOUT = 5.0


def free_port() -> int:
    """A loopback port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def server_env(db_path: Path, settings: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The environment of a server process: this test's database, the test task modules, fast
    cluster timings, plus ``settings``: ``FLASK_*``/``GUNICORN_*`` names are taken as they are,
    other names get the ``FLASK_`` prefix; non-string values are JSON-encoded."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(LEAKY_PREFIXES)}
    env.update(
        PYTHONPATH=str(REPO),
        PYTHONUNBUFFERED="1",
        # A server that hangs is sent SIGABRT (``Server.wait_exit``): every thread's stack is
        # then written to its log, so the failure shows where it hung.
        PYTHONFAULTHANDLER="1",
        FLASK_DATABASE_URL=f"sqlite:///{db_path}",
        FLASK_TASK_MODULES=json.dumps(TASK_MODULES),
        FLASK_NODE_HEARTBEAT_SECONDS="0.5",
        FLASK_NODE_LEASE_SECONDS="3",
        FLASK_DISPATCH_POLL_SECONDS="0.2",
        FLASK_TICK_SECONDS="0.1",
        FLASK_SHUTDOWN_GRACE_SECONDS="1",
        GUNICORN_ACCESSLOG="",
        # One worker (one node) unless a test asks for more: make run's default is 2.
        GUNICORN_WORKERS="1",
        # gunicorn's control socket is one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn), which
        # servers running side by side would take from each other; the tests do not use it.
        GUNICORN_CMD_ARGS="--no-control-socket",
    )
    for key, value in (settings or {}).items():
        name = key if key.startswith(LEAKY_PREFIXES) else f"FLASK_{key}"
        env[name] = value if isinstance(value, str) else json.dumps(value)
    return env


@dataclass
class Server:
    """One server process (and its process group) listening on ``127.0.0.1:port``."""

    name: str
    port: int
    db_path: Path
    log_path: Path
    proc: subprocess.Popen[bytes]
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # -- HTTP -------------------------------------------------------------------------------
    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """One request on a fresh connection (no keep-alive to hold a stopping worker)."""
        kwargs.setdefault("timeout", HTTP_TIMEOUT)
        headers = {"Connection": "close", **kwargs.pop("headers", {})}
        return requests.request(method, self.base_url + path, headers=headers, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def get_json(self, path: str) -> Any:
        response = self.get(path)
        assert response.status_code == 200, (path, response.status_code, response.text)
        return response.json()

    # -- waiting ----------------------------------------------------------------------------
    def wait_for(self, predicate: Callable[[], Any], timeout: float = 15.0,
                 interval: float = 0.05, message: str = "condition") -> Any:
        """Poll ``predicate()`` until it is truthy; fail after ``timeout`` seconds, or at once
        if the server process has exited (with the tail of its output)."""
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.proc.returncode} while waiting for "
                            f"{message}:\n{self.log_tail()}")
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout}s waiting for {message} "
                            f"({self.name}):\n{self.log_tail()}")
            time.sleep(interval)

    def answers(self, path: str, status: int = 200) -> bool:
        try:
            return self.get(path, timeout=1.0).status_code == status
        except requests.RequestException:
            return False

    def wait_healthy(self, timeout: float = 20.0) -> None:
        self.wait_for(lambda: self.answers("/healthz"), timeout, 0.1, "/healthz to answer 200")

    def wait_ready(self, timeout: float = 20.0) -> None:
        self.wait_for(lambda: self.answers("/readyz"), timeout, 0.1, "/readyz to answer 200")

    def run(self, run_id: int) -> dict[str, Any]:
        return self.get_json(f"/api/runs/{run_id}")  # type: ignore[no-any-return]

    def wait_run(self, run_id: int, *states: str, timeout: float = 15.0) -> dict[str, Any]:
        def reached() -> dict[str, Any] | None:
            run = self.run(run_id)
            return run if run["state"] in states else None
        return self.wait_for(reached, timeout, message=f"run {run_id} to be {'|'.join(states)}")

    # -- process control --------------------------------------------------------------------
    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's main process only (gunicorn's master)."""
        self.proc.send_signal(sig)

    def signal_group(self, sig: int) -> None:
        """Send ``sig`` to the whole process group, as a terminal's Ctrl-C does."""
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def wait_exit(self, timeout: float = 20.0) -> int:
        """Wait for the main process to exit; fail the test if it does not in time."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.dump_stacks()
            pytest.fail(f"{self.name} did not exit within {timeout}s:\n{self.log_tail(400)}")

    def dump_stacks(self) -> None:
        """Make every process of the group write all its threads' stacks to the log and end
        (faulthandler, on through ``PYTHONFAULTHANDLER``), for a test about to fail on a hang."""
        self.signal_group(signal.SIGABRT)
        deadline = time.monotonic() + 5
        while self.proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)

    def stop(self, timeout: float = 15.0) -> None:
        """Stop the process group: SIGTERM, then SIGKILL whatever is left after ``timeout``.
        The group is killed even if the main process already exited, so no orphaned child
        (a reloader's serving process, a gunicorn worker) outlives the test."""
        if self.stopped:
            return
        self.stopped = True
        if self.proc.poll() is None:
            self.signal_group(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        self.signal_group(signal.SIGKILL)
        self.proc.wait(5)

    def log_tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no output)"
        return "\n".join(text.splitlines()[-lines:])

    # -- the database, read directly --------------------------------------------------------
    def db_rows(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return db_rows(self.db_path, sql, params)


def db_rows(db_path: Path, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    """Rows from the SQLite file, read without the service's code."""
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        conn.row_factory = sqlite3.Row
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


class Servers:
    """Starts servers on a test's database and stops every one of them at the end."""

    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.db_path = tmp_path / "scheduler.sqlite3"
        self.started: list[Server] = []

    def __enter__(self) -> Servers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop every server (all of them, even if stopping one fails), newest first, and print
        their output, which pytest shows for failing tests only."""
        errors: list[BaseException] = []
        for server in reversed(self.started):
            try:
                server.stop()
            except BaseException as exc:  # stop the others first, then re-raise
                errors.append(exc)
            print(f"----- {server.name} (pid {server.pid}) output -----\n{server.log_tail()}")
        if errors:
            raise errors[0]

    def gunicorn(self, settings: Mapping[str, Any] | None = None, *,
                 wait: bool = True) -> Server:
        """``gunicorn -c gunicorn.conf.py wsgi:app`` on a free loopback port."""
        def argv(port: int) -> list[str]:
            return [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py",
                    "--bind", f"127.0.0.1:{port}", "wsgi:app"]
        return self.start("gunicorn", argv, settings, wait=wait)

    def flask_run(self, settings: Mapping[str, Any] | None = None, *, debug: bool = True,
                  extra_args: Sequence[str] = (), wait: bool = True) -> Server:
        """``flask --app wsgi run [--debug]`` (the debugger and reloader on with ``debug``)."""
        def argv(port: int) -> list[str]:
            return [str(BIN / "flask"), "--app", "wsgi", "run",
                    "--debug" if debug else "--no-debug",
                    "--host", "127.0.0.1", "--port", str(port), *extra_args]
        return self.start("flask run", argv, settings, wait=wait)

    def start(self, name: str, argv: Callable[[int], list[str]],
              settings: Mapping[str, Any] | None = None, *, wait: bool = True,
              attempts: int = 3) -> Server:
        """Start a server and wait for /healthz; retry on another port if the one picked was
        taken between ``free_port()`` and the bind."""
        env = server_env(self.db_path, settings)
        for attempt in range(1, attempts + 1):
            port = free_port()
            index = len(self.started) + 1
            log_path = self.tmp_path / f"server-{index}.log"
            with open(log_path, "wb") as out:
                proc = subprocess.Popen(argv(port), cwd=REPO, env=env, stdout=out,
                                        stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                        start_new_session=True)
            server = Server(f"{name} #{index}", port, self.db_path, log_path, proc)
            self.started.append(server)
            if not wait:
                return server
            try:
                server.wait_healthy()
                return server
            except pytest.fail.Exception:
                server.stop()
                if attempt == attempts or "Address already in use" not in server.log_tail():
                    raise
        raise AssertionError("unreachable")

