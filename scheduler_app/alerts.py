"""Webhook alerts: a JSON POST to ``ALERT_WEBHOOK_URL`` when a run ends in a state listed in
``ALERT_ON`` (``failed`` by default; a failed attempt that will be retried is not an end).

Only the node that settles a run sends its alert: the one that executed it, or the one that
settled it as ``NodeLost``; so each end is announced once, by one process, whatever the size of
the cluster. A run cancelled while still queued is ended by the API request itself, not by a
node, and sends no alert.

Delivery never runs on a request or a task thread: the settling thread only puts the alert in
a bounded queue, and one sender thread per node posts it (``urllib``: one POST with a timeout
needs no dependency). Connection errors, timeouts, 5xx, 408 and 429 answers are retried with
exponential backoff; other answers (a 404, a redirect: set the final URL) will not improve and
are given up at once; every alert given up is logged as an error with its run. When the node
stops, the sender gets up to one ``ALERT_TIMEOUT_SECONDS`` to deliver what is queued, then
logs what it drops. The receiver should be idempotent on (``run.id``, ``event``): a POST whose
answer was lost is sent again.

Body: the run exactly as ``GET /api/runs/<id>`` shows it, plus ``event`` (``run.failed``,
``run.succeeded`` or ``run.cancelled``) and ``sent_by`` (the sending node).
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import dataclass
from http.client import HTTPException
from typing import Any

from .services.views import run_view
from .settings import Settings
from .store import Run

log = logging.getLogger(__name__)

THREAD_NAME = "node-alerts"
QUEUE_SIZE = 1000
RETRY_STATUSES = frozenset({408, 429})
USER_AGENT = "scheduler_app-alerts/1"


def companions(settings: Settings, node_id: str) -> list[AlertSender]:
    """The node's alert sender when ``ALERT_WEBHOOK_URL`` is set (none otherwise): it runs
    alongside the node, which tells it of every run it settles."""
    if settings.alert_webhook_url is None:
        return []
    return [AlertSender.from_settings(settings, node_id=node_id)]


@dataclass(frozen=True)
class _Alert:
    run_id: int
    event: str
    body: bytes
    log_fields: dict[str, Any]  # ``extra`` of every log line about this alert


class _GiveUp(Exception):
    """The receiver's answer will not change on a retry."""


class AlertSender:
    """Posts alerts from a bounded queue on its own thread; ``run_settled`` never blocks."""

    def __init__(self, url: str, *, events: tuple[str, ...], timeout: float, max_attempts: int,
                 backoff: float, node_id: str | None = None,
                 queue_size: int = QUEUE_SIZE) -> None:
        self.url = url
        self.events = frozenset(events)
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.queue_size = queue_size
        self.node_id = node_id
        self._queue: deque[_Alert] = deque()
        self._cond = threading.Condition()
        self._closing = False
        self._deadline: float | None = None  # monotonic time the drain at stop ends
        self._thread: threading.Thread | None = None
        # Not following redirects: a webhook is posted to the URL configured, or not at all.
        self._opener = urllib.request.build_opener(_NoRedirect)

    @classmethod
    def from_settings(cls, settings: Settings, node_id: str | None = None) -> AlertSender:
        assert settings.alert_webhook_url is not None
        return cls(settings.alert_webhook_url, events=settings.alert_on,
                   timeout=settings.alert_timeout, max_attempts=settings.alert_max_attempts,
                   backoff=settings.alert_backoff, node_id=node_id)

    # -- what the node calls ----------------------------------------------------------------
    def start(self) -> None:
        with self._cond:
            if self._thread is not None and self._thread.is_alive():
                return
            self._closing = False
            self._deadline = None
            self._thread = threading.Thread(target=self._loop, name=THREAD_NAME, daemon=True)
            self._thread.start()

    def stop(self) -> None:
        """Deliver what is queued for up to one timeout, drop (and log) the rest, and end the
        thread. Also bounds an attempt in flight, so the node's stop waits at most that long."""
        thread = self._thread
        with self._cond:
            self._closing = True
            self._deadline = time.monotonic() + self.timeout
            self._cond.notify_all()
        if thread is not None:
            thread.join(self.timeout + 1.0)
            if thread.is_alive():
                log.error("alert sender did not stop in time; %s alert(s) may be lost",
                          len(self._queue))

    def run_settled(self, run: Run) -> None:
        """Queue the alert for a run this node settled, if its state is one asked for."""
        event = run.state.value
        if event not in self.events:
            return
        extra = {"run_id": run.id, "job_id": run.job_id, "task": run.task, "node": self.node_id}
        body = json.dumps({**run_view(run), "event": f"run.{event}", "sent_by": self.node_id},
                          default=str).encode()
        with self._cond:
            if len(self._queue) >= self.queue_size:
                dropped = True
            else:
                dropped = False
                self._queue.append(_Alert(run.id, event, body, extra))
                self._cond.notify()
        if dropped:
            log.error("alert for run %s (%s) dropped: %s alerts are already waiting", run.id,
                      event, self.queue_size, extra=extra)

    @property
    def pending(self) -> int:
        with self._cond:
            return len(self._queue)

    # -- the sender thread ------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closing:
                    self._cond.wait()
                if not self._queue:
                    return
                alert = self._queue.popleft()
            try:
                self._deliver(alert)
            except Exception:  # never let one alert end the thread
                log.exception("alert for run %s (%s) failed", alert.run_id, alert.event,
                              extra=alert.log_fields)

    def _deliver(self, alert: _Alert) -> None:
        extra = alert.log_fields
        problem = "the node stopped before it could be sent"
        for attempt in range(1, self.max_attempts + 1):
            timeout = self._time_left(self.timeout)
            if timeout <= 0:
                break
            try:
                self._post(alert.body, timeout)
            except _GiveUp as exc:
                log.error("alert for run %s (%s) not delivered to %s: %s; not retried",
                          alert.run_id, alert.event, _shown(self.url), exc, extra=extra)
                return
            except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, 5xx
                problem = str(exc) or type(exc).__name__
                if attempt == self.max_attempts:
                    problem = f"{problem} (attempt {attempt} of {self.max_attempts})"
                    break
                delay = self.backoff * 2 ** (attempt - 1)
                log.warning("alert for run %s (%s), attempt %s of %s: %s; retrying in %.1f s",
                            alert.run_id, alert.event, attempt, self.max_attempts, problem,
                            delay, extra=extra)
                if not self._pause(delay):
                    problem = f"{problem}; the node stopped before attempt {attempt + 1}"
                    break
            else:
                log.info("alert for run %s (%s) delivered to %s", alert.run_id, alert.event,
                         _shown(self.url), extra=extra)
                return
        log.error("alert for run %s (%s) not delivered to %s: %s", alert.run_id, alert.event,
                  _shown(self.url), problem, extra=extra)

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

    def _time_left(self, wanted: float) -> float:
        """``wanted`` seconds, or what is left of the drain once the node is stopping."""
        with self._cond:
            if self._deadline is None:
                return wanted
            return min(wanted, self._deadline - time.monotonic())

    def _pause(self, seconds: float) -> bool:
        """Wait before a retry; False if the drain at stop ends first."""
        end = time.monotonic() + seconds
        with self._cond:
            while True:
                now = time.monotonic()
                if self._deadline is not None and self._deadline <= end:
                    return False
                if now >= end:
                    return True
                self._cond.wait(end - now)


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
