"""Signals between the processes that share one database: short text messages that tell another
node to look at the database now instead of at its next poll. A lost signal costs only the
poll's delay: the database stays the truth, so the transport may drop messages.

- PostgreSQL: ``NOTIFY`` on one channel, heard through one ``LISTEN`` connection per listener
  (reconnected with backoff when it drops). Sent after the writer's commit, so a listener that
  reads at once sees the row; or (``send_in``) inside the writer's transaction, which the
  server delivers at its commit, atomically with the rows and with no round trips of its own
  (a run queued through the API). The cost: a transaction carrying a ``NOTIFY`` fails at
  commit if the server's notification queue is full (8 GB of messages a listening session
  has not read), where a separate send would only be lost.
- SQLite: one UNIX datagram socket per listening node in a folder beside the database file
  (``<file>.wakeups/``); a sender writes to every socket there. A socket nobody holds any more
  (its process died) refuses the datagram and is removed.
- Off (``SCHEDULER_WAKEUPS=false``, e.g. behind PgBouncer in transaction pooling, which cannot
  hold a ``LISTEN``): nothing is sent, every node relies on its poll.

Why this shape: docs/ARCHITECTURE.md, "Wake-ups".
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Callable
from typing import Protocol

import sqlalchemy as sa

from .db import Database
from .schema import TABLE_PREFIX

log = logging.getLogger(__name__)

CHANNEL = f"{TABLE_PREFIX}wakeups"
MAX_BACKOFF_SECONDS = 30.0
# How often a waiting listener looks up to see whether it was told to stop.
STOP_CHECK_SECONDS = 0.5
# What a listener hands its handler when it has (re)connected: anything sent while it was down
# is lost, so the node looks once at whatever the messages would have told it.
HELLO = "hello"
# A UNIX socket's path is at most 107 bytes on Linux; longer ones are reached through the
# folder's descriptor (/proc/self/fd/N/name).
_SUN_PATH_MAX = 100

Handler = Callable[[str], None]
_NOTIFY = sa.text("SELECT pg_notify(:channel, :message)")


class Signals(Protocol):
    """One process's side of the transport. ``listen`` is optional: a node that executes
    nothing (role ``web``) only sends."""

    def send(self, message: str) -> None:
        """Tell every listening node ``message``. Never raises: a failure is logged and the
        receivers fall back on their poll."""

    def send_in(self, conn: sa.Connection, message: str) -> bool:
        """Send ``message`` as part of ``conn``'s transaction, delivered at its commit and not
        at all if it rolls back. False: this transport cannot, the caller sends after its
        commit. Raises what the database raises (the transaction fails with it)."""

    def listen(self, member: str, handler: Handler) -> None:
        """Start hearing messages: ``handler(message)`` on a thread of this object's own, for
        every message from now on, until ``close``. ``handler`` must not block."""

    def close(self) -> None:
        """Stop listening and release what ``listen`` holds."""


def signals_for(db: Database, enabled: bool) -> Signals:
    """The transport for ``db``: local sockets beside a SQLite file, NOTIFY on PostgreSQL."""
    if not enabled:
        return NoSignals()
    if db.is_sqlite:
        return LocalSignals(f"{db.url.database}.wakeups")
    if db.dialect == "postgresql":
        return PgSignals(db)
    return NoSignals()


class NoSignals:
    """Wake-ups off: the poll alone hands work over."""

    def send(self, message: str) -> None:
        pass

    def send_in(self, conn: sa.Connection, message: str) -> bool:
        return False

    def listen(self, member: str, handler: Handler) -> None:
        pass

    def close(self) -> None:
        pass


class _Listening:
    """The one thread a transport hears messages on, started by ``listen`` and ended by
    ``close`` (which waits for it a little longer than it takes to notice)."""

    def __init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start_thread(self, loop: Callable[..., None], *args: object) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=loop, args=args, name="wakeup-listener",
                                        daemon=True)
        self._thread.start()

    def _end_thread(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=STOP_CHECK_SECONDS + 5)
            self._thread = None


class PgSignals(_Listening):
    """``NOTIFY`` through the store's pool, ``LISTEN`` on a connection of its own."""

    def __init__(self, db: Database) -> None:
        super().__init__()
        self.db = db
        # libpq takes the SQLAlchemy URL without its "+psycopg" driver part.
        self._conninfo = db.url.set(drivername="postgresql").render_as_string(
            hide_password=False)
        self.connected = threading.Event()  # set while the LISTEN connection is up

    def send(self, message: str) -> None:
        try:
            # Autocommit: one statement, no BEGIN and COMMIT round trips around it.
            with self.db.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT") as conn:
                conn.execute(_NOTIFY, {"channel": CHANNEL, "message": message})
        except Exception:
            log.warning("could not send wake-up %r; other nodes will poll", message,
                        exc_info=True)

    def send_in(self, conn: sa.Connection, message: str) -> bool:
        conn.execute(_NOTIFY, {"channel": CHANNEL, "message": message})
        return True

    def listen(self, member: str, handler: Handler) -> None:
        self._start_thread(self._listen_loop, handler)

    def close(self) -> None:
        self._end_thread()

    def _listen_loop(self, handler: Handler) -> None:
        import psycopg  # only PostgreSQL deployments need the driver

        backoff = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self._conninfo, autocommit=True, connect_timeout=5) as conn:
                    conn.execute(f'LISTEN "{CHANNEL}"')
                    self.connected.set()
                    backoff = 0.5
                    # Whatever was sent while this connection was down is lost: look once.
                    handler(HELLO)
                    while not self._stop.is_set():
                        for note in conn.notifies(timeout=STOP_CHECK_SECONDS):
                            _deliver(handler, note.payload)
            except Exception as exc:
                self.connected.clear()
                if self._stop.is_set():
                    return
                log.warning("wake-up listener lost its connection (%s); reconnecting in "
                            "%.1f s, polling meanwhile", exc, backoff)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
        self.connected.clear()


