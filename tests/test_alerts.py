"""Webhook alerts: delivered to a real HTTP receiver on loopback, retried on 5xx, sent only
for the end states asked for, and never in the way of the runs themselves."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from flask import Flask

from scheduler_app import start_scheduler, stop_scheduler
from scheduler_app.alerts import THREAD_NAME, AlertSender
from scheduler_app.errors import ConfigError
from scheduler_app.services import services
from scheduler_app.store import Database, Store
from tests.conftest import end_a_run_unreadable, wait_for
from tests.servers import free_port

FAST = {"ALERT_BACKOFF_SECONDS": 0.05, "ALERT_TIMEOUT_SECONDS": 2.0}


class Receiver:
    """An HTTP server on 127.0.0.1 that records every POST and answers from a script of
    statuses (200 once the script runs out)."""

    def __init__(self, statuses: tuple[int, ...] = ()) -> None:
        self.statuses = list(statuses)
        self.attempts: list[dict[str, Any]] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers["Content-Length"]))
                with receiver.lock:
                    status = receiver.statuses.pop(0) if receiver.statuses else 200
                    receiver.attempts.append({"path": self.path, "status": status,
                                              "headers": dict(self.headers),
                                              "body": json.loads(body)})
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/s3cret"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,),
                                       name="alert-receiver", daemon=True)
        self.thread.start()

    @property
    def delivered(self) -> list[dict[str, Any]]:
        with self.lock:
            return [a["body"] for a in self.attempts if a["status"] < 300]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(autouse=True)
def _sender_stops() -> Iterator[None]:
    """Every test's apps are stopped by then (make_app's teardown runs first): so must be the
    alert sender thread."""
    yield
    wait_for(lambda: not [t for t in threading.enumerate() if t.name == THREAD_NAME],
             timeout=5, message="the alert sender thread to stop")


def _run(client: Any, task: str, **kwargs: Any) -> dict[str, Any]:
    response = client.post("/api/runs", json={"task": task, "kwargs": kwargs})
    assert response.status_code == 202, response.get_json()
    return response.get_json()  # type: ignore[no-any-return]


def _wait_state(client: Any, run_id: int, state: str, timeout: float = 10.0) -> Any:
    return wait_for(lambda: (r := client.get(f"/api/runs/{run_id}").get_json())["state"] == state
                    and r, timeout=timeout, message=f"run {run_id} to be {state}")


# -- delivery ---------------------------------------------------------------------------------

def test_a_failed_run_is_posted_with_the_run(make_app: Callable[..., Flask],
                                             receiver: Receiver) -> None:
    app = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)
    client = app.test_client()
    run = _run(client, "demo.fail", message="disk full")
    body = wait_for(lambda: receiver.delivered, message="the alert")[0]

    shown = client.get(f"/api/runs/{run['id']}").get_json()
    assert body == {**shown, "event": "run.failed",
                    "sent_by": services(app).scheduler.node.id}
    assert body["state"] == "failed"
    assert body["error"]["type"] == "RuntimeError" and body["error"]["message"] == "disk full"
    attempt = receiver.attempts[0]
    assert attempt["path"] == "/hooks/s3cret"
    assert attempt["headers"]["Content-Type"] == "application/json"


def test_a_run_ended_unreadable_is_posted_with_what_can_be_read(tmp_path: Any,
                                                                receiver: Receiver) -> None:
    """A run whose row was changed by hand so that it cannot be read ends ``UnreadableRun``:
    its alert is posted once, with the columns that can be read and why the rest cannot,
    rather than left pending or failing at every poll."""
    db = Database(f"sqlite:///{tmp_path / 'bad.sqlite3'}")
    db.migrate()
    store = Store(db, alert_on=("failed",))
    sender = AlertSender(receiver.url, store.alerts, node_id="n", events=("failed",),
                         timeout=2.0, max_attempts=3, backoff=0.05, poll_seconds=0.05)
    try:
        bad = end_a_run_unreadable(store)
        sender.start()
        body = wait_for(lambda: receiver.delivered, message="the alert")[0]
        wait_for(lambda: store.alerts.pending_count() == 0, message="the alert delivered")
    finally:
        sender.stop()
        db.dispose()

    assert len(receiver.attempts) == 1
    assert (body["id"], body["task"], body["state"], body["event"], body["sent_by"]) == (
        bad, "demo.echo", "failed", "run.failed", "n")
    assert body["kwargs"] is None and body["error"]["type"] == "UnreadableRun"
    assert "not JSON: kwargs" in body["unreadable"]


def test_5xx_is_retried_with_backoff_until_delivered(make_app: Callable[..., Flask],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(statuses=(500, 503))
    try:
        app = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)
        run = _run(app.test_client(), "demo.fail")
        wait_for(lambda: receiver.delivered, message="the alert to get through")
        wait_for(lambda: f"alert for run {run['id']} (failed) delivered" in caplog.text,
                 message="the delivery to be logged")
        assert [a["status"] for a in receiver.attempts] == [500, 503, 200]
        assert all(a["body"] == receiver.attempts[0]["body"] for a in receiver.attempts)
        assert "attempt 1 of 5: the receiver answered 500; retrying in 0.1 s" in caplog.text
        assert "attempt 2 of 5: the receiver answered 503; retrying in 0.1 s" in caplog.text
    finally:
        receiver.close()


def test_a_4xx_answer_is_not_retried(make_app: Callable[..., Flask],
                                     caplog: pytest.LogCaptureFixture) -> None:
    receiver = Receiver(statuses=(404,))
    try:
        app = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)
        run = _run(app.test_client(), "demo.fail")
        wait_for(lambda: "not retried" in caplog.text, message="the alert to be given up")
        assert len(receiver.attempts) == 1
        line = next(r for r in caplog.records if "not retried" in r.getMessage())
        assert line.levelname == "ERROR" and line.run_id == run["id"]  # type: ignore[attr-defined]
        # The secret in the URL's path never reaches the log.
        assert "s3cret" not in caplog.text and f"{receiver.url.split('/h')[0]}/…" in caplog.text
    finally:
        receiver.close()


def test_success_is_posted_only_when_asked(make_app: Callable[..., Flask],
                                           receiver: Receiver) -> None:
    app = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)  # ALERT_ON: failed only
    client = app.test_client()
    echoed = _run(client, "demo.echo", value=1)
    _wait_state(client, echoed["id"], "succeeded")
    failed = _run(client, "demo.fail")
    wait_for(lambda: receiver.delivered, message="the failure's alert")
    # One queue, in order: had the success been queued, it would have been posted first.
    assert [(b["id"], b["event"]) for b in receiver.delivered] == [(failed["id"], "run.failed")]


def test_success_and_cancel_are_posted_when_asked(make_app: Callable[..., Flask],
                                                  receiver: Receiver) -> None:
    app = make_app(ALERT_WEBHOOK_URL=receiver.url, ALERT_ON="succeeded, cancelled", **FAST)
    client = app.test_client()
    echoed = _run(client, "demo.echo", value={"a": 1})
    body = wait_for(lambda: receiver.delivered, message="the success's alert")[0]
    assert (body["id"], body["event"], body["result"]) == (echoed["id"], "run.succeeded",
                                                           {"a": 1})
    sleeper = _run(client, "demo.sleep", seconds=5)
    _wait_state(client, sleeper["id"], "running")
    client.post(f"/api/runs/{sleeper['id']}/cancel")
    wait_for(lambda: len(receiver.delivered) == 2, message="the cancel's alert")
    assert receiver.delivered[1]["event"] == "run.cancelled"
    _run(client, "demo.fail")  # not asked for: no third alert
    cancelled_too = _run(client, "demo.echo", value=2)
    wait_for(lambda: len(receiver.delivered) == 3, message="the second success's alert")
    assert receiver.delivered[2]["id"] == cancelled_too["id"]


def test_only_the_last_attempt_of_a_retried_run_alerts(make_app: Callable[..., Flask],
                                                       receiver: Receiver) -> None:
    app = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)
    run = _run(app.test_client(), "testing.flaky", succeed_on_attempt=9)  # 3 attempts, all fail
    body = wait_for(lambda: receiver.delivered, message="the alert")[0]
    assert (body["id"], body["attempt"], len(body["errors"])) == (run["id"], 3, 3)
    assert len(receiver.delivered) == 1


def test_a_run_settled_as_lost_alerts_from_the_settling_node(make_app: Callable[..., Flask],
                                                             receiver: Receiver) -> None:
    app = make_app(start=False, ALERT_WEBHOOK_URL=receiver.url, **FAST)
    run = _run(app.test_client(), "demo.echo", value=1)  # queued: no node runs here yet
    store = services(app).store
    assert [r.id for r in store.runs.claim("ghost:1:abc", 1, {})] == [run["id"]]
    start_scheduler(app)  # a starting node settles runs of dead nodes
    body = wait_for(lambda: receiver.delivered, message="the alert")[0]
    assert (body["id"], body["event"], body["error"]["type"]) == (run["id"], "run.failed",
                                                                   "NodeLost")
    assert body["node"] == "ghost:1:abc" and body["sent_by"] == services(app).scheduler.node.id


def test_a_run_cancelled_while_queued_alerts_once_a_node_runs(make_app: Callable[..., Flask],
                                                               receiver: Receiver) -> None:
    """The cancel request ends the run and writes its alert in one transaction; no node runs
    yet, so the alert waits in the database until one starts."""
    app = make_app(start=False, ALERT_WEBHOOK_URL=receiver.url, ALERT_ON="cancelled", **FAST)
    client = app.test_client()
    run = _run(client, "demo.echo", value=1)
    assert client.post(f"/api/runs/{run['id']}/cancel").get_json()["state"] == "cancelled"
    assert services(app).store.alerts.pending_count() == 1
    start_scheduler(app)
    body = wait_for(lambda: receiver.delivered, message="the alert")[0]
    assert (body["id"], body["event"], body["state"]) == (run["id"], "run.cancelled",
                                                          "cancelled")
    wait_for(lambda: services(app).store.alerts.pending_count() == 0,
             message="the alert to be marked delivered")


def test_a_stopped_node_leaves_its_alerts_to_another_node(make_app: Callable[..., Flask],
                                                          caplog: pytest.LogCaptureFixture
                                                          ) -> None:
    """A node that stops while its receiver refuses drops nothing: the alert stays pending in
    the database, and another node on it delivers it, once."""
    receiver = Receiver(statuses=(503,) * 1000)
    try:
        first = make_app(ALERT_WEBHOOK_URL=receiver.url, ALERT_MAX_ATTEMPTS=20, **FAST)
        run = _run(first.test_client(), "demo.fail")
        wait_for(lambda: len(receiver.attempts) >= 2, message="two refused attempts")
        stop_scheduler(first)
        assert "still pending" in caplog.text
        refused = len(receiver.attempts)
        assert services(first).store.alerts.pending_count() == 1
        with receiver.lock:
            receiver.statuses.clear()  # the receiver is back

        second = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)
        body = wait_for(lambda: receiver.delivered, message="the alert")[0]
        assert (body["id"], body["event"]) == (run["id"], "run.failed")
        assert body["sent_by"] == services(second).scheduler.node.id != body["node"]
        wait_for(lambda: services(second).store.alerts.pending_count() == 0,
                 message="the alert to be marked delivered")
        assert len(receiver.attempts) == refused + 1 and len(receiver.delivered) == 1
    finally:
        receiver.close()


def test_metrics_count_the_alerts_by_state(make_app: Callable[..., Flask]) -> None:
    receiver = Receiver(statuses=(404,))
    try:
        app = make_app(ALERT_WEBHOOK_URL=receiver.url, **FAST)
        client = app.test_client()
        alerts = services(app).store.alerts
        _run(client, "demo.fail")  # given up (404)
        wait_for(lambda: receiver.attempts and alerts.pending_count() == 0,
                 message="the first alert to be given up")
        _run(client, "demo.fail")
        wait_for(lambda: receiver.delivered and alerts.pending_count() == 0,
                 message="the second alert to be delivered")
        text = client.get("/metrics").get_data(as_text=True)
        assert 'scheduler_alerts{state="pending"} 0.0' in text
        assert 'scheduler_alerts{state="delivered"} 1.0' in text
        assert 'scheduler_alerts{state="given_up"} 1.0' in text
    finally:
        receiver.close()


# -- never in the way -------------------------------------------------------------------------

class Silent:
    """A TCP port that accepts connections (into its backlog) and never answers."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(50)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/hook"

    def close(self) -> None:
        self.sock.close()


