"""Many runs at once: ``POST /api/runs/batch`` and ``Task.enqueue_many``. One transaction,
all or nothing: ids in the batch's order, every run executed once; a bad item, a taken unique
key, a full queue or a batch too large writes nothing (rows counted before and after), on a
SQLite file and on PostgreSQL; the batch route's own body limit; auth as every write."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from sqlalchemy.orm import Session

from scheduler_app import AlreadyQueued, BatchConflict, RunHandle, Scheduler
from scheduler_app.errors import InvalidRequest, QueueFull
from scheduler_app.store import RunState, Store
from scheduler_app.store.batch import create_many, insert_many
from scheduler_app.store.schema import runs
from scheduler_app.tasks.controls import derived_unique_key
from tests import tasks_for_tests
from tests.conftest import new_run, wait_for
from tests.test_extension import host_app, running_host

ADMIN, VIEWER = "batch-admin", "batch-viewer"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}


def row_count(store: Store) -> int:
    with store.db.read() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(runs)).scalar_one())


# -- the store, on both databases -----------------------------------------------------------

def test_a_batch_is_written_in_order_in_one_insert(store: Store) -> None:
    made = create_many(store.db, [new_run(kwargs={"value": i}) for i in range(300)])
    assert [r.kwargs["value"] for r in made] == list(range(300))
    ids = [r.id for r in made]
    assert ids == sorted(ids) and len(set(ids)) == 300
    for run in (made[0], made[150], made[-1]):
        stored = store.runs.get(run.id)
        assert stored is not None and stored.kwargs == run.kwargs
        assert stored.state is RunState.QUEUED


def test_taken_unique_keys_refuse_the_whole_batch_naming_each(store: Store) -> None:
    holder = store.runs.create(new_run(unique_key="held"))
    before = row_count(store)
    batch = [new_run(kwargs={"value": 0}), new_run(unique_key="free"),
             new_run(unique_key="held"), new_run(unique_key="twice"),
             new_run(unique_key="twice")]
    with pytest.raises(BatchConflict) as refused:  # a duplicate inside: refused before writing
        create_many(store.db, batch)
    assert [(c.index, c.duplicate_of) for c in refused.value.conflicts] == [(4, 3)]
    with pytest.raises(BatchConflict) as refused:
        create_many(store.db, batch[:4])
    assert [(c.index, c.unique_key, c.run_id, c.state) for c in refused.value.conflicts] == [
        (2, "held", holder.id, "queued")]
    assert refused.value.details == [{
        "field": "runs[2].unique_key", "message": f"is held by run {holder.id} (queued)",
        "unique_key": "held", "run_id": holder.id}]
    assert row_count(store) == before
    assert store.stats.snapshot(3).deduplicated == {"demo.echo": 1}
    store.runs.request_cancel(holder.id)  # the key frees: the same batch now goes in whole
    made = create_many(store.db, batch[:4])
    assert [r.unique_key for r in made] == [None, "free", "held", "twice"]
    assert row_count(store) == before + 4


def test_ids_follow_the_items_however_they_are_known(store: Store) -> None:
    """Ids drawn before the insert (PostgreSQL's sequence; SQLite's next rowids under the write
    lock) and ids read back from it (a caller's SQLite transaction) both follow the items, and
    single runs written before and after take ids of their own."""
    before = store.runs.create(new_run(kwargs={"value": -1}))
    made = create_many(store.db, [new_run(kwargs={"value": i}, unique_key=(
        f"own:{i}" if i % 3 == 0 else None)) for i in range(50)])
    with store.db.write() as conn:
        inside = insert_many(conn, [new_run(kwargs={"value": 100 + i}, unique_key=(
            f"in:{i}" if i % 2 else None)) for i in range(20)])
        plain = insert_many(conn, [new_run(kwargs={"value": 200 + i}) for i in range(5)])
    after = store.runs.create(new_run(kwargs={"value": 999}))
    every = [before, *made, *inside, *plain, after]
    assert len({r.id for r in every}) == len(every)
    for run in every:
        stored = store.runs.get(run.id)
        assert stored is not None and stored.kwargs == run.kwargs
        assert stored.unique_key == run.unique_key
    assert [r.id for r in made] == sorted(r.id for r in made)


def test_a_batch_past_the_queue_limit_writes_nothing(store: Store) -> None:
    create_many(store.db, [new_run() for _ in range(3)], max_queued=5)
    with pytest.raises(QueueFull, match="3 runs are queued and the batch adds 3"):
        create_many(store.db, [new_run() for _ in range(3)], max_queued=5)
    assert row_count(store) == 3


def test_a_refused_batch_leaves_nothing_in_the_callers_transaction(store: Store) -> None:
    holder = store.runs.create(new_run(unique_key="held"))
    with store.db.write() as conn:
        with pytest.raises(BatchConflict):
            insert_many(conn, [new_run(unique_key="a"), new_run(), new_run(unique_key="held")])
        # The caller carries on and commits its own work: none of the batch goes with it.
    assert [r.id for r in store.runs.find(limit=10)] == [holder.id]


# -- HTTP -----------------------------------------------------------------------------------

@pytest.fixture
def api(make_app: Callable[..., Flask]) -> Any:
    app = make_app(API_TOKENS={ADMIN: "admin", VIEWER: "viewer"}, PRUNE_RUNS_CRON="")
    return app.test_client()


def post_batch(api: Any, items: list[Any], headers: dict[str, str] | None = None,
               **kwargs: Any) -> Any:
    return api.post("/api/runs/batch", json={"runs": items},
                    headers=AS_ADMIN if headers is None else headers, **kwargs)


def run_count(api: Any) -> int:
    return len(api.get("/api/runs?limit=500", headers=AS_ADMIN).json["items"])


def counted(n: int) -> tuple[list[dict[str, Any]], list[str]]:
    keys = [f"{uuid.uuid4().hex}-{i}" for i in range(n)]
    return [{"task": "testing.count", "kwargs": {"key": k}} for k in keys], keys


def check_every_run_ran_once(api: Any, ids: list[int], keys: list[str]) -> None:
    wait_for(lambda: all(tasks_for_tests.counts.get(k) for k in keys), timeout=30,
             message="every run of the batch to execute")
    for run_id, key in zip(ids, keys, strict=True):
        run = wait_for(lambda run_id=run_id: (r := api.get(
            f"/api/runs/{run_id}", headers=AS_ADMIN).json)["state"] == "succeeded" and r,
            message=f"run {run_id} to succeed")
        assert run["kwargs"] == {"key": key} and run["result"] == key
        assert run["attempt"] == 1
    assert [tasks_for_tests.counts[k] for k in keys] == [1] * len(keys)


def test_http_a_batch_answers_every_id_in_order_and_each_runs_once(api: Any) -> None:
    items, keys = counted(60)
    response = post_batch(api, items)
    assert response.status_code == 202, response.json
    ids = response.json["ids"]
    assert len(ids) == 60 and len(set(ids)) == 60
    check_every_run_ran_once(api, ids, keys)


def test_http_on_postgresql(make_app: Callable[..., Flask], pg_url: str) -> None:
    api = make_app(DATABASE_URL=pg_url, PRUNE_RUNS_CRON="",
                   API_TOKENS={ADMIN: "admin"}).test_client()
    items, keys = counted(40)
    items[7] = {**items[7], "unique_key": "pg:7", "concurrency_key": "pg", "rate_limit": "100/s"}
    response = post_batch(api, items)
    assert response.status_code == 202, response.json
    check_every_run_ran_once(api, response.json["ids"], keys)
    assert api.get(f"/api/runs/{response.json['ids'][7]}", headers=AS_ADMIN).json[
        "concurrency_key"] == "pg"
    holder = api.post("/api/runs", headers=AS_ADMIN, json={
        "task": "demo.sleep", "kwargs": {"seconds": 30}, "unique_key": "pg:held"}).json
    before = run_count(api)
    refused = post_batch(api, [items[0], {**items[1], "unique_key": "pg:held"}])
    assert refused.status_code == 409, refused.json
    assert refused.json["error"]["details"][0]["run_id"] == holder["id"]
    assert post_batch(api, [items[0], {"task": "demo.echo", "kwargs": {}}]).status_code == 400
    assert run_count(api) == before


def test_http_every_bad_item_is_named_and_nothing_is_written(api: Any) -> None:
    good = {"task": "demo.echo", "kwargs": {"value": 1}}
    post_batch(api, [good])
    before = run_count(api)
    items = [good, good, good, {"task": "demo.sleep", "kwargs": {"seconds": "long"}}, good,
             {"task": "nope"}, "not an object", {**good, "run_at": "tomorrow"},
             {**good, "unique_key": ""}, {**good, "colour": "red"}]
    response = post_batch(api, items)
    assert response.status_code == 400, response.json
    error = response.json["error"]
    assert error["code"] == "invalid_request"
    assert [d["field"] for d in error["details"]] == [
        "runs[3].kwargs.seconds", "runs[5].task", "runs[6]", "runs[7].run_at",
        "runs[8].unique_key", "runs[9].colour"]
    assert "runs[3].kwargs.seconds" in error["message"]
    assert run_count(api) == before


@pytest.mark.parametrize(("body", "field"), [
    ({}, "runs"), ({"runs": []}, "runs"), ({"runs": {"task": "demo.echo"}}, "runs"),
    ({"runs": [], "extra": 1}, "extra"), ([], "body"),
])
def test_http_a_bad_envelope_is_400_naming_it(api: Any, body: Any, field: str) -> None:
    response = api.post("/api/runs/batch", json=body, headers=AS_ADMIN)
    assert response.status_code == 400, response.json
    assert [d["field"] for d in response.json["error"]["details"]] == [field]


def test_http_taken_unique_keys_are_409_naming_each_item(api: Any) -> None:
    holder = api.post("/api/runs", headers=AS_ADMIN, json={
        "task": "demo.sleep", "kwargs": {"seconds": 30}, "unique_key": "import:7"}).json
    before = run_count(api)
    items = [{"task": "demo.echo", "kwargs": {"value": i}} for i in range(5)]
    items[1]["unique_key"] = "import:7"
    items[2]["unique_key"] = "import:8"
    items[4]["unique_key"] = "import:8"
    response = post_batch(api, items)
    assert response.status_code == 409, response.json
    assert response.json["error"]["code"] == "already_queued"
    assert response.json["error"]["details"] == [{
        "field": "runs[4].unique_key", "message": "repeats the unique key of runs[2]",
        "unique_key": "import:8", "run_id": None}]
    items[4]["unique_key"] = "import:9"
    response = post_batch(api, items)
    assert response.status_code == 409, response.json
    [detail] = response.json["error"]["details"]
    assert detail["message"] in (f"is held by run {holder['id']} (queued)",
                                 f"is held by run {holder['id']} (running)")
    assert detail == {**detail, "field": "runs[1].unique_key", "unique_key": "import:7",
                      "run_id": holder["id"]}
    assert run_count(api) == before
    assert api.post(f"/api/runs/{holder['id']}/cancel", headers=AS_ADMIN).status_code == 202
    wait_for(lambda: api.get(f"/api/runs/{holder['id']}", headers=AS_ADMIN).json["state"]
             == "cancelled", message="the holder to be cancelled")
    assert post_batch(api, items).status_code == 202
    assert run_count(api) == before + 5


def test_http_size_limits(make_app: Callable[..., Flask]) -> None:
    # 4 threads: of the 20 long runs below, 16 stay queued, and 11 more would be 27 > 25.
    api = make_app(PRUNE_RUNS_CRON="", BATCH_MAX_RUNS=20, MAX_CONTENT_LENGTH=2000,
                   BATCH_MAX_CONTENT_LENGTH=40_000, MAX_QUEUED_RUNS=25,
                   WORKER_THREADS=4).test_client()
    items = [{"task": "demo.sleep", "kwargs": {"seconds": 30}} for _ in range(21)]
    too_many = api.post("/api/runs/batch", json={"runs": items})
    assert too_many.status_code == 400
    assert too_many.json["error"]["details"] == [{
        "field": "runs", "message": "holds 21 runs; at most 20 per batch (BATCH_MAX_RUNS)"}]
    # Past MAX_CONTENT_LENGTH, within the batch's own limit: taken; the other routes are not.
    response = api.post("/api/runs/batch", json={"runs": items[:20]})
    assert response.status_code == 202, response.json
    padded = {"task": "demo.echo", "kwargs": {"value": "x" * 3000}}
    assert api.post("/api/runs", json=padded).status_code == 413
    big = api.post("/api/runs/batch", json={"runs": [{"task": "demo.echo", "kwargs": {
        "value": "x" * 41_000}}]})
    assert big.status_code == 413 and big.json["error"]["code"] == "payload_too_large"
    full = api.post("/api/runs/batch", json={"runs": items[:11]})
    assert full.status_code == 429, full.json
    assert full.headers["Retry-After"]
    assert len(api.get("/api/runs?limit=500").json["items"]) == 20


def test_http_a_viewer_or_nobody_cannot_post_a_batch(api: Any) -> None:
    items = [{"task": "demo.echo", "kwargs": {"value": 1}}]
    viewer = post_batch(api, items, headers={"Authorization": f"Bearer {VIEWER}"})
    assert viewer.status_code == 403 and viewer.json["error"]["code"] == "forbidden"
    assert post_batch(api, items, headers={}).status_code == 401
    assert run_count(api) == 0


def test_http_a_session_needs_its_csrf_token(api: Any) -> None:
    login = api.post("/auth/login", json={"token": ADMIN})
    assert login.status_code == 200, login.json
    items = [{"task": "demo.echo", "kwargs": {"value": 1}}]
    assert post_batch(api, items, headers={}).status_code == 403
    token = login.json["csrf_token"]
    assert post_batch(api, items, headers={"X-CSRF-Token": token}).status_code == 202


# -- Python: enqueue_many -------------------------------------------------------------------

scheduler = Scheduler()


@scheduler.task(name="batch_tests.add")
def add(ctx: Any, a: int, b: int = 0) -> int:
    return a + b


@scheduler.task(name="batch_tests.wait", unique=True)
def wait(ctx: Any, account: int) -> int:
    ctx.sleep(30)
    return account


@pytest.fixture
def host(db_url: str) -> Iterator[Flask]:
    yield from running_host(scheduler, db_url)


def test_enqueue_many_returns_handles_in_order_and_runs_each(host: Flask) -> None:
    with host.app_context():
        handles = add.enqueue_many([{"a": i, "b": 1} for i in range(30)])
        assert all(isinstance(h, RunHandle) for h in handles)
        assert [h.wait(timeout=20).result for h in handles] == [i + 1 for i in range(30)]
        later = add.using(run_after=timedelta(hours=1)).enqueue_many(
            [{"a": 1}, {"a": 2}])
        assert [h.state for h in later] == ["queued", "queued"]


def test_enqueue_many_names_every_bad_call_and_writes_nothing(host: Flask) -> None:
    store: Store = host.extensions["scheduler_app"].store
    with host.app_context():
        with pytest.raises(InvalidRequest) as bad:
            add.enqueue_many([{"a": 1}, {"a": "one"}, {"b": 2}, 5])  # type: ignore[list-item]
        assert [d["field"] for d in bad.value.details] == [
            "runs[1].kwargs.a", "runs[2].kwargs.a", "runs[3]"]
        with pytest.raises(ValueError, match="not a single dict"):
            add.enqueue_many({"a": 1})
        with pytest.raises(ValueError, match="at least one run"):
            add.enqueue_many([])
    assert row_count(store) == 0


def test_enqueue_many_refuses_taken_keys_whole(host: Flask) -> None:
    store: Store = host.extensions["scheduler_app"].store
    with host.app_context():
        first = wait.enqueue(account=1)
        with pytest.raises(BatchConflict) as refused:
            wait.enqueue_many([{"account": 2}, {"account": 1}])
        assert [(c.index, c.run_id) for c in refused.value.conflicts] == [(1, first.id)]
        with pytest.raises(BatchConflict):
            wait.enqueue_many([{"account": 3}, {"account": 3}])
        assert row_count(store) == 1
        first.cancel()


def test_enqueue_many_in_the_hosts_transaction(host: Flask, db_url: str) -> None:
    store: Store = host.extensions["scheduler_app"].store
    engine = sa.create_engine(db_url)
    try:
        with host.app_context():
            with Session(engine) as db_session:
                add.using(session=db_session).enqueue_many([{"a": 1}, {"a": 2}])
                db_session.rollback()
            assert row_count(store) == 0
            with Session(engine) as db_session:
                handles = add.using(session=db_session).enqueue_many([{"a": 3}, {"a": 4}])
                db_session.commit()
            assert [h.wait(timeout=20).result for h in handles] == [3, 4]
    finally:
        engine.dispose()


def test_enqueue_many_eager_runs_each_now(db_url: str) -> None:
    app = host_app(db_url, SCHEDULER_EAGER=True, SCHEDULER_PRUNE_RUNS_CRON="")
    scheduler.init_app(app)
    try:
        with app.app_context():
            handles = add.enqueue_many([{"a": 1}, {"a": 2, "b": 5}])
            assert [(h.state, h.result) for h in handles] == [("succeeded", 1),
                                                             ("succeeded", 7)]
            with pytest.raises(InvalidRequest):
                add.enqueue_many([{"a": 9}, {"a": "x"}])
            store: Store = app.extensions["scheduler_app"].store
            holder = store.runs.create(new_run(task=wait.name, kwargs={"account": 5},
                                               unique_key=derived_unique_key(
                                                   wait.name, {"account": 5})))
            with pytest.raises(AlreadyQueued) as held:  # eager: each call as enqueue makes it
                wait.enqueue_many([{"account": 5}])
            assert isinstance(held.value.run, RunHandle) and held.value.run.id == holder.id
        assert row_count(app.extensions["scheduler_app"].store) == 3
    finally:
        app.extensions["scheduler_app"].store.db.dispose()


# -- the command line -----------------------------------------------------------------------

def test_cli_run_batch_reads_json_lines_all_or_nothing(app: Flask) -> None:
    runner = app.test_cli_runner()
    lines = "\n".join(json.dumps({"task": "demo.echo", "kwargs": {"value": i}})
                      for i in range(3)) + "\n\n"
    done = runner.invoke(args=["tasks", "run-batch", "-"], input=lines)
    assert done.exit_code == 0, done.output
    ids = json.loads(done.output)["ids"]
    store: Store = app.extensions["scheduler_app"].store
    assert [store.runs.get(i).kwargs for i in ids] == [  # type: ignore[union-attr]
        {"value": i} for i in range(3)]
    bad = runner.invoke(args=["tasks", "run-batch", "-"], input=lines.replace(
        '{"value": 2}', '{"value": 2, "extra": 1}'))
    assert bad.exit_code != 0 and "runs[2].kwargs.extra" in bad.output
    broken = runner.invoke(args=["tasks", "run-batch", "-"], input=lines + "{nope\n")
    assert broken.exit_code != 0 and "line 5 is not valid JSON" in broken.output
    assert row_count(store) == 3
