"""/healthz and /readyz, with real failures: a database that refuses connections, a stopped
scheduler; readiness recovers by itself when the cause goes away."""

from __future__ import annotations

import sqlalchemy as sa

from scheduler_app import start_scheduler, stop_scheduler
from scheduler_app.services import services
from tests.conftest import PG_ADMIN_URL, wait_for


def test_ready_once_started_and_not_after_a_stop(make_app):
    app = make_app(start=False, PRUNE_RUNS_CRON="")
    client = app.test_client()
    assert client.get("/healthz").json == {"status": "ok"}
    not_yet = client.get("/readyz")
    assert not_yet.status_code == 503 and "scheduler" in not_yet.json["reason"]
    start_scheduler(app)
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["node"] == services(app).scheduler.node.id
    stop_scheduler(app)
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
    start_scheduler(app)
    assert client.get("/readyz").status_code == 200


def test_readiness_follows_the_database_and_recovers(make_app, pg_url):
    app = make_app(DATABASE_URL=pg_url, PRUNE_RUNS_CRON="")
    client = app.test_client()
    assert client.get("/readyz").status_code == 200
    name = sa.make_url(pg_url).database
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                 "WHERE datname = :name"), {"name": name})
        down = wait_for(lambda: (r := client.get("/readyz")).status_code == 503 and r)
        assert "database" in down.json["reason"]
        assert client.get("/healthz").status_code == 200
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        admin.dispose()
    wait_for(lambda: client.get("/readyz").status_code == 200, message="readiness to recover")
    run = client.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1}}).json
    wait_for(lambda: client.get(f"/api/runs/{run['id']}").json["state"] == "succeeded")
