"""Request parsing shared by the API blueprints: JSON bodies and list parameters, each query
parameter documented (``QueryParam``) beside the code that reads it."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

from flask import Request, current_app, request, url_for
from werkzeug.exceptions import RequestEntityTooLarge

from ..errors import InvalidRequest
from ..security import current_request
from .openapi import QueryParam

F = TypeVar("F", bound=Callable[..., Any])

MAX_LIMIT = 500
DEFAULT_LIMIT = 50


_BODY_LIMIT = "__body_limit_setting__"

_GET_RUN = "scheduler_app.api.runs.get_run"
# Per app: the URL of a run up to its id, by script root ("" when it is not that).
_RUN_URLS = "scheduler_app.run_urls"


def run_location(run_id: int) -> str:
    """The ``Location`` of a run just created: ``url_for`` its page. The URL up to the id is
    built once per app and script root, then the id appended: ``url_for`` cost 16 µs of a
    run-now request's CPU. A URL that does not end in the id (a host's ``url_defaults``
    adding a query) is built by ``url_for`` every time."""
    prefixes: dict[str, str] = current_app.extensions.setdefault(_RUN_URLS, {})
    root = request.script_root
    prefix = prefixes.get(root)
    if prefix is None:
        sample = url_for(_GET_RUN, run_id=0)
        prefix = prefixes[root] = sample[:-1] if sample.endswith("/0") else ""
    return f"{prefix}{run_id}" if prefix else url_for(_GET_RUN, run_id=run_id)


def body_limit(setting: str) -> Callable[[F], F]:
    """Give a view the body limit of the setting ``setting`` (a ``Settings`` field) instead of
    MAX_CONTENT_LENGTH: the batch route takes 10,000 runs while every other route stays
    protected by the small default."""
    def mark(view: F) -> F:
        setattr(view, _BODY_LIMIT, setting)
        return view
    return mark


def body_limit_of(view: object) -> str | None:
    """The setting a view's ``body_limit`` names, if it has one."""
    setting = getattr(view, _BODY_LIMIT, None)
    return setting if isinstance(setting, str) else None


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


# Built once: ``json.loads`` with any option builds a new decoder (and its scanner) per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _declared_body(req: Request) -> bytes | None:
    """The body read straight from the server's stream, when the server ends that stream
    itself (``wsgi.input_terminated``, which gunicorn sets on every request) and the request
    declares its length; None otherwise (chunked, no length, the body already read, or a
    server that leaves the stream open, as Werkzeug's own does but for chunked bodies), for
    ``Request.get_data``. Why: Werkzeug's guarded stream over the server's took 34 µs of a
    run-now request in a gunicorn worker, against 14 read here (bench/README.md). What
    Werkzeug enforces is kept: a declared length over the limit is a 413 before anything is
    read, and the bytes are kept where ``get_data`` finds them, for any later reader."""
    environ = req.environ
    declared = environ.get("CONTENT_LENGTH")
    if not (declared and declared.isascii() and declared.isdigit()) \
            or not environ.get("wsgi.input_terminated") \
            or "HTTP_TRANSFER_ENCODING" in environ or "stream" in req.__dict__ \
            or getattr(req, "_cached_data", None) is not None:
        return None
    length = int(declared)
    limit = req.max_content_length
    if limit is not None and length > limit:
        raise RequestEntityTooLarge()
    raw: bytes = environ["wsgi.input"].read(length)
    req._cached_data = raw  # where ``get_data(cache=True)`` keeps what it read
    return raw


def json_body(*, required: bool = True) -> Any:
    """The request body decoded as JSON (any Content-Type), or InvalidRequest naming ``body``."""
    req = current_request()
    raw = _declared_body(req)
    if raw is None:
        raw = req.get_data(cache=True)
    limit = req.max_content_length
    if limit is not None and len(raw) >= limit and req.content_length is None:
        # A streamed (chunked) body is cut at the limit by Werkzeug, not refused: refuse it
        # here rather than judge the truncated document.
        raise RequestEntityTooLarge()
    if not raw.strip():
        if required:
            raise InvalidRequest.field("body", "a JSON object is required")
        return {}
    try:
        # As ``json.loads`` reads bytes: UTF-8, -16 or -32, told apart by their first bytes.
        return _DECODER.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except (ValueError, RecursionError) as exc:
        message = str(exc) if isinstance(exc, ValueError) else "nested too deeply"
        raise InvalidRequest.field("body", f"is not valid JSON: {message}") from None


LIMIT = QueryParam("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT,
                            "default": DEFAULT_LIMIT}, "Page size")
CURSOR = QueryParam("cursor", {"type": "string"},
                    "The previous page's next_cursor; absent for the first page",
                    empty_means_absent=True)


def filter_param(name: str, description: str, schema: dict[str, Any] | None = None
                 ) -> QueryParam:
    """The documentation of a list filter read as ``request.args.get(name) or None``."""
    return QueryParam(name, schema or {"type": "string"}, description, empty_means_absent=True)


def bool_param(name: str, description: str) -> QueryParam:
    """The documentation of a ``bool_arg`` parameter."""
    return QueryParam(name, {"type": "boolean"}, description, empty_means_absent=True)


def limit_arg() -> int:
    raw = request.args.get("limit")
    if raw is None:
        return DEFAULT_LIMIT
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 9) or \
            not 1 <= int(raw) <= MAX_LIMIT:
        raise InvalidRequest.field("limit", f"must be an integer from 1 to {MAX_LIMIT}")
    return int(raw)


def bool_arg(name: str) -> bool | None:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return None
    if raw.lower() in ("true", "1", "yes"):
        return True
    if raw.lower() in ("false", "0", "no"):
        return False
    raise InvalidRequest.field(name, "must be true or false")


def page(items: list[Any], next_cursor: str | None) -> dict[str, Any]:
    return {"items": items, "next_cursor": next_cursor}
