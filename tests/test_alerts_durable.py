"""An alert is not lost when its node dies, shown with real processes: gunicorn nodes, a real
receiver on 127.0.0.1 that refuses at first, and ``kill -9``.

The node that executed and settled a failed run is killed while the receiver refuses: between
two attempts, or while it is posting the alert (the receiver holds that POST unanswered, so the
node dies holding the alert's lease). Then another node starts (the same host restarted, or
another host on PostgreSQL), the receiver accepts, and the alert arrives exactly once, from the
new node, and never before the dead node's lease ran out.
"""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from scheduler_app.store import Database
from scheduler_app.store.schema import alerts
from tests.servers import Servers

TIMEOUT = 3.0
LEASE = 3 * TIMEOUT + 5  # the sender's lease: AlertSender.lease_seconds
SETTINGS = {"ALERT_TIMEOUT_SECONDS": TIMEOUT, "ALERT_MAX_ATTEMPTS": 20,
            "ALERT_BACKOFF_SECONDS": 0.2, "PRUNE_RUNS_CRON": "", "NODE_LEASE_SECONDS": 3}
DUPLICATE_WINDOW = 3.0  # after delivery: a sender polls every 0.2 s, so a second POST shows


class Receiver:
    """An HTTP receiver on loopback that records every POST (arrival time, body, answer) and
    answers as the test says: ``refuse`` (503), ``hold`` (the POSTs of one node are left
    unanswered until the receiver closes; the others refused), or ``accept`` (200)."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        self.mode = "refuse"
        self.held_node: str | None = None
        self.closing = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                post = {"at": time.time(), "id": body["id"], "event": body["event"],
                        "sent_by": body["sent_by"], "node": body["node"], "status": None}
                with receiver.lock:
                    receiver.posts.append(post)
                    mode, held = receiver.mode, receiver.held_node
                if mode == "hold" and body["sent_by"] == held:
                    receiver.closing.wait(60)  # its sender dies meanwhile
                    status = 503
                else:
                    status = 200 if mode == "accept" else 503
                    post["status"] = status
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cret"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       name="alert-receiver", daemon=True)
        self.thread.start()

    def set_mode(self, mode: str, held_node: str | None = None) -> None:
        with self.lock:
            self.mode, self.held_node = mode, held_node

    def where(self, predicate: Callable[[dict[str, Any]], bool]) -> list[dict[str, Any]]:
        with self.lock:
            return [dict(p) for p in self.posts if predicate(p)]

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


def alert_rows(db: Database) -> list[dict[str, Any]]:
    with db.read() as conn:
        return [dict(r) for r in conn.execute(sa.select(alerts)).mappings()]


def never(predicate: Callable[[], Any], seconds: float, message: str) -> None:
    """Fail as soon as ``predicate()`` is truthy during the next ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        assert not predicate(), message
        time.sleep(0.05)


@pytest.mark.parametrize("backend, moment", [
    ("sqlite", "between attempts"), ("sqlite", "mid-post"), ("postgresql", "mid-post")])
