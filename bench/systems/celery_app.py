"""Celery with a Redis broker, as its "First steps" guide sets it up, behind the same gunicorn as
the other baselines: ``POST /celery`` calls ``noop.delay(key, port)`` and answers 202.

A Redis result backend (the same server) keeps a record of each task, its state and result
under ``celery-task-meta-<id>`` for a day (``result_expires``'s default): what a user configures
to know what became of a task; without it the broker's message is gone once the task is acked.
The worker is started by bench/run.py with ``-A bench.systems.celery_app:celery`` and the pool
under test (``--pool threads --concurrency 8`` or ``--pool prefork --concurrency 2``)."""

from __future__ import annotations

import os

from celery import Celery
from flask import Flask, request

from bench.systems.probe import report

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

celery = Celery("bench", broker=REDIS_URL, backend=REDIS_URL)
# Celery 5.x warns at start-up unless this is said; True is its current behaviour.
celery.conf.broker_connection_retry_on_startup = True


@celery.task
def noop(key: str, port: int) -> None:
    """The no-op task: its first line is the probe every system runs."""
    report(key, port)


app = Flask(__name__)


@app.post("/celery")
def enqueue() -> tuple[str, int]:
    body = request.get_json(force=True)
    noop.delay(body["key"], body["port"])
    return "", 202
