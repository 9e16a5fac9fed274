"""The node: complete when built, its companions hear every settled run, its registration."""

from __future__ import annotations

from typing import Any

from flask import Flask

from scheduler_app.scheduler.node import Node, new_node_id
from scheduler_app.store import Run, RunState, Store
from tests.conftest import new_run


class Companion:
    def __init__(self, fail: bool = False) -> None:
        self.fail = fail
        self.heard: list[Run] = []
        self.calls: list[str] = []

    def start(self) -> None:
        self.calls.append("start")

    def stop(self) -> None:
        self.calls.append("stop")

    def run_settled(self, run: Run) -> None:
        self.heard.append(run)
        if self.fail:
            raise RuntimeError("companion down")


def make_node(store: Store, **options: Any) -> Node:
    values: dict[str, Any] = dict(role="all", executes=True, capacity=2, heartbeat_seconds=5.0,
                                  lease_seconds=30.0, tick_seconds=0.05, poll_seconds=0.1,
                                  max_log_lines=100)
    values.update(options)
    return Node(Flask(__name__), store, new_node_id(), **values)


def test_a_node_is_complete_when_built(sqlite_store):
    node = make_node(sqlite_store)
    assert node.runner is not None
    assert (node.runner.node_id, node.runner.events, node.runner.capacity) == (node.id, node, 2)
    assert make_node(sqlite_store, role="web", executes=False).runner is None


def test_companions_hear_every_settled_run_even_if_one_fails(sqlite_store):
    failing, listening, attached = Companion(fail=True), Companion(), Companion()
    node = make_node(sqlite_store, companions=[failing, listening, attached])
    run = sqlite_store.runs.create(new_run(), running_on="ghost:1:gone")  # its node is gone
    node.start()
    try:
        assert [c.calls for c in (failing, listening, attached)] == [["start"]] * 3
        [lost] = listening.heard  # settled as lost when the node started
        assert (lost.id, lost.state, lost.error["type"]) == (run.id, RunState.FAILED,
                                                             "NodeLost")
        assert failing.heard == attached.heard == [lost]
    finally:
        node.stop(grace=1)
    assert listening.calls == ["start", "stop"]


def test_a_node_registers_with_the_role_it_starts_as(sqlite_store):
    node = make_node(sqlite_store)
    node.start(role="worker")
    try:
        [record] = sqlite_store.nodes.all()
        assert (record.id, record.role, record.capacity) == (node.id, "worker", 2)
    finally:
        node.stop(grace=1)
    assert sqlite_store.nodes.all()[0].stopped_at is not None


def test_a_node_that_does_not_execute_registers_no_capacity(sqlite_store):
    node = make_node(sqlite_store, role="web", executes=False)
    node.start()
    try:
        assert [(n.role, n.capacity) for n in sqlite_store.nodes.all()] == [("web", 0)]
    finally:
        node.stop(grace=1)
