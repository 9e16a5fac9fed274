"""Webhook alerts: a JSON POST to ``ALERT_WEBHOOK_URL`` when a run ends in a state listed in
``ALERT_ON`` (``failed`` by default; a failed attempt that will be retried is not an end).

Durable: an alert is a row of ``scheduler_alerts``, written in the same transaction as the end
of its run, wherever the run ends: on the node that executed it, on the node that settled it as
``NodeLost``, or in the API request that cancelled it while queued (``store/alerts.py``). So a
run never ends without its alert, and an alert waiting for its receiver is never lost with a
node: killed with ``kill -9``, its alerts are sent by another node, or by itself once restarted.

Any live node sends them: each node with ``ALERT_WEBHOOK_URL`` has one sender thread, which
claims a due alert with a lease (``claimed_by``; three ``ALERT_TIMEOUT_SECONDS`` and 5 s, longer
than any one attempt), posts it, and writes the outcome. Two live nodes never post one alert at
once; a node that dies mid-post holds it until the lease ends, then another node takes it. The
sender looks for due alerts every ``DISPATCH_POLL_SECONDS``, and at once when its own node ends
a run. Delivery never runs on a request or a task thread (``urllib``: one POST with a timeout
needs no dependency).

Connection errors, timeouts, 5xx, 408 and 429 answers are retried with exponential backoff
(``ALERT_BACKOFF_SECONDS``, doubling, ``ALERT_MAX_ATTEMPTS`` attempts in all, counted across
nodes); other answers (a 404, a redirect: set the final URL) will not improve and are given up
at once; every alert given up is logged as an error with its run. When a node stops, its sender
goes on with the alerts due for up to one ``ALERT_TIMEOUT_SECONDS`` (until the first failure,
which is not counted), then leaves the rest in the database for the other nodes.

Delivery is at least once: a POST whose answer was lost, or whose node died before writing the
answer down, is sent again; so the receiver should be idempotent on (``run.id``, ``event``).

Body: the run exactly as ``GET /api/runs/<id>`` shows it, plus ``event`` (``run.failed``,
``run.succeeded`` or ``run.cancelled``) and ``sent_by`` (the node that sent it, not
necessarily the one that ended the run).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from http.client import HTTPException
from typing import Any

from .services.views import run_view
from .settings import Settings
from .store import AlertStore, ClaimedAlert, Run, Store
from .store.alerts import DELIVERED, GIVEN_UP, PENDING
from .timeutil import utcnow

log = logging.getLogger(__name__)

THREAD_NAME = "node-alerts"
RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "scheduler_app-alerts/1"
MIN_WAIT = 0.05  # between looks, when a due alert was just taken by another node


def recorded_events(settings: Settings) -> tuple[str, ...]:
    """The run end states whose end writes an alert in this process: ``ALERT_ON`` when there
    is a webhook URL, none otherwise."""
    return settings.alert_on if settings.alert_webhook_url is not None else ()


def companions(settings: Settings, store: Store, node_id: str) -> list[AlertSender]:
    """The node's alert sender when ``ALERT_WEBHOOK_URL`` is set (none otherwise): it runs
    alongside the node, which tells it of every run it settles."""
    if settings.alert_webhook_url is None:
        return []
    return [AlertSender.from_settings(settings, store.alerts, node_id=node_id)]


class _GiveUp(Exception):
    """The receiver's answer will not change on a retry."""


