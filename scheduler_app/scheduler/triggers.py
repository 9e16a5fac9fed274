"""Trigger specs (the JSON a client sends) → APScheduler trigger objects, and back to words.

A spec is validated field by field so a bad one names what is wrong (``trigger.expr``,
``trigger.seconds``…). The spec, not the trigger object, is what the job table stores, so the
API can show the trigger "as given" and rebuild it without unpickling anything.

Crontab expressions use standard crontab weekday numbers (0 or 7 = Sunday). APScheduler 3's
``CronTrigger.from_crontab`` counts 0 as Monday (its issue 286), so a numeric weekday field is
rewritten to names before it reaches APScheduler; the field form (``{"day_of_week": ...}``)
keeps APScheduler's own meaning, as in Flask-APScheduler.
"""

from __future__ import annotations

import functools
import math
import zoneinfo
from datetime import datetime, timedelta
from typing import Any

from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger
from apscheduler.triggers.interval import IntervalTrigger
from cron_descriptor import ExpressionDescriptor, Options
from flask_apscheduler.utils import trigger_to_dict

from ..timeutil import parse_aware, utcnow

CRON_FIELDS = ("year", "month", "day", "week", "day_of_week", "hour", "minute", "second")
INTERVAL_UNITS = ("weeks", "days", "hours", "minutes", "seconds")
_DAY_NAMES = ("sun", "mon", "tue", "wed", "thu", "fri", "sat")


