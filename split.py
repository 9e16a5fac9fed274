"""``make run-split``: the split deployment in one command, web nodes plus worker nodes.

Starts gunicorn (``gunicorn.conf.py``) with ``FLASK_SCHEDULER_ROLE=web``, whose workers serve
HTTP and write runs and jobs but never execute them, and ``SPLIT_WORKERS`` (default 1)
``flask --app wsgi scheduler worker`` processes, which fire jobs and execute runs and serve no
HTTP. Runs posted to the web nodes reach a worker at once through the wake-ups (see README,
"Web and worker nodes"). Ctrl-C or SIGTERM stops them all gracefully; if any one exits, the
others are stopped too and this exits with its code. In production, run the two commands under
your process manager instead (systemd units, a Procfile), as many of each as you need.

    python split.py [gunicorn arguments...]     # e.g. --bind 127.0.0.1:8001
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent


def commands(gunicorn_args: list[str], workers: int) -> list[tuple[list[str], dict[str, str]]]:
    """Each process's argv and environment."""
    web_env = {**os.environ, "FLASK_SCHEDULER_ROLE": "web"}
    worker_env = {k: v for k, v in os.environ.items() if k != "FLASK_SCHEDULER_ROLE"}
    web = ([str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", *gunicorn_args, "wsgi:app"], web_env)
    worker = ([str(BIN / "flask"), "--app", "wsgi", "scheduler", "worker"], worker_env)
    return [web, *[worker] * workers]


def main(argv: list[str]) -> int:
    try:
        workers = int(os.environ.get("SPLIT_WORKERS", "1"))
        if workers < 1:
            raise ValueError
    except ValueError:
        print(f"SPLIT_WORKERS must be a whole number ≥ 1, got {os.environ['SPLIT_WORKERS']!r}",
              file=sys.stderr)
        return 2
    procs = [subprocess.Popen(cmd, cwd=HERE, env=env) for cmd, env in commands(argv, workers)]
    stopping = False

    def stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    while all(proc.poll() is None for proc in procs):
        time.sleep(0.2)
    first = next(proc for proc in procs if proc.poll() is not None)
    stop(signal.SIGTERM, None)
    codes = [proc.wait() for proc in procs]
    return 0 if stopping and not any(codes) else (first.returncode or max(codes))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
