"""The dashboard's pages through Flask's test client: who sees what, what `/` answers to whom,
the headers. What the pages do in a browser is in tests/e2e/."""

from __future__ import annotations

import html
import json
import re

import pytest

from tests.conftest import wait_for

TOKENS = {"viewer-token-123": "viewer", "admin-token-456": "admin"}
HTML = {"Accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}
PAGES = ("/", "/jobs", "/runs", "/runs?state=failed&task=demo.fail")
ACTION = re.compile(r'data-action="(?!logout)')


@pytest.fixture
def secured(make_app):
    return make_app(API_TOKENS=TOKENS, PRUNE_RUNS_CRON="")


def login(client, token):
    assert client.post("/auth/login", json={"token": token}).status_code == 200


def test_index_answers_json_to_api_clients_and_html_to_browsers(make_app):
    client = make_app(start=False, PRUNE_RUNS_CRON="").test_client()
    for accept in (None, "*/*", "application/json", "application/json, text/plain, */*"):
        answer = client.get("/", headers={"Accept": accept} if accept else {})
        assert answer.status_code == 200 and answer.is_json, accept
        paths = {e["path"] for e in answer.json["endpoints"]}
        assert {"/api/runs", "/api/triggers/preview"} <= paths
    page = client.get("/", headers=HTML)
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert "<h1>Overview</h1>" in page.text


def test_the_endpoint_list_needs_no_login_but_the_dashboard_does(secured):
    client = secured.test_client()
    assert client.get("/", headers={"Accept": "application/json"}).is_json
    for path in PAGES + ("/runs/1", "/jobs/new", "/runs/new"):
        answer = client.get(path, headers=HTML)
        assert answer.status_code == 302, path
        assert answer.headers["Location"].startswith("/login?next=")
    assert client.get("/login", headers=HTML).status_code == 200
    assert client.get("/dashboard/static/dashboard.js").status_code == 200


def test_an_admin_gets_the_buttons_a_viewer_does_not(secured):
    run_id = secured.test_client().post(
        "/api/runs", json={"task": "demo.fail"},
        headers={"Authorization": "Bearer admin-token-456"}).json["id"]
    admin = secured.test_client()
    login(admin, "admin-token-456")
    viewer = secured.test_client()
    login(viewer, "viewer-token-123")
    secured.test_client().post("/api/jobs", headers={"Authorization": "Bearer admin-token-456"},
                               json={"id": "j1", "task": "demo.echo", "kwargs": {"value": 1},
                                     "trigger": {"type": "cron", "expr": "0 4 * * *"}})
    wait_for(lambda: admin.get(f"/api/runs/{run_id}").json["state"] == "failed")

    jobs = admin.get("/jobs", headers=HTML).text
    assert 'data-action="pause-job"' in jobs and 'data-action="delete-job"' in jobs
    assert 'data-action="retry-run"' in admin.get(f"/runs/{run_id}", headers=HTML).text
    assert admin.get("/jobs/new", headers=HTML).status_code == 200

    for path in PAGES + (f"/runs/{run_id}",):
        page = viewer.get(path, headers=HTML)
        assert page.status_code == 200, path
        assert not ACTION.search(page.text), path
        assert "Run a task" not in page.text and "New job" not in page.text
    viewed = viewer.get(f"/runs/{run_id}", headers=HTML).text
    assert "RuntimeError" in viewed and "Traceback (most recent call last)" in viewed
    for path in ("/jobs/new", "/runs/new"):
        refused = viewer.get(path, headers=HTML)
        assert refused.status_code == 403 and "Admins only" in refused.text


def test_pages_carry_a_csrf_token_and_a_strict_policy(secured):
    client = secured.test_client()
    login(client, "admin-token-456")
    csrf = client.get("/auth/session").json["csrf_token"]
    page = client.get("/jobs", headers=HTML)
    assert f'<meta name="csrf-token" content="{csrf}">' in page.text
    policy = page.headers["Content-Security-Policy"]
    assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
    assert "<script>" not in page.text and " style=" not in page.text  # nothing inline to allow
    assert page.headers["X-Content-Type-Options"] == "nosniff"
    assert "admin-token-456" not in page.text


def test_unknown_runs_bad_filters_and_login_redirects(secured):
    client = secured.test_client()
    login(client, "viewer-token-123")
    assert client.get("/runs/424242", headers=HTML).status_code == 404
    bad = client.get("/runs?state=sleeping", headers=HTML)
    assert bad.status_code == 400 and "state: must be one of" in bad.text
    assert client.get("/runs?cursor=zz", headers=HTML).status_code == 400
    assert client.get("/jobs?cursor=zz", headers=HTML).status_code == 400
    for target, kept in (("/runs?state=failed", True), ("//evil.example/x", False),
                         ("https://evil.example/", False), ("/auth/logout", False)):
        page = client.get("/login", query_string={"next": target}, headers=HTML).text
        expected = target if kept else "/"
        assert f'data-next="{expected}"' in page.replace("&amp;", "&"), target


def test_loopback_without_tokens_is_admin_without_login(make_app):
    client = make_app(start=False, PRUNE_RUNS_CRON="").test_client()
    page = client.get("/jobs", headers=HTML)
    assert page.status_code == 200 and "local admin" in page.text
    login_page = client.get("/login", headers=HTML).text
    assert "No API token is configured" in login_page and 'id="login-form"' not in login_page
    remote = client.get("/jobs", headers=HTML, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 302


def test_the_overview_counts_what_happened(make_app):
    app = make_app(PRUNE_RUNS_CRON="")
    client = app.test_client()
    ids = [client.post("/api/runs", json=body).json["id"] for body in (
        {"task": "demo.echo", "kwargs": {"value": 1}},
        {"task": "demo.fail", "kwargs": {"message": "kaput"}})]
    wait_for(lambda: all(client.get(f"/api/runs/{i}").json["state"] in ("succeeded", "failed")
                         for i in ids))
    page = client.get("/", headers=HTML).text
    assert "1 failed run in the last 24 hours" in page and "kaput" in page
    assert 'data-stat="hour-succeeded">1<' in page and 'data-stat="day-failed">1<' in page
    assert "1 alive" in page
    fragment = client.get("/", headers={**HTML, "X-Dashboard-Fragment": "1"}).text
    assert "<html" not in fragment and "kaput" in fragment


def test_a_jobs_page_is_its_form_editable_by_an_admin_and_read_only_for_a_viewer(secured):
    admin_auth = {"Authorization": "Bearer admin-token-456"}
    client = secured.test_client()
    for job_id in ("nightly", "new"):  # "new" has a page too: /jobs/new is the new-job form
        created = client.post("/api/jobs", headers=admin_auth, json={
            "id": job_id, "name": f"Job {job_id}", "task": "demo.sleep",
            "kwargs": {"seconds": 1},
            "trigger": {"type": "interval", "minutes": 5}, "max_instances": 2})
        assert created.status_code == 201, created.json
    assert client.get("/jobs/nightly/edit", headers=HTML).status_code == 302  # log in first

    admin = secured.test_client()
    login(admin, "admin-token-456")
    page = admin.get("/jobs/new/edit", headers=HTML)
    assert page.status_code == 200 and "<h1>Job new" in page.text
    assert '<fieldset class="form-body">' in page.text and "Save changes" in page.text
    job = re.search(r"data-job='([^']*)'", page.text)
    assert job and json.loads(html.unescape(job.group(1)))["max_instances"] == 2
    quoted = "It's \"<b>\" & more"  # the job rides in a quoted attribute: nothing breaks out
    renamed = admin.patch("/api/jobs/new", json={"name": quoted}, headers={
        "X-CSRF-Token": admin.get("/auth/session").json["csrf_token"]})
    assert renamed.status_code == 200, renamed.json
    page = admin.get("/jobs/new/edit", headers=HTML)
    job = re.search(r"data-job='([^']*)'", page.text)
    assert job and json.loads(html.unescape(job.group(1)))["name"] == quoted
    assert "<b>" not in page.text
    listing = admin.get("/jobs", headers=HTML).text
    assert 'href="/jobs/nightly/edit"' in listing and 'aria-label="Edit Job nightly"' in listing

    viewer = secured.test_client()
    login(viewer, "viewer-token-123")
    viewed = viewer.get("/jobs/nightly/edit", headers=HTML)
    assert viewed.status_code == 200
    assert '<fieldset class="form-body" disabled>' in viewed.text
    form = viewed.text[viewed.text.index('<form id="job-form"'):viewed.text.index('</form>')]
    assert "Save changes" not in form and '<button type="submit"' not in form
    assert 'data-editable="false"' in viewed.text and "read-only" in viewed.text
    assert 'aria-label="Edit' not in viewer.get("/jobs", headers=HTML).text

    missing = viewer.get("/jobs/nope/edit", headers=HTML)
    assert missing.status_code == 404 and "There is no job &#39;nope&#39;" in missing.text
