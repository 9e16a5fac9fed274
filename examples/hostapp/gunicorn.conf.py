"""gunicorn settings for the example app. Each worker starts its own scheduler after it forks
and stops it when it exits; the database makes every job fire once however many there are."""

bind = "127.0.0.1:8000"
workers = 2
worker_class = "gthread"
threads = 4


def post_worker_init(worker):
    from examples.hostapp.extensions import scheduler

    scheduler.start()


def worker_exit(server, worker):
    from examples.hostapp.extensions import scheduler

    scheduler.shutdown()