class AlertSender:
    """Posts the due alerts of the whole cluster from its own thread; ``run_settled`` only
    wakes it."""

    def __init__(self, url: str, store: AlertStore, *, node_id: str,
                 events: tuple[str, ...], timeout: float, max_attempts: int, backoff: float,
                 poll_seconds: float) -> None:
        self.url = url
        self.store = store
        self.node_id = node_id
        self.events = frozenset(events)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.poll_seconds = poll_seconds
        # Longer than one attempt can take (connecting, sending and reading each wait at most
        # the timeout), so a live node never loses an alert it is posting to another node.
        self.lease_seconds = 3 * timeout + 5.0
        self._cond = threading.Condition()
        self._nudged = False
        self._closing = False
        self._deadline: float | None = None  # monotonic time the last round at stop ends
        self._thread: threading.Thread | None = None
        # Not following redirects: a webhook is posted to the URL configured, or not at all.
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def from_settings(cls, settings: Settings, store: AlertStore, node_id: str
                      ) -> AlertSender:
        assert settings.alert_webhook_url is not None
        return cls(settings.alert_webhook_url, store, node_id=node_id,
                   events=settings.alert_on, timeout=settings.alert_timeout,
                   max_attempts=settings.alert_max_attempts, backoff=settings.alert_backoff,
                   poll_seconds=settings.poll_seconds)

    # -- what the node calls ----------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing = False
            self._deadline = None
            self._nudged = True  # look at once: alerts may be waiting from before
            self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Send the alerts due for up to one timeout more, then end the thread; the rest stay
        in the database for the other nodes (or this one's next start). Also bounds an
        attempt in flight, so the node's stop waits at most about that long."""
        thread = self._thread
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.timeout
            self._cond.notify_all()
        if thread is not None:
            thread.join(self.timeout + 1.0)
            if thread.is_alive():
                log.error("alert sender did not stop in time; the alert it holds is sent by "
                          "another node once its lease ends")
        try:
            pending = self.store.pending_count()
        except Exception:
            log.exception("could not count the alerts still pending")
            return
        if pending:
            log.info("%s alert(s) still pending: another live node sends them, or this one "
                     "once it starts again", pending, extra={"node": self.node_id})

    def run_settled(self, run: Run) -> None:
        """This node ended ``run``: if its alert was written, look for it now."""
        if run.is_final and run.state.value in self.events:
            with self._cond:
                self._nudged = True
                self._cond.notify()

    # -- the sender thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            try:
                alert, wait = self._next()
            except Exception:  # the database is away: try again at the next poll
                log.exception("could not look for alerts to send; retrying",
                              extra={"node": self.node_id})
                alert, wait = None, self.poll_seconds
            if alert is not None:
                try:
                    self._deliver(alert)
                except Exception:  # never let one alert end the thread
                    log.exception("alert for run %s (%s) failed", alert.run_id, alert.event,
                                  extra=self._fields(alert))
                continue
            with self._cond:
                if self._closing:
                    return
                if not self._nudged:
                    self._cond.wait(wait)
                self._nudged = False

    def _next(self) -> tuple[ClaimedAlert | None, float]:
        """A due alert, now claimed by this node; or None and how long to wait for one."""
        if self._time_left(self.timeout) <= 0:
            return None, 0.0
        due = self.store.next_due()
        if due is None:
            return None, self.poll_seconds
        wait = (due - utcnow()).total_seconds()
        if wait > 0:
            return None, min(wait, self.poll_seconds)
        return self.store.claim(self.node_id, self.lease_seconds), MIN_WAIT

    def _deliver(self, alert: ClaimedAlert) -> None:
        extra = self._fields(alert)
        attempt = alert.attempts + 1
        timeout = self._time_left(self.timeout)
        view = run_view(alert.run) if alert.run is not None else alert.unreadable
        body = json.dumps({**(view or {}), "event": f"run.{alert.event}",
                           "sent_by": self.node_id}, default=str).encode()
        try:
            self._post(body, timeout)
        except _GiveUp as exc:
            self._record(alert, GIVEN_UP, str(exc))
            log.error("alert for run %s (%s) not delivered to %s: %s; not retried",
                      alert.run_id, alert.event, _shown(self.url), exc, extra=extra)
            return
        except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, 5xx
            problem = str(exc) or type(exc).__name__
            if self._stopping():
                # Its timeout cut short by the node stopping: not counted, due again at once
                # for another node, and the last round ends here.
                self._record(alert, PENDING, problem, retry_in=0.0, counted=False)
                log.warning("alert for run %s (%s), attempt %s of %s: %s; this node is "
                            "stopping, another node will send it", alert.run_id, alert.event,
                            attempt, self.max_attempts, problem, extra=extra)
                with self._cond:
                    self._deadline = time.monotonic()
                return
            if attempt >= self.max_attempts:
                problem = f"{problem} (attempt {attempt} of {self.max_attempts})"
                self._record(alert, GIVEN_UP, problem)
                log.error("alert for run %s (%s) not delivered to %s: %s", alert.run_id,
                          alert.event, _shown(self.url), problem, extra=extra)
                return
            delay = self.backoff * 2 ** (attempt - 1)
            self._record(alert, PENDING, problem, retry_in=delay)
            log.warning("alert for run %s (%s), attempt %s of %s: %s; retrying in %.1f s",
                        alert.run_id, alert.event, attempt, self.max_attempts, problem, delay,
                        extra=extra)
            return
        self._record(alert, DELIVERED)
        log.info("alert for run %s (%s) delivered to %s", alert.run_id, alert.event,
                 _shown(self.url), extra=extra)

    def _record(self, alert: ClaimedAlert, state: str, error: str | None = None, *,
                retry_in: float | None = None, counted: bool = True) -> None:
        if not self.store.attempted(alert, self.node_id, state=state, error=error,
                                    retry_in=retry_in, counted=counted):
            log.warning("alert for run %s (%s): the attempt outlived this node's lease and "
                        "another node took the alert over", alert.run_id, alert.event,
                        extra=self._fields(alert))

    def _fields(self, alert: ClaimedAlert) -> dict[str, Any]:
        """``extra`` of every log line about ``alert``."""
        return {"run_id": alert.run_id, "job_id": alert.job_id, "task": alert.task,
                "node": self.node_id}

    def _post(self, body: bytes, timeout: float) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST", headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT})
        try:
            with self._opener.open(request, timeout=timeout) as response:
                response.read(65536)
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code >= 500 or exc.code in RETRY_STATUSES:
                raise OSError(f"the receiver answered {exc.code}") from None
            raise _GiveUp(f"the receiver answered {exc.code}") from None

    def _stopping(self) -> bool:
        with self._cond:
            return self._closing

    def _time_left(self, wanted: float) -> float:
        """``wanted`` seconds, or what is left of the last round once the node is stopping."""
        with self._cond:
            if self._deadline is None:
                return wanted
            return min(wanted, self._deadline - time.monotonic())


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _shown(url: str) -> str:
    """The URL without path or query, which often carry a webhook's secret."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    hidden = "…" if parts.path not in ("", "/") or parts.query else ""
    return f"{parts.scheme}://{host}/{hidden}"
