"""The bench's own Redis for Celery and RQ: Debian's ``redis-server`` on a free loopback port,
with no persistence (no RDB snapshots, no append-only file), started and stopped by the bench so
no process outlives it. Its CPU counts in the server CPU of the systems that use it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

REDIS_SERVER = "/usr/bin/redis-server"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RedisServer:
    """One ``redis-server`` process for the whole bench run; ``flush()`` between systems."""

    def __init__(self) -> None:
        if not os.access(REDIS_SERVER, os.X_OK):
            raise RuntimeError(f"{REDIS_SERVER} not found: Celery and RQ need it "
                               "(apt-get install redis-server)")
        self.port = _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.dir = tempfile.TemporaryDirectory(prefix="bench-redis-")
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "no", "--dir", self.dir.name, "--daemonize", "no",
             "--loglevel", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.command("PING") == "+PONG":
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError("redis-server did not start")

    def command(self, *words: str) -> str:
        """Send one inline command and return the first line of the reply (no client library:
        this module runs in the bench's own Python, which may lack redis-py)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall((" ".join(words) + "\r\n").encode())
            return s.makefile("rb").readline().decode().strip()

    def version(self) -> str:
        """The server's version, from ``INFO server``."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            s.sendall(b"INFO server\r\n")
            reply = s.makefile("rb")
            size = int(reply.readline()[1:])
            text = reply.read(size).decode()
        return next((line.split(":", 1)[1].strip() for line in text.splitlines()
                     if line.startswith("redis_version:")), "unknown")

    def flush(self) -> None:
        """Empty every key, so each system starts on an empty server."""
        self.command("FLUSHALL")

    def cpu_seconds(self) -> float:
        """CPU time (user + system, all threads) the server has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.dir.cleanup()
