"""Flask-APScheduler's REST API at /scheduler, made safe (being written)."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask, prefix: str) -> None:
    return None
