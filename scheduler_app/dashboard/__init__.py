"""Layer 4: the dashboard, server-rendered pages over the same services the API uses.

Pages are Jinja templates; small plain script modules (``static/dashboard.js`` and what it
imports; no build step, no CDN) format times in the viewer's time zone, keep runs and jobs
live by polling the JSON API, generate argument forms from each task's JSON Schema, and send
every change to the JSON API with the session's CSRF token. Who may see and do what is decided by
``scheduler_app.security``, exactly as for the API.
"""

from __future__ import annotations

from .pages import bp

__all__ = ["bp"]
