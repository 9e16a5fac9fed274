"""GET /api/tasks: the registered tasks and the JSON Schema of their arguments."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..services.views import task_view
from ..tasks import registry
from .openapi import operation
from .schemas import TaskList

bp = Blueprint("tasks", __name__)


@bp.get("/tasks")
@operation({200: TaskList})
def list_tasks() -> dict[str, Any]:
    """List the registered tasks and the JSON Schema of their arguments."""
    return {"items": [task_view(t) for t in registry.all()]}
