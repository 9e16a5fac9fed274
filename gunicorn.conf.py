"""gunicorn settings for this service. Every knob can be overridden on the command line
(``make run HOST=… PORT=…`` passes ``--bind``) or with GUNICORN_CMD_ARGS.

The scheduler is started in each worker after it forks (``post_worker_init``), never in the
master, and stopped gracefully when the worker exits (``worker_exit``): running tasks are asked
to stop and, if they do not within SHUTDOWN_GRACE_SECONDS, handed back to the queue.
"""

import json
import logging
import math
import os
from datetime import UTC, datetime

from gunicorn import glogging

# Loopback only by default: exposing the API to a network is a deliberate choice
# (set GUNICORN_BIND=0.0.0.0:8000, and configure FLASK_API_TOKENS first).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# Worker processes, each a node with its own scheduler and run threads; the shared database
# makes every job fire exactly once however many there are (see README, "Scaling out").
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
worker_class = "gthread"
# Threads serving HTTP in each worker (runs execute on the node's own pool, WORKER_THREADS).
threads = int(os.environ.get("GUNICORN_THREADS", "8"))


def _shutdown_grace_seconds() -> float:
    """The app's SHUTDOWN_GRACE_SECONDS (default as in ``config.settings.Config``)."""
    try:
        return max(0.0, float(os.environ.get("FLASK_SHUTDOWN_GRACE_SECONDS", "10")))
    except ValueError:
        return 10.0  # the app refuses to start and names the setting


# Seconds a worker gets after SIGTERM to finish requests and hand back runs. gunicorn kills
# the worker when they are up, so by default they cover the tasks' grace period plus time to
# stop the scheduler threads (up to ~10 s) and write the hand-back; a worker killed before it
# hands back leaves its runs to be settled later as lost (NodeLost), spending an attempt.
graceful_timeout = int(os.environ.get(
    "GUNICORN_GRACEFUL_TIMEOUT", max(30, math.ceil(_shutdown_grace_seconds()) + 15)))
timeout = 60
# Access log to stderr ("-") by default; GUNICORN_ACCESSLOG="" turns it off.
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-") or None


class JsonLogger(glogging.Logger):
    """gunicorn's own lines (boots, exits, signals) and its access log as the app's JSON lines
    (``time``, ``level``, ``logger``, ``message``, ``process``, ``thread``), so that with
    FLASK_LOG_FORMAT=json every line on stderr is one JSON object."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(_JsonFormatter())


class _JsonFormatter(logging.Formatter):
    def format(self, record):
        entry = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname, "logger": record.name, "message": record.getMessage(),
            "process": record.process, "thread": record.threadName}
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


if os.environ.get("FLASK_LOG_FORMAT", "").strip().lower() == "json":
    logger_class = JsonLogger
    # The time is the entry's own; the message keeps the request, status, size and duration.
    access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'


def on_starting(server):
    _halt_once(server)


def _halt_once(arbiter):
    """Keep the master's exit status when several workers fail to boot.

    The master halts when a worker exits with "failed to boot" (3), and while halting it reaps
    the other workers; in gunicorn 27 a second worker that failed alike raises ``HaltServer``
    again inside ``halt``, so the master dies with a traceback and status 1 instead of 3 (a bad
    setting fails every worker at once). While halting, that second report is ignored and the
    reaping goes on."""
    from gunicorn.errors import HaltServer

    halt, reap_workers = arbiter.halt, arbiter.reap_workers
    halting = False

    def halt_once(reason=None, exit_status=0):
        nonlocal halting
        halting = True
        halt(reason, exit_status)

    def reap_while_halting():
        while True:
            try:
                return reap_workers()
            except HaltServer:
                if not halting:
                    raise

    arbiter.halt, arbiter.reap_workers = halt_once, reap_while_halting


def post_worker_init(worker):
    import gc

    from scheduler_app import start_scheduler

    start_scheduler(worker.wsgi)
    # Everything built so far (the app, SQLAlchemy's tables and compiled statements, the task
    # registry) lives as long as the worker: move it out of the collector's reach. A full
    # collection over it took 15-35 ms, a pause for every request in flight (bench/README.md).
    gc.freeze()


def worker_exit(server, worker):
    from scheduler_app import stop_scheduler

    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_scheduler(app)
