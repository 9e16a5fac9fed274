"""The OpenAPI 3.1 document (``GET /api/openapi.json``) and its docs page (``GET /api/docs``).

The document is generated, never written by hand: the paths and methods are Flask's URL rules
themselves, path parameters come from their converters, and each view states the rest with
``@operation``: its request model, its response models, its query parameters and the error
statuses only it can answer. The schemas are the pydantic models that validate the requests
(``services.models``) and describe the answers (``api.schemas``), rendered by pydantic's
``models_json_schema`` into ``#/components/schemas``. Statuses that follow from the route are
added here, once: 401 (and 403 for a change) on every authenticated route, 400 and 413 with a
request body, 400 with query parameters, 404 with path parameters. Every 4xx is the contract's
``Error`` body.

Why a small registry and not a library: spectree and flask-openapi3 validate requests
themselves (422 answers in their own error shape, not the contract's 400 ``invalid_request``
naming each field) and flask-openapi3 replaces Flask's app and blueprint classes; apispec
would need a third-party pydantic plugin to do what ``models_json_schema`` already does. This
small registry keeps the API's behaviour exactly as it is, and the documents it
builds are checked by ``tests/test_openapi.py`` (every ``/api`` rule documented, a valid
OpenAPI 3.1 document, real answers matching their models) and fuzzed by
``tests/test_openapi_fuzz.py``.

The docs page is Swagger UI, served from the files of the ``flask-swagger-ui`` package (its
``dist`` folder, found through ``importlib.resources``): no CDN, no vendored copy, works
offline. Both routes are under ``/api`` and so need the ``viewer`` role, like every read of
the API: the document names every operation and the dashboard's login gives a browser the
session it needs. "Try it out" sends the session's CSRF token with each change.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from typing import Any, Literal, TypeVar

from flask import (
    Blueprint,
    Flask,
    current_app,
    render_template_string,
    send_from_directory,
    url_for,
)
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaValue, models_json_schema
from werkzeug.routing import BaseConverter, IntegerConverter, PathConverter, Rule
from werkzeug.routing.converters import NumberConverter

from ..errors import NotFound
from ..security import READ_METHODS
from .schemas import Error

F = TypeVar("F", bound=Callable[..., Any])
JsonMode = Literal["validation", "serialization"]

REF_TEMPLATE = "#/components/schemas/{model}"
API_VERSION = "1"  # the contract's version (shared/API.md)
# Blueprints whose every route must carry @operation (tests/test_openapi.py checks it).
DOCUMENTED_BLUEPRINTS = ("scheduler_app.api.", "scheduler_app.auth.", "scheduler_app.health.")
_ATTRIBUTE = "__openapi_operation__"
_PLACEHOLDER = re.compile(r"<(?:[^<>:]+:)?(\w+)>")


@dataclass(frozen=True)
class QueryParam:
    """A query parameter: its name, JSON Schema and meaning (declared beside its parser)."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    empty_means_absent: bool = False  # ?name= is read as no value (OpenAPI allowEmptyValue)


@dataclass(frozen=True)
class Raw:
    """An answer that is not a JSON model: its media types and a JSON Schema of the body."""

    media_types: tuple[str, ...]
    schema: dict[str, Any] = field(default_factory=dict)


Reply = type[BaseModel] | Raw | None  # None: no body (204)


@dataclass(frozen=True)
class Operation:
    """What ``@operation`` records on a view."""

    responses: Mapping[int, Reply]
    body: type[BaseModel] | None = None
    body_media_types: tuple[str, ...] = ("application/json",)
    query: tuple[QueryParam, ...] = ()
    errors: tuple[int, ...] = ()
    path: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    location: bool = False
    public: bool = False


def operation(
    responses: Mapping[int, Reply],
    *,
    body: type[BaseModel] | None = None,
    body_media_types: tuple[str, ...] = ("application/json",),
    query: Iterable[QueryParam] = (),
    errors: Iterable[int] = (),
    path: Mapping[str, dict[str, Any]] | None = None,
    location: bool = False,
    public: bool = False,
) -> Callable[[F], F]:
    """Document a view for the OpenAPI document.

    ``responses`` are its success answers (status → model); ``errors`` the error statuses it
    answers beyond those that follow from the route (see the module docstring). ``path``
    overrides the JSON Schema that a path parameter's converter implies. ``location``: the
    success answer carries a ``Location`` header. ``public``: no credentials needed.
    """
    doc = Operation(responses=dict(responses), body=body, body_media_types=body_media_types,
                    query=tuple(query), errors=tuple(errors), path=dict(path or {}),
                    location=location, public=public)

    def record(view: F) -> F:
        setattr(view, _ATTRIBUTE, doc)
        return view

    return record


