"""The life of a run, through the real runner threads on a real SQLite file."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from scheduler_app.services import services
from scheduler_app.store import NewRun
from scheduler_app.timeutil import utcnow
from tests import tasks_for_tests
from tests.conftest import wait_for


def start(client, task, **kwargs):
    response = client.post("/api/runs", json={"task": task, "kwargs": kwargs})
    assert response.status_code == 202, response.json
    return response.json["id"]


def get(client, run_id):
    return client.get(f"/api/runs/{run_id}").json


def until_state(client, run_id, *states, timeout=10.0):
    return wait_for(lambda: (r := get(client, run_id))["state"] in states and r,
                    timeout=timeout, message=f"run {run_id} to reach {states}")


def test_failure_records_type_message_and_traceback(client):
    run = until_state(client, start(client, "demo.fail", message="it broke"), "failed")
    assert run["error"]["type"] == "RuntimeError"
    assert run["error"]["message"] == "it broke"
    assert "raise RuntimeError(message)" in run["error"]["traceback"]
    assert run["attempt"] == 1 and run["max_attempts"] == 1
    assert run["finished_at"] is not None and run["duration_s"] >= 0


def test_retries_with_backoff_then_succeeds(client):
    run_id = start(client, "testing.flaky", succeed_on_attempt=3)
    run = until_state(client, run_id, "succeeded")
    assert run["attempt"] == 3
    assert run["result"] == {"attempt": 3}
    assert [e["attempt"] for e in run["errors"]] == [1, 2]
    assert all(e["type"] == "ValueError" for e in run["errors"])


def test_retries_exhausted_ends_failed(client):
    run = until_state(client, start(client, "testing.flaky", succeed_on_attempt=9), "failed")
    assert run["attempt"] == 3 and len(run["errors"]) == 3
    assert run["error"]["message"] == "attempt 3 fails"


def test_backoff_delays_the_next_attempt(make_app):
    app = make_app(RETRY_BACKOFF_SECONDS=0.5)
    client = app.test_client()
    # testing.flaky sets its own retry_backoff of 0.05 s; demo tasks use the setting.
    run_id = start(client, "testing.flaky", succeed_on_attempt=2)
    queued_again = wait_for(lambda: (r := get(client, run_id))["attempt"] == 2 and r)
    assert queued_again["state"] in ("queued", "running", "succeeded")
    store = services(app).store
    first_error_at = store.runs.get(run_id).errors[0]["at"]
    run = until_state(client, run_id, "succeeded")
    started = run["started_at"]
    assert started > first_error_at  # ISO strings in UTC compare in time order


def test_timeout_fails_the_run_with_timeout_error(client):
    begun = time.monotonic()
    run = until_state(client, start(client, "testing.stubborn", seconds=5), "failed")
    assert run["error"]["type"] == "Timeout"
    assert time.monotonic() - begun < 3, "the timeout (0.3 s) was not enforced promptly"


def test_cancel_running_run_within_a_second(client):
    run_id = start(client, "demo.sleep", seconds=30, steps=300)
    until_state(client, run_id, "running")
    begun = time.monotonic()
    response = client.post(f"/api/runs/{run_id}/cancel")
    assert response.status_code == 202
    assert response.json["cancel_requested"] is True
    run = until_state(client, run_id, "cancelled", timeout=3)
    assert time.monotonic() - begun < 1.0
    assert run["error"] is None and run["attempt"] == 1


def test_cancel_seen_from_another_node_through_the_database(make_app):
    """A cancel request written by another process is seen by the running node's poll."""
    app = make_app()
    client = app.test_client()
    run_id = start(client, "demo.sleep", seconds=30, steps=300)
    until_state(client, run_id, "running")
    begun = time.monotonic()
    services(app).store.runs.request_cancel(run_id)  # as another node's API would
    until_state(client, run_id, "cancelled", timeout=3)
    assert time.monotonic() - begun < 1.0


def test_cancel_queued_run_is_immediate(client):
    later = (utcnow() + timedelta(hours=1)).isoformat()
    run = client.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1},
                                         "run_at": later}).json
    assert run["state"] == "queued"
    cancelled = client.post(f"/api/runs/{run['id']}/cancel")
    assert cancelled.status_code == 202 and cancelled.json["state"] == "cancelled"
    again = client.post(f"/api/runs/{run['id']}/cancel")
    assert again.status_code == 409 and again.json["error"]["code"] == "already_finished"


