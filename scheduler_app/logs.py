"""The process log: one line per record on stderr, as text or as JSON, naming the run it is
about (run id, job id, task, node); and the handler that copies what a running task logs into
its run's own log. Written by hand on ``logging.Formatter``: the JSON shape is a dozen lines
(docs/ARCHITECTURE.md, "Run logs")."""

from __future__ import annotations

import contextvars
import json
import logging
import sys
import threading
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

from .tasks.context import current_run

__all__ = ["FORMATS", "RUN_FIELDS", "JsonFormatter", "RunFields", "RunLogHandler",
           "TextFormatter", "bind_run", "configure", "install_run_log_handler", "make_handler"]

FORMATS = ("text", "json")
# Record attribute -> its name in a text line.
RUN_FIELDS = {"run_id": "run", "job_id": "job", "task": "task", "node": "node"}
TEXT_FORMAT = "%(asctime)s %(levelname)s [%(process)d] %(name)s: %(message)s"

_bound: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "scheduler_app_run_fields", default=None)


def bind_run(**fields: Any) -> _RunBinding:
    """While the block (``with bind_run(...):``) runs, records emitted on this thread carry
    these run fields (those that are not None), unless the call itself passes them in
    ``extra``."""
    bound = {}
    for name, value in fields.items():  # a loop, not a comprehension: one call less a run
        if value is not None and name in RUN_FIELDS:
            bound[name] = value
    return _RunBinding(bound)


class _RunBinding:
    """``bind_run``'s context manager: a class, not a generator, as it wraps every run's
    task on the way to its first line, where a generator's context manager costs several
    times these two calls."""

    __slots__ = ("_fields", "_token")

    def __init__(self, fields: dict[str, Any]) -> None:
        self._fields = fields

    def __enter__(self) -> None:
        self._token = _bound.set(self._fields)

    def __exit__(self, *exc: object) -> None:
        _bound.reset(self._token)


class RunFields(logging.Filter):
    """Adds the fields of the run this thread is executing to each record it emits.

    Put it on any handler that should show them; ``configure`` puts it on the service's own.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        fields = _bound.get()
        if fields:
            for name, value in fields.items():
                if getattr(record, name, None) is None:
                    setattr(record, name, value)
        return True


def run_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The run fields a record carries, in ``RUN_FIELDS`` order, leaving out those it has not."""
    return {name: value for name in RUN_FIELDS
            if (value := getattr(record, name, None)) is not None}


def _iso_time(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


class TextFormatter(logging.Formatter):
    """``time LEVEL [pid] logger: message run=12 job=nightly task=demo.sleep node=host:pid:id``,
    the time in ISO 8601 UTC; a traceback, if any, follows on the next lines."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:  # noqa: N802
        return _iso_time(record)

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802
        line = super().formatMessage(record)
        fields = run_fields(record)
        if not fields:
            return line
        return line + "".join(f" {RUN_FIELDS[k]}={_text_value(v)}" for k, v in fields.items())


def _text_value(value: Any) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in "\"=" for c in text):
        return json.dumps(text)
    return text


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``time`` (ISO 8601 UTC), ``level``, ``logger``, ``message``,
    ``process``, ``thread``, the run fields a record carries, and ``exception`` (the formatted
    traceback) and ``stack`` when there are any. Newlines inside values are escaped, so a
    traceback never splits an entry."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": _iso_time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
            **run_fields(record),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str)


class StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is when a record is emitted (as ``logging``'s own
    last-resort handler does), so a replaced stream (a test runner's capture) never leaves it
    writing to a closed file."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> TextIO:
        return sys.stderr


def formatter(fmt: str) -> logging.Formatter:
    if fmt not in FORMATS:
        raise ValueError(f"log format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return JsonFormatter() if fmt == "json" else TextFormatter()


def make_handler(fmt: str, stream: TextIO | None = None) -> logging.Handler:
    """A handler writing ``fmt`` lines with run fields, to ``stream`` (default: stderr)."""
    handler: logging.Handler = StderrHandler() if stream is None else \
        logging.StreamHandler(stream)
    handler.setFormatter(formatter(fmt))
    handler.addFilter(RunFields())
    return handler


class RunLogHandler(logging.Handler):
    """Copies every log record emitted on a thread that is executing a run into that run's log,
    so a task's own ``logging`` calls (and its libraries') show up on the run, not only in the
    process log. Installed once per process on the root logger."""

    def emit(self, record: logging.LogRecord) -> None:
        ctx = current_run()
        if ctx is None:
            return
        try:
            message = record.getMessage()
            if record.exc_info:
                message += "\n" + "".join(traceback.format_exception(*record.exc_info))
            ctx.record_log(record.levelname, message)
        except Exception:
            self.handleError(record)


_log_handler_lock = threading.Lock()


def install_run_log_handler() -> None:
    """Put one ``RunLogHandler`` on the root logger (each node does, when its runner starts)."""
    root = logging.getLogger()
    with _log_handler_lock:
        if not any(isinstance(h, RunLogHandler) for h in root.handlers):
            root.addHandler(RunLogHandler(level=logging.DEBUG))
    runs_logger = logging.getLogger("scheduler_app.runs")
    if runs_logger.level == logging.NOTSET:
        runs_logger.setLevel(logging.INFO)


class _ServiceHandler(StderrHandler):
    """The handler ``configure`` installs, told apart from handlers others configured."""


def configure(fmt: str, level: str) -> None:
    """Send the process log to stderr in ``fmt`` and log the service at ``level``.

    The handler goes on the root logger, so tasks' own loggers reach it too, unless logging was
    already configured by someone else (the root logger has a handler we did not put there: an
    application embedding this one, a test runner); then their configuration is left alone, and
    ``RunFields`` can be added to their handlers. Calling it again (another app in the same
    process) switches the format of the handler it installed.

    Only ``scheduler_app`` loggers get ``level``; the root logger keeps its own (WARNING by
    default), since INFO on the root logger turns on, among others, SQLAlchemy's statement log.
    """
    root = logging.getLogger()
    ours = [h for h in root.handlers if isinstance(h, _ServiceHandler)]
    foreign = [h for h in root.handlers
               if not isinstance(h, _ServiceHandler | RunLogHandler)]
    if ours:
        for handler in ours:
            handler.setFormatter(formatter(fmt))
    elif not foreign:
        handler = _ServiceHandler()
        handler.setFormatter(formatter(fmt))
        handler.addFilter(RunFields())
        root.addHandler(handler)
    logging.getLogger("scheduler_app").setLevel(level)

