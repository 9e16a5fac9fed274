"""Long-running and scheduled background work for Flask: ``Scheduler``, a Flask extension
(``scheduler.init_app(app)``), durable and exactly once under ``gunicorn -w N``.

``create_app()`` builds the standalone service, one host app of the extension.
"""

from __future__ import annotations

from .enqueue import TaskFunction
from .errors import AlreadyQueued, BatchConflict
from .extension import APScheduler, Scheduler
from .handles import RunHandle
from .services import services
from .standalone import create_app, start_scheduler, stop_scheduler
from .tasks import RunContext
from .tasks.context import require_current_run as current_run
from .version import __version__

__all__ = [
    "APScheduler",
    "AlreadyQueued",
    "BatchConflict",
    "RunContext",
    "RunHandle",
    "Scheduler",
    "TaskFunction",
    "__version__",
    "create_app",
    "current_run",
    "services",
    "start_scheduler",
    "stop_scheduler",
]
