"""A small Flask app that uses ``scheduler_app`` the way it would use any Flask extension.

``create_app()`` only wires things together: configuration, the extensions, the blueprint.
The scheduler is started by gunicorn's hooks (``gunicorn.conf.py``), not here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import click
from flask import Flask

from .extensions import db, scheduler


def create_app(config: Mapping[str, Any] | None = None) -> Flask:
    app = Flask(__name__, instance_relative_config=True)
    os.makedirs(app.instance_path, exist_ok=True)
    # One database for the app and the scheduler: enqueueing inside the app's own transaction
    # (build_report.using(session=db.session)) needs both on the same one.
    database_url = os.environ.get("HOSTAPP_DATABASE_URL") or (
        "sqlite:///" + os.path.join(app.instance_path, "hostapp.sqlite3"))
    app.config.from_mapping(
        SECRET_KEY=os.environ.get("SECRET_KEY", "dev"),
        SQLALCHEMY_DATABASE_URI=database_url,
        SCHEDULER_DATABASE_URL=database_url,
    )
    if config is not None:
        app.config.from_mapping(config)

    from . import models, tasks  # noqa: F401 - registers the tables and the tasks

    db.init_app(app)
    scheduler.init_app(app)

    from . import views

    app.register_blueprint(views.bp)
    app.register_error_handler(404, page_not_found)
    app.cli.add_command(init_db)
    return app


def page_not_found(error: Exception) -> tuple[dict[str, str], int]:
    return {"error": "not found", "app": "hostapp"}, 404


@click.command("init-db")
def init_db() -> None:
    """Create the app's tables (the scheduler creates its own)."""
    db.create_all()
    click.echo("Initialized the database.")
