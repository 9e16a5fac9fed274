"""A plain Flask-APScheduler app with its built-in API, as its README describes it: memory or
SQLAlchemy (SQLite) job store chosen by BENCH_JOBSTORE. Jobs are added with
``POST /scheduler/jobs`` and a date trigger of now."""

from __future__ import annotations

import os

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from flask import Flask
from flask_apscheduler import APScheduler


class Config:
    SCHEDULER_API_ENABLED = True
    SCHEDULER_EXECUTORS = {"default": {"type": "threadpool", "max_workers": 10}}
    SCHEDULER_JOB_DEFAULTS = {"misfire_grace_time": 60}


app = Flask(__name__)
app.config.from_object(Config)
if os.environ.get("BENCH_JOBSTORE") == "sqlite":
    app.config["SCHEDULER_JOBSTORES"] = {
        "default": SQLAlchemyJobStore(url=os.environ["BENCH_SQLITE_URL"])}
scheduler = APScheduler()
scheduler.init_app(app)
scheduler.start()
