"""Trigger specs (the JSON a client sends) → APScheduler trigger objects, and back to words.

A spec is validated field by field so a bad one names what is wrong (``trigger.seconds``…),
every bad field at once. Each cron field is checked here against its range, in both the
``expr`` and the field-by-field form, and named ``trigger.<field>`` in both: ``"99 25 * * *"``
is ``trigger.minute: 99 is out of range 0-59`` and ``trigger.hour: 25 is out of range 0-23``
(only a wrong number of crontab fields is ``trigger.expr``). The spec, not the trigger object,
is what the job table stores, so the API can show the trigger "as given" and rebuild it
without unpickling anything.

Crontab expressions use standard crontab weekday numbers (0 or 7 = Sunday). APScheduler 3's
``CronTrigger.from_crontab`` counts 0 as Monday (its issue 286), so a numeric weekday field is
rewritten to names before it reaches APScheduler; the field form (``{"day_of_week": ...}``)
keeps APScheduler's own meaning, as in Flask-APScheduler.
"""

from __future__ import annotations

import functools
import math
import re
import zoneinfo
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, TypeVar

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
    """A trigger spec is invalid; ``problems`` names every offending field, in the API's
    ``details`` shape (``[{"field": "trigger.minute", "message": "99 is out of range 0-59"}]``),
    and ``field`` and ``message`` are the first one's."""

    def __init__(self, field: str, message: str,
                 problems: list[dict[str, str]] | None = None) -> None:
        self.field = field
        self.message = message
        self.problems = problems or [{"field": field, "message": message}]
        super().__init__("; ".join(f"{p['field']}: {p['message']}" for p in self.problems))

    @classmethod
    def of(cls, problems: list[dict[str, str]]) -> TriggerError:
        """One error naming every problem (at least one)."""
        return cls(problems[0]["field"], problems[0]["message"], problems)


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
    """A human sentence for a stored spec, capitalised like cron_descriptor's: 'At 02:00',
    'Every 5 minutes', 'Once at 2026-12-24T18:00:00+00:00'."""
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
        return "Every " + " ".join(parts)
    if kind == "date":
        return f"Once at {spec.get('run_date')}"
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
    """A cron trigger; every bad field is named at once, as ``trigger.<field>`` in both the
    ``expr`` and the field-by-field form (``trigger.minute``, never APScheduler's sentence)."""
    problems: list[dict[str, str]] = []
    tz = _collect(problems, lambda: _timezone(spec, default_tz))
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
        values = dict(zip(CRONTAB_FIELDS, fields, strict=True))
        for name in CRONTAB_FIELDS[:4]:
            _collect_message(problems, name, _field_problem(name, values[name]))
        try:
            values["day_of_week"] = _crontab_weekdays(values["day_of_week"])
        except ValueError as exc:
            _collect_message(problems, "day_of_week", str(exc))
        if problems or tz is None:
            raise TriggerError.of(problems)
        trigger = _cron_trigger(values, timezone=tz)
        normal = {"type": "cron", "expr": " ".join(fields)}
    else:
        _check_keys(spec, {"type", "timezone", "start_date", "end_date", *CRON_FIELDS})
        values = {}
        given: dict[str, Any] = {}
        for name in CRON_FIELDS:
            if name in spec:
                value = spec[name]
                if isinstance(value, bool) or not isinstance(value, str | int):
                    _collect_message(problems, name, "must be a string or an integer")
                    continue
                values[name] = str(value)
                given[name] = value
                _collect_message(problems, name, _field_problem(name, str(value)))
        if not values and not problems:
            raise TriggerError("trigger", "a cron trigger needs 'expr' or at least one field")
        start = _collect(problems, lambda: _time(spec, "start_date"))
        end = _collect(problems, lambda: _time(spec, "end_date"))
        if start and end and end <= start:
            _collect_message(problems, "end_date", "must be after start_date")
        if problems or tz is None:
            raise TriggerError.of(problems)
        trigger = _cron_trigger(values, timezone=tz, start_date=start, end_date=end)
        normal = {"type": "cron", **given}
        if start:
            normal["start_date"] = start.isoformat()
        if end:
            normal["end_date"] = end.isoformat()
    if "timezone" in spec:
        normal["timezone"] = tz
    return normal, trigger


CRONTAB_FIELDS = ("minute", "hour", "day", "month", "day_of_week")
# APScheduler's ranges (``cron.fields.MIN_VALUES``/``MAX_VALUES``); day_of_week 0 = Monday.
CRON_RANGES = {"year": (1970, 9999), "month": (1, 12), "day": (1, 31), "week": (1, 53),
               "day_of_week": (0, 6), "hour": (0, 23), "minute": (0, 59), "second": (0, 59)}
_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov",
                "dec")
_NUMERIC_PART = re.compile(r"(?P<first>\*|\d+)(?:-(?P<last>\d+))?(?:/(?P<step>\d+))?")
_NAME_PART = re.compile(r"(?P<first>[a-z]+)(?:-(?P<last>[a-z]+))?", re.IGNORECASE)
_POSITION_PART = re.compile(r"(?:1st|2nd|3rd|4th|5th|last) +(?:mon|tue|wed|thu|fri|sat|sun)",
                            re.IGNORECASE)