def documented(app: Flask, rule: Rule) -> Operation | None:
    doc = getattr(app.view_functions.get(rule.endpoint), _ATTRIBUTE, None)
    return doc if isinstance(doc, Operation) else None


def undocumented_rules(app: Flask) -> list[str]:
    """URL rules of ``DOCUMENTED_BLUEPRINTS`` whose view has no ``@operation``."""
    return sorted(rule.rule for rule in app.url_map.iter_rules()
                  if rule.endpoint.startswith(DOCUMENTED_BLUEPRINTS)
                  and documented(app, rule) is None)


# -- building the document --------------------------------------------------------------------

def build_document(app: Flask) -> dict[str, Any]:
    """The OpenAPI 3.1 document of every documented route of ``app``."""
    routes = [(rule, doc) for rule in app.url_map.iter_rules()
              if (doc := documented(app, rule)) is not None]
    models: dict[tuple[type[BaseModel], JsonMode], None] = {(Error, "serialization"): None}
    for _, doc in routes:
        if doc.body is not None:
            models[doc.body, "validation"] = None
        for reply in doc.responses.values():
            if isinstance(reply, type):
                models[reply, "serialization"] = None
    refs, definitions = models_json_schema(list(models), ref_template=REF_TEMPLATE)

    def ref(model: type[BaseModel], mode: JsonMode) -> JsonSchemaValue:
        return refs[model, mode]

    paths: dict[str, dict[str, Any]] = {}
    for rule, doc in routes:
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            paths.setdefault(_openapi_path(rule), {})[method.lower()] = \
                _operation(app, rule, method, doc, ref)
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "scheduler_app",
            "version": API_VERSION,
            "description": _INFO,
        },
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {
                "bearer": {
                    "type": "http", "scheme": "bearer",
                    "description": "A token from API_TOKENS: viewer (every GET) or admin "
                                   "(everything). With no token configured, loopback "
                                   "clients are admin.",
                },
                "session": {
                    "type": "apiKey", "in": "cookie",
                    "name": app.config.get("SESSION_COOKIE_NAME") or "session",
                    "description": "The browser session from POST /auth/login; changes also "
                                   "need its CSRF token in X-CSRF-Token.",
                },
            },
        },
        "security": [{"bearer": []}, {"session": []}],
    }


_INFO = (
    "Background jobs for Flask: run a task now, later, or on a cron, interval or date "
    "schedule, with a durable record of every run. Errors are "
    '`{"error": {"code", "message", "details"}}`; lists take `limit` and `cursor` and answer '
    '`{"items", "next_cursor"}`; times are ISO 8601 with an offset.'
)


def _openapi_path(rule: Rule) -> str:
    return _PLACEHOLDER.sub(r"{\1}", rule.rule)


def _operation(app: Flask, rule: Rule, method: str, doc: Operation,
               ref: Callable[[type[BaseModel], JsonMode], JsonSchemaValue]) -> dict[str, Any]:
    view = app.view_functions[rule.endpoint]
    summary, _, description = (view.__doc__ or rule.endpoint).strip().partition("\n\n")
    spec: dict[str, Any] = {
        "operationId": rule.endpoint,
        "summary": " ".join(summary.split()),
        "tags": [rule.endpoint.removeprefix("scheduler_app.").removeprefix("api.").split(".")[0]],
    }
    if description.strip():
        spec["description"] = " ".join(description.split())
    parameters = [
        {"name": name, "in": "path", "required": True,
         "schema": doc.path.get(name) or _converter_schema(rule._converters[name])}
        for name in _PLACEHOLDER.findall(rule.rule)
    ]
    parameters += [{"name": q.name, "in": "query", "required": False, "schema": q.schema,
                    **({"description": q.description} if q.description else {}),
                    **({"allowEmptyValue": True} if q.empty_means_absent else {})}
                   for q in doc.query]
    if parameters:
        spec["parameters"] = parameters
    if doc.body is not None:
        schema = ref(doc.body, "validation")
        spec["requestBody"] = {"required": True, "content": {
            media_type: {"schema": schema} for media_type in doc.body_media_types}}
    responses: dict[str, Any] = {}
    for status, reply in sorted(doc.responses.items()):
        responses[str(status)] = _response(status, reply, ref, doc.location)
    for status in sorted(_error_statuses(rule, method, doc)):
        responses[str(status)] = _response(status, Error, ref, False)
    spec["responses"] = responses
    if doc.public:
        spec["security"] = []
    return spec


