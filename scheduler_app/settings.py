"""Every setting the service reads, validated once at start-up into a frozen dataclass.

A wrong value stops start-up with a ConfigError naming the setting, instead of surfacing later
as an odd failure in a background thread.
"""

from __future__ import annotations

import urllib.parse
import zoneinfo
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .scheduler.triggers import TriggerError, build_trigger

ROLES = ("all", "web", "worker")
TOKEN_ROLES = ("viewer", "admin")
LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
ALERT_EVENTS = ("failed", "succeeded", "cancelled")


@dataclass(frozen=True)
class Settings:
    database_url: str
    worker_threads: int
    role: str
    timezone: str
    autostart: bool
    api_enabled: bool
    api_prefix: str
    task_modules: tuple[str, ...]
    api_tokens: dict[str, str]
    misfire_grace_time: float
    coalesce: bool
    max_instances: int
    retry_backoff: float
    run_log_max_lines: int
    log_format: str
    log_level: str
    alert_webhook_url: str | None
    alert_on: tuple[str, ...]
    alert_timeout: float
    alert_max_attempts: int
    alert_backoff: float
    declared_jobs: tuple[dict[str, Any], ...]
    heartbeat_seconds: float
    lease_seconds: float
    poll_seconds: float
    tick_seconds: float
    shutdown_grace_seconds: float
    prune_cron: str | None
    prune_older_than_days: int
    kwargs_max_bytes: int
    max_queued_runs: int
    max_jobs: int
    proxy_fix_hops: int

    @property
    def executes(self) -> bool:
        return self.role in ("all", "worker")