@pytest.mark.parametrize("receiver_kind", ["silent", "refused"])
def test_an_unreachable_receiver_neither_slows_nor_breaks_runs(
        make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture,
        receiver_kind: str) -> None:
    silent = Silent() if receiver_kind == "silent" else None
    url = silent.url if silent else f"http://127.0.0.1:{free_port()}/hook"
    try:
        # One run thread: a sender on that thread would hold each run for timeout x attempts.
        app = make_app(WORKER_THREADS=1, ALERT_WEBHOOK_URL=url, ALERT_TIMEOUT_SECONDS=1.0,
                       ALERT_MAX_ATTEMPTS=2, ALERT_BACKOFF_SECONDS=0.05)
        client = app.test_client()
        started = time.monotonic()
        runs = [_run(client, "demo.fail", message=f"no {i}") for i in range(3)]
        for run in runs:
            _wait_state(client, run["id"], "failed", timeout=5)
        assert time.monotonic() - started < 3.0  # a sender on the run thread: > 6 s
        wait_for(lambda: f"alert for run {runs[0]['id']} (failed) not delivered" in caplog.text,
                 message="the first alert to be given up")
        # Stopping the node waits for the sender at most about one timeout.
        started = time.monotonic()
        stop_scheduler(app)
        assert time.monotonic() - started < 2.5
        assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]
    finally:
        if silent:
            silent.close()


