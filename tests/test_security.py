"""Who may call what, browser sessions with CSRF, proxies, and the limits."""

from __future__ import annotations

import logging

import pytest

from scheduler_app.services import services

TOKENS = {"viewer-token-123": "viewer", "admin-token-456": "admin"}
RUN = {"task": "demo.echo", "kwargs": {"value": 1}}


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def secured(make_app):
    return make_app(API_TOKENS=TOKENS, PRUNE_RUNS_CRON="")


def test_roles_over_every_api(secured):
    client = secured.test_client()
    for path in ("/api/tasks", "/api/runs", "/api/jobs", "/api/nodes", "/scheduler/jobs"):
        assert client.get(path).status_code == 401
        assert client.get(path, headers=bearer("nope")).status_code == 401
        assert client.get(path, headers=bearer("viewer-token-123")).status_code == 200
    assert client.post("/api/runs", json=RUN, headers=bearer("viewer-token-123")).json[
        "error"]["code"] == "forbidden"
    assert client.post("/api/runs", json=RUN, headers=bearer("admin-token-456")).status_code == 202
    unauthorized = client.post("/api/runs", json=RUN)
    assert unauthorized.status_code == 401
    assert unauthorized.headers["WWW-Authenticate"].startswith("Bearer")
    assert client.get("/healthz").status_code == 200  # health needs no token


def test_no_token_configured_admits_loopback_only(make_app):
    client = make_app(PRUNE_RUNS_CRON="").test_client()
    assert client.get("/api/runs").status_code == 200
    remote = {"REMOTE_ADDR": "10.1.2.3"}
    assert client.get("/api/runs", environ_base=remote).status_code == 401
    assert client.post("/api/runs", json=RUN, environ_base=remote).status_code == 401
    assert client.get("/api/runs", environ_base={"REMOTE_ADDR": "::1"}).status_code == 200
    # A forwarded-for header is not trusted by default.
    spoofed = client.get("/api/runs", environ_base=remote,
                         headers={"X-Forwarded-For": "127.0.0.1"})
    assert spoofed.status_code == 401
    assert services(client.application).store.runs.find() == []


