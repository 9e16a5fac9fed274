"""Concurrency controls seen from outside: a queued run's keys and why it waits, in the API,
``flask scheduler runs show``, the dashboard's run page and ``/metrics``; and bad options
refused with a 400 naming the field, nothing stored."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask

from scheduler_app.store import Store
from tests.conftest import wait_for


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(PRUNE_RUNS_CRON="")


def post(api: Any, **body: Any) -> Any:
    return api.post("/api/runs", json={"task": "demo.sleep", "kwargs": {"seconds": 30}, **body})


def test_a_waiting_run_says_why_everywhere(app: Flask) -> None:
    api = app.test_client()
    store: Store = app.extensions["scheduler_app"].store
    holder = post(api, concurrency_key="tenant:1").json
    wait_for(lambda: api.get(f"/api/runs/{holder['id']}").json["state"] == "running",
             message="the first run to start")
    queued = post(api, concurrency_key="tenant:1").json
    view = api.get(f"/api/runs/{queued['id']}").json
    assert view["state"] == "queued"
    assert (view["concurrency_key"], view["concurrency_limit"]) == ("tenant:1", 1)
    assert view["waiting"] == "concurrency key 'tenant:1' at its limit (1 of 1 running)"

    first = post(api, rate_limit="1/h", rate_key="mail", unique_key="mail:7").json
    throttled = post(api, rate_limit="1/h", rate_key="mail").json
    wait_for(lambda: store.runs.get(throttled["id"]).throttled_until is not None,
             message="a claim to hold the second rate-limited run back")
    shown = api.get(f"/api/runs/{throttled['id']}").json
    slot = store.runs.get(throttled["id"]).throttled_until
    assert shown["waiting"] == f"rate limit 1/h, next slot at {slot.isoformat()}"
    assert (shown["rate_limit"], shown["rate_key"]) == ("1/h", "mail")

    out = app.test_cli_runner().invoke(args=["scheduler", "runs", "show", str(throttled["id"])])
    assert out.exit_code == 0, out.output
    assert json.loads(out.output)["waiting"].startswith("rate limit 1/h, next slot at ")

    page = api.get(f"/runs/{queued['id']}").get_data(as_text=True)
    assert "concurrency key &#39;tenant:1&#39; at its limit" in page
    page = api.get(f"/runs/{first['id']}").get_data(as_text=True)
    assert "<code>mail:7</code>" in page and "<code>1/h</code> for <code>mail</code>" in page

    assert post(api, unique_key="mail:7").status_code == 409
    metrics = api.get("/metrics").get_data(as_text=True)
    assert 'scheduler_runs_throttled_total{task="demo.sleep"} 1.0' in metrics
    assert 'scheduler_runs_deduplicated_total{task="demo.sleep"} 1.0' in metrics
    for run in (holder, queued, first, throttled):
        api.post(f"/api/runs/{run['id']}/cancel")


@pytest.mark.parametrize(("body", "field"), [
    ({"rate_limit": "100/x"}, "rate_limit"),
    ({"rate_limit": "0/m"}, "rate_limit"),
    ({"rate_limit": "fast"}, "rate_limit"),
    ({"rate_limit": 100}, "rate_limit"),
    ({"rate_key": "k"}, "rate_key"),
    ({"rate_limit": "1/s", "rate_key": "k" * 201}, "rate_key"),
    ({"concurrency_key": "t", "concurrency_limit": 0}, "concurrency_limit"),
    ({"concurrency_key": "t", "concurrency_limit": -3}, "concurrency_limit"),
    ({"concurrency_key": "t", "concurrency_limit": "2"}, "concurrency_limit"),
    ({"concurrency_key": "t" * 201}, "concurrency_key"),
    ({"concurrency_key": ""}, "concurrency_key"),
])
def test_bad_controls_are_a_400_naming_the_field_and_store_nothing(app: Flask,
                                                                   body: dict[str, Any],
                                                                   field: str) -> None:
    api = app.test_client()
    response = post(api, **body)
    assert response.status_code == 400, response.json
    assert response.json["error"]["code"] == "invalid_request"
    assert [d["field"] for d in response.json["error"]["details"]] == [field]
    assert api.get("/api/runs").json["items"] == []


def test_bad_controls_in_python_raise_a_value_error_naming_the_field() -> None:
    from scheduler_app.tasks import task

    with pytest.raises(ValueError, match="rate_limit"):
        task(name="controls_tests.bad_rate", rate_limit="10 per minute")(lambda ctx: None)
    with pytest.raises(ValueError, match="concurrency_limit"):
        task(name="controls_tests.bad_limit", concurrency_key="k",
             concurrency_limit=0)(lambda ctx: None)


def test_the_cli_starts_a_run_with_controls_and_names_the_run_holding_a_key(app: Flask) -> None:
    runner = app.test_cli_runner()
    args = ["tasks", "run", "demo.sleep", "--kwargs", '{"seconds": 30}', "--unique-key", "cli:1",
            "--concurrency-key", "tenant:cli", "--concurrency-limit", "2", "--rate-limit", "5/m"]
    first = runner.invoke(args=["scheduler", *args])
    assert first.exit_code == 0, first.output
    run = json.loads(first.output)
    assert (run["unique_key"], run["concurrency_key"], run["concurrency_limit"],
            run["rate_limit"], run["rate_key"]) == ("cli:1", "tenant:cli", 2, "5/m", "demo.sleep")
    again = runner.invoke(args=["scheduler", *args])
    assert again.exit_code == 1
    assert re.search(rf"a run with unique key 'cli:1' is already (queued|running): run "
                     rf"{run['id']}\n", again.output), again.output
    bad = runner.invoke(args=["scheduler", "tasks", "run", "demo.echo", "--kwargs",
                              '{"value": 1}', "--rate-limit", "5 a minute"])
    assert bad.exit_code == 1 and "rate_limit:" in bad.output
    app.test_client().post(f"/api/runs/{run['id']}/cancel")
