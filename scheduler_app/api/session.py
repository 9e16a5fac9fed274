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
from .openapi import operation
from .schemas import Login, LoginRequest, Session

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.post("/login")
@operation({200: Login}, body=LoginRequest, public=True, errors=(401, 403),
           body_media_types=("application/json", "application/x-www-form-urlencoded"))
def login() -> dict[str, Any]:
    """Log in with a token: a session cookie, and the CSRF token its changes need.

    An unknown token is a 401; a request from another site is a 403 csrf_failed."""
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
@operation({200: Session})
def whoami() -> dict[str, Any]:
    """Who the caller is: role, how it was recognised, and the session's CSRF token."""
    role, how = security.current_role()
    return {"role": role, "via": how, "csrf_token": security.csrf_token()}


@bp.post("/logout")
@operation({204: None}, public=True, errors=(403,))
def logout() -> Any:
    """End the browser session."""
    security.check_same_origin()
    security.logout()
    return "", 204
