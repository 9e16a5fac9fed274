"""The old name of ``Engine``, kept until its importers switch to ``scheduler.engine``."""

from .engine import Engine as JobScheduler

__all__ = ["JobScheduler"]