def test_an_alert_outlives_the_node_that_settled_its_run(backend: str, moment: str,
                                                         receiver: Receiver, tmp_path: Any,
                                                         request: pytest.FixtureRequest
                                                         ) -> None:
    """``between attempts``: killed while waiting out the backoff after a refusal, the
    alert unclaimed; the host restarted takes over the retries. ``mid-post``: killed while its
    POST is held unanswered, holding the lease; the next node (the host restarted on SQLite,
    another host on PostgreSQL) sends it only once the lease ran out."""
    settings: dict[str, Any] = {**SETTINGS, "ALERT_WEBHOOK_URL": receiver.url}
    if backend == "postgresql":
        settings["DATABASE_URL"] = request.getfixturevalue("pg_url")
    with Servers(tmp_path) as servers:
        db = Database(settings.get("DATABASE_URL", f"sqlite:///{servers.db_path}"))
        try:
            victim = servers.gunicorn(settings)
            victim_node = victim.get_json("/readyz")["node"]
            run = victim.post("/api/runs", json={"task": "demo.fail",
                                                 "kwargs": {"message": "disk full"}}).json()
            failed = victim.wait_run(run["id"], "failed")
            assert failed["node"] == victim_node  # executed and settled there
            victim.wait_for(lambda: receiver.where(lambda p: p["status"] == 503),
                            message="a refused attempt")  # the receiver refuses at first

            if moment == "mid-post":
                # The receiver holds the victim's next attempt unanswered, and the victim is
                # killed while it waits for the answer, holding the alert's lease.
                receiver.set_mode("hold", victim_node)
                held = victim.wait_for(lambda: receiver.where(lambda p: p["status"] is None),
                                       timeout=10, message="the victim posting again")[0]
                victim.signal_group(signal.SIGKILL)
                victim.wait_exit()
                killed_at = time.time()
                assert killed_at - held["at"] < TIMEOUT  # killed before its POST timed out
                [row] = alert_rows(db)
                assert (row["state"], row["claimed_by"]) == ("pending", victim_node)
                lease_end = row["next_attempt_at"].timestamp()
                assert lease_end > killed_at
                receiver.set_mode("accept")
                survivor = servers.gunicorn(settings)
            else:
                # Killed while it waits out a backoff of more than a second: unclaimed.
                def backing_off() -> bool:
                    [row] = alert_rows(db)
                    return row["claimed_by"] is None and \
                        row["next_attempt_at"].timestamp() > time.time() + 1.0
                victim.wait_for(backing_off, message="a backoff of more than a second")
                victim.signal_group(signal.SIGKILL)
                victim.wait_exit()
                killed_at = lease_end = time.time()
                [row] = alert_rows(db)
                assert (row["state"], row["claimed_by"]) == ("pending", None)
                refused_before = row["attempts"]
                assert refused_before >= 2
                survivor = servers.gunicorn(settings)
                survivor_node = survivor.get_json("/readyz")["node"]
                survivor.wait_for(lambda: receiver.where(lambda p: p["sent_by"] ==
                                                         survivor_node),
                                  message="the new node retrying (still refused)")
                receiver.set_mode("accept")
            survivor_node = survivor.get_json("/readyz")["node"]
            delivered = survivor.wait_for(
                lambda: receiver.where(lambda p: p["status"] == 200), timeout=LEASE + 15,
                message="the alert to be delivered by the new node")[0]
            assert (delivered["id"], delivered["event"]) == (run["id"], "run.failed")
            assert (delivered["sent_by"], delivered["node"]) == (survivor_node, victim_node)
            # Not before the dead node's lease ran out, and nobody posted it meanwhile.
            assert delivered["at"] >= lease_end
            if moment == "mid-post":
                assert receiver.where(lambda p: held["at"] < p["at"] < lease_end) == []
            survivor.wait_for(lambda: alert_rows(db)[0]["state"] == "delivered",
                              message="the alert to be marked delivered")

            def duplicated() -> bool:
                accepted = receiver.where(lambda p: p["status"] == 200)
                return Counter((p["id"], p["event"]) for p in accepted)[
                    run["id"], "run.failed"] > 1
            never(duplicated, DUPLICATE_WINDOW, "the alert was delivered twice")
            accepted = receiver.where(lambda p: p["status"] == 200)
            assert Counter((p["id"], p["event"]) for p in accepted) == {
                (run["id"], "run.failed"): 1}
            [row] = alert_rows(db)
            assert (row["run_id"], row["event"], row["state"], row["claimed_by"]) == (
                run["id"], "failed", "delivered", None)
            # Every attempt written down counts, whichever node made it (a held attempt died
            # with its node and was never written down).
            refused = receiver.where(lambda p: p["status"] == 503)
            assert row["attempts"] == len(refused) + 1
            print(f"{backend}, {moment}: delivered {delivered['at'] - killed_at:.1f} s after "
                  f"kill -9; {len(refused)} refused attempt(s) before")
        finally:
            db.dispose()
