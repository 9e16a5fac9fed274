"""Who may call what, for the API, Flask-APScheduler's API and the dashboard alike.

- Bearer tokens from ``API_TOKENS`` with the roles ``viewer`` (every GET) and ``admin``
  (everything); compared in constant time against every configured token; never logged.
- With no token configured only loopback clients are admitted, as admin, so a fresh install is
  never a remote control for code execution on the network.
- A browser logs in once with a token (``login``) and then carries a session cookie (HttpOnly,
  SameSite=Lax, Secure over HTTPS). The session keeps a hash of the token, not the token, and
  dies when that token is removed from the configuration.
- A host app can plug in its own login with ``@scheduler.role_loader``: a function returning
  ``"admin"``, ``"viewer"`` or None for the current request. A role it gives is ambient
  authority, like the loopback rule; None leaves the decision to the rules above.
- Requests that rely on ambient authority (a session cookie, the loopback rule or the role
  loader) must not be
  forgeable by another site: a state change from another origin is refused, and one made with
  a session must carry the session's CSRF token (``X-CSRF-Token`` header or ``csrf_token`` form
  field). A bearer token is never sent by a browser on its own, so it needs neither check.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import ipaddress
import secrets
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Request, current_app, request, session
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from itsdangerous import URLSafeTimedSerializer

from .errors import Forbidden, Unauthorized

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
ROLES = ("viewer", "admin")
# Our keys in the host's session, apart from the host's own.
_TOKEN, _ROLE, _CSRF = "scheduler_app.tok", "scheduler_app.role", "scheduler_app.csrf"


class CsrfFailed(Forbidden):
    """The request is missing its CSRF token, or comes from another site."""

    code = "csrf_failed"


def is_loopback(address: str | None) -> bool:
    if not address:
        return False
    return _is_loopback(address)


@functools.lru_cache(maxsize=1024)
def _is_loopback(address: str) -> bool:
    """Parsed once per address (every request of a loopback client asks it)."""
    try:
        return ipaddress.ip_address(address.split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def _tokens() -> dict[str, str]:
    tokens: dict[str, str] = current_app.extensions["scheduler_app"].settings.api_tokens
    return tokens


def _loaded_role(loader: Callable[[], Any] | None) -> str | None:
    """The host app's answer (``@scheduler.role_loader``), if it has a loader."""
    if loader is None:
        return None
    role = loader()
    if role is not None and role not in ROLES:
        raise TypeError(f"the role loader returned {role!r}; it must return "
                        f"'admin', 'viewer' or None")
    return role  # type: ignore[no-any-return]


