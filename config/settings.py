"""The standalone service's settings: where it differs from the extension's defaults.

Every setting, with its default and meaning, is written once in ``scheduler_app/settings.py``.
Override any of them with a ``FLASK_``-prefixed environment variable, by its bare name
(``FLASK_WORKER_THREADS=8``, ``FLASK_API_TOKENS='{"s3cret": "admin"}'``) or its full one
(``FLASK_SCHEDULER_WORKER_THREADS=8``): values are parsed as JSON when they can be and taken as
strings otherwise (``FLASK_SCHEDULER_TIMEZONE=Europe/Paris``). They are validated at start-up,
and a wrong one is named.
"""

from __future__ import annotations


class Config:
    # The service is the whole app: its API at /api, its dashboard at /.
    URL_PREFIX = ""
    # Start the scheduler with the first request if no server hook started it (flask run).
    SCHEDULER_AUTOSTART = True
    # Flask-APScheduler's REST API at /scheduler, behind the same auth and task checks.
    SCHEDULER_API_ENABLED = True
    # Modules imported at start-up so their @task functions register.
    TASK_MODULES = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance"]
    # The built-in retention job: maintenance.prune_runs on this cron (PRUNE_RUNS_OLDER_THAN_DAYS).
    PRUNE_RUNS_CRON = "17 3 * * *"

    # What a host app sets for itself, and the standalone service sets here:
    SECRET_KEY: str | None = None  # None: one made and kept in instance/secret_key
    MAX_CONTENT_LENGTH = 1024 * 1024  # request bodies (413 past it)
    # Behind a reverse proxy: how many proxies' X-Forwarded-* headers to trust (Werkzeug's
    # ProxyFix). 0 (default) trusts none: the client address is the socket's.
    PROXY_FIX_HOPS = 0
    # The process log, on stderr: "text" (one line per record, run fields appended as
    # run=12 job=nightly task=demo.sleep node=host:pid:id) or "json" (one object per line).
    LOG_FORMAT = "text"
    # Level of the service's own loggers (scheduler_app.*); others keep the root's (WARNING).
    LOG_LEVEL = "INFO"


class TestingConfig(Config):
    TESTING = True
    SCHEDULER_AUTOSTART = False
    RETRY_BACKOFF_SECONDS = 0.05
    NODE_HEARTBEAT_SECONDS = 0.5
    NODE_LEASE_SECONDS = 3.0
    DISPATCH_POLL_SECONDS = 0.2
    TICK_SECONDS = 0.1
    SHUTDOWN_GRACE_SECONDS = 2.0
