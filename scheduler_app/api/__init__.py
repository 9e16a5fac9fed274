"""Layer 4: the HTTP API blueprints under /api, all behind the same auth hook."""

from __future__ import annotations

from flask import Blueprint, Flask

from . import jobs, nodes, openapi, runs, session, tasks, triggers
from .auth import require_role
from .errors import register_error_handlers

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_role)
for module in (tasks, runs, jobs, nodes, triggers, openapi):
    api.register_blueprint(module.bp)


def init_app(app: Flask) -> None:
    register_error_handlers(app)
    app.register_blueprint(api)
    app.register_blueprint(session.bp)
