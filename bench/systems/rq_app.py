"""RQ with Redis, as its documentation sets it up, behind the same gunicorn as the other
baselines: ``POST /rq`` enqueues the probe on the ``default`` queue and answers 202.

RQ keeps a record of every job without extra configuration: the job's hash (status, times,
arguments) and its result, kept ``result_ttl`` seconds after it finishes (500 by default), and
the queue's finished-job registry. bench/run.py starts the worker: ``rq worker`` (the default
``Worker`` forks a work horse per job), ``rq worker -w rq.worker.SimpleWorker`` (runs jobs in
its own process) or ``rq worker-pool -n 2`` (two forking workers)."""

from __future__ import annotations

import os

from flask import Flask, request
from redis import Redis
from rq import Queue

from bench.systems.probe import report

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")

queue = Queue("default", connection=Redis.from_url(REDIS_URL))
app = Flask(__name__)


@app.post("/rq")
def enqueue() -> tuple[str, int]:
    body = request.get_json(force=True)
    queue.enqueue(report, body["key"], body["port"])
    return "", 202
