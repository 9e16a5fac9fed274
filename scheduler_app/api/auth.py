"""Who may call what: bearer tokens with the roles ``viewer`` (every GET) and ``admin``.

With no token configured only loopback clients are admitted (as admin), so a fresh install is
never a remote control for code execution on the network. Tokens are compared in constant
time and never logged.
"""

from __future__ import annotations

import hmac
import ipaddress

from flask import request

from ..errors import Forbidden, Unauthorized
from ..services import services

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def role_of_request() -> str:
    """The caller's role, or raise Unauthorized."""
    tokens = services().settings.api_tokens
    if not tokens:
        if is_loopback(request.remote_addr):
            return "admin"
        raise Unauthorized("no API token is configured, so only loopback clients are admitted")
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send 'Authorization: Bearer <token>'")
    given = token.strip().encode()
    role = None
    for known, known_role in tokens.items():
        if hmac.compare_digest(known.encode(), given):
            role = known_role
    if role is None:
        raise Unauthorized("unknown token")
    return role


def require_role() -> None:
    """``before_request`` hook for the API blueprints: reads need viewer, writes need admin."""
    role = role_of_request()
    if request.method not in READ_METHODS and role != "admin":
        raise Forbidden("this token is a viewer token; changes need an admin token")
