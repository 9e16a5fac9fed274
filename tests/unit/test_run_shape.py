"""A run's shape is written in a few places that must agree: the ``runs`` table, the ``Run``
dataclass and a new run's row (``new_run_values``) in the store; the API's ``run_view`` and
the pydantic ``Run`` behind the OpenAPI document. Each test fails when one of them changes
and the other does not follow."""

from __future__ import annotations

from dataclasses import fields, replace
from datetime import timedelta

from scheduler_app.api import schemas
from scheduler_app.services.views import run_view
from scheduler_app.store import NewRun, Run, RunState
from scheduler_app.store.lifecycle import new_run_values, settle_values
from scheduler_app.store.schema import runs
from scheduler_app.timeutil import utcnow

NEW = NewRun(task="demo.echo", kwargs={"value": 1}, max_attempts=1, retry_backoff=2.0,
             timeout=None, scheduled_for=utcnow())


def test_the_run_dataclass_has_one_field_per_column_of_the_runs_table() -> None:
    columns = {column.name for column in runs.columns}
    run_fields = {field.name for field in fields(Run)}
    assert run_fields == columns, (
        f"only in the table: {sorted(columns - run_fields)}; "
        f"only in Run: {sorted(run_fields - columns)}")


def test_a_new_run_leaves_out_only_columns_that_read_back_as_null() -> None:
    """``Run.inserted`` takes every column the insert does not write to be NULL: true only
    while each such column is nullable and has no default."""
    for running_on in (None, "host:1:node"):
        values = new_run_values(NEW, utcnow(), running_on)
        assert set(values) <= set(runs.c.keys())
        for column in runs.columns:
            if column.name not in values and not column.primary_key:
                assert column.nullable, column.name
                assert column.default is None and column.server_default is None, column.name


def test_a_new_run_is_queued_or_running_on_the_node_given() -> None:
    now = utcnow()
    queued = Run.inserted(1, new_run_values(NEW, now))
    running = Run.inserted(2, new_run_values(NEW, now, "host:1:node"))
    assert (queued.state, queued.node, queued.started_at) == (RunState.QUEUED, None, None)
    assert (running.state, running.node, running.started_at) == (
        RunState.RUNNING, "host:1:node", now)
    assert queued.errors == [] and queued.result is None and queued.finished_at is None


def test_run_view_sends_exactly_the_api_models_fields_in_its_order() -> None:
    now = utcnow()
    queued = Run.inserted(1, new_run_values(
        replace(NEW, scheduled_for=now + timedelta(hours=1), job_id="j", fire_time=now), now))
    running = replace(Run.inserted(2, new_run_values(NEW, now, "host:1:node")),
                      progress_done=3.0, progress_total=10.0, progress_message="step 3")
    error = {"type": "RuntimeError", "message": "boom", "traceback": None}
    failed = Run.from_row({**vars(running),
                           **settle_values(running, RunState.FAILED, None, error)})
    assert failed.state is RunState.FAILED
    for run in (queued, running, failed):
        view = run_view(run)
        assert list(view) == list(schemas.Run.model_fields)
        schemas.Run.model_validate(view)