class TriggerError(ValueError):
    """A trigger spec is invalid; ``field`` names the offending field (``trigger.expr``)."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message
        super().__init__(f"{field}: {message}")


def build_trigger(spec: object, default_timezone: str) -> tuple[dict[str, Any], BaseTrigger]:
    """Validate a trigger spec; return the normalised spec to store and the trigger object."""
    if not isinstance(spec, dict):
        raise TriggerError("trigger", "must be an object with a 'type'")
    kind = spec.get("type")
    if kind == "cron":
        return _cron(spec, default_timezone)
    if kind == "interval":
        return _interval(spec, default_timezone)
    if kind == "date":
        return _date(spec, default_timezone)
    raise TriggerError("trigger.type", "must be one of 'cron', 'interval', 'date'")


def crontab_as_fields(expr: str) -> dict[str, Any] | None:
    """A crontab expression as APScheduler's cron fields (``{"minute": "*/5", ...}``), the
    shape Flask-APScheduler shows; None if it is not one."""
    try:
        trigger = build_trigger({"type": "cron", "expr": expr}, "UTC")[1]
    except TriggerError:
        return None
    fields: dict[str, Any] = trigger_to_dict(trigger)
    return fields


def describe(spec: dict[str, Any]) -> str:
    """A human sentence for a stored spec: 'Every 5 minutes', 'every 30 seconds'…"""
    kind = spec.get("type")
    if kind == "cron":
        expr = spec.get("expr") or _as_crontab(spec)
        if expr:
            text = _cron_sentence(expr) if isinstance(expr, str) else f"cron {expr}"
        else:
            text = "cron " + ", ".join(f"{f}={spec[f]}" for f in CRON_FIELDS if f in spec)
        tz = spec.get("timezone")
        return f"{text} ({tz})" if tz else text
    if kind == "interval":
        parts = [f"{_num(spec[u])} {u[:-1] if spec[u] == 1 else u}"
                 for u in INTERVAL_UNITS if spec.get(u)]
        return "every " + " ".join(parts)
    if kind == "date":
        return f"once at {spec.get('run_date')}"
    return "unknown trigger"


@functools.lru_cache(maxsize=4096)
def _cron_sentence(expr: str) -> str:
    """cron_descriptor's sentence for a crontab expression, remembered: each descriptor it
    builds reads and parses its translation file again."""
    options = Options()
    options.use_24hour_time_format = True
    try:
        return str(ExpressionDescriptor(expr, options).get_description())
    except Exception:  # a description is a nicety; never fail a listing over it
        return f"cron {expr}"


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _check_keys(spec: dict[str, Any], allowed: set[str]) -> None:
    for key in spec:
        if key not in allowed:
            raise TriggerError(f"trigger.{key}", "unexpected field")


def _timezone(spec: dict[str, Any], default: str) -> str:
    tz = spec.get("timezone", default)
    if not isinstance(tz, str) or not tz:
        raise TriggerError("trigger.timezone", "must be an IANA time zone name")
    try:
        zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe", "a"*300
        raise TriggerError("trigger.timezone", f"unknown time zone {tz!r}") from None
    return tz


def _time(spec: dict[str, Any], key: str) -> datetime | None:
    if spec.get(key) is None:
        return None
    try:
        return parse_aware(spec[key], f"trigger.{key}")
    except ValueError as exc:
        raise TriggerError(f"trigger.{key}", str(exc).replace(f"trigger.{key} ", "", 1)) from None
    except OverflowError:  # valid ISO, but its offset puts it outside years 1-9999
        raise TriggerError(f"trigger.{key}", "is out of range") from None


def _cron(spec: dict[str, Any], default_tz: str) -> tuple[dict[str, Any], BaseTrigger]:
    tz = _timezone(spec, default_tz)
    if "expr" in spec:
        _check_keys(spec, {"type", "expr", "timezone"})
        expr = spec["expr"]
        if not isinstance(expr, str) or not expr.strip():
            raise TriggerError("trigger.expr", "must be a crontab expression string")
        fields = expr.split()
        if len(fields) != 5:
            raise TriggerError(
                "trigger.expr",
                f"a crontab expression has 5 fields (minute hour day month weekday); "
                f"got {len(fields)}")
        try:
            weekday = _crontab_weekdays(fields[4])
            trigger = CronTrigger(minute=fields[0], hour=fields[1], day=fields[2],
                                  month=fields[3], day_of_week=weekday, timezone=tz)
        except ValueError as exc:
            raise TriggerError("trigger.expr", f"invalid crontab expression: {exc}") from None
        normal = {"type": "cron", "expr": " ".join(fields)}
    else:
        _check_keys(spec, {"type", "timezone", "start_date", "end_date", *CRON_FIELDS})
        values: dict[str, Any] = {}
        given: dict[str, Any] = {}
        for name in CRON_FIELDS:
            if name in spec:
                value = spec[name]
                if isinstance(value, bool) or not isinstance(value, str | int):
                    raise TriggerError(f"trigger.{name}", "must be a string or an integer")
                values[name] = str(value)
                given[name] = value
        if not values:
            raise TriggerError("trigger", "a cron trigger needs 'expr' or at least one field")
        start, end = _time(spec, "start_date"), _time(spec, "end_date")
        if start and end and end <= start:
            raise TriggerError("trigger.end_date", "must be after start_date")
        try:
            trigger = CronTrigger(timezone=tz, start_date=start, end_date=end, **values)
        except ValueError as exc:
            raise TriggerError(_cron_field(values), str(exc)) from None
        normal = {"type": "cron", **given}
        if start:
            normal["start_date"] = start.isoformat()
        if end:
            normal["end_date"] = end.isoformat()
    if "timezone" in spec:
        normal["timezone"] = tz
    return normal, trigger


def _cron_field(values: dict[str, str]) -> str:
    """APScheduler's message does not name the field; find it by trying each one alone."""
    for name, value in values.items():
        try:
            CronTrigger(**{name: value})
        except ValueError:
            return f"trigger.{name}"
    return "trigger"