def test_result_that_is_not_json_fails_clearly(client):
    run = until_state(client, start(client, "testing.not_json"), "failed")
    assert run["error"]["type"] == "ResultNotJSON"


def test_run_at_in_the_future_waits(client):
    at = utcnow() + timedelta(seconds=0.6)
    run = client.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": "x"},
                                         "run_at": at.isoformat()}).json
    done = until_state(client, run["id"], "succeeded")
    assert done["started_at"] >= at.isoformat()


def test_max_running_is_respected(client):
    ids = [start(client, "testing.single", seconds=0.15) for _ in range(4)]
    seen_running = []
    def all_done():
        # One read, so one snapshot: reading the runs one by one could see a run still
        # running and, a moment later, the next one just started.
        runs = client.get("/api/runs", query_string={"task": "testing.single"}).json["items"]
        assert sorted(r["id"] for r in runs) == sorted(ids)
        seen_running.append(sum(r["state"] == "running" for r in runs))
        return all(r["state"] == "succeeded" for r in runs)
    wait_for(all_done, timeout=10)
    assert max(seen_running) == 1
    runs = sorted((get(client, i) for i in ids), key=lambda r: r["started_at"])
    for earlier, later in zip(runs, runs[1:], strict=False):
        assert later["started_at"] >= earlier["finished_at"]


def test_pool_is_bounded_by_worker_threads(make_app):
    app = make_app(WORKER_THREADS=2)
    client = app.test_client()
    gate = "bounded"
    tasks_for_tests.gates.pop(gate, None)
    ids = [start(client, "testing.wait_gate", gate=gate) for _ in range(5)]
    wait_for(lambda: sum(get(client, i)["state"] == "running" for i in ids) == 2)
    assert sum(get(client, i)["state"] == "queued" for i in ids) == 3
    tasks_for_tests.gates.setdefault(gate, __import__("threading").Event()).set()
    wait_for(lambda: all(get(client, i)["state"] == "succeeded" for i in ids))


def test_restart_keeps_jobs_and_runs(make_app):
    first = make_app()
    client = first.test_client()
    job = client.post("/api/jobs", json={
        "id": "nightly", "task": "demo.echo", "kwargs": {"value": 7},
        "trigger": {"type": "cron", "expr": "0 2 * * *"}}).json
    run_id = start(client, "demo.echo", value="kept")
    until_state(client, run_id, "succeeded")
    services(first).scheduler.shutdown()

    second = make_app()
    client2 = second.test_client()
    again = client2.get("/api/jobs/nightly").json
    assert again["next_run_time"] == job["next_run_time"]
    assert again["trigger"]["expr"] == "0 2 * * *"
    assert get(client2, run_id)["result"] == "kept"


def test_runs_left_running_by_a_dead_process_are_settled_at_start(make_app):
    """A process that died mid-run (no graceful stop) leaves a 'running' row; the next start
    settles it as a NodeLost attempt and retries it if attempts remain."""
    app = make_app(start=False)
    store = services(app).store
    store.nodes.register("ghost:999999:abc", "ghost", 999999, "all", 4)
    lost = []
    for task, attempts in (("demo.echo", 1), ("testing.flaky", 3)):
        run = store.runs.create(NewRun(task=task, kwargs={} if task == "testing.flaky"
                                       else {"value": 1}, max_attempts=attempts,
                                       retry_backoff=0.05, timeout=None,
                                       scheduled_for=utcnow()))
        store.runs.claim("ghost:999999:abc", 10, {})
        lost.append(run.id)
    # The ghost's heartbeat is older than the lease.
    from scheduler_app.store.schema import nodes
    with store.db.write() as conn:
        conn.execute(nodes.update().values(heartbeat_at=utcnow() - timedelta(minutes=5)))

    from scheduler_app import start_scheduler
    start_scheduler(app)
    client = app.test_client()
    failed = until_state(client, lost[0], "failed")
    assert failed["error"]["type"] == "NodeLost"
    retried = until_state(client, lost[1], "succeeded")
    assert retried["errors"][0]["type"] == "NodeLost"


