"""The one mapping from exceptions to HTTP answers, in the contract's error shape."""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException

from ..errors import ServiceError

log = logging.getLogger(__name__)

# Blueprints whose answers are always JSON; the dashboard answers HTML unless asked for JSON.
HTML_BLUEPRINT = "scheduler_app.dashboard"
# Paths under the URL prefix that answer JSON, for errors raised before any route matched.
JSON_PATHS = ("/api", "/auth", "/healthz", "/readyz", "/metrics")

_HTTP_CODES = {
    400: "invalid_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    429: "too_many_requests",
}


def error_response(status: int, code: str, message: str, details: Any = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message, "details": details}})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="scheduler"'
    return response


def _wants_json() -> bool:
    blueprint = request.blueprint
    if blueprint is not None:
        if blueprint.startswith("scheduler_app") and not blueprint.startswith(HTML_BLUEPRINT):
            return True
    else:  # no route matched (404, 405): judge by the path
        settings = current_app.extensions["scheduler_app"].settings
        prefixes = tuple(settings.url_prefix + p for p in JSON_PATHS)
        if request.path.startswith(prefixes) or (
                settings.api_enabled and request.path.startswith(settings.api_prefix)):
            return True
    return request.accept_mimetypes.best == "application/json"


def register_error_handlers(app: Flask | Blueprint) -> None:
    """The one mapping, on the extension's blueprints (or, in the standalone service, which
    owns its app, on the whole app)."""
    @app.errorhandler(ServiceError)
    def _service_error(exc: ServiceError) -> Response:
        response = error_response(exc.status, exc.code, exc.message, exc.details)
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            response.headers["Retry-After"] = str(retry_after)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> Any:
        if not _wants_json():
            return exc
        status = exc.code or 500
        response = error_response(status, _HTTP_CODES.get(status, "http_error"),
                                  exc.description or exc.name)
        for name, value in exc.get_headers():
            if name.lower() != "content-type":
                response.headers[name] = value
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> Any:
        log.exception("unhandled error on %s %s", request.method, request.path)
        if not _wants_json():
            raise exc
        return error_response(500, "internal_error", "internal error; see the server log")