# -- settings ---------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides, message", [
    ({"ALERT_WEBHOOK_URL": "file:///etc/passwd"}, "ALERT_WEBHOOK_URL .* scheme 'file'"),
    ({"ALERT_WEBHOOK_URL": "http:///hook"}, "ALERT_WEBHOOK_URL .* has no host"),
    ({"ALERT_WEBHOOK_URL": "http://h:port/x?token=s3cret"}, "ALERT_WEBHOOK_URL"),
    ({"ALERT_WEBHOOK_URL": 42}, "ALERT_WEBHOOK_URL"),
    ({"ALERT_ON": ["failed", "exploded"]}, "ALERT_ON"),
    ({"ALERT_ON": []}, "ALERT_ON"),
    ({"ALERT_TIMEOUT_SECONDS": 0}, "ALERT_TIMEOUT_SECONDS"),
    ({"ALERT_MAX_ATTEMPTS": 1.5}, "ALERT_MAX_ATTEMPTS"),
    ({"ALERT_BACKOFF_SECONDS": "soon"}, "ALERT_BACKOFF_SECONDS"),
])
def test_bad_alert_settings_stop_start_up(make_app: Callable[..., Flask],
                                          overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as error:
        make_app(start=False, **overrides)
    assert "s3cret" not in str(error.value)


def test_no_url_no_sender_and_no_alert(make_app: Callable[..., Flask]) -> None:
    app = make_app()
    assert not [t for t in threading.enumerate() if t.name == THREAD_NAME]
    client = app.test_client()
    _wait_state(client, _run(client, "demo.fail")["id"], "failed")
    assert services(app).store.alerts.pending_count() == 0
