"""GET /api/nodes: every process holding a scheduler, alive or dead by its heartbeat."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..services import services
from ..services.views import node_view
from .openapi import operation
from .schemas import NodeList

bp = Blueprint("nodes", __name__)


@bp.get("/nodes")
@operation({200: NodeList})
def list_nodes() -> dict[str, Any]:
    """List the nodes (processes holding a scheduler), alive or dead by their heartbeat."""
    svc = services()
    lease = svc.settings.lease_seconds
    return {"items": [node_view(n, lease) for n in svc.store.nodes.all()]}
