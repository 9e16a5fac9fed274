"""Every setting the scheduler reads, each written once: its name, type, default and meaning.

A host app sets them as ``SCHEDULER_<NAME>`` keys of ``app.config`` (``SCHEDULER_WORKER_THREADS``);
the standalone service also accepts the bare names (``WORKER_THREADS``, from
``FLASK_WORKER_THREADS``). They are validated once, when ``init_app`` runs: a wrong value
stops start-up with a ``ConfigError`` naming the key, instead of an odd failure later in a
background thread.
"""

from __future__ import annotations

import os
import urllib.parse
import zoneinfo
from collections.abc import Mapping
from typing import Annotated, Any, Literal

import pydantic
import sqlalchemy as sa
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError

ROLES = ("all", "web", "worker")
TOKEN_ROLES = ("viewer", "admin")
ALERT_EVENTS = ("failed", "succeeded", "cancelled")
PREFIX = "SCHEDULER_"

PositiveInt = Annotated[int, Field(strict=True, gt=0)]
PositiveFloat = Annotated[float, Field(gt=0, allow_inf_nan=False)]


class Settings(BaseModel):
    """The scheduler's settings for one app.

    A field's alias is its bare key (``WORKER_THREADS``); its ``app.config`` key adds
    ``SCHEDULER_`` unless the bare key already starts with it (``SCHEDULER_ROLE`` and the keys
    Flask-APScheduler reads)."""

    model_config = ConfigDict(frozen=True, strict=True, extra="ignore", populate_by_name=True)

    # Where jobs, runs and nodes live. None: a SQLite file in the app's instance folder.
    # Several hosts: postgresql+psycopg://user@host/dbname
    database_url: str = Field("", alias="DATABASE_URL")
    # Upgrade the schema at start-up (under a lock: one process migrates, the others wait).
    # false: leave it to `flask scheduler db upgrade`, a deliberate deploy step.
    schema_auto_upgrade: bool = Field(True, alias="SCHEMA_AUTO_UPGRADE")
    # Where the JSON API (<prefix>/api), the dashboard (<prefix>/) and health routes live.
    url_prefix: str = Field("/scheduler-app", alias="URL_PREFIX")
    # Threads that execute runs in each node (process). A node never claims more than this.
    # 8: as many as gunicorn.conf.py's request threads, so a run-now request usually finds
    # a thread free and starts its run at once, without the queue (Dramatiq's default too;
    # APScheduler's own pool has 10).
    worker_threads: PositiveInt = Field(8, alias="WORKER_THREADS")
    # all: serves HTTP and runs jobs; web: serves HTTP, never executes; worker: executes only.
    role: Literal["all", "web", "worker"] = Field("all", alias="SCHEDULER_ROLE")
    # Time zone of cron triggers that do not name one.
    timezone: str = Field("UTC", alias="SCHEDULER_TIMEZONE")
    # Start this process's node with the first request it serves, if nothing started it.
    autostart: bool = Field(False, alias="SCHEDULER_AUTOSTART")
    # Run tasks at once in the caller of enqueue() (a host app's own tests).
    eager: bool = Field(False, alias="EAGER")
    # Flask-APScheduler's REST API, behind the same auth and task checks.
    api_enabled: bool = Field(False, alias="SCHEDULER_API_ENABLED")
    api_prefix: str = Field("/scheduler", alias="SCHEDULER_API_PREFIX")
    # Modules imported at start-up so their tasks register.
    task_modules: tuple[str, ...] = Field((), alias="TASK_MODULES")
    # token -> role ("viewer" or "admin"). Empty: only loopback clients, as admin.
    api_tokens: dict[str, str] = Field(default_factory=dict, alias="API_TOKENS")
    # Defaults for jobs that do not say (APScheduler's own misfire grace is 1 s: too tight).
    misfire_grace_time: PositiveFloat = Field(60.0, alias="JOB_MISFIRE_GRACE_TIME")
    coalesce: bool = Field(True, alias="JOB_COALESCE")
    max_instances: PositiveInt = Field(1, alias="JOB_MAX_INSTANCES")
    # Delay before attempt n+1 is RETRY_BACKOFF_SECONDS * 2**(n-1), capped at 1 h.
    retry_backoff: PositiveFloat = Field(2.0, alias="RETRY_BACKOFF_SECONDS")
    # Lines kept per run log; past this one line says the log was truncated.
    run_log_max_lines: PositiveInt = Field(1000, alias="RUN_LOG_MAX_LINES")
    # A JSON POST to this URL when a run ends in one of ALERT_ON's states. None: no alerts.
    alert_webhook_url: str | None = Field(None, alias="ALERT_WEBHOOK_URL")
    alert_on: tuple[str, ...] = Field(("failed",), alias="ALERT_ON")
    alert_timeout: PositiveFloat = Field(5.0, alias="ALERT_TIMEOUT_SECONDS")
    alert_max_attempts: PositiveInt = Field(5, alias="ALERT_MAX_ATTEMPTS")
    alert_backoff: PositiveFloat = Field(1.0, alias="ALERT_BACKOFF_SECONDS")
    # Jobs created, or updated to match, by id at every start (Flask-APScheduler's JOBS).
    declared_jobs: tuple[dict[str, Any], ...] = Field((), alias="JOBS")
    # Cluster timing: a node whose heartbeat is older than the lease is dead.
    heartbeat_seconds: PositiveFloat = Field(5.0, alias="NODE_HEARTBEAT_SECONDS")
    lease_seconds: PositiveFloat = Field(30.0, alias="NODE_LEASE_SECONDS")
    # How often a node looks for runs queued elsewhere: the fallback when no wake-up reaches it.
    poll_seconds: PositiveFloat = Field(1.0, alias="DISPATCH_POLL_SECONDS")
    # Push hand-offs to the node that must act (a run queued, a place freed, a cancel) instead
    # of waiting for its poll: PostgreSQL LISTEN/NOTIFY, or sockets beside a SQLite file.
    # false: the poll only (PgBouncer in transaction pooling mode cannot hold a LISTEN).
    wakeups: bool = Field(True, alias="WAKEUPS")
    # How often a busy node writes progress and logs, delivers cancels and enforces timeouts.
    tick_seconds: PositiveFloat = Field(0.25, alias="TICK_SECONDS")
    # How runs of tasks that do not say execute: "thread" (in this process) or "process" (a
    # child process each, which cancel, timeout and a memory limit can stop for real).
    isolation: Literal["thread", "process"] = Field("thread", alias="ISOLATION")
    # A process-isolated run asked to stop (cancel, timeout, shutdown) gets this long to stop
    # itself; then its process group gets SIGTERM, and SIGKILL half a second later.
    kill_grace_seconds: PositiveFloat = Field(5.0, alias="KILL_GRACE_SECONDS")
    # The import string the helper of process-isolated runs builds the app from, as `flask
    # --app` takes it ("wsgi:app", "myapp:create_app()"). None: FLASK_APP, else the app's
    # import name (its package, where `flask` finds `app` or `create_app`).
    process_app: str | None = Field(None, alias="PROCESS_APP")
    # On SIGTERM: how long running tasks get to stop before their runs are handed back.
    shutdown_grace_seconds: PositiveFloat = Field(10.0, alias="SHUTDOWN_GRACE_SECONDS")
    # The built-in retention job (maintenance.prune_runs) on this cron; None: none.
    prune_cron: str | None = Field(None, alias="PRUNE_RUNS_CRON")
    prune_older_than_days: PositiveInt = Field(30, alias="PRUNE_RUNS_OLDER_THAN_DAYS")
    # Limits: a request body, a run's kwargs, runs waiting (cluster-wide; 429 when full), jobs.
    max_content_length: PositiveInt = Field(1024 * 1024, alias="MAX_CONTENT_LENGTH")
    kwargs_max_bytes: PositiveInt = Field(64 * 1024, alias="KWARGS_MAX_BYTES")
    max_queued_runs: PositiveInt = Field(10_000, alias="MAX_QUEUED_RUNS")
    max_jobs: PositiveInt = Field(10_000, alias="MAX_JOBS")
    # POST /api/runs/batch and enqueue_many: runs per batch, and the batch route's own body
    # limit (the other routes keep MAX_CONTENT_LENGTH); 16 MiB lets 10,000 runs of 1.6 KB in.
    batch_max_runs: PositiveInt = Field(10_000, alias="BATCH_MAX_RUNS")
    batch_max_content_length: PositiveInt = Field(16 * 1024 * 1024,
                                                  alias="BATCH_MAX_CONTENT_LENGTH")

    @property
    def executes(self) -> bool:
        return self.role in ("all", "worker")

    # -- checks beyond the type ---------------------------------------------------------------
    @field_validator("database_url")
    @classmethod
    def _url(cls, url: str) -> str:
        try:
            sa.make_url(url)
        except (ArgumentError, ValueError):
            raise ValueError(f"is not a database URL: {url!r}") from None
        return url

    @field_validator("url_prefix", "api_prefix")
    @classmethod
    def _prefix(cls, prefix: str) -> str:
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"must be empty or start with / and not end with one, "
                             f"got {prefix!r}")
        return prefix

    @field_validator("timezone")
    @classmethod
    def _timezone(cls, tz: str) -> str:
        try:
            zoneinfo.ZoneInfo(tz)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"is not a known time zone: {tz!r}") from None
        return tz

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _tokens(cls, tokens: object) -> object:
        if tokens is None:
            return {}
        if not isinstance(tokens, dict) or not all(
                isinstance(k, str) and k and v in TOKEN_ROLES for k, v in tokens.items()):
            raise ValueError('must be a JSON object of token to role, roles "viewer" or '
                             '"admin", e.g. {"s3cret": "admin"}')
        return tokens

    @field_validator("task_modules", mode="before")
    @classmethod
    def _modules(cls, modules: object) -> object:
        if modules is None:
            return ()
        if isinstance(modules, str):
            modules = [m.strip() for m in modules.split(",") if m.strip()]
        if not isinstance(modules, list | tuple) or not all(isinstance(m, str) for m in modules):
            raise ValueError("must be a list of module names")
        return tuple(modules)

    @field_validator("alert_webhook_url", mode="before")
    @classmethod
    def _webhook(cls, url: object) -> object:
        return _webhook_url(url)

    @field_validator("alert_on", mode="before")
    @classmethod
    def _alert_on(cls, events: object) -> object:
        if isinstance(events, str):
            events = [e.strip() for e in events.split(",") if e.strip()]
        if not isinstance(events, list | tuple) or not events or \
                not all(e in ALERT_EVENTS for e in events):
            raise ValueError(f"must be a non-empty list of {', '.join(ALERT_EVENTS)}, "
                             f"got {events!r}")
        return tuple(dict.fromkeys(events))

    @field_validator("prune_cron", mode="before")
    @classmethod
    def _prune_cron(cls, cron: object) -> object:
        return cron or None

    @field_validator("declared_jobs", mode="before")
    @classmethod
    def _declared(cls, jobs: object) -> object:
        return _declared_jobs(jobs)