def test_interval_job_fires_once_per_fire_time(client):
    client.post("/api/jobs", json={"id": "tick", "task": "demo.echo", "kwargs": {"value": 1},
                                   "trigger": {"type": "interval", "seconds": 0.3}})
    wait_for(lambda: len(client.get("/api/runs?job_id=tick").json["items"]) >= 4, timeout=10)
    runs = client.get("/api/runs?job_id=tick&limit=500").json["items"]
    fire_times = [r["fire_time"] for r in runs]
    assert len(fire_times) == len(set(fire_times))
    assert all(r["job_id"] == "tick" for r in runs)


def test_max_instances_skips_fires_while_a_run_is_active(client):
    gate = "max_instances"
    tasks_for_tests.gates.pop(gate, None)
    client.post("/api/jobs", json={"id": "slow", "task": "testing.wait_gate",
                                   "kwargs": {"gate": gate, "seconds": 20},
                                   "trigger": {"type": "interval", "seconds": 0.2}})
    wait_for(lambda: client.get("/api/runs?job_id=slow").json["items"])
    time_limit = time.monotonic() + 1.2
    while time.monotonic() < time_limit:  # several fire times pass while the first run holds
        runs = client.get("/api/runs?job_id=slow").json["items"]
        assert len([r for r in runs if r["state"] in ("queued", "running")]) <= 1
        time.sleep(0.05)
    assert len(client.get("/api/runs?job_id=slow").json["items"]) == 1
    client.post("/api/jobs/slow/pause")
    tasks_for_tests.gates.setdefault(gate, __import__("threading").Event()).set()


def test_date_job_fires_once_and_leaves_the_job_list(client):
    at = (utcnow() + timedelta(seconds=0.3)).isoformat()
    client.post("/api/jobs", json={"id": "once", "task": "demo.echo", "kwargs": {"value": 2},
                                   "trigger": {"type": "date", "run_date": at}})
    wait_for(lambda: client.get("/api/jobs/once").status_code == 404)
    runs = client.get("/api/runs?job_id=once").json["items"]
    assert len(runs) == 1
    until_state(client, runs[0]["id"], "succeeded")


def test_paused_job_does_not_fire(client):
    client.post("/api/jobs", json={"id": "p", "task": "demo.echo", "kwargs": {"value": 1},
                                   "trigger": {"type": "interval", "seconds": 0.2},
                                   "paused": True})
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert client.get("/api/runs?job_id=p").json["items"] == []
        time.sleep(0.1)
    client.post("/api/jobs/p/resume")
    wait_for(lambda: client.get("/api/runs?job_id=p").json["items"])


def test_prune_runs_deletes_old_finished_runs_and_their_logs(app):
    client = app.test_client()
    store = services(app).store
    old = until_state(client, start(client, "testing.logs", lines=2), "succeeded")["id"]
    fresh = until_state(client, start(client, "demo.echo", value=1), "succeeded")["id"]
    from scheduler_app.store.schema import runs
    with store.db.write() as conn:
        conn.execute(runs.update().where(runs.c.id == old)
                     .values(finished_at=utcnow() - timedelta(days=40)))
    prune = until_state(client, start(client, "maintenance.prune_runs", older_than_days=30),
                        "succeeded")
    assert prune["result"] == {"deleted": 1}
    assert client.get(f"/api/runs/{old}").status_code == 404
    assert store.runs.logs(old) == []
    assert client.get(f"/api/runs/{fresh}").status_code == 200


def test_progress_is_recorded_while_running(client):
    run_id = start(client, "demo.sleep", seconds=2, steps=20)
    seen = wait_for(lambda: (p := get(client, run_id)["progress"]) and 0 < p["percent"] < 100
                    and p, timeout=5)
    assert seen["total"] == 20 and seen["message"].startswith("step ")
    until_state(client, run_id, "succeeded")


