"""The HTTP API blueprints under ``<prefix>/api``, all behind the same auth hook
(``scheduler_app.routes`` places them in the host app)."""

from __future__ import annotations

from flask import Blueprint

from . import jobs, nodes, openapi, runs, tasks, triggers
from .auth import require_role

api = Blueprint("api", __name__, url_prefix="/api")
api.before_request(require_role)
for module in (tasks, runs, jobs, nodes, triggers, openapi):
    api.register_blueprint(module.bp)
