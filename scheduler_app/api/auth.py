"""The API's auth hook; the rules live in ``scheduler_app.security``."""

from __future__ import annotations

from ..security import READ_METHODS, is_loopback, require_role

__all__ = ["READ_METHODS", "is_loopback", "require_role"]
