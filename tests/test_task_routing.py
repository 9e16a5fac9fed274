"""A node claims only runs of the tasks registered in its process, and a run whose task no live
node has stays queued and says why (issue 14, item 5): during a rolling deploy that adds a task,
the old nodes must not use up the new runs' attempts failing them as unknown."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask

from scheduler_app.scheduler.engine import Engine
from scheduler_app.services import services
from scheduler_app.store import RunState, Store
from scheduler_app.tasks import RunContext, TaskRegistry
from scheduler_app.timeutil import utcnow
from tests.conftest import new_run, wait_for
from tests.tasks_for_tests import gates

ONLY_B = "routing.only_b"
WAITING = f"no live node has task {ONLY_B!r}"


def double(ctx: RunContext, value: int) -> int:
    return value * 2


def registry_of_node_b() -> TaskRegistry:
    """Node B's process has a task module node A's lacks: ``routing.only_b``."""
    tasks = TaskRegistry()
    tasks.register(double, name=ONLY_B)
    return tasks


# -- the store ---------------------------------------------------------------------------------
def test_claim_takes_only_runs_of_the_given_tasks(store: Store) -> None:
    """On SQLite and PostgreSQL."""
    other = store.runs.create(new_run(task="other.task"))
    mine = store.runs.create(new_run(task="demo.echo"))
    assert store.runs.claim("n", 10, {}, tasks=frozenset()) == []
    assert store.runs.claim("n", 10, {}, tasks={"nobody.has"}) == []
    assert [r.id for r in store.runs.claim("n", 10, {}, tasks={"demo.echo"})] == [mine.id]
    assert store.runs.claim("n", 10, {}, tasks={"demo.echo"}) == []
    assert store.runs.claim("n", 10, {"demo.echo": 1}, tasks={"demo.echo", "x.y"}) == []
    assert [r.id for r in store.runs.claim("n", 10, {})] == [other.id]  # None: any task


def test_live_tasks_are_those_of_live_executing_nodes(store: Store) -> None:
    nodes = store.nodes
    nodes.register("a", "h", 1, "all", 2, {"demo.echo", "demo.sleep"})
    nodes.register("b", "h", 2, "worker", 2, {ONLY_B})
    nodes.register("web", "h", 3, "web", 0)
    lease_ago = utcnow() - timedelta(seconds=30)
    assert nodes.live_tasks(lease_ago) == {"demo.echo", "demo.sleep", ONLY_B}
    assert {n.id: n.tasks for n in nodes.all()} == {
        "a": ["demo.echo", "demo.sleep"], "b": [ONLY_B], "web": None}
    nodes.mark_stopped("b")
    assert nodes.live_tasks(lease_ago) == {"demo.echo", "demo.sleep"}
    assert nodes.heartbeat("a", 0, {"demo.echo"})
    assert nodes.live_tasks(lease_ago) == {"demo.echo"}
    assert nodes.live_tasks(utcnow() + timedelta(seconds=1)) == frozenset()  # all silent
    # A live executing node that does not say (code before revision 0006) may run anything.
    nodes.register("old", "h", 4, "all", 2)
    assert nodes.live_tasks(lease_ago) is None


# -- two nodes with different task modules -----------------------------------------------------
@pytest.fixture
def node_b(make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch
           ) -> Iterator[Callable[[Flask], Engine]]:
    """Build node B beside an app's node, on the same database, executing ``routing.only_b``
    only. It is given its own host name: two nodes of one process on one host would each take
    the other for a dead earlier incarnation of itself (same host and pid)."""
    engines: list[Engine] = []

    def build(app: Flask) -> Engine:
        svc = services(app)
        with monkeypatch.context() as patch:
            patch.setattr("scheduler_app.scheduler.node.socket.gethostname", lambda: "host-b")
            engine = Engine(Flask("node_b"), svc.settings, svc.store,
                            tasks=registry_of_node_b())
        engines.append(engine)
        return engine

    yield build
    for engine in engines:
        engine.shutdown()


def stays_queued(store: Store, run_id: int, polls: float) -> Any:
    """Give the dispatchers ``polls`` poll periods to (wrongly) take the run; it must still be
    queued, on its first attempt, with no error."""
    time.sleep(polls)
    run = store.runs.get(run_id)
    assert run is not None
    assert (run.state, run.attempt, run.errors, run.error, run.node) == (
        RunState.QUEUED, 1, [], None, None), run
    return run


def test_a_run_of_a_task_only_node_b_has_is_run_by_b_never_failed_by_a(
        make_app: Callable[..., Flask], node_b: Callable[[Flask], Engine]) -> None:
    app = make_app(PRUNE_RUNS_CRON="")
    api = app.test_client()
    svc = services(app)
    store, poll = svc.store, svc.settings.poll_seconds

    # Written by a process that has the task (the CLI, a node of the next release).
    first = store.runs.create(new_run(task=ONLY_B, kwargs={"value": 21}, max_attempts=3))
    svc.scheduler.runs_queued()  # node A looks at once, and at every poll after
    stays_queued(store, first.id, 4 * poll)
    assert api.get(f"/api/runs/{first.id}").json["waiting"] == WAITING
    listed = api.get("/api/runs", query_string={"state": "queued"}).json["items"]
    assert [(r["id"], r["waiting"]) for r in listed] == [(first.id, WAITING)]

    b = node_b(app)
    b.start()
    done = wait_for(lambda: (r := store.runs.get(first.id)) and r.is_final and r,
                    message="node B to run it")
    assert (done.state, done.result, done.node, done.attempt) == (
        RunState.SUCCEEDED, 42, b.node.id, 1)
    assert api.get(f"/api/runs/{first.id}").json["waiting"] is None
    rows = {n.id: n.tasks for n in store.nodes.all()}
    assert rows[b.node.id] == [ONLY_B]
    assert ONLY_B not in (rows[svc.scheduler.node.id] or [])
    assert "demo.echo" in (rows[svc.scheduler.node.id] or [])

    # A queued run B could take when due: nothing to say while B is alive.
    later = store.runs.create(new_run(task=ONLY_B, kwargs={"value": 1},
                                      scheduled_for=utcnow() + timedelta(hours=1)))
    assert api.get(f"/api/runs/{later.id}").json["waiting"] is None

    b.shutdown()
    assert api.get(f"/api/runs/{later.id}").json["waiting"] == WAITING
    due = store.runs.create(new_run(task=ONLY_B, kwargs={"value": 2}))
    svc.scheduler.runs_queued()
    stays_queued(store, due.id, 4 * poll)
    assert api.get(f"/api/runs/{due.id}").json["waiting"] == WAITING
    # Runs of A's own tasks are not held up by it, and say nothing.
    echo = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 5}}).json
    assert echo["waiting"] is None
    wait_for(lambda: api.get(f"/api/runs/{echo['id']}").json["state"] == "succeeded",
             message="node A to run its own task")


def test_a_run_queued_on_a_node_executing_its_task_is_answered_without_the_nodes_table(
        make_app: Callable[..., Flask]) -> None:
    """Every run-now that finds no free thread is queued and answered at once: its 'waiting'
    comes from this node's own registry (it executes the task), not from a read of the nodes
    table on every such request. A task this node lacks still reads it, and says why."""
    app = make_app(PRUNE_RUNS_CRON="", WORKER_THREADS=1)
    api = app.test_client()
    store = services(app).store
    gate = "routing-busy"
    gates.pop(gate, None)
    busy = api.post("/api/runs", json={"task": "testing.wait_gate", "kwargs": {"gate": gate}})
    wait_for(lambda: store.runs.get(busy.json["id"]).state is RunState.RUNNING,  # type: ignore[union-attr]
             message="the one thread to be taken")
    read: list[str] = []
    # Only this thread's statements: the test client answers on it, while the node's own
    # threads (its heartbeat looks for runs of lost nodes) read the nodes table when they will.
    requests_thread = threading.get_ident()

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if (threading.get_ident() == requests_thread and "scheduler_nodes" in statement
                and statement.lstrip().upper().startswith("SELECT")):
            read.append(statement)

    sa.event.listen(store.db.engine, "before_cursor_execute", capture)
    try:
        queued = api.post("/api/runs", json={"task": "demo.echo", "kwargs": {"value": 1}})
        assert (queued.status_code, queued.json["state"], queued.json["waiting"]) == (
            202, "queued", None)
        assert read == []
        # Node B's task: no node of this process has it, so the table is read and says so.
        unknown_here = store.runs.create(new_run(task=ONLY_B, kwargs={"value": 1}))
        assert api.get(f"/api/runs/{unknown_here.id}").json["waiting"] == WAITING
        assert len(read) == 1
    finally:
        sa.event.remove(store.db.engine, "before_cursor_execute", capture)
        gates.setdefault(gate, threading.Event()).set()
    wait_for(lambda: store.runs.get(queued.json["id"]).state is RunState.SUCCEEDED,  # type: ignore[union-attr]
             message="the queued run to run once the thread frees")
