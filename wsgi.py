"""The WSGI entry point: ``gunicorn -c gunicorn.conf.py wsgi:app`` or ``flask --app wsgi ...``.

A wrong setting is one line on stderr naming it, and exit status 3, which gunicorn's master
reads as "a worker failed to boot" and stops on, instead of a traceback per worker.
"""

import sys

from scheduler_app import create_app
from scheduler_app.errors import ConfigError

try:
    app = create_app()
except ConfigError as error:
    print(f"scheduler_app: configuration error: {error}", file=sys.stderr, flush=True)
    raise SystemExit(3) from None
