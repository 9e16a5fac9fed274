"""A job's last run is a run of that job, not of an earlier job that had its id: deleting
``nightly`` and creating a new ``nightly`` starts with no last run (issue 14, item 5)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from flask import Flask

from scheduler_app.store import Store
from scheduler_app.store.schema import runs
from scheduler_app.timeutil import utcnow
from tests.conftest import wait_for
from tests.test_list_queries import add_jobs


def run_and_wait(api: Any, job_id: str) -> dict[str, Any]:
    response = api.post(f"/api/jobs/{job_id}/run")
    assert response.status_code == 202, response.json
    run_id = response.json["id"]
    return wait_for(  # type: ignore[no-any-return]
        lambda: (r := api.get(f"/api/runs/{run_id}").json)["state"] == "succeeded" and r,
        message="the job's run to succeed")


def test_a_recreated_job_id_does_not_show_the_deleted_jobs_last_run(
        make_app: Callable[..., Flask]) -> None:
    api = make_app(PRUNE_RUNS_CRON="").test_client()
    body = {"id": "nightly", "task": "demo.echo", "kwargs": {"value": 1},
            "trigger": {"type": "cron", "expr": "0 3 * * *"}}
    assert api.post("/api/jobs", json=body).status_code == 201
    old = run_and_wait(api, "nightly")
    assert api.get("/api/jobs/nightly").json["last_run"]["id"] == old["id"]

    assert api.delete("/api/jobs/nightly").status_code == 204
    assert api.post("/api/jobs", json=body).status_code == 201
    assert api.get("/api/jobs/nightly").json["last_run"] is None
    assert [j["last_run"] for j in api.get("/api/jobs").json["items"]] == [None]
    # The old run is still there, and still names its job id.
    assert api.get(f"/api/runs/{old['id']}").json["job_id"] == "nightly"

    new = run_and_wait(api, "nightly")
    assert new["id"] != old["id"]
    assert api.get("/api/jobs/nightly").json["last_run"]["id"] == new["id"]
    assert [j["last_run"]["id"] for j in api.get("/api/jobs").json["items"]] == [new["id"]]


def test_last_runs_keep_only_runs_created_since_the_job(store: Store) -> None:
    """On SQLite and PostgreSQL: runs older than the job row are another job's."""
    now = utcnow()
    add_jobs(store, [("fresh", None), ("used", None)], created_at=now)
    row = {"task": "demo.echo", "kwargs": {}, "state": "succeeded", "attempt": 1,
           "max_attempts": 1, "retry_backoff": 2.0, "timeout": None,
           "cancel_requested": False, "errors": [], "node": "h:1:a"}
    with store.db.write() as conn:
        for job_id, at in [("fresh", now - timedelta(hours=1)),
                           ("fresh", now - timedelta(microseconds=1)),
                           ("used", now - timedelta(hours=1)),
                           ("used", now)]:
            conn.execute(runs.insert().values(
                **row, job_id=job_id, fire_time=at, created_at=at, scheduled_for=at,
                started_at=at, finished_at=at))
    last = store.runs.last_runs(["fresh", "used"])
    assert set(last) == {"used"}
    assert last["used"].created_at == now