@pytest.mark.parametrize("attempt_limit", [1])
def test_log_cap_truncates(make_app, attempt_limit):
    app = make_app(RUN_LOG_MAX_LINES=5)
    client = app.test_client()
    run_id = until_state(client, start(client, "testing.logs", lines=20), "succeeded")["id"]
    lines = client.get(f"/api/runs/{run_id}/logs?limit=500").json["items"]
    assert len(lines) == 6
    assert lines[-1]["message"] == "log truncated after 5 lines"


def test_whole_lifecycle_on_each_database(make_app, any_db_url):
    app = make_app(DATABASE_URL=any_db_url)
    client = app.test_client()
    ok = until_state(client, start(client, "demo.sleep", seconds=0.2, steps=2), "succeeded")
    assert ok["result"] == {"slept": 0.2} and ok["progress"]["percent"] == 100
    retried = until_state(client, start(client, "testing.flaky", succeed_on_attempt=2),
                          "succeeded")
    assert retried["attempt"] == 2
    long_id = start(client, "demo.sleep", seconds=30, steps=300)
    until_state(client, long_id, "running")
    client.post(f"/api/runs/{long_id}/cancel")
    until_state(client, long_id, "cancelled", timeout=3)
    client.post("/api/jobs", json={"id": "tick", "task": "demo.echo", "kwargs": {"value": 1},
                                   "trigger": {"type": "interval", "seconds": 0.3}})
    wait_for(lambda: len(client.get("/api/runs?job_id=tick").json["items"]) >= 3)
    fires = [r["fire_time"] for r in client.get("/api/runs?job_id=tick&limit=500").json["items"]]
    assert len(fires) == len(set(fires))


def test_builtin_prune_job_follows_its_settings(make_app):
    first = make_app()
    store = services(first).store
    assert store.jobs.get("maintenance.prune_runs").spec["trigger"]["expr"] == "17 3 * * *"
    services(first).scheduler.shutdown()
    second = make_app(PRUNE_RUNS_CRON="0 4 * * *", PRUNE_RUNS_OLDER_THAN_DAYS=7)
    job = services(second).store.jobs.get("maintenance.prune_runs")
    assert job.spec["trigger"]["expr"] == "0 4 * * *"
    assert job.spec["kwargs"] == {"older_than_days": 7}
    assert job.next_run_time.hour == 4


def test_ensure_applies_every_changed_field_and_is_idempotent(app):
    from scheduler_app.services.models import JobCreate
    jobs = services(app).jobs
    request = JobCreate(id="declared", task="demo.echo", kwargs={"value": 1},
                        trigger={"type": "interval", "minutes": 5})
    created = jobs.ensure(request)
    assert jobs.ensure(request).version == created.version  # nothing to change: no write
    changed = jobs.ensure(request.model_copy(update={"max_instances": 3, "name": "Declared"}))
    assert changed.spec["max_instances"] == 3 and changed.spec["name"] == "Declared"
    assert changed.next_run_time == created.next_run_time  # same trigger keeps its phase


def test_autostart_happens_once_so_an_explicit_stop_sticks(make_app):
    app = make_app(start=False, SCHEDULER_AUTOSTART=True)
    client = app.test_client()
    client.get("/healthz")
    scheduler = services(app).scheduler
    assert scheduler.started
    scheduler.shutdown()
    client.get("/healthz")
    assert not scheduler.started


def test_bad_settings_stop_start_up_naming_the_setting(make_app):
    from scheduler_app.errors import ConfigError
    for key, value, expected in [("PRUNE_RUNS_CRON", "99 * * * *", "PRUNE_RUNS_CRON"),
                                 ("WORKER_THREADS", 0, "WORKER_THREADS"),
                                 ("WORKER_THREADS", "4", "WORKER_THREADS"),
                                 ("SCHEDULER_ROLE", "boss", "SCHEDULER_ROLE"),
                                 ("SCHEDULER_TIMEZONE", "Mars/Olympus", "SCHEDULER_TIMEZONE"),
                                 ("API_TOKENS", {"t": "root"}, "API_TOKENS"),
                                 ("TASK_MODULES", ["no.such.module"], "TASK_MODULES"),
                                 ("DATABASE_URL", "not a url", "DATABASE_URL")]:
        with pytest.raises(ConfigError, match=expected):
            make_app(start=False, **{key: value})


