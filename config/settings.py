"""Default settings. Override any of them with a ``FLASK_``-prefixed environment variable:
values are parsed as JSON when they can be (``FLASK_WORKER_THREADS=8``,
``FLASK_API_TOKENS='{"s3cret": "admin"}'``) and taken as strings otherwise
(``FLASK_SCHEDULER_TIMEZONE=Europe/Paris``). ``scheduler_app.settings`` validates them all at
start-up and names the setting that is wrong.
"""

from __future__ import annotations


class Config:
    # Where jobs, runs and nodes live. None means a SQLite file in the Flask instance folder.
    # Several hosts: postgresql+psycopg://user@host/dbname
    DATABASE_URL: str | None = None
    # Upgrade the database schema at start-up (under a lock: one process migrates, the others
    # wait). false: leave it to `flask --app wsgi db upgrade`, a deliberate deploy step.
    SCHEMA_AUTO_UPGRADE = True

    # Threads that execute runs in each node (process). A node never claims more runs than this.
    WORKER_THREADS = 4
    # all: serves HTTP and runs jobs; web: serves HTTP, never executes; worker: executes only.
    SCHEDULER_ROLE = "all"
    # Time zone for cron triggers that do not name one.
    SCHEDULER_TIMEZONE = "UTC"
    # Start the scheduler with the first request if no server hook started it (flask run).
    SCHEDULER_AUTOSTART = True
    # Flask-APScheduler's REST API at /scheduler, behind the same auth and task checks.
    SCHEDULER_API_ENABLED = True
    SCHEDULER_API_PREFIX = "/scheduler"

    # Modules imported at start-up so their @task functions register.
    TASK_MODULES = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance"]

    # token -> role ("viewer" or "admin"). Empty: only loopback clients, as admin.
    API_TOKENS: dict[str, str] = {}
    SECRET_KEY: str | None = None

    # Defaults for jobs that do not say (APScheduler's own misfire grace is 1 s: too tight).
    JOB_MISFIRE_GRACE_TIME = 60
    JOB_COALESCE = True
    JOB_MAX_INSTANCES = 1

    # Retries: delay before attempt n+1 is RETRY_BACKOFF_SECONDS * 2**(n-1), capped at 1 h.
    RETRY_BACKOFF_SECONDS = 2.0
    # Lines kept per run log; past this one line says the log was truncated.
    RUN_LOG_MAX_LINES = 1000

    # Cluster timing: a node whose heartbeat is older than the lease is dead.
    NODE_HEARTBEAT_SECONDS = 5.0
    NODE_LEASE_SECONDS = 30.0
    # How often a node looks for runs queued elsewhere (poll), and how often a busy node writes
    # progress and log lines, delivers cancel requests and enforces timeouts (tick).
    DISPATCH_POLL_SECONDS = 1.0
    TICK_SECONDS = 0.25
    # On SIGTERM: how long running tasks get to stop before their runs are handed back.
    SHUTDOWN_GRACE_SECONDS = 10.0

    # The built-in retention job: maintenance.prune_runs on this cron, keeping this many days.
    PRUNE_RUNS_CRON = "17 3 * * *"
    PRUNE_RUNS_OLDER_THAN_DAYS = 30

    # Limits: request body, a run's kwargs, runs waiting in the queue (cluster-wide; 429 when
    # full), jobs in the table.
    MAX_CONTENT_LENGTH = 1024 * 1024
    KWARGS_MAX_BYTES = 64 * 1024
    MAX_QUEUED_RUNS = 10_000
    MAX_JOBS = 10_000

    # Behind a reverse proxy: how many proxies' X-Forwarded-* headers to trust (Werkzeug's
    # ProxyFix). 0 (default) trusts none: the client address is the socket's.
    PROXY_FIX_HOPS = 0

    # The process log, on stderr: "text" (one line per record, run fields appended as
    # run=12 job=nightly task=demo.sleep node=host:pid:id) or "json" (one object per line).
    LOG_FORMAT = "text"
    # Level of the service's own loggers (scheduler_app.*); others keep the root's (WARNING).
    LOG_LEVEL = "INFO"

    # Alerts: a JSON POST to this URL when a run ends in one of ALERT_ON's states (a failed
    # attempt that will be retried is not an end). None: no alerts. Each POST waits at most
    # ALERT_TIMEOUT_SECONDS; connection errors and 5xx answers are retried up to
    # ALERT_MAX_ATTEMPTS times in all, ALERT_BACKOFF_SECONDS apart, doubling.
    ALERT_WEBHOOK_URL: str | None = None
    ALERT_ON = ["failed"]  # any of "failed", "succeeded", "cancelled"
    ALERT_TIMEOUT_SECONDS = 5.0
    ALERT_MAX_ATTEMPTS = 5
    ALERT_BACKOFF_SECONDS = 1.0

    # Jobs declared here are created, or updated to match, by id at every start (README,
    # "Declared jobs"). Flask-APScheduler's shape, with func a registered task:
    #   {"id": "nightly", "func": "demo.echo", "kwargs": {"value": 1}, "trigger": "cron",
    #    "hour": 2}
    # or the API's: {"id": "nightly", "task": "demo.echo", "kwargs": {"value": 1},
    #                "trigger": {"type": "cron", "expr": "0 2 * * *"}}
    JOBS: list[dict[str, object]] = []


class TestingConfig(Config):
    TESTING = True
    SCHEDULER_AUTOSTART = False
    RETRY_BACKOFF_SECONDS = 0.05
    NODE_HEARTBEAT_SECONDS = 0.5
    NODE_LEASE_SECONDS = 3.0
    DISPATCH_POLL_SECONDS = 0.2
    TICK_SECONDS = 0.1
    SHUTDOWN_GRACE_SECONDS = 2.0