def _crontab_weekdays(field: str) -> str:
    """Rewrite a crontab weekday field (0/7 = Sunday) as names APScheduler reads the same way.

    Ranges are walked on crontab's 0-7 scale, so ``5-7`` is Friday to Sunday and ``7-7`` is
    Sunday; ``N/step`` runs from N to Saturday.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or not 1 <= int(step_text) <= 7:
                raise ValueError(f"bad step in weekday field {part!r} (1-7)")
            step = int(step_text)
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _weekday(first), _weekday(last)
            if low > high:
                raise ValueError(f"weekday range {base!r} runs backwards")
        else:
            low = _weekday(base)
            high = max(low, 6) if step_text else low
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _weekday(text: str) -> int:
    """A weekday on crontab's scale: 0-7 as given (7 stays 7), names as 0 (sun) to 6 (sat)."""
    text = text.strip().lower()
    if text.isdigit() and len(text) <= 2:
        value = int(text)
        if value > 7:
            raise ValueError(f"weekday {text} is out of range 0-7")
        return value
    if text[:3] in _DAY_NAMES and text in (text[:3], _DAY_NAMES_FULL[text[:3]]):
        return _DAY_NAMES.index(text[:3])
    raise ValueError(f"unknown weekday {text!r}")


_DAY_NAMES_FULL = {"sun": "sunday", "mon": "monday", "tue": "tuesday", "wed": "wednesday",
                   "thu": "thursday", "fri": "friday", "sat": "saturday"}


def _as_crontab(spec: dict[str, Any]) -> str | None:
    keys = {k for k in CRON_FIELDS if k in spec}
    if keys <= {"minute", "hour", "day", "month"} and keys:
        return " ".join(str(spec.get(k, "*")) for k in ("minute", "hour", "day", "month")) + " *"
    return None


def _interval(spec: dict[str, Any], default_tz: str) -> tuple[dict[str, Any], BaseTrigger]:
    _check_keys(spec, {"type", "timezone", "start_date", "end_date", *INTERVAL_UNITS})
    tz = _timezone(spec, default_tz)
    units: dict[str, float] = {}
    for unit in INTERVAL_UNITS:
        if unit in spec:
            value = spec[unit]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TriggerError(f"trigger.{unit}", "must be a number")
            if not math.isfinite(value) or value < 0:
                raise TriggerError(f"trigger.{unit}", "must be a finite number, not negative")
            units[unit] = value
    if not units:
        raise TriggerError("trigger",
                           "an interval trigger needs one of " + ", ".join(INTERVAL_UNITS))
    try:
        length = timedelta(**units)
    except OverflowError:
        raise TriggerError("trigger", "the interval is too long") from None
    if length.total_seconds() <= 0:
        field = f"trigger.{next(iter(units))}" if len(units) == 1 else "trigger"
        raise TriggerError(field, "the interval must be longer than zero")
    start, end = _time(spec, "start_date"), _time(spec, "end_date")
    if start and end and end <= start:
        raise TriggerError("trigger.end_date", "must be after start_date")
    # Fix the phase now: a trigger rebuilt from the spec later must fire on the same grid.
    try:
        start = start or utcnow() + length
    except OverflowError:
        raise TriggerError("trigger", "the interval is too long") from None
    trigger = IntervalTrigger(timezone=tz, start_date=start, end_date=end, **units)
    normal: dict[str, Any] = {"type": "interval", **units, "start_date": start.isoformat()}
    if end:
        normal["end_date"] = end.isoformat()
    if "timezone" in spec:
        normal["timezone"] = tz
    return normal, trigger


def _date(spec: dict[str, Any], default_tz: str) -> tuple[dict[str, Any], BaseTrigger]:
    _check_keys(spec, {"type", "run_date", "timezone"})
    tz = _timezone(spec, default_tz)
    if spec.get("run_date") is None:
        raise TriggerError("trigger.run_date", "is required for a date trigger")
    run_date = _time(spec, "run_date")
    assert run_date is not None
    normal = {"type": "date", "run_date": run_date.isoformat()}
    return normal, DateTrigger(run_date=run_date, timezone=tz)