def _error_statuses(rule: Rule, method: str, doc: Operation) -> set[int]:
    statuses = set(doc.errors)
    if not doc.public:
        statuses.add(401)
        if method not in READ_METHODS:
            statuses.add(403)
    if doc.body is not None:
        statuses |= {400, 413}
    if doc.query:
        statuses.add(400)
    if rule.arguments:
        statuses.add(404)
    return statuses - set(doc.responses)


def _response(status: int, reply: Reply, ref: Callable[[type[BaseModel], JsonMode],
              JsonSchemaValue], location: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {"description": HTTPStatus(status).phrase}
    if isinstance(reply, Raw):
        answer["content"] = {media: {"schema": reply.schema} for media in reply.media_types}
    elif reply is not None:
        answer["content"] = {"application/json": {"schema": ref(reply, "serialization")}}
    headers: dict[str, Any] = {}
    if location and 200 <= status < 300:
        headers["Location"] = {"description": "The new resource's URL",
                               "schema": {"type": "string"}}
    if status == 401:
        headers["WWW-Authenticate"] = {"schema": {"type": "string"}}
    if status == 429:
        headers["Retry-After"] = {"description": "Seconds to wait",
                                  "schema": {"type": "integer"}}
    if headers:
        answer["headers"] = headers
    return answer


def _converter_schema(converter: BaseConverter) -> dict[str, Any]:
    if isinstance(converter, NumberConverter):
        schema: dict[str, Any] = {
            "type": "integer" if isinstance(converter, IntegerConverter) else "number"}
        if converter.min is not None or not converter.signed:
            schema["minimum"] = converter.min if converter.min is not None else 0
        if converter.max is not None:
            schema["maximum"] = converter.max
        return schema
    if isinstance(converter, PathConverter):
        return {"type": "string"}
    return {"type": "string", "pattern": "^[^/]+$"}


# -- the routes -------------------------------------------------------------------------------

bp = Blueprint("openapi", __name__)

# The Swagger UI files the page uses, with their media types (set here, not guessed from the
# host's MIME table, so the document's media types hold everywhere).
ASSETS = {
    "swagger-ui.css": "text/css",
    "swagger-ui-bundle.js": "text/javascript",
    "favicon-32x32.png": "image/png",
    "favicon-16x16.png": "image/png",
}
_UI_PACKAGE = "flask_swagger_ui"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>scheduler_app API</title>
  <link rel="stylesheet" href="{{ asset('swagger-ui.css') }}">
  <link rel="icon" type="image/png" sizes="32x32" href="{{ asset('favicon-32x32.png') }}">
  <link rel="icon" type="image/png" sizes="16x16" href="{{ asset('favicon-16x16.png') }}">
  <style>body { margin: 0; }</style>
</head>
<body>
  <div id="swagger-ui"></div>
  <script src="{{ asset('swagger-ui-bundle.js') }}"></script>
  <script>
    var csrfToken = null;
    fetch({{ session_url|tojson }}, {credentials: "same-origin"})
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) { csrfToken = body && body.csrf_token; })
      .catch(function () {});
    window.ui = SwaggerUIBundle({
      url: {{ spec_url|tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      requestInterceptor: function (request) {
        if (csrfToken) { request.headers["X-CSRF-Token"] = csrfToken; }
        return request;
      }
    });
  </script>
</body>
</html>
"""


def _ui_dist() -> Path:
    try:
        return Path(str(resources.files(_UI_PACKAGE) / "dist"))
    except ModuleNotFoundError:
        raise NotFound("the docs UI package (flask-swagger-ui) is not installed") from None


@bp.get("/openapi.json")
@operation({200: Raw(("application/json",), {"type": "object"})})
def openapi_json() -> dict[str, Any]:
    """This document: OpenAPI 3.1, generated from the routes and their pydantic models."""
    return build_document(current_app)


@bp.get("/docs")
@operation({200: Raw(("text/html",), {"type": "string"})})
def docs() -> str:
    """The API documentation page (Swagger UI), served without any CDN."""
    _ui_dist()
    return render_template_string(
        _PAGE, spec_url=url_for(".openapi_json"), session_url=url_for("scheduler_app.auth.whoami"),
        asset=lambda name: url_for(".docs_asset", filename=name))


@bp.get("/docs/<path:filename>")
@operation({200: Raw(tuple(dict.fromkeys(ASSETS.values())), {"type": "string"})},
           path={"filename": {"type": "string", "enum": list(ASSETS)}})
def docs_asset(filename: str) -> Any:
    """A file of the docs page, from the installed Swagger UI package."""
    if filename not in ASSETS:
        raise NotFound(f"no docs file {filename!r}")
    return send_from_directory(_ui_dist(), filename, mimetype=ASSETS[filename])
