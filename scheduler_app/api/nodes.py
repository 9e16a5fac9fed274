"""GET /api/nodes: every process holding a scheduler, alive or dead by its heartbeat."""

from __future__ import annotations

from typing import Any

from flask import Blueprint

from ..services import services
from ..services.views import node_view

bp = Blueprint("nodes", __name__)


@bp.get("/nodes")
def list_nodes() -> dict[str, Any]:
    svc = services()
    lease = svc.settings.lease_seconds
    return {"items": [node_view(n, lease) for n in svc.store.nodes.all()]}
