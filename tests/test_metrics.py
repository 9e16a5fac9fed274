"""GET /metrics: exact numbers after known runs, counters that survive pruning, the store's
totals on both backends, and one truth whichever gunicorn worker answers."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

from flask import Flask
from prometheus_client.parser import text_string_to_metric_families

from scheduler_app import start_scheduler
from scheduler_app.services import services
from scheduler_app.store import Database, NewRun, RunState, Store
from scheduler_app.timeutil import utcnow
from tests.conftest import wait_for
from tests.servers import Servers

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return samples


def scrape(client: Any, **headers: str) -> Samples:
    response = client.get("/metrics", headers=headers)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def totals(samples: Samples) -> Samples:
    """The counter and histogram samples: what must never go back."""
    return {k: v for k, v in samples.items()
            if k[0].endswith(("_total", "_bucket", "_sum", "_count"))}


def new_run(task: str, **kwargs: Any) -> NewRun:
    return NewRun(task=task, kwargs=kwargs, max_attempts=1, retry_backoff=0.05, timeout=None,
                  scheduled_for=utcnow())


def post_run(client: Any, task: str, run_at: str | None = None, **kwargs: Any) -> int:
    body: dict[str, Any] = {"task": task, "kwargs": kwargs}
    if run_at:
        body["run_at"] = run_at
    response = client.post("/api/runs", json=body)
    assert response.status_code == 202, response.json
    return int(response.json["id"])


def until(client: Any, run_id: int, *states: str) -> dict[str, Any]:
    def reached() -> Any:
        run = client.get(f"/api/runs/{run_id}").json
        return run if run["state"] in states else None
    return wait_for(reached, message=f"run {run_id} to be {states}")  # type: ignore[no-any-return]


def test_metrics_count_known_runs_exactly(make_app: Callable[..., Flask]) -> None:
    app = make_app(start=False)
    store: Store = services(app).store
    # A run left running by a node that no longer exists: settled as NodeLost when this node
    # starts (max_attempts 1, so it ends failed).
    lost = store.runs.create(new_run("demo.echo", value=0))
    assert [r.id for r in store.runs.claim("ghost:1:gone", 1, {})] == [lost.id]
    start_scheduler(app)
    client = app.test_client()
    assert until(client, lost.id, "failed")["error"]["type"] == "NodeLost"

    for run_id in [post_run(client, "demo.echo", value=i) for i in range(3)]:
        until(client, run_id, "succeeded")
    for run_id in [post_run(client, "demo.fail") for _ in range(2)]:
        until(client, run_id, "failed")
    flaky = post_run(client, "testing.flaky", succeed_on_attempt=2)  # one retry, then success
    assert until(client, flaky, "succeeded")["attempt"] == 2
    later = (utcnow() + timedelta(hours=1)).isoformat()
    queued_then_cancelled = post_run(client, "demo.echo", run_at=later, value="x")
    assert client.post(f"/api/runs/{queued_then_cancelled}/cancel").json["state"] == "cancelled"
    sleeper = post_run(client, "demo.sleep", seconds=30, steps=300)
    wait_for(lambda: (client.get(f"/api/runs/{sleeper}").json["progress"] or {})
             .get("done", 0) >= 2, message="the sleeper to have slept 0.2 s")
    client.post(f"/api/runs/{sleeper}/cancel")
    until(client, sleeper, "cancelled")
    # Still queued and still running at scrape time.
    post_run(client, "demo.echo", run_at=later, value="y")
    running = post_run(client, "demo.sleep", seconds=30, steps=300)
    until(client, running, "running")

    # A missed fire: a job whose next fire time is 30 s past, with a grace of 1 s.
    assert client.post("/api/jobs", json={
        "id": "late", "task": "demo.echo", "kwargs": {"value": 1},
        "trigger": {"type": "interval", "hours": 1}, "misfire_grace_time": 1}).status_code == 201
    assert client.post("/api/jobs", json={
        "id": "idle", "task": "demo.echo", "kwargs": {"value": 1}, "paused": True,
        "trigger": {"type": "interval", "hours": 1}}).status_code == 201
    record = store.jobs.get("late")
    assert record is not None
    assert store.jobs.advance("late", utcnow() - timedelta(seconds=30), record.version)
    services(app).scheduler.jobs_changed()
    wait_for(lambda: store.stats.snapshot(30).misfires, message="the missed fire to be counted")
    wait_for(lambda: (j := store.jobs.get("late")) and j.next_run_time
             and j.next_run_time > utcnow(), message="the late job to move on")
    assert client.get("/api/runs?job_id=late").json["items"] == []
    job_ids = {j["id"]: j["paused"] for j in client.get("/api/jobs").json["items"]}
    assert job_ids == {"late": False, "idle": True, "maintenance.prune_runs": False}

    # A run started at once by its request has its queue wait counted by its settle, or by
    # its node's next tick while it still runs.
    wait_for(lambda: store.stats.snapshot(30).queue_wait["demo.sleep"].count == 2,
             message="the running sleep's queue wait to be counted by a tick")
    samples = scrape(client)
    finished = {(dict(k[1])["task"], dict(k[1])["state"]): v for k, v in samples.items()
                if k[0] == "scheduler_runs_finished_total"}
    assert finished == {("demo.echo", "succeeded"): 3, ("demo.echo", "failed"): 1,
                        ("demo.echo", "cancelled"): 1, ("demo.fail", "failed"): 2,
                        ("testing.flaky", "succeeded"): 1, ("demo.sleep", "cancelled"): 1}
    assert value(samples, "scheduler_node_lost_total", task="demo.echo") == 1
    assert value(samples, "scheduler_misfires_total", task="demo.echo") == 1
    # Durations: every attempt that ended on its node (not the lost one, not the queued cancel).
    durations = {t: value(samples, "scheduler_run_duration_seconds_count", task=t)
                 for t in ("demo.echo", "demo.fail", "testing.flaky", "demo.sleep")}
    assert durations == {"demo.echo": 3, "demo.fail": 2, "testing.flaky": 2, "demo.sleep": 1}
    # Queue waits: every attempt that started (the lost one included, and the running sleep).
    waits = {t: value(samples, "scheduler_run_queue_wait_seconds_count", task=t)
             for t in ("demo.echo", "demo.fail", "testing.flaky", "demo.sleep")}
    assert waits == {"demo.echo": 4, "demo.fail": 2, "testing.flaky": 2, "demo.sleep": 2}
    assert value(samples, "scheduler_run_duration_seconds_bucket", task="demo.sleep",
                 le="+Inf") == 1
    assert value(samples, "scheduler_run_duration_seconds_bucket", task="demo.sleep",
                 le="0.1") == 0  # it ran for 0.2 s and more
    assert value(samples, "scheduler_run_duration_seconds_sum", task="demo.sleep") > 0.1
    # Gauges, zeros included for every registered task and role.
    assert value(samples, "scheduler_runs_queued", task="demo.echo") == 1
    assert value(samples, "scheduler_runs_running", task="demo.sleep") == 1
    assert ("scheduler_runs_queued", (("task", "demo.fail"),)) in samples
    assert sum(v for k, v in samples.items() if k[0] == "scheduler_runs_queued") == 1
    assert sum(v for k, v in samples.items() if k[0] == "scheduler_runs_running") == 1
    assert value(samples, "scheduler_nodes_alive", role="all") == 1
    assert value(samples, "scheduler_nodes_alive", role="worker") == 0
    assert value(samples, "scheduler_jobs", state="scheduled") == 2
    assert value(samples, "scheduler_jobs", state="paused") == 1
    # No ALERT_WEBHOOK_URL: no alert, but the series are there.
    assert [v for k, v in samples.items() if k[0] == "scheduler_alerts"] == [0, 0, 0]

    # Pruning deletes the finished runs; no counter or histogram goes back.
    assert store.runs.prune(utcnow() + timedelta(days=1)) == 9
    assert totals(scrape(client)) == totals(samples)


def test_metrics_need_a_viewer_token(make_app: Callable[..., Flask]) -> None:
    app = make_app(start=False, API_TOKENS={"v-token": "viewer", "a-token": "admin"})
    client = app.test_client()
    response = client.get("/metrics")
    assert response.status_code == 401 and response.json["error"]["code"] == "unauthorized"
    assert client.get("/metrics", headers={"Authorization": "Bearer nope"}).status_code == 401
    for token in ("v-token", "a-token"):
        samples = scrape(client, Authorization=f"Bearer {token}")
        assert ("scheduler_jobs", (("state", "paused"),)) in samples
    # A scraper asking for OpenMetrics gets it.
    response = client.get("/metrics", headers={
        "Authorization": "Bearer v-token", "Accept": "application/openmetrics-text"})
    assert response.content_type.startswith("application/openmetrics-text")
    assert response.get_data(as_text=True).endswith("# EOF\n")


def test_store_counts_each_change_once_on_both_backends(any_db_url: str) -> None:
    db = Database(any_db_url)
    try:
        db.migrate()
        store = Store(db)
        for _ in range(2):
            store.runs.create(new_run("a.task"))
        store.runs.create(NewRun(task="b.task", kwargs={}, max_attempts=2, retry_backoff=60,
                                 timeout=None, scheduled_for=utcnow() - timedelta(seconds=3)))
        claimed = {r.task: r for r in store.runs.claim("n1", 2, {})}
        assert set(claimed) == {"a.task", "b.task"}  # oldest due first: one a.task is left
        store.runs.finish(claimed["a.task"].id, "n1", RunState.SUCCEEDED)
        assert store.runs.finish(claimed["a.task"].id, "n1", RunState.SUCCEEDED) is None
        store.runs.finish(claimed["b.task"].id, "n1", RunState.FAILED, error={"type": "X"})
        queued = store.runs.find(state=RunState.QUEUED, task="a.task")[0]
        store.runs.request_cancel(queued.id)
        store.runs.request_cancel(queued.id)  # already cancelled: not counted again
        store.runs.create(new_run("a.task"))
        store.runs.claim("ghost", 1, {})
        assert len(store.runs.settle_lost(utcnow())) == 1
        fire = utcnow() - timedelta(minutes=5)
        assert store.stats.record_misfire("job-1", "a.task", fire)
        assert not store.stats.record_misfire("job-1", "a.task", fire)  # another node, same fire
        assert not store.stats.record_misfire("job-1", "a.task", fire - timedelta(minutes=1))
        assert store.stats.record_misfire("job-1", "a.task", fire + timedelta(minutes=1))

        snap = store.stats.snapshot(30)
        assert snap.runs_finished == {("a.task", "succeeded"): 1, ("a.task", "cancelled"): 1,
                                      ("a.task", "failed"): 1}
        assert snap.node_lost == {"a.task": 1} and snap.misfires == {"a.task": 2}
        assert {t: h.count for t, h in snap.run_duration.items()} == {"a.task": 1, "b.task": 1}
        assert {t: h.count for t, h in snap.queue_wait.items()} == {"a.task": 2, "b.task": 1}
        wait = snap.queue_wait["b.task"]  # due 3 s before the claim
        assert dict(wait.buckets)[2.5] == 0 and dict(wait.buckets)[5.0] == 1
        assert 3 <= wait.sum < 5
        assert snap.queued == {"b.task": 1} and snap.running == {}  # b.task awaits its retry
    finally:
        db.dispose()


def test_every_gunicorn_worker_reports_the_same_totals(tmp_path: Path) -> None:
    with Servers(tmp_path) as servers:
        server = servers.gunicorn({"GUNICORN_WORKERS": "2"})
        server.wait_for(lambda: sum(n["alive"] for n in server.get_json("/api/nodes")["items"])
                        == 2, message="both workers to be alive nodes")
        run_ids = [server.post("/api/runs", json={"task": task, "kwargs": kwargs}).json()["id"]
                   for task, kwargs in [("demo.echo", {"value": 1})] * 4
                   + [("demo.fail", {})] * 2]
        for run_id in run_ids:
            server.wait_run(run_id, "succeeded", "failed")

        first: Samples = {}
        answered: set[str] = set()

        def scrape_until_both_workers_answered() -> bool:
            response = server.get("/metrics")
            assert response.status_code == 200, response.text
            samples = parse(response.text)
            if not first:
                first.update(samples)
            assert samples == first, f"worker {response.headers['X-Scheduler-Node']} differs"
            answered.add(response.headers["X-Scheduler-Node"])
            return len(answered) == 2

        server.wait_for(scrape_until_both_workers_answered, interval=0.01,
                        message="scrapes answered by both workers")
        assert value(first, "scheduler_runs_finished_total", task="demo.echo",
                     state="succeeded") == 4
        assert value(first, "scheduler_runs_finished_total", task="demo.fail",
                     state="failed") == 2
        assert value(first, "scheduler_nodes_alive", role="all") == 2
