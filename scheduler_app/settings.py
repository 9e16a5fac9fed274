"""Every setting the service reads, validated once at start-up into a frozen dataclass.

A wrong value stops start-up with a ConfigError naming the setting, instead of surfacing later
as an odd failure in a background thread.
"""

from __future__ import annotations

import zoneinfo
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import ArgumentError

from .errors import ConfigError
from .scheduler.triggers import TriggerError, build_trigger

ROLES = ("all", "web", "worker")
TOKEN_ROLES = ("viewer", "admin")


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
    heartbeat_seconds: float
    lease_seconds: float
    poll_seconds: float
    cancel_poll_seconds: float
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
        heartbeat_seconds=number("NODE_HEARTBEAT_SECONDS"),
        lease_seconds=number("NODE_LEASE_SECONDS"),
        poll_seconds=number("DISPATCH_POLL_SECONDS"),
        cancel_poll_seconds=number("CANCEL_POLL_SECONDS"),
        shutdown_grace_seconds=number("SHUTDOWN_GRACE_SECONDS"),
        prune_cron=prune_cron,
        prune_older_than_days=number("PRUNE_RUNS_OLDER_THAN_DAYS", integer=True),
        kwargs_max_bytes=number("KWARGS_MAX_BYTES", integer=True),
        max_queued_runs=number("MAX_QUEUED_RUNS", integer=True),
        max_jobs=number("MAX_JOBS", integer=True),
        proxy_fix_hops=hops,
    )
