"""The OpenAPI document: valid OpenAPI 3.1, complete (every route under /api, /auth, /healthz
and /readyz, every method), true (real answers, in every state a run or a job can be in, match
the documented status, media type, JSON Schema and the pydantic model behind it), and readable
offline (/api/docs and its files are served by the app itself)."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import jsonschema
import pytest
from flask import Flask
from openapi_spec_validator import validate as validate_openapi

from scheduler_app.api import schemas
from scheduler_app.api.openapi import undocumented_rules
from scheduler_app.services import services
from scheduler_app.timeutil import iso, utcnow
from tests.conftest import wait_for

ADMIN, VIEWER = "openapi-admin", "openapi-viewer"
AS_ADMIN = {"Authorization": f"Bearer {ADMIN}"}
AS_VIEWER = {"Authorization": f"Bearer {VIEWER}"}
DOCUMENTED_PREFIXES = ("/api", "/auth", "/healthz", "/readyz")


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app(API_TOKENS={ADMIN: "admin", VIEWER: "viewer"}, PRUNE_RUNS_CRON="")


@pytest.fixture
def document(app: Flask) -> dict[str, Any]:
    response = app.test_client().get("/api/openapi.json", headers=AS_VIEWER)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.is_json
    return response.json  # type: ignore[no-any-return]


class Api:
    """Calls the app and checks each answer against the document: its status must be
    documented for the operation, its media type too, and a JSON body must validate against
    the documented schema and against the ``api.schemas`` model that schema names."""

    def __init__(self, app: Flask, document: dict[str, Any]) -> None:
        self.client = app.test_client()
        self.document = document
        self.checked: set[tuple[str, str, int]] = set()

    def call(self, method: str, url: str, status: int, *, headers: dict[str, str] | None = None,
             **kwargs: Any) -> Any:
        response = self.client.open(url, method=method,
                                    headers=AS_ADMIN if headers is None else headers, **kwargs)
        assert response.status_code == status, (method, url, response.get_data(as_text=True))
        template = self._template(url.split("?")[0])
        operation = self.document["paths"][template][method.lower()]
        documented = operation["responses"].get(str(status))
        assert documented is not None, f"{method} {template} answered an undocumented {status}"
        if "content" not in documented:
            assert not response.get_data(), (method, url)
            return None
        assert response.mimetype in documented["content"], (method, url, response.mimetype)
        if response.mimetype != "application/json":
            return response
        body = response.json
        schema = documented["content"]["application/json"]["schema"]
        jsonschema.validate(body, {**schema, "components": self.document["components"]},
                            cls=jsonschema.Draft202012Validator,
                            format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
        name = schema.get("$ref", "").rpartition("/")[2]
        if name:
            model = getattr(schemas, name)
            model.model_validate(body)
        self.checked.add((method, template, status))
        return body

    def _template(self, path: str) -> str:
        for template in self.document["paths"]:
            pattern = re.sub(r"\\{\w+\\}", "[^/]+", re.escape(template))
            if re.fullmatch(pattern, path):
                return template
        raise AssertionError(f"{path} is not in the document")


@pytest.fixture
def api(app: Flask, document: dict[str, Any]) -> Api:
    return Api(app, document)


# -- the document -----------------------------------------------------------------------------

def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate_openapi(document)
    for schema in document["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)


def test_every_route_and_method_is_documented(app: Flask, document: dict[str, Any]) -> None:
    assert undocumented_rules(app) == []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith(DOCUMENTED_PREFIXES):
            continue
        template = re.sub(r"<(?:[^<>:]+:)?(\w+)>", r"{\1}", rule.rule)
        for method in (rule.methods or set()) - {"HEAD", "OPTIONS"}:
            assert method.lower() in document["paths"].get(template, {}), (method, rule.rule)
    assert {"/api/openapi.json", "/api/docs", "/api/runs/{run_id}", "/auth/login", "/healthz",
            "/readyz"} <= set(document["paths"])


def test_request_bodies_are_the_models_that_validate_requests(document: dict[str, Any]
                                                                ) -> None:
    from scheduler_app.services.models import JobCreate, JobPatch, RunCreate

    def body(path: str, method: str) -> Any:
        content = document["paths"][path][method]["requestBody"]["content"]
        return content["application/json"]["schema"]

    assert body("/api/runs", "post") == {"$ref": "#/components/schemas/RunCreate"}
    assert body("/api/jobs", "post") == {"$ref": "#/components/schemas/JobCreate"}
    assert body("/api/jobs/{job_id}", "patch") == {"$ref": "#/components/schemas/JobPatch"}
    components = document["components"]["schemas"]
    for model in (RunCreate, JobCreate, JobPatch):
        assert set(components[model.__name__]["properties"]) == set(model.model_fields)
    trigger = components["JobCreate"]["properties"]["trigger"]["anyOf"]
    assert {ref["$ref"].rpartition("/")[2] for ref in trigger} == {
        "CronTriggerSpec", "CronFieldsTriggerSpec", "IntervalTriggerSpec", "DateTriggerSpec"}


def test_security_and_documented_statuses(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        **document["components"]["securitySchemes"]["bearer"], "type": "http",
        "scheme": "bearer"}
    assert document["security"] == [{"bearer": []}, {"session": []}]
    paths = document["paths"]
    assert paths["/healthz"]["get"]["security"] == []
    assert set(paths["/api/runs"]["post"]["responses"]) == {
        "202", "400", "401", "403", "409", "413", "429"}
    assert set(paths["/api/jobs"]["post"]["responses"]) == {
        "201", "400", "401", "403", "409", "413"}
    assert set(paths["/api/jobs/{job_id}"]["delete"]["responses"]) == {
        "204", "401", "403", "404"}
    assert set(paths["/api/runs"]["get"]["responses"]) == {"200", "400", "401"}
    assert "Location" in paths["/api/runs"]["post"]["responses"]["202"]["headers"]
    assert "Retry-After" in paths["/api/runs"]["post"]["responses"]["429"]["headers"]
    limit = next(p for p in paths["/api/runs"]["get"]["parameters"] if p["name"] == "limit")
    assert limit["schema"] == {"type": "integer", "minimum": 1, "maximum": 500, "default": 50}
    run_id = paths["/api/runs/{run_id}"]["get"]["parameters"][0]
    assert run_id["in"] == "path" and run_id["schema"]["type"] == "integer"


# -- real answers match it --------------------------------------------------------------------

def test_run_answers_in_every_state_match(app: Flask, api: Api) -> None:
    queued = api.call("POST", "/api/runs", 202, json={
        "task": "demo.echo", "kwargs": {"value": 1}, "run_at": iso(utcnow() + timedelta(days=1))})
    api.call("GET", f"/api/runs/{queued['id']}", 200)
    assert api.call("POST", f"/api/runs/{queued['id']}/cancel", 202)["state"] == "cancelled"
    api.call("POST", f"/api/runs/{queued['id']}/cancel", 409)

    sleeping = api.call("POST", "/api/runs", 202,
                        json={"task": "demo.sleep", "kwargs": {"seconds": 5, "steps": 50}})
    wait_for(lambda: api.call("GET", f"/api/runs/{sleeping['id']}", 200)["progress"],
             message="progress of a running run")
    running = api.call("GET", f"/api/runs/{sleeping['id']}", 200)
    assert running["state"] == "running" and running["duration_s"] is not None
    api.call("POST", f"/api/runs/{sleeping['id']}/cancel", 202)

    flaky = api.call("POST", "/api/runs", 202,
                     json={"task": "testing.flaky", "kwargs": {"succeed_on_attempt": 2}})
    failing = api.call("POST", "/api/runs", 202, json={"task": "demo.fail"})
    timed_out = api.call("POST", "/api/runs", 202, json={"task": "testing.stubborn"})
    logs = api.call("POST", "/api/runs", 202, json={"task": "testing.logs", "kwargs": {}})
    for run in (sleeping, flaky, failing, timed_out, logs):
        wait_for(lambda run=run: api.call("GET", f"/api/runs/{run['id']}", 200)["finished_at"],
                 message=f"run {run['id']} to finish")
    assert api.call("GET", f"/api/runs/{flaky['id']}", 200)["errors"]
    assert api.call("GET", f"/api/runs/{failing['id']}", 200)["error"]["type"] == "RuntimeError"
    assert api.call("GET", f"/api/runs/{timed_out['id']}", 200)["error"]["type"] == "Timeout"
    page = api.call("GET", f"/api/runs/{logs['id']}/logs?limit=2", 200)
    assert page["items"] and page["next_cursor"]
    api.call("GET", f"/api/runs/{logs['id']}/logs?cursor={page['next_cursor']}", 200)
    listed = api.call("GET", "/api/runs?limit=3", 200)
    api.call("GET", f"/api/runs?cursor={listed['next_cursor']}&state=succeeded", 200)
    api.call("GET", "/api/runs/999999", 404)
    api.call("GET", "/api/runs/999999/logs", 404)
    api.call("GET", "/api/runs?state=lost", 400)
    api.call("POST", "/api/runs", 400, json={"task": "demo.sleep", "kwargs": {"seconds": "x"}})
    api.call("POST", "/api/runs", 413, data=b"{" + b" " * (2 * 1024 * 1024) + b"}",
             content_type="application/json")


def test_job_answers_in_every_state_match(app: Flask, api: Api) -> None:
    start = utcnow() + timedelta(hours=1)
    bodies = [
        {"id": "cron-expr", "task": "demo.echo", "kwargs": {"value": 1},
         "trigger": {"type": "cron", "expr": "*/5 * * * 1-5", "timezone": "Europe/Paris"}},
        {"id": "cron-fields", "task": "demo.echo", "kwargs": {"value": 2},
         "trigger": {"type": "cron", "minute": 5, "day_of_week": "mon-fri",
                     "start_date": iso(start), "end_date": iso(start + timedelta(days=9))}},
        {"id": "interval", "name": "Every hour", "task": "demo.sleep", "kwargs": {"seconds": 0},
         "trigger": {"type": "interval", "hours": 1}, "max_instances": 2, "coalesce": False,
         "misfire_grace_time": 30.5},
        {"id": "once", "task": "demo.echo", "kwargs": {"value": 3},
         "trigger": {"type": "date", "run_date": iso(start)}},
        {"id": "paused", "task": "demo.echo", "kwargs": {"value": 4},
         "trigger": {"type": "interval", "minutes": 5}, "paused": True},
    ]
    for body in bodies:
        api.call("POST", "/api/jobs", 201, json=body)
    api.call("POST", "/api/jobs", 409, json=bodies[0])
    api.call("POST", "/api/jobs", 400, json={**bodies[0], "id": "bad",
                                              "trigger": {"type": "cron", "expr": "99 * * * *"}})
    store = services(app).store
    spec = dict(store.jobs.get("once").spec)  # type: ignore[union-attr]
    store.jobs.insert("orphan", "gone.task", {**spec, "task": "gone.task"}, start)
    store.jobs.insert("unreadable", "demo.echo", {"task": "demo.echo"}, start)

    run = api.call("POST", "/api/jobs/interval/run", 202)
    wait_for(lambda: api.call("GET", f"/api/runs/{run['id']}", 200)["finished_at"],
             message="the job's run to finish")
    assert api.call("GET", "/api/jobs/interval", 200)["last_run"]["id"] == run["id"]
    assert api.call("GET", "/api/jobs/orphan", 200)["problem"]
    assert api.call("GET", "/api/jobs/unreadable", 200)["trigger"] == {"description": None}
    api.call("POST", "/api/jobs/orphan/run", 409)
    api.call("POST", "/api/jobs/unreadable/pause", 409)
    assert api.call("POST", "/api/jobs/cron-expr/pause", 200)["paused"] is True
    api.call("POST", "/api/jobs/cron-expr/resume", 200)
    api.call("PATCH", "/api/jobs/cron-fields", 200,
             json={"trigger": {"type": "interval", "seconds": 90}, "name": "renamed"})
    api.call("PATCH", "/api/jobs/cron-fields", 400, json={})
    page = api.call("GET", "/api/jobs?limit=2", 200)
    api.call("GET", f"/api/jobs?cursor={page['next_cursor']}&paused=false", 200)
    api.call("GET", "/api/jobs?paused=maybe", 400)
    api.call("DELETE", "/api/jobs/once", 204)
    api.call("DELETE", "/api/jobs/once", 404)
    api.call("GET", "/api/jobs/once", 404)


def test_tasks_nodes_auth_and_health_answers_match(make_app: Callable[..., Flask], app: Flask,
                                                   api: Api) -> None:
    assert api.call("GET", "/api/tasks", 200)["items"]
    assert api.call("GET", "/api/nodes", 200)["items"][0]["alive"] is True
    api.call("GET", "/api/tasks", 401, headers={"Authorization": "Bearer nope"})
    api.call("POST", "/api/runs", 403, headers=AS_VIEWER, json={"task": "demo.echo"})
    login = api.call("POST", "/auth/login", 200, headers={}, json={"token": VIEWER})
    session = api.call("GET", "/auth/session", 200, headers={})
    assert session == {**login, "via": "session"}
    api.call("POST", "/auth/logout", 204, headers={})
    api.call("GET", "/auth/session", 401, headers={})
    api.call("POST", "/auth/login", 401, headers={}, json={"token": "nope"})
    api.call("GET", "/healthz", 200, headers={})
    api.call("GET", "/readyz", 200, headers={})
    not_started = Api(make_app(start=False), api.document)
    not_started.call("GET", "/readyz", 503, headers={})

    full = Api(make_app(API_TOKENS={ADMIN: "admin"}, MAX_QUEUED_RUNS=1), api.document)
    later = {"task": "demo.echo", "kwargs": {"value": 1},
             "run_at": iso(utcnow() + timedelta(days=1))}
    full.call("POST", "/api/runs", 202, json=later)
    full.call("POST", "/api/runs", 429, json=later)


# -- the docs page ----------------------------------------------------------------------------

def test_docs_page_and_its_files_are_served_offline(api: Api) -> None:
    page = api.call("GET", "/api/docs", 200, headers=AS_VIEWER)
    html = page.get_data(as_text=True)
    assert "swagger-ui" in html.lower()
    assert "http://" not in html and "https://" not in html  # nothing from a CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        response = api.call("GET", asset, 200, headers=AS_VIEWER)
        assert len(response.get_data()) > 100, asset
    assert '"/api/openapi.json"' in html
    api.call("GET", "/api/docs/swagger-ui.js.map", 404, headers=AS_VIEWER)
    api.call("GET", "/api/docs/..%2F..%2Fsecret_key", 404, headers=AS_VIEWER)


def test_docs_need_a_viewer(api: Api) -> None:
    for path in ("/api/openapi.json", "/api/docs", "/api/docs/swagger-ui.css"):
        api.call("GET", path, 401, headers={})
