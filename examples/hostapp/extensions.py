"""The app's extensions, made without an app; ``create_app`` binds them with ``init_app``."""

from __future__ import annotations

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy.orm import DeclarativeBase

from scheduler_app import Scheduler


class Base(DeclarativeBase):
    pass


db = SQLAlchemy(model_class=Base)
scheduler = Scheduler()
