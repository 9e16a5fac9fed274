"""Unique runs: at most one queued or running run per unique key, held by the database (a
partial unique index), freed however the run ends. The store on SQLite and PostgreSQL, then
the Python API, the HTTP API and a job firing on a real app; the cluster-wide checks with
real processes are in ``test_unique_cluster.py``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from scheduler_app import AlreadyQueued, RunHandle, Scheduler
from scheduler_app.store import RunState, Store
from scheduler_app.tasks.controls import derived_unique_key
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, wait_for
from tests.test_extension import running_host

scheduler = Scheduler()


@scheduler.task(name="unique_tests.sync", unique=True)
def sync(ctx: Any, account: int, full: bool = False) -> int:
    ctx.sleep(30)
    return account


@scheduler.task(name="unique_tests.plain")
def plain(ctx: Any, value: int) -> int:
    ctx.sleep(30)
    return value


def stats(store: Store) -> dict[str, int]:
    return dict(store.stats.snapshot(3).deduplicated)


# -- the store, on both databases -----------------------------------------------------------------

def test_a_second_active_run_with_a_key_is_refused_naming_the_first(store: Store) -> None:
    first = store.runs.create(new_run(unique_key="invoice:42"))
    with pytest.raises(AlreadyQueued) as refused:
        store.runs.create(new_run(unique_key="invoice:42", kwargs={"value": 2}))
    assert refused.value.run.id == first.id
    assert refused.value.details == {"run_id": first.id, "unique_key": "invoice:42",
                                     "state": "queued"}
    assert store.runs.create(new_run(unique_key="invoice:43")).id != first.id
    assert [r.id for r in store.runs.find(limit=10) if r.unique_key == "invoice:42"] == [
        first.id]
    assert stats(store) == {"demo.echo": 1}


@pytest.mark.parametrize("ending", ["succeeded", "failed", "cancelled_queued",
                                    "cancelled_running", "node_lost"])
def test_the_key_frees_however_the_run_ends(store: Store, ending: str) -> None:
    first = store.runs.create(new_run(unique_key="k"))
    if ending == "cancelled_queued":
        store.runs.request_cancel(first.id)
    else:
        [claimed] = store.runs.claim("node-a", 1, {})
        assert claimed.id == first.id
        with pytest.raises(AlreadyQueued):  # running holds the key too
            store.runs.create(new_run(unique_key="k"))
        if ending == "succeeded":
            store.runs.finish(first.id, "node-a", RunState.SUCCEEDED, result=1)
        elif ending == "failed":
            store.runs.finish(first.id, "node-a", RunState.FAILED,
                              error={"type": "E", "message": "m", "traceback": None})
        elif ending == "cancelled_running":
            store.runs.request_cancel(first.id)
            store.runs.finish(first.id, "node-a", RunState.CANCELLED)
        else:  # node-a never registered a heartbeat: it is dead, its run is lost
            [lost] = store.runs.settle_lost(utcnow())
            assert lost.error is not None and lost.error["type"] == "NodeLost"
    assert store.runs.get(first.id).is_final  # type: ignore[union-attr]
    second = store.runs.create(new_run(unique_key="k"))
    assert second.id != first.id and second.unique_key == "k"


def test_a_run_retrying_after_a_failure_still_holds_its_key(store: Store) -> None:
    first = store.runs.create(new_run(unique_key="k", max_attempts=2))
    store.runs.claim("node-a", 1, {})
    retried = store.runs.finish(first.id, "node-a", RunState.FAILED,
                                error={"type": "E", "message": "m", "traceback": None})
    assert retried is not None and retried.state is RunState.QUEUED
    with pytest.raises(AlreadyQueued) as refused:
        store.runs.create(new_run(unique_key="k"))
    assert refused.value.run.id == first.id


def test_concurrent_creates_of_one_key_in_one_process_make_one_run(store: Store) -> None:
    """The group commit puts concurrent creates in one transaction: the index still decides."""
    def create(i: int) -> int | str:
        try:
            return store.runs.create(new_run(unique_key="same", kwargs={"value": i})).id
        except AlreadyQueued as exc:
            return f"dup:{exc.run.id}"

    with ThreadPoolExecutor(16) as pool:
        outcomes = list(pool.map(create, range(200)))
    made = [o for o in outcomes if isinstance(o, int)]
    assert len(made) == 1
    assert outcomes.count(f"dup:{made[0]}") == 199
    assert stats(store) == {"demo.echo": 199}


# -- the Python API -------------------------------------------------------------------------------

@pytest.fixture
def host(db_url: str) -> Iterator[Flask]:
    yield from running_host(scheduler, db_url)


def test_unique_true_keys_on_the_task_and_its_arguments(host: Flask) -> None:
    with host.app_context():
        first = sync.enqueue(account=7, full=False)
        with pytest.raises(AlreadyQueued) as refused:
            sync.enqueue(full=False, account=7)  # the same arguments in another order
        assert isinstance(refused.value.run, RunHandle)
        assert refused.value.run.id == first.id and refused.value.run.task == "unique_tests.sync"
        assert first.as_dict()["unique_key"] == derived_unique_key(
            "unique_tests.sync", {"full": False, "account": 7})
        other = sync.enqueue(account=8)
        also = sync.enqueue(account=7, full=True)
        assert len({first.id, other.id, also.id}) == 3
        not_unique = sync.using(unique=False).enqueue(account=7)
        assert not_unique.as_dict()["unique_key"] is None
        for handle in (first, other, also, not_unique):
            handle.cancel()


def test_using_sets_a_key_and_a_cancel_frees_it(host: Flask) -> None:
    with host.app_context():
        later = plain.using(unique_key="report:2026", run_after=timedelta(hours=1))
        first = later.enqueue(value=1)
        with pytest.raises(AlreadyQueued) as refused:
            plain.using(unique_key="report:2026").enqueue(value=2)
        assert refused.value.run.id == first.id and refused.value.run.state == "queued"
        assert "report:2026" in str(refused.value)
        first.cancel()
        second = later.enqueue(value=3)
        assert second.id != first.id and second.state == "queued"
        second.cancel()


def test_a_unique_run_in_the_hosts_transaction_holds_its_key_once_committed(
        host: Flask, db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with host.app_context():
            with Session(engine) as db_session:
                plain.using(session=db_session, unique_key="tx").enqueue(value=1)
                db_session.rollback()  # no run, so no key held
            with Session(engine) as db_session:
                kept = plain.using(session=db_session, unique_key="tx").enqueue(value=2)
                db_session.commit()
            with Session(engine) as db_session, pytest.raises(AlreadyQueued) as refused:
                plain.using(session=db_session, unique_key="tx").enqueue(value=3)
            assert refused.value.run.id == kept.id
            kept.cancel()
    finally:
        engine.dispose()


@pytest.mark.parametrize(("options", "field"), [
    ({"unique_key": ""}, "unique_key"),
    ({"unique_key": "x" * 201}, "unique_key"),
    ({"unique_key": 42}, "unique_key"),
    ({"unique": "yes"}, "unique"),
    ({"uniqe": True}, "uniqe"),
])
def test_bad_options_raise_a_value_error_naming_the_field(host: Flask, options: dict[str, Any],
                                                         field: str) -> None:
    with host.app_context():
        before = len(host.extensions["scheduler_app"].store.runs.find(limit=100))
        with pytest.raises(ValueError, match=field) as bad:
            plain.using(**options).enqueue(value=1)
        assert bad.value.details[0]["field"] == field  # type: ignore[attr-defined]
        assert len(host.extensions["scheduler_app"].store.runs.find(limit=100)) == before


def test_a_task_declared_with_a_bad_control_is_refused() -> None:
    with pytest.raises(ValueError, match="unique_key"):
        scheduler.task(name="unique_tests.bad", unique_key="x" * 500)(lambda ctx: None)
    with pytest.raises(TypeError, match="unknown option"):
        scheduler.task(name="unique_tests.worse", uniqe=True)(lambda ctx: None)


# -- HTTP, jobs and /metrics on the standalone app ------------------------------------------------

@pytest.fixture
def api(make_app: Callable[..., Flask]) -> Any:
    return make_app(PRUNE_RUNS_CRON="").test_client()


def post_run(api: Any, **body: Any) -> Any:
    return api.post("/api/runs", json={"task": "demo.sleep", "kwargs": {"seconds": 30},
                                       **body})


def test_http_answers_409_already_queued_with_the_existing_run(api: Any) -> None:
    first = post_run(api, unique_key="import:7")
    assert first.status_code == 202, first.json
    assert first.json["unique_key"] == "import:7"
    again = post_run(api, unique_key="import:7", kwargs={"seconds": 1})
    assert again.status_code == 409
    assert again.json["error"]["code"] == "already_queued"
    assert again.json["error"]["details"]["run_id"] == first.json["id"]
    same_call = post_run(api, unique=True)
    assert post_run(api, unique=True).json["error"]["details"]["run_id"] == same_call.json["id"]
    for run_id in (first.json["id"], same_call.json["id"]):
        assert api.post(f"/api/runs/{run_id}/cancel").status_code == 202
    # A running run holds its key until its task has stopped (a queued one is cancelled at
    # once): the key is free again once the run has ended.
    wait_for(lambda: api.get(f"/api/runs/{first.json['id']}").json["state"] == "cancelled",
             message="the first run to end cancelled")
    assert post_run(api, unique_key="import:7").status_code == 202
    metrics = api.get("/metrics").get_data(as_text=True)
    assert 'scheduler_runs_deduplicated_total{task="demo.sleep"} 2.0' in metrics


@pytest.mark.parametrize(("body", "field"), [
    ({"unique_key": "k" * 201}, "unique_key"),
    ({"unique_key": ""}, "unique_key"),
    ({"unique_key": 5}, "unique_key"),
    ({"unique": "true"}, "unique"),
])
def test_http_bad_unique_options_are_400_naming_the_field(api: Any, body: dict[str, Any],
                                                          field: str) -> None:
    response = post_run(api, **body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_request"
    assert [d["field"] for d in response.json["error"]["details"]] == [field]
    assert api.get("/api/runs").json["items"] == []


def test_a_jobs_fire_is_skipped_while_its_unique_run_is_active(
        make_app: Callable[..., Flask]) -> None:
    app = make_app(PRUNE_RUNS_CRON="")
    api = app.test_client()
    created = api.post("/api/jobs", json={
        "id": "unique-tick", "task": "testing.unique_sleep", "kwargs": {"seconds": 30},
        "trigger": {"type": "interval", "seconds": 0.3}, "max_instances": 5})
    assert created.status_code == 201, created.json
    store: Store = app.extensions["scheduler_app"].store
    wait_for(lambda: store.stats.snapshot(3).deduplicated.get("testing.unique_sleep", 0) >= 3,
             message="three fires skipped as duplicates")
    runs = store.runs.find(job_id="unique-tick", limit=100)
    assert len(runs) == 1 and runs[0].state in (RunState.QUEUED, RunState.RUNNING)
    assert api.post("/api/jobs/unique-tick/pause").status_code == 200
    assert api.post(f"/api/runs/{runs[0].id}/cancel").status_code == 202
    wait_for(lambda: store.runs.get(runs[0].id).is_final,  # type: ignore[union-attr]
             message="the run to end")
    # Run now from the job: the key is free again, so it makes a run; a second one is refused.
    now = api.post("/api/jobs/unique-tick/run")
    assert now.status_code == 202, now.json
    refused = api.post("/api/jobs/unique-tick/run")
    assert refused.status_code == 409 and refused.json["error"]["code"] == "already_queued"
    assert refused.json["error"]["details"]["run_id"] == now.json["id"]
    api.post(f"/api/runs/{now.json['id']}/cancel")