def _field_problem(name: str, value: str) -> str | None:
    """What is wrong with one cron field in APScheduler's syntax (a list of ``*``, ``*/n``,
    ``a``, ``a-b``, ``a-b/n``, ``a/n``; month and weekday names; ``last`` and ``2nd mon`` for
    the day), checked against the field's range; None when nothing is."""
    low, high = CRON_RANGES[name]
    value = value.strip()
    if not value:
        return f"is empty; use a value in {low}-{high}"
    for part in re.split(r" *, *", value):
        problem = _part_problem(name, part, low, high)
        if problem:
            return problem
    return None


def _part_problem(name: str, part: str, low: int, high: int) -> str | None:
    numeric = _NUMERIC_PART.fullmatch(part)
    if numeric:
        first, last, step = numeric["first"], numeric["last"], numeric["step"]
        if first == "*" and last is not None:
            return _unrecognised(part, low, high)
        for number in (first, last):
            if number is not None and number != "*" and not low <= int(number) <= high:
                return f"{int(number)} is out of range {low}-{high}"
        start = low if first == "*" else int(first)
        end = int(last) if last is not None else (start if step is None else high)
        if start > end:
            return f"{part}: a range must run from low to high"
        if step is not None:
            if int(step) == 0:
                return f"{part}: a step must be at least 1"
            # APScheduler's rule: a step no longer than the span it walks
            span = high - low if first == "*" else (int(last or 0) or high) - start
            if int(step) > span:
                return f"{part}: the step {int(step)} is larger than the range {start}-{end}"
        return None
    names = {"month": _MONTH_NAMES, "day_of_week": tuple(_DAY_NAMES[1:] + _DAY_NAMES[:1])}
    named = _NAME_PART.fullmatch(part)
    if named and name in names:
        ends = [n.lower() for n in (named["first"], named["last"]) if n is not None]
        unknown = [n for n in ends if n not in names[name]]
        if unknown:
            return f"{unknown[0]!r} is not a {name.replace('_', ' ')} name"
        if len(ends) == 2 and names[name].index(ends[0]) > names[name].index(ends[1]):
            return f"{part}: a range must run from low to high"
        return None
    if name == "day" and (part.lower() == "last" or _POSITION_PART.fullmatch(part)):
        return None
    return _unrecognised(part, low, high)


def _unrecognised(part: str, low: int, high: int) -> str:
    return (f"{part!r} is not a value, range (a-b), step (*/n) or list (a,b) "
            f"in range {low}-{high}")


def _cron_trigger(values: dict[str, str], **options: Any) -> CronTrigger:
    """APScheduler's CronTrigger from fields already checked; should it still refuse one,
    the field is found by trying each alone, and its message passed on."""
    try:
        return CronTrigger(**values, **options)
    except ValueError as exc:
        for name, value in values.items():
            try:
                CronTrigger(**{name: value})
            except ValueError as alone:
                raise TriggerError(f"trigger.{name}", str(alone)) from None
        raise TriggerError("trigger", str(exc)) from None


T = TypeVar("T")


def _collect(problems: list[dict[str, str]], check: Callable[[], T]) -> T | None:
    """The check's value, or None with its problems added."""
    try:
        return check()
    except TriggerError as exc:
        problems.extend(exc.problems)
    return None


def _collect_message(problems: list[dict[str, str]], field: str, message: str | None) -> None:
    if message:
        problems.append({"field": f"trigger.{field}", "message": message})


def _crontab_weekdays(field: str) -> str:
    """Rewrite a crontab weekday field (0/7 = Sunday) as names APScheduler reads the same way.

    Ranges are walked on crontab's 0-7 scale, so ``5-7`` is Friday to Sunday and ``7-7`` is
    Sunday; ``N/step`` runs from N to Saturday. A bad field is a ValueError saying why.
    """
    if field in ("*", "?"):
        return "*"
    days: set[int] = set()
    for part in field.split(","):
        base, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdecimal():
                raise ValueError(_unrecognised(part, 0, 7))
            if int(step_text) == 0:
                raise ValueError(f"{part}: a step must be at least 1")
            if int(step_text) > 7:
                raise ValueError(f"{part}: the step {int(step_text)} is larger than the "
                                 "range 0-7")
            step = int(step_text)
        if base == "*":
            low, high = 0, 6
        elif "-" in base:
            first, _, last = base.partition("-")
            low, high = _weekday(first, part), _weekday(last, part)
            if low > high:
                raise ValueError(f"{base}: a range must run from low to high")
        else:
            low = _weekday(base, part)
            high = max(low, 6) if step_text else low
        days.update(d % 7 for d in range(low, high + 1, step))
    return ",".join(_DAY_NAMES[d] for d in sorted(days))


def _weekday(text: str, part: str) -> int:
    """A weekday on crontab's scale: 0-7 as given (7 stays 7), names as 0 (sun) to 6 (sat)."""
    text = text.strip().lower()
    if text.isdecimal():
        value = int(text)
        if value > 7:
            raise ValueError(f"{value} is out of range 0-7")
        return value
    if text[:3] in _DAY_NAMES and text in (text[:3], _DAY_NAMES_FULL[text[:3]]):
        return _DAY_NAMES.index(text[:3])
    raise ValueError(_unrecognised(part, 0, 7))


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
