"""The /api/tasks and /api/runs contract: the task catalogue, starting runs now or later,
listing and filtering them, cancelling, failures and logs."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from flask import Flask

from tests.api_helpers import all_pages, parse_time
from tests.conftest import wait_for
from tests.tasks_for_tests import gates

RUN_FIELDS = {"id", "task", "kwargs", "job_id", "state", "attempt", "max_attempts",
              "cancel_requested", "progress", "result", "error", "node", "created_at",
              "scheduled_for", "started_at", "finished_at", "duration_s"}
TASK_FIELDS = {"name", "description", "parameters", "timeout", "max_attempts", "max_running"}
LATER = "2999-01-01T00:00:00+00:00"  # a run_at that keeps a run queued for the whole test


@pytest.fixture
def api(make_app: Callable[..., Flask]) -> Any:
    """A started app without the built-in prune job."""
    return make_app(PRUNE_RUNS_CRON="").test_client()


def submit(api: Any, task: str = "demo.echo", kwargs: dict[str, Any] | None = None,
           **body: Any) -> dict[str, Any]:
    response = api.post("/api/runs", json={"task": task,
                                           "kwargs": {"value": 1} if kwargs is None else kwargs,
                                           **body})
    assert response.status_code == 202, response.json
    return response.json  # type: ignore[no-any-return]


def get_run(api: Any, run_id: int) -> dict[str, Any]:
    response = api.get(f"/api/runs/{run_id}")
    assert response.status_code == 200, response.json
    return response.json  # type: ignore[no-any-return]


def wait_state(api: Any, run_id: int, *states: str, timeout: float = 10.0) -> dict[str, Any]:
    def reached() -> Any:
        run = get_run(api, run_id)
        return run if run["state"] in states else None
    return wait_for(reached, timeout=timeout,  # type: ignore[no-any-return]
                    message=f"run {run_id} to reach {'/'.join(states)}")


# -- tasks ----------------------------------------------------------------------------------------

def test_tasks_are_listed_with_their_schema(api: Any) -> None:
    response = api.get("/api/tasks")
    assert response.status_code == 200
    tasks = {t["name"]: t for t in response.json["items"]}
    assert {"demo.sleep", "demo.fail", "demo.echo", "maintenance.prune_runs"} <= set(tasks)
    for task in tasks.values():
        assert set(task) >= TASK_FIELDS
        assert task["parameters"]["type"] == "object"
        assert isinstance(task["max_attempts"], int) and task["max_attempts"] >= 1

    sleep = tasks["demo.sleep"]
    assert sleep["description"].startswith("Sleep for")
    assert sleep["parameters"]["required"] == ["seconds"]
    assert sleep["parameters"]["properties"]["seconds"]["type"] == "number"
    assert sleep["parameters"]["properties"]["steps"]["type"] == "integer"
    assert sleep["parameters"]["properties"]["steps"]["default"] == 10
    assert (sleep["timeout"], sleep["max_attempts"], sleep["max_running"]) == (None, 1, None)

    assert "required" not in tasks["demo.fail"]["parameters"]
    assert tasks["demo.fail"]["parameters"]["properties"]["message"]["default"] == "boom"
    assert tasks["demo.echo"]["parameters"]["required"] == ["value"]
    assert tasks["maintenance.prune_runs"]["parameters"]["properties"]["older_than_days"][
        "default"] == 30


def test_task_options_are_published(api: Any) -> None:
    tasks = {t["name"]: t for t in api.get("/api/tasks").json["items"]}
    assert tasks["testing.flaky"]["max_attempts"] == 3
    assert tasks["testing.stubborn"]["timeout"] == 0.3
    assert tasks["testing.single"]["max_running"] == 1


def test_task_schema_carries_parameter_bounds(api: Any) -> None:
    tasks = {t["name"]: t for t in api.get("/api/tasks").json["items"]}
    seconds = tasks["demo.sleep"]["parameters"]["properties"]["seconds"]
    assert (seconds.get("minimum"), seconds.get("maximum")) == (0, 86_400)


# -- starting runs --------------------------------------------------------------------------------

def test_submit_run_now(api: Any) -> None:
    before = datetime.now(UTC)
    response = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": [1, "a"]}})
    assert response.status_code == 202, response.json
    run = response.json
    assert response.headers["Location"] == f"/api/runs/{run['id']}"
    assert set(run) >= RUN_FIELDS
    assert isinstance(run["id"], int)
    assert run["task"] == "demo.echo"
    assert run["kwargs"] == {"value": [1, "a"]}
    assert run["job_id"] is None
    assert run["attempt"] == 1 and run["max_attempts"] == 1
    assert run["cancel_requested"] is False
    assert before - timedelta(seconds=1) <= parse_time(run["scheduled_for"]) <= \
        datetime.now(UTC)
    parse_time(run["created_at"])

    done = wait_state(api, run["id"], "succeeded")
    assert done["result"] == [1, "a"]
    assert done["error"] is None
    assert isinstance(done["node"], str) and done["node"]
    started, finished = parse_time(done["started_at"]), parse_time(done["finished_at"])
    assert started <= finished
    assert done["duration_s"] == pytest.approx((finished - started).total_seconds(), abs=0.01)


def test_submit_run_later_stays_queued(api: Any) -> None:
    run = submit(api, run_at="2999-01-01T09:00:00+02:00")
    assert run["state"] == "queued"
    assert parse_time(run["scheduled_for"]) == datetime(2999, 1, 1, 7, tzinfo=UTC)
    assert run["started_at"] is None and run["finished_at"] is None
    assert run["duration_s"] is None and run["progress"] is None
    # Another run submitted afterwards executes; the later one is still waiting.
    other = submit(api)
    wait_state(api, other["id"], "succeeded")
    assert get_run(api, run["id"])["state"] == "queued"


def test_submit_run_at_soon_runs_then(api: Any) -> None:
    when = datetime.now(UTC) + timedelta(seconds=0.5)
    run = submit(api, kwargs={"value": "later"}, run_at=when.isoformat().replace("+00:00", "Z"))
    assert run["state"] == "queued"
    done = wait_state(api, run["id"], "succeeded")
    assert parse_time(done["started_at"]) >= when
    assert done["result"] == "later"


def test_progress_is_reported(api: Any) -> None:
    run = submit(api, "demo.sleep", {"seconds": 0.1, "steps": 2})
    done = wait_state(api, run["id"], "succeeded")
    assert done["progress"] == {"done": 2, "total": 2, "percent": 100.0,
                                "message": "step 2 of 2"}
    assert done["result"] == {"slept": 0.1}


def test_failed_run(api: Any) -> None:
    run = submit(api, "demo.fail", {})
    done = wait_state(api, run["id"], "failed")
    error = done["error"]
    assert set(error) >= {"type", "message", "traceback"}
    assert error["type"] == "RuntimeError"
    assert error["message"] == "boom"
    assert isinstance(error["traceback"], str)
    assert "Traceback" in error["traceback"] and "RuntimeError: boom" in error["traceback"]
    assert done["result"] is None
    assert done["attempt"] == 1 and done["max_attempts"] == 1
    assert done["finished_at"] is not None


def test_failed_run_with_custom_message(api: Any) -> None:
    run = submit(api, "demo.fail", {"message": "disk full"})
    assert wait_state(api, run["id"], "failed")["error"]["message"] == "disk full"


def test_retried_run_keeps_attempts(api: Any) -> None:
    run = submit(api, "testing.flaky", {"succeed_on_attempt": 2})
    assert run["max_attempts"] == 3
    done = wait_state(api, run["id"], "succeeded")
    assert done["attempt"] == 2
    assert done["result"] == {"attempt": 2}


# -- listing --------------------------------------------------------------------------------------

def test_list_newest_first_with_pagination(api: Any) -> None:
    ids = [submit(api, kwargs={"value": i}, run_at=LATER)["id"] for i in range(5)]
    pages = all_pages(api, "/api/runs", limit=2)
    listed = [r["id"] for page in pages for r in page]
    assert listed == sorted(ids, reverse=True)
    assert [len(p) for p in pages][:2] == [2, 2]
    for page in pages:
        for run in page:
            assert set(run) >= RUN_FIELDS

    everything = api.get("/api/runs").json
    assert [r["id"] for r in everything["items"]] == sorted(ids, reverse=True)
    assert everything["next_cursor"] is None


def test_list_filters(api: Any) -> None:
    queued = submit(api, "demo.sleep", {"seconds": 1}, run_at=LATER)
    cancelled = submit(api, "demo.echo", run_at=LATER)
    api.post(f"/api/runs/{cancelled['id']}/cancel")
    succeeded = submit(api, "demo.echo")
    failed = submit(api, "demo.fail", {})
    wait_state(api, succeeded["id"], "succeeded")
    wait_state(api, failed["id"], "failed")
    api.post("/api/jobs", json={"id": "j", "task": "demo.echo", "kwargs": {"value": 2},
                                "trigger": {"type": "cron", "expr": "0 0 1 1 *"}})
    from_job = api.post("/api/jobs/j/run").json
    wait_state(api, from_job["id"], "succeeded")

    def ids(**params: Any) -> list[int]:
        response = api.get("/api/runs", query_string=params)
        assert response.status_code == 200, response.json
        return [r["id"] for r in response.json["items"]]

    assert ids(state="queued") == [queued["id"]]
    assert ids(state="cancelled") == [cancelled["id"]]
    assert ids(state="failed") == [failed["id"]]
    assert ids(state="succeeded") == [from_job["id"], succeeded["id"]]
    assert ids(state="running") == []
    assert ids(task="demo.sleep") == [queued["id"]]
    assert ids(task="demo.echo") == [from_job["id"], succeeded["id"], cancelled["id"]]
    assert ids(task="demo.echo", state="cancelled") == [cancelled["id"]]
    assert ids(job_id="j") == [from_job["id"]]
    assert ids(job_id="no-such-job") == []
    assert ids(task="demo.echo", limit=1) == [from_job["id"]]


def test_filtered_pagination(api: Any) -> None:
    echo = [submit(api, run_at=LATER)["id"] for _ in range(3)]
    for _ in range(2):
        submit(api, "demo.sleep", {"seconds": 1}, run_at=LATER)
    pages = all_pages(api, "/api/runs", limit=2, task="demo.echo")
    assert [r["id"] for page in pages for r in page] == sorted(echo, reverse=True)


# -- cancelling -----------------------------------------------------------------------------------

def test_cancel_queued_run(api: Any) -> None:
    run = submit(api, run_at=LATER)
    response = api.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 202, response.json
    cancelled = response.json
    assert cancelled["id"] == run["id"]
    assert cancelled["state"] == "cancelled"
    assert cancelled["cancel_requested"] is True
    assert cancelled["finished_at"] is not None and cancelled["started_at"] is None
    assert get_run(api, run["id"]) == {**cancelled, "duration_s": None}


def test_cancelled_run_due_now_never_starts(api: Any) -> None:
    run = submit(api, run_at=(datetime.now(UTC) + timedelta(seconds=0.3)).isoformat())
    assert api.post(f"/api/runs/{run['id']}/cancel").json["state"] == "cancelled"
    marker = submit(api, run_at=(datetime.now(UTC) + timedelta(seconds=0.4)).isoformat())
    wait_state(api, marker["id"], "succeeded")  # the runner has looked past the due time
    after = get_run(api, run["id"])
    assert after["state"] == "cancelled" and after["started_at"] is None


def test_cancel_running_run(api: Any) -> None:
    gate = f"cancel-{uuid.uuid4().hex}"
    run = submit(api, "testing.wait_gate", {"gate": gate, "seconds": 10})
    wait_state(api, run["id"], "running")
    response = api.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 202, response.json
    assert response.json["cancel_requested"] is True
    assert response.json["state"] in ("running", "cancelled")
    done = wait_state(api, run["id"], "cancelled", "failed", "succeeded")
    gates.pop(gate, None)
    assert done["state"] == "cancelled"
    assert done["finished_at"] is not None


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled"])
def test_cancel_finished_run_conflicts(api: Any, outcome: str) -> None:
    if outcome == "cancelled":
        run = submit(api, run_at=LATER)
        api.post(f"/api/runs/{run['id']}/cancel")
    else:
        run = submit(api, "demo.fail" if outcome == "failed" else "demo.echo",
                     {} if outcome == "failed" else None)
    finished = wait_state(api, run["id"], outcome)
    response = api.post(f"/api/runs/{run['id']}/cancel")
    assert response.status_code == 409, response.json
    assert response.json["error"]["code"] == "already_finished"
    assert response.json["error"]["message"]
    assert get_run(api, run["id"]) == finished


# -- logs -----------------------------------------------------------------------------------------

def test_logs_with_pagination(api: Any) -> None:
    run = submit(api, "testing.logs", {"lines": 5})
    wait_state(api, run["id"], "succeeded")
    pages = all_pages(api, f"/api/runs/{run['id']}/logs", limit=3)
    lines = [line for page in pages for line in page]
    assert [line["message"] for line in lines] == [
        "ctx line 0", "ctx line 1", "ctx line 2", "ctx line 3", "ctx line 4",
        "through ctx.logger", "from a library logger"]
    assert [len(p) for p in pages][:2] == [3, 3]
    for line in lines:
        assert set(line) >= {"at", "level", "message"}
        parse_time(line["at"])
    assert [line["level"] for line in lines][-2:] == ["WARNING", "WARNING"]


def test_logs_of_a_run_without_any(api: Any) -> None:
    run = submit(api, run_at=LATER)
    response = api.get(f"/api/runs/{run['id']}/logs")
    assert response.status_code == 200
    assert response.json == {"items": [], "next_cursor": None}


def test_location_follows_each_requests_script_root(api: Any) -> None:
    """The run's URL is built once per app and script root, then reused: an app mounted under
    a path answers with that path, and the same app reached without it does not."""
    body = {"task": "demo.echo", "kwargs": {"value": 1}}
    for root in ("/jobs-app", "", "/jobs-app", "/other/root"):
        response = api.post("/api/runs", json=body, base_url=f"http://localhost{root}")
        assert response.status_code == 202, response.json
        assert response.headers["Location"] == f"{root}/api/runs/{response.json['id']}"


def test_location_keeps_a_hosts_url_defaults(make_app: Callable[..., Flask]) -> None:
    """A host whose ``url_defaults`` add a query to every URL gets it on the run's URL too."""
    app = make_app()

    @app.url_defaults
    def add_tenant(endpoint: str, values: dict[str, Any]) -> None:
        values.setdefault("tenant", "acme")

    client = app.test_client()
    for _ in range(2):
        response = client.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1}})
        assert response.status_code == 202, response.json
        assert response.headers["Location"] == f"/api/runs/{response.json['id']}?tenant=acme"