def _fingerprint(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def token_role(token: str) -> str | None:
    """The role of ``token``, comparing in constant time with every configured token."""
    given = token.encode()
    role = None
    for known, known_role in _tokens().items():
        if hmac.compare_digest(known.encode(), given):
            role = known_role
    return role


def _session_role() -> str | None:
    fingerprint, role = session.get(_TOKEN), session.get(_ROLE)
    if not fingerprint or role not in ROLES:
        return None
    for known, known_role in _tokens().items():
        if hmac.compare_digest(_fingerprint(known), str(fingerprint)) and known_role == role:
            return known_role
    return None


def current_role(req: Request | None = None) -> tuple[str, str]:
    """(role, how) for this request (``req``: it, already looked up), ``how`` being
    ``bearer``, ``loader``, ``session`` or ``loopback``; raise Unauthorized when the caller
    is nobody. Every API request asks it: the headers are read from the WSGI environ and the
    extension and the request looked up once (each look through Flask's proxies is three
    calls)."""
    if req is None:
        req = current_request()
    found = current_app.extensions["scheduler_app"]
    tokens = found.settings.api_tokens
    header = req.environ.get("HTTP_AUTHORIZATION", "")
    if header:
        scheme, _, token = header.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("send 'Authorization: Bearer <token>'")
        role = token_role(token.strip()) if tokens else None
        if role is None:
            raise Unauthorized("unknown token")
        return role, "bearer"
    loaded = _loaded_role(found.extension.role_loader_function)
    if loaded is not None:
        return loaded, "loader"
    if tokens:
        role = _session_role()
        if role is not None:
            return role, "session"
        raise Unauthorized("send 'Authorization: Bearer <token>', or log in")
    if is_loopback(req.remote_addr):
        return "admin", "loopback"
    raise Unauthorized("no API token is configured, so only loopback clients are admitted")


def check_same_origin(req: Request | None = None) -> None:
    """Refuse a state change that a browser sends on behalf of another site (``req``: this
    request, already looked up)."""
    if req is None:
        req = current_request()
    environ = req.environ
    if environ.get("HTTP_SEC_FETCH_SITE", "") == "cross-site":
        raise CsrfFailed("cross-site request refused")
    origin = environ.get("HTTP_ORIGIN")
    if origin and origin != "null":
        if urlsplit(origin).netloc.lower() != req.host.lower():
            raise CsrfFailed(f"request from origin {origin} refused")
    elif origin == "null":
        raise CsrfFailed("request from an opaque origin refused")


def csrf_token() -> str:
    """The session's CSRF token (created on first use), for forms and scripts."""
    token = session.get(_CSRF)
    if not token:
        token = session[_CSRF] = secrets.token_urlsafe(32)
    return str(token)


def check_csrf() -> None:
    expected = session.get(_CSRF)
    given = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token", "")
    if not expected or not hmac.compare_digest(str(expected), given):
        raise CsrfFailed("missing or wrong CSRF token")


def authorize(write: bool | None = None) -> str:
    """Check the caller may make this request; return its role.

    Reads need ``viewer``, writes ``admin``; writes on ambient authority pass the CSRF checks.
    """
    req = current_request()
    role, how = current_role(req)
    if write is None:
        write = req.method not in READ_METHODS
    if write:
        if how != "bearer":
            check_same_origin(req)
        if how == "session":
            check_csrf()
        if role != "admin":
            raise Forbidden("this is a viewer; changes need an admin token")
    return role


def current_request() -> Request:
    """This request itself, not Flask's proxy of it: a hook or view that reads the request
    several times looks it up once (each read through the proxy is three calls)."""
    return request._get_current_object()  # type: ignore[attr-defined, no-any-return]


def require_role() -> None:
    """``before_request`` hook of the API blueprints."""
    authorize()


def login(token: str) -> str:
    """Start a browser session for ``token``; raise Unauthorized if it is not configured."""
    role = token_role(token) if _tokens() else None
    if role is None:
        raise Unauthorized("unknown token")
    logout()
    session[_TOKEN] = _fingerprint(token)
    session[_ROLE] = role
    session.permanent = True
    csrf_token()
    return role


def logout() -> None:
    """Forget this extension's keys; the host's own keys in the session stay."""
    for key in (_TOKEN, _ROLE, _CSRF):
        session.pop(key, None)


class _SessionInterface(SecureCookieSessionInterface):
    """Flask's signed-cookie session, Secure whenever the request came over HTTPS; its signer
    built once per set of keys, not at every request (Flask builds one to open each request's
    session, cookie or none: an API call with a bearer token or from loopback paid for it)."""

    def __init__(self) -> None:
        self._signers: dict[tuple[Any, ...], URLSafeTimedSerializer | None] = {}

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """A request without cookies (an API client's) gets a new session at once: the
        cookie header is not parsed and no signer is looked up (about 5 µs of a run-now
        request's 50 before its view)."""
        if app.secret_key and not request.environ.get("HTTP_COOKIE"):
            return self.session_class()
        return super().open_session(app, request)

    def get_cookie_secure(self, app: Flask) -> bool:
        return bool(super().get_cookie_secure(app)) or request.is_secure

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config.get("SECRET_KEY_FALLBACKS") or ()))
        try:
            return self._signers[keys]
        except KeyError:
            if len(self._signers) >= 8:  # keys rotated again and again: keep the newest
                self._signers.clear()
            signer = self._signers[keys] = super().get_signing_serializer(app)
            return signer
        except TypeError:  # a key that cannot be hashed (a list of fallbacks' items)
            return super().get_signing_serializer(app)


def harden_sessions(app: Flask) -> None:
    """The standalone service's own session cookie: HttpOnly, SameSite=Lax, Secure over
    HTTPS, named apart. A host app's sessions are the host's to configure."""
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = app.config.get("SESSION_COOKIE_SAMESITE") or "Lax"
    if app.config.get("SESSION_COOKIE_NAME") in (None, "session"):  # Flask's generic default
        app.config["SESSION_COOKIE_NAME"] = "scheduler_session"
    app.session_interface = _SessionInterface()