def test_dispatcher_does_not_spin_while_due_runs_are_held_back(make_app):
    """Due runs that max_running holds back must not make the dispatcher loop without pause."""
    app = make_app()
    client = app.test_client()
    gate = "held_back"
    tasks_for_tests.gates.pop(gate, None)
    store = services(app).store
    reads = []
    original = store.runs.next_due_time
    store.runs.next_due_time = lambda: (reads.append(1), original())[1]
    first = start(client, "testing.single", seconds=1.0)
    until_state(client, first, "running")
    waiting = [start(client, "testing.single", seconds=0.01) for _ in range(3)]
    reads.clear()
    time.sleep(1.0)  # measure the dispatcher over a fixed window while the backlog is held
    # Poll is 0.2 s in tests: a handful of reads, not thousands.
    assert len(reads) < 30, f"dispatcher read the queue {len(reads)} times in 1 s"
    wait_for(lambda: all(get(client, i)["state"] == "succeeded" for i in [first, *waiting]))


def test_run_now_is_not_turned_away_while_the_dispatcher_reads_the_queue(make_app):
    """The dispatcher reserves free threads only to claim, not while it looks at the queue:
    a run-now arriving meanwhile still starts on this node's free thread, at once."""
    import threading

    app = make_app(WORKER_THREADS=1)
    client = app.test_client()
    runs = services(app).store.runs
    reading, release = threading.Event(), threading.Event()
    real_next_due = runs.next_due_time

    def slow_next_due():
        reading.set()
        release.wait(5)
        return real_next_due()

    runs.next_due_time = slow_next_due
    try:
        services(app).scheduler.runs_queued()  # wake the dispatcher into its read
        assert reading.wait(5)
        run = client.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1}}).json
        assert run["state"] == "running"  # written claimed: it skipped the queue
    finally:
        release.set()
        runs.next_due_time = real_next_due
    assert until_state(client, run["id"], "succeeded")["result"] == 1


def test_a_quick_runs_last_progress_and_log_lines_are_written_with_its_outcome(client):
    """A run that reports and logs, then returns at once (before any node tick): its last
    progress and its lines are in the same write as its success."""
    run_id = start(client, "testing.report", steps=3)
    run = until_state(client, run_id, "succeeded")
    assert run["progress"]["done"] == 3 and run["progress"]["total"] == 3
    lines = client.get(f"/api/runs/{run_id}/logs").json["items"]
    assert [line["message"] for line in lines] == ["line 0", "line 1", "line 2"]


def test_runs_queued_by_another_node_are_claimed_as_threads_free_not_at_each_poll(make_app):
    """A run queued elsewhere is found by the poll; once found, the rest of that backlog is
    taken as this node's one thread frees up, not one run per poll."""
    app = make_app(WORKER_THREADS=1, DISPATCH_POLL_SECONDS=2.0)
    client = app.test_client()
    store = services(app).store
    # Written straight to the store, as another node would: nobody wakes this one.
    ids = [store.runs.create(NewRun(task="demo.echo", kwargs={"value": i}, max_attempts=1,
                                    retry_backoff=1.0, timeout=None,
                                    scheduled_for=utcnow())).id for i in range(3)]
    wait_for(lambda: all(get(client, i)["state"] == "succeeded" for i in ids), timeout=15)
    runs = [get(client, i) for i in ids]
    first = min(r["started_at"] for r in runs)
    last = max(r["finished_at"] for r in runs)
    from datetime import datetime
    span = (datetime.fromisoformat(last) - datetime.fromisoformat(first)).total_seconds()
    assert span < 1.0, f"the backlog took {span:.2f} s: one run per 2 s poll"


def test_a_run_started_on_an_idle_node_has_its_timeout_enforced_between_heartbeats(make_app):
    """An idle node's maintenance thread sleeps until its next heartbeat; a run starting wakes
    it, so the run's timeout is enforced at the next tick, not seconds later at a heartbeat
    (when this task would already have finished by itself)."""
    app = make_app(NODE_HEARTBEAT_SECONDS=30.0)
    client = app.test_client()
    run = until_state(client, start(client, "testing.stubborn", seconds=3.0), "failed",
                      timeout=2.5)
    assert run["error"]["type"] == "Timeout"
