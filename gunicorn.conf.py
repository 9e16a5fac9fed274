"""gunicorn settings for this service. Every knob can be overridden on the command line
(``make run`` passes ``--bind``) or with GUNICORN_CMD_ARGS.

The scheduler is started in each worker after it forks (``post_worker_init``), never in the
master, and stopped gracefully when the worker exits (``worker_exit``): running tasks are asked
to stop and, if they do not within SHUTDOWN_GRACE_SECONDS, handed back to the queue.
"""

import os

# Loopback only by default: exposing the API to a network is a deliberate choice
# (set GUNICORN_BIND=0.0.0.0:8000, and configure FLASK_API_TOKENS first).
bind = os.environ.get("GUNICORN_BIND", "127.0.0.1:8000")
# One worker process until the cluster work makes several fire each job exactly once.
workers = int(os.environ.get("GUNICORN_WORKERS", "1"))
worker_class = "gthread"
# Threads serving HTTP in each worker (runs execute on the node's own pool, WORKER_THREADS).
threads = int(os.environ.get("GUNICORN_THREADS", "8"))
# Seconds a worker gets after SIGTERM to finish requests and hand back runs.
graceful_timeout = int(os.environ.get("GUNICORN_GRACEFUL_TIMEOUT", "30"))
timeout = 60
accesslog = os.environ.get("GUNICORN_ACCESSLOG", "-")


def post_worker_init(worker):
    from scheduler_app import start_scheduler

    start_scheduler(worker.wsgi)


def worker_exit(server, worker):
    from scheduler_app import stop_scheduler

    app = getattr(worker, "wsgi", None)
    if app is not None:
        stop_scheduler(app)
