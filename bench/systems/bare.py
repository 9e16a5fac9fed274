"""Baselines written from their public descriptions: a bare Flask route (the HTTP ceiling) and
a route that starts a ``threading.Thread`` per request (fast, but nothing is recorded)."""

from __future__ import annotations

import threading

from flask import Flask, request

from bench.systems.probe import report

app = Flask(__name__)


@app.post("/noop")
def noop() -> tuple[str, int]:
    request.get_json(silent=True)
    return "", 202


@app.post("/thread")
def thread() -> tuple[str, int]:
    body = request.get_json(force=True)
    threading.Thread(target=report, args=(body["key"], body["port"])).start()
    return "", 202
