"""Browser sessions: log in with a token, get a cookie and a CSRF token; log out.

``POST /auth/login`` takes ``{"token": "..."}`` (JSON) or a ``token`` form field and answers
``{"role", "csrf_token"}`` with a session cookie; ``GET /auth/session`` tells who the caller is;
``POST /auth/logout`` ends the session. The dashboard uses these; scripts use bearer tokens.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, request

from .. import security
from ..errors import InvalidRequest
from .common import json_body

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.post("/login")
def login() -> dict[str, Any]:
    security.check_same_origin()
    if request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        token = request.form.get("token")
    else:
        body = json_body()
        token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str) or not token.strip():
        raise InvalidRequest.field("token", "a token is required")
    role = security.login(token.strip())
    return {"role": role, "csrf_token": security.csrf_token()}


@bp.get("/session")
def whoami() -> dict[str, Any]:
    role, how = security.current_role()
    return {"role": role, "via": how, "csrf_token": security.csrf_token()}


@bp.post("/logout")
def logout() -> Any:
    security.check_same_origin()
    security.logout()
    return "", 204