def config_key(field: str) -> str:
    """The ``app.config`` key of a field: ``worker_threads`` → ``SCHEDULER_WORKER_THREADS``."""
    alias = Settings.model_fields[field].alias or field.upper()
    return alias if alias.startswith(PREFIX) else PREFIX + alias


def bare_keys() -> dict[str, str]:
    """Bare key → config key, for the standalone service's ``FLASK_*`` names."""
    keys = {}
    for name, info in Settings.model_fields.items():
        alias = info.alias or name.upper()
        if not alias.startswith(PREFIX) and name != "declared_jobs":  # JOBS is read as is
            keys[alias] = config_key(name)
    keys["CANCEL_POLL_SECONDS"] = config_key("tick_seconds")  # its name before 0.2
    return keys


def load_settings(config: Mapping[str, Any], instance_path: str) -> Settings:
    """The settings ``config`` holds (``SCHEDULER_*`` keys, plus ``JOBS`` as Flask-APScheduler
    reads it), validated; raise ConfigError naming the first wrong key."""
    values: dict[str, Any] = {}
    keys: dict[str, str] = {}  # field -> the key its value came from, for the error
    for name in Settings.model_fields:
        for key in (config_key(name), "JOBS") if name == "declared_jobs" else (config_key(name),):
            if key in config:
                values[name], keys[name] = config[key], key
                break
    if not values.get("database_url"):
        values["database_url"] = "sqlite:///" + os.path.join(instance_path, "scheduler.sqlite3")
    for name, field in Settings.model_fields.items():
        value = values.get(name)
        if field.annotation is float and isinstance(value, int) and not isinstance(value, bool):
            values[name] = float(value)  # strict mode: an int is a fine number of seconds
    try:
        settings = Settings.model_validate(values)
    except pydantic.ValidationError as exc:
        error = exc.errors(include_url=False)[0]
        name = str(error["loc"][0]) if error["loc"] else ""
        key = keys.get(name) or (config_key(name) if name in Settings.model_fields else name)
        message = _readable(error["msg"].removeprefix("Value error, "), error.get("input"))
        raise ConfigError(f"{key}{'' if message.startswith('[') else ' '}{message}") from None
    return settings


