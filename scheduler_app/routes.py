"""Where the extension's routes live in a host app: one blueprint under ``SCHEDULER_URL_PREFIX``.

The JSON API (``<prefix>/api``), browser sessions (``<prefix>/auth``), health and metrics, and
the dashboard (``<prefix>/``) are blueprints nested in ``scheduler_app``, so every endpoint is
named ``scheduler_app.*`` (no clash with a host's ``api`` or ``auth`` blueprint) and every error
handler is the blueprint's own: nothing is installed on the host app itself.
Flask-APScheduler's API is registered at ``SCHEDULER_API_PREFIX`` when enabled.
"""

from __future__ import annotations

from flask import Blueprint, Flask, current_app

from . import dashboard, health, metrics
from .api import api, builtin
from .api.common import body_limit_of
from .api.errors import register_error_handlers
from .api.session import bp as session_bp
from .security import current_request
from .services import services

NAME = "scheduler_app"

bp = Blueprint(NAME, __name__)
for child in (api, session_bp, health.bp, metrics.bp, dashboard.bp):
    bp.register_blueprint(child)
register_error_handlers(bp)
register_error_handlers(builtin.bp)

# The setting each endpoint's body limit reads, found once: the endpoints are this
# blueprint's own, each always the same view.
_LIMIT_SETTINGS: dict[str, str] = {}


@bp.before_request
def _limit_body() -> None:
    """The request body limit of SCHEDULER_MAX_CONTENT_LENGTH, for this blueprint only (the
    host's MAX_CONTENT_LENGTH is the host's), or the view's own (``api.common.body_limit``:
    the batch route's BATCH_MAX_CONTENT_LENGTH)."""
    req = current_request()
    endpoint = req.endpoint or ""
    setting = _LIMIT_SETTINGS.get(endpoint)
    if setting is None:
        own = body_limit_of(current_app.view_functions.get(endpoint))
        setting = _LIMIT_SETTINGS[endpoint] = own or "max_content_length"
    req.max_content_length = getattr(services().settings, setting)


builtin.bp.before_request(_limit_body)


def endpoint(name: str) -> str:
    """The full endpoint name of one of the extension's views (``api.runs.get_run``)."""
    return f"{NAME}.{name}"


def register(app: Flask) -> None:
    settings = services(app).settings
    app.register_blueprint(bp, url_prefix=settings.url_prefix or None)
    if settings.api_enabled:
        app.register_blueprint(builtin.bp, url_prefix=settings.api_prefix)