class LocalSignals(_Listening):
    """Datagrams between the processes of one host, through sockets in ``folder``."""

    def __init__(self, folder: str) -> None:
        super().__init__()
        self.folder = folder
        self._dir_fd: int | None = None
        self._sender = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self._sender.setblocking(False)  # a receiver with a full queue is awake anyway
        self._send_lock = threading.Lock()
        self._own: str | None = None
        self._sock: socket.socket | None = None

    def _address(self, name: str) -> str:
        path = os.path.join(self.folder, name)
        if len(path.encode()) <= _SUN_PATH_MAX:
            return path
        if self._dir_fd is None:
            self._dir_fd = os.open(self.folder, os.O_RDONLY | os.O_DIRECTORY)
        return f"/proc/self/fd/{self._dir_fd}/{name}"

    def send(self, message: str) -> None:
        try:
            names = [n for n in os.listdir(self.folder) if n.endswith(".sock")]
        except FileNotFoundError:
            return  # no node listens on this database yet
        except OSError:
            log.warning("cannot read %s; other nodes will poll", self.folder, exc_info=True)
            return
        data = message.encode()
        with self._send_lock:
            for name in names:
                if name == self._own:
                    continue
                try:
                    self._sender.sendto(data, self._address(name))
                except ConnectionRefusedError:  # its node died without removing it
                    with contextlib.suppress(OSError):
                        os.unlink(os.path.join(self.folder, name))
                except (BlockingIOError, FileNotFoundError):
                    pass  # queue full (it is awake), or it just stopped
                except OSError:
                    log.warning("could not wake %s", name, exc_info=True)

    def send_in(self, conn: sa.Connection, message: str) -> bool:
        return False  # a datagram cannot wait for a commit

    def listen(self, member: str, handler: Handler) -> None:
        os.makedirs(self.folder, mode=0o700, exist_ok=True)
        self._own = hashlib.sha1(member.encode()).hexdigest()[:20] + ".sock"
        address = self._address(self._own)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(address)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(address)
        sock.settimeout(STOP_CHECK_SECONDS)
        self._sock = sock
        self._start_thread(self._listen_loop, sock, handler)

    def close(self) -> None:
        self._end_thread()
        if self._sock is not None:
            self._sock.close()
            self._sock = None
            if self._own is not None:
                with contextlib.suppress(OSError):
                    os.unlink(os.path.join(self.folder, self._own))
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _listen_loop(self, sock: socket.socket, handler: Handler) -> None:
        while not self._stop.is_set():
            try:
                data = sock.recv(512)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                log.warning("wake-up socket failed; polling only", exc_info=True)
                return
            _deliver(handler, data.decode(errors="replace"))


def _deliver(handler: Handler, message: str) -> None:
    try:
        handler(message)
    except Exception:
        log.exception("wake-up %r could not be handled", message)
