"""The app of a system under test, timed where a request reaches it (``bench.run --split``).

gunicorn loads ``bench.systems.timed:app`` instead of the system's own app, named by
``BENCH_TIMED_APP`` (``wsgi:app``, ``bench.systems.bare:app``…): the same Flask app object, so
this service's ``gunicorn.conf.py`` hooks get what they expect, with its ``wsgi_app`` wrapped to
note the wall-clock time each request arrives (one list append: the same fraction of a
microsecond on every system). Each worker writes its times to ``BENCH_TIMED_DIR/<pid>.txt`` as
it exits (gunicorn stops a worker with SIGTERM, which ends in a normal interpreter exit). The
bench then splits each sequential request's dispatch latency in two: from the client's send to
the app (the client, loopback, gunicorn's accept and parse: the same work for every system),
and from the app to the task's first line (what each system does with the request).
"""

from __future__ import annotations

import atexit
import importlib
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

_module, _, _attribute = os.environ["BENCH_TIMED_APP"].partition(":")
_found = getattr(importlib.import_module(_module), _attribute.removesuffix("()"))
app = _found() if _attribute.endswith("()") else _found  # an app factory, as gunicorn calls it
_arrivals: list[float] = []
_inner: Callable[..., Iterable[bytes]] = app.wsgi_app


def _timed(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    _arrivals.append(time.time())
    return _inner(environ, start_response)


app.wsgi_app = _timed


@atexit.register
def _write() -> None:
    if not _arrivals:
        return
    path = os.path.join(os.environ["BENCH_TIMED_DIR"], f"{os.getpid()}.txt")
    with open(path, "w") as out:
        out.write("".join(f"{t:.6f}\n" for t in _arrivals))