def test_proxy_hops_make_the_forwarded_client_count(make_app):
    client = make_app(PROXY_FIX_HOPS=1, PRUNE_RUNS_CRON="").test_client()
    via_proxy = {"REMOTE_ADDR": "127.0.0.1"}
    assert client.get("/api/runs", environ_base=via_proxy,
                      headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    assert client.get("/api/runs", environ_base=via_proxy,
                      headers={"X-Forwarded-For": "127.0.0.1"}).status_code == 200


def test_session_login_then_csrf_on_every_change(secured):
    client = secured.test_client()
    assert client.post("/auth/login", json={"token": "wrong"}).status_code == 401
    login = client.post("/auth/login", json={"token": "admin-token-456"})
    assert login.status_code == 200 and login.json["role"] == "admin"
    cookie = login.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert "admin-token-456" not in cookie
    csrf = login.json["csrf_token"]
    assert client.get("/api/runs").status_code == 200  # reads need no CSRF token
    refused = client.post("/api/runs", json=RUN)
    assert refused.status_code == 403 and refused.json["error"]["code"] == "csrf_failed"
    assert client.post("/api/runs", json=RUN, headers={"X-CSRF-Token": "forged"}).status_code == 403
    assert services(secured).store.runs.find() == []
    accepted = client.post("/api/runs", json=RUN, headers={"X-CSRF-Token": csrf})
    assert accepted.status_code == 202
    cross = client.post("/api/runs", json=RUN, headers={
        "X-CSRF-Token": csrf, "Origin": "https://evil.example"})
    assert cross.status_code == 403
    assert client.get("/auth/session").json["role"] == "admin"
    assert client.post("/auth/logout").status_code == 204
    assert client.get("/api/runs").status_code == 401


def test_viewer_session_reads_but_cannot_change(secured):
    client = secured.test_client()
    csrf = client.post("/auth/login", data={"token": "viewer-token-123"}).json["csrf_token"]
    assert client.get("/api/jobs").status_code == 200
    assert client.post("/api/runs", json=RUN, headers={"X-CSRF-Token": csrf}).status_code == 403


def test_session_ends_when_its_token_is_removed(make_app):
    key = {"SECRET_KEY": "fixed-for-this-test", "PRUNE_RUNS_CRON": ""}
    first = make_app(API_TOKENS=TOKENS, **key).test_client()
    first.post("/auth/login", json={"token": "admin-token-456"})
    cookie = first.get_cookie("scheduler_session")
    rotated = make_app(API_TOKENS={"new-admin-token": "admin"}, **key).test_client()
    rotated.set_cookie("scheduler_session", cookie.value)
    assert rotated.get("/api/runs").status_code == 401


def test_a_new_secret_key_ends_sessions_unless_the_old_one_is_a_fallback(make_app):
    """The session's signer is built once per set of keys: changing them takes effect at
    the next request, in both directions."""
    app = make_app(API_TOKENS=TOKENS, SECRET_KEY="first-key", PRUNE_RUNS_CRON="")
    client = app.test_client()
    client.post("/auth/login", json={"token": "admin-token-456"})
    assert client.get("/api/runs").status_code == 200
    signed_with_first = client.get_cookie("scheduler_session").value
    app.secret_key = "second-key"
    assert client.get("/api/runs").status_code == 401
    app.config["SECRET_KEY_FALLBACKS"] = ["first-key"]
    assert client.get("/api/runs").status_code == 200
    app.config["SECRET_KEY_FALLBACKS"] = []
    client.set_cookie("scheduler_session", signed_with_first)
    assert client.get("/api/runs").status_code == 401


def test_secure_cookie_over_https(secured):
    client = secured.test_client()
    login = client.post("/auth/login", json={"token": "admin-token-456"},
                        base_url="https://localhost")
    assert "Secure" in login.headers["Set-Cookie"]


def test_loopback_without_tokens_refuses_cross_site_changes(make_app):
    client = make_app(PRUNE_RUNS_CRON="").test_client()
    evil = client.post("/api/runs", json=RUN, headers={"Origin": "http://evil.example"})
    assert evil.status_code == 403
    fetch = client.post("/api/runs", json=RUN, headers={"Sec-Fetch-Site": "cross-site"})
    assert fetch.status_code == 403
    form = client.post("/api/runs", data='{"task": "demo.echo", "kwargs": {"value": 1}}',
                       content_type="text/plain", headers={"Origin": "null"})
    assert form.status_code == 403
    assert services(client.application).store.runs.find() == []
    same = client.post("/api/runs", json=RUN, headers={"Origin": "http://localhost"})
    assert same.status_code == 202


def test_tokens_never_reach_the_log(secured, caplog):
    caplog.set_level(logging.DEBUG)
    client = secured.test_client()
    client.get("/api/runs", headers=bearer("admin-token-456"))
    client.get("/api/runs", headers=bearer("unknown-secret-789"))
    client.post("/auth/login", json={"token": "viewer-token-123"})
    text = caplog.text
    for secret in ("admin-token-456", "unknown-secret-789", "viewer-token-123"):
        assert secret not in text


@pytest.mark.parametrize("name", ["os:system", "os.system", "subprocess:run", "builtins:eval",
                                  "__import__", "/tmp/evil.py", "scheduler_app.tasks.demo:sleep",
                                  "scheduler_app.tasks.demo._private", "pickle:loads"])
def test_unregistered_names_run_nothing(make_app, tmp_path, name):
    sentinel = tmp_path / "pwned"
    client = make_app(PRUNE_RUNS_CRON="").test_client()
    kwargs = {"command": f"touch {sentinel}", "args": [f"touch {sentinel}"]}
    run = client.post("/api/runs", json={"task": name, "kwargs": kwargs})
    job = client.post("/api/jobs", json={"task": name, "kwargs": kwargs,
                                         "trigger": {"type": "interval", "seconds": 1}})
    for response in (run, job):
        assert response.status_code == 400
        assert response.json["error"]["details"][0]["field"] == "task"
    store = services(client.application).store
    assert store.runs.find() == [] and store.jobs.all() == []
    assert not sentinel.exists()


def test_kwargs_size_limit(make_app):
    client = make_app(KWARGS_MAX_BYTES=100, PRUNE_RUNS_CRON="").test_client()
    big = {"task": "demo.echo", "kwargs": {"value": "x" * 200}}
    response = client.post("/api/runs", json=big)
    assert response.status_code == 400
    assert response.json["error"]["details"][0]["field"] == "kwargs"
    job = client.post("/api/jobs", json={**big, "trigger": {"type": "interval", "seconds": 5}})
    assert job.status_code == 400
    store = services(client.application).store
    assert store.runs.find() == [] and store.jobs.all() == []


def test_kwargs_size_limit_counts_compact_json(make_app):
    """The limit is on the arguments as compact JSON: exactly at it passes, a byte over fails."""
    client = make_app(KWARGS_MAX_BYTES=20, PRUNE_RUNS_CRON="").test_client()
    at_limit = {"value": "x" * 9}  # {"value":"xxxxxxxxx"} is 21 bytes
    assert client.post("/api/runs", json={"task": "demo.echo", "kwargs": at_limit}
                       ).status_code == 400
    fits = {"value": "x" * 8}  # 20 bytes
    assert client.post("/api/runs", json={"task": "demo.echo", "kwargs": fits}
                       ).status_code == 202


def test_queue_cap_answers_429_and_stores_nothing(make_app):
    app = make_app(start=False, MAX_QUEUED_RUNS=3, PRUNE_RUNS_CRON="")
    client = app.test_client()  # not started: runs stay queued
    for _ in range(3):
        assert client.post("/api/runs", json=RUN).status_code == 202
    full = client.post("/api/runs", json=RUN)
    assert full.status_code == 429
    assert full.headers["Retry-After"] == "5"
    assert full.json["error"]["code"] == "queue_full"
    assert len(services(app).store.runs.find()) == 3


def test_job_cap(make_app):
    client = make_app(MAX_JOBS=2, PRUNE_RUNS_CRON="").test_client()
    for i in range(2):
        assert client.post("/api/jobs", json={"id": f"j{i}", **RUN, "trigger": {
            "type": "interval", "minutes": 5}}).status_code == 201
    full = client.post("/api/jobs", json={"id": "j2", **RUN, "trigger": {
        "type": "interval", "minutes": 5}})
    assert full.status_code == 409 and full.json["error"]["code"] == "job_limit_reached"
    assert len(services(client.application).store.jobs.all()) == 2