def load_settings(config: Any, default_database_url: str) -> Settings:
    def number(key: str, *, integer: bool = False) -> Any:
        value = config.get(key)
        kind = int if integer else (int, float)
        if isinstance(value, bool) or not isinstance(value, kind):
            raise ConfigError(f"{key} must be {'an integer' if integer else 'a number'}, "
                              f"got {value!r}")
        if value <= 0:
            raise ConfigError(f"{key} must be greater than 0, got {value!r}")
        return value

    def flag(key: str) -> bool:
        value = config.get(key)
        if not isinstance(value, bool):
            raise ConfigError(f"{key} must be true or false, got {value!r}")
        return value

    url = config.get("DATABASE_URL") or default_database_url
    try:
        sa.make_url(url)
    except (ArgumentError, ValueError):
        raise ConfigError(f"DATABASE_URL is not a database URL: {url!r}") from None

    role = config.get("SCHEDULER_ROLE")
    if role not in ROLES:
        raise ConfigError(f"SCHEDULER_ROLE must be one of {', '.join(ROLES)}, got {role!r}")

    tz = config.get("SCHEDULER_TIMEZONE")
    try:
        zoneinfo.ZoneInfo(str(tz))
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"SCHEDULER_TIMEZONE is not a known time zone: {tz!r}") from None

    tokens = config.get("API_TOKENS") or {}
    if not isinstance(tokens, dict) or not all(
            isinstance(k, str) and k and v in TOKEN_ROLES for k, v in tokens.items()):
        raise ConfigError('API_TOKENS must be a JSON object of token to role, roles '
                          '"viewer" or "admin", e.g. {"s3cret": "admin"}')

    modules = config.get("TASK_MODULES") or []
    if isinstance(modules, str):
        modules = [m.strip() for m in modules.split(",") if m.strip()]
    if not isinstance(modules, list | tuple) or not all(isinstance(m, str) for m in modules):
        raise ConfigError("TASK_MODULES must be a list of module names")

    prune_cron = config.get("PRUNE_RUNS_CRON") or None
    if prune_cron is not None:
        try:
            build_trigger({"type": "cron", "expr": prune_cron}, str(tz))
        except TriggerError as exc:
            raise ConfigError(f"PRUNE_RUNS_CRON must be a crontab expression or empty: "
                              f"{exc.message}") from None

    log_format = config.get("LOG_FORMAT", "text")
    if log_format not in LOG_FORMATS:
        raise ConfigError(f"LOG_FORMAT must be one of {', '.join(LOG_FORMATS)}, "
                          f"got {log_format!r}")
    log_level = config.get("LOG_LEVEL", "INFO")
    if not isinstance(log_level, str) or log_level.upper() not in LOG_LEVELS:
        raise ConfigError(f"LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {log_level!r}")

    hops = config.get("PROXY_FIX_HOPS", 0)
    if isinstance(hops, bool) or not isinstance(hops, int) or not 0 <= hops <= 10:
        raise ConfigError(f"PROXY_FIX_HOPS must be an integer from 0 to 10, got {hops!r}")

    return Settings(
        database_url=str(url),
        worker_threads=number("WORKER_THREADS", integer=True),
        role=role,
        timezone=str(tz),
        autostart=flag("SCHEDULER_AUTOSTART"),
        api_enabled=flag("SCHEDULER_API_ENABLED"),
        api_prefix=str(config.get("SCHEDULER_API_PREFIX") or "/scheduler"),
        task_modules=tuple(modules),
        api_tokens=dict(tokens),
        misfire_grace_time=number("JOB_MISFIRE_GRACE_TIME"),
        coalesce=flag("JOB_COALESCE"),
        max_instances=number("JOB_MAX_INSTANCES", integer=True),
        retry_backoff=number("RETRY_BACKOFF_SECONDS"),
        run_log_max_lines=number("RUN_LOG_MAX_LINES", integer=True),
        log_format=log_format,
        log_level=log_level.upper(),
        alert_webhook_url=_webhook_url(config.get("ALERT_WEBHOOK_URL")),
        alert_on=_alert_events(config.get("ALERT_ON", ["failed"])),
        alert_timeout=number("ALERT_TIMEOUT_SECONDS"),
        alert_max_attempts=number("ALERT_MAX_ATTEMPTS", integer=True),
        alert_backoff=number("ALERT_BACKOFF_SECONDS"),
        declared_jobs=_declared_jobs(config.get("JOBS")),
        heartbeat_seconds=number("NODE_HEARTBEAT_SECONDS"),
        lease_seconds=number("NODE_LEASE_SECONDS"),
        poll_seconds=number("DISPATCH_POLL_SECONDS"),
        tick_seconds=number("TICK_SECONDS"),
        shutdown_grace_seconds=number("SHUTDOWN_GRACE_SECONDS"),
        prune_cron=prune_cron,
        prune_older_than_days=number("PRUNE_RUNS_OLDER_THAN_DAYS", integer=True),
        kwargs_max_bytes=number("KWARGS_MAX_BYTES", integer=True),
        max_queued_runs=number("MAX_QUEUED_RUNS", integer=True),
        max_jobs=number("MAX_JOBS", integer=True),
        proxy_fix_hops=hops,
    )


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
    raise ConfigError(f"ALERT_WEBHOOK_URL must be an http:// or https:// URL; this one {problem}")


def _alert_events(events: object) -> tuple[str, ...]:
    if isinstance(events, str):
        events = [e.strip() for e in events.split(",") if e.strip()]
    if not isinstance(events, list | tuple) or not events or \
            not all(e in ALERT_EVENTS for e in events):
        raise ConfigError(f"ALERT_ON must be a non-empty list of {', '.join(ALERT_EVENTS)}, "
                          f"got {events!r}")
    return tuple(dict.fromkeys(events))


def _declared_jobs(jobs: object) -> tuple[dict[str, Any], ...]:
    """The shape of ``JOBS``; each declaration is checked against the tasks later, once their
    modules are imported (``declared_jobs``)."""
    if jobs is None:
        return ()
    if not isinstance(jobs, list | tuple) or not all(isinstance(j, dict) for j in jobs):
        raise ConfigError("JOBS must be a list of job objects, e.g. "
                          '[{"id": "nightly", "task": "demo.echo", '
                          '"trigger": {"type": "cron", "expr": "0 2 * * *"}}]')
    seen: set[str] = set()
    for index, job in enumerate(jobs):
        job_id = job.get("id")
        if not isinstance(job_id, str) or not job_id:
            raise ConfigError(f"JOBS[{index}]: id is required (a string): start-up updates a "
                              "declared job by its id instead of adding another each time")
        if job_id in seen:
            raise ConfigError(f"JOBS[{index}] (id {job_id!r}): id is declared twice")
        seen.add(job_id)
    return tuple(dict(j) for j in jobs)