def _readable(message: str, value: object) -> str:
    """pydantic's message as a sentence about the key, with the value given (never a secret:
    the webhook URL's own check does not repeat it)."""
    if message.startswith(("must", "is ", "has ", "cannot", "[")):
        return message
    if isinstance(value, str) and "URL" in message:
        return message
    if message.startswith("Input should be "):  # "Input should be a valid integer"
        return f"must be {message.removeprefix('Input should be ')}, got {value!r}"
    return f"must be valid ({message.lower()}), got {value!r}"


def _webhook_url(url: object) -> str | None:
    """Alerts go to an http(s) URL only (``urllib`` would also open ``file:`` and ``ftp:``).
    The error never repeats the URL: webhook URLs often carry a secret."""
    if url is None or url == "":
        return None
    problem = "is not a string"
    if isinstance(url, str):
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError for a port that is not a number
        except ValueError as exc:
            problem = f"cannot be parsed ({exc})"
        else:
            if parts.scheme not in ("http", "https"):
                problem = f"has scheme {parts.scheme!r}" if parts.scheme else "has no scheme"
            elif not parts.hostname:
                problem = "has no host"
            else:
                return url
    raise ValueError(f"must be an http:// or https:// URL; this one {problem}")


def _declared_jobs(jobs: object) -> tuple[dict[str, Any], ...]:
    """The shape of ``JOBS``; each declaration is checked against the tasks later, once their
    modules are imported (``declared_jobs``)."""
    if jobs is None:
        return ()
    if not isinstance(jobs, list | tuple) or not all(isinstance(j, dict) for j in jobs):
        raise ValueError("must be a list of job objects, e.g. "
                         '[{"id": "nightly", "task": "demo.echo", '
                         '"trigger": {"type": "cron", "expr": "0 2 * * *"}}]')
    seen: set[str] = set()
    for index, job in enumerate(jobs):
        job_id = job.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ValueError(f"[{index}]: id is required (a string): start-up updates a "
                             "declared job by its id instead of adding another each time")
        if job_id in seen:
            raise ValueError(f"[{index}] (id {job_id!r}): id is declared twice")
        seen.add(job_id)
    return tuple(dict(j) for j in jobs)
