"""A task's result is encoded to JSON once, by the runner that checks it, and the settle writes
that text as it is (``store/encoded.py``): on a real SQLite file and a real PostgreSQL
database. What a later read of the run gives is unchanged: the value as JSON holds it."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from scheduler_app.scheduler.runner import ResultNotJSON, _jsonable
from scheduler_app.store import EncodedJSON, RunState
from scheduler_app.store.schema import runs
from tests.conftest import new_run


def stored_text(store, run_id: int) -> str:
    """The result column's text as the database holds it."""
    with store.db.read() as conn:
        return conn.execute(sa.select(sa.cast(runs.c.result, sa.Text))
                            .where(runs.c.id == run_id)).scalar_one()


def test_the_settle_writes_the_encoded_text_as_it_is(store):
    """Spaced as no encoder of the store would space it: the text is not encoded again (a
    second encoding would store a JSON string)."""
    started = store.runs.create(new_run(), running_on="node-a", count_wait=False)
    text = EncodedJSON('{ "total" :  3,  "items": [1, 2] }')
    text.value = {"total": 3, "items": [1, 2]}

    settled = store.runs.finish_and_claim(started.id, "node-a", RunState.SUCCEEDED,
                                          result=text, started=started).settled

    assert stored_text(store, started.id) == '{ "total" :  3,  "items": [1, 2] }'
    assert settled is not None and settled.result == {"total": 3, "items": [1, 2]}
    assert store.runs.get(started.id).result == {"total": 3, "items": [1, 2]}


@pytest.mark.parametrize("value", [
    {1: (2, 3), "nested": {"x": None}},  # keys become strings, tuples lists
    ("a", 1.5, True),
    "text",
    0,
    False,
    [],
])
def test_the_settled_run_holds_the_result_as_a_read_of_the_row_gives_it(store, value):
    started = store.runs.create(new_run(), running_on="node-a", count_wait=False)

    settled = store.runs.finish_and_claim(started.id, "node-a", RunState.SUCCEEDED,
                                          result=_jsonable(value), started=started).settled

    assert settled is not None
    assert settled == store.runs.get(started.id)
    assert type(settled.result) is type(store.runs.get(started.id).result)


def test_a_result_not_json_is_refused_before_anything_is_written():
    with pytest.raises(ResultNotJSON, match="not JSON"):
        _jsonable({"when": object()})
    with pytest.raises(ResultNotJSON, match="not JSON"):
        _jsonable(float("nan"))
    assert _jsonable(None) is None


def test_a_value_bound_elsewhere_is_encoded_as_before(store):
    """Every other JSON column (arguments, errors) still goes through the engine's encoder,
    and a result given as a plain value (a process-isolated run's, from its child) is encoded
    by the settle before its transaction: stored and read back as JSON holds it."""
    started = store.runs.create(new_run(kwargs={"value": ["x", 1]}), running_on="node-a")
    settled = store.runs.finish_and_claim(started.id, "node-a", RunState.SUCCEEDED,
                                          result={"plain": (1, 2)}, started=started).settled

    assert settled is not None and settled.result == {"plain": [1, 2]}
    assert store.runs.get(started.id).kwargs == {"value": ["x", 1]}
    assert stored_text(store, started.id).replace(" ", "") == '{"plain":[1,2]}'
