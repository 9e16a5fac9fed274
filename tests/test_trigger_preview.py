"""POST /api/triggers/preview: the next fire times of a trigger, judged as job creation judges
it, with nothing stored."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from scheduler_app.services import services

PREVIEW = "/api/triggers/preview"


@pytest.fixture
def client(make_app):
    return make_app(start=False, PRUNE_RUNS_CRON="").test_client()


def test_cron_preview_lists_the_next_five_fires_in_its_time_zone(client):
    answer = client.post(PREVIEW, json={"trigger": {
        "type": "cron", "expr": "0 2 * * 1-5", "timezone": "Europe/Paris"}})
    assert answer.status_code == 200, answer.json
    body = answer.json
    assert body["description"] == "At 02:00, Monday through Friday (Europe/Paris)"
    assert body["trigger"] == {"type": "cron", "expr": "0 2 * * 1-5", "timezone": "Europe/Paris"}
    fires = [datetime.fromisoformat(t) for t in body["fire_times"]]
    assert len(fires) == 5
    assert fires == sorted(fires) and fires[0] > datetime.now(fires[0].tzinfo)
    for fire in fires:
        assert fire.utcoffset() == timedelta(0)  # given in UTC; the browser localises
        paris = fire.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris"))
        assert (paris.hour, paris.minute) == (2, 0) and paris.isoweekday() <= 5
    assert services(client.application).store.jobs.all() == []


def test_count_and_the_other_trigger_types(client):
    interval = client.post(PREVIEW, json={"trigger": {"type": "interval", "minutes": 5},
                                          "count": 3}).json
    steps = [datetime.fromisoformat(t) for t in interval["fire_times"]]
    assert interval["description"] == "Every 5 minutes"
    assert [b - a for a, b in zip(steps, steps[1:], strict=False)] == [timedelta(minutes=5)] * 2

    soon = (datetime.now().astimezone() + timedelta(hours=1)).isoformat()
    once = client.post(PREVIEW, json={"trigger": {"type": "date", "run_date": soon}}).json
    assert len(once["fire_times"]) == 1  # a date fires once, however many are asked for
    past = client.post(PREVIEW, json={"trigger": {"type": "date",
                                                  "run_date": "2020-01-01T00:00:00Z"}}).json
    assert past["fire_times"] == []

    many = client.post(PREVIEW, json={"trigger": {"type": "cron", "expr": "* * * * *"},
                                      "count": 50}).json
    assert len(many["fire_times"]) == 50


def test_an_interval_from_its_start_until_its_end_and_cron_fields_until_theirs(client):
    """The dashboard previews an interval's start and end, and a cron trigger given field by
    field: fire times begin at the start and stop at the end."""
    start = (datetime.now().astimezone() + timedelta(days=1)).replace(microsecond=0)
    end = start + timedelta(hours=4)
    interval = client.post(PREVIEW, json={"trigger": {
        "type": "interval", "hours": 1, "minutes": 30, "start_date": start.isoformat(),
        "end_date": end.isoformat()}}).json
    assert interval["description"] == "Every 1 hour 30 minutes"
    assert [datetime.fromisoformat(t) for t in interval["fire_times"]] == [
        start, start + timedelta(minutes=90), start + timedelta(minutes=180)]

    soon = datetime.now().astimezone() + timedelta(minutes=30)
    fields = client.post(PREVIEW, json={"trigger": {
        "type": "cron", "minute": "*/5", "end_date": soon.isoformat()}, "count": 50}).json
    fires = [datetime.fromisoformat(t) for t in fields["fire_times"]]
    assert 5 <= len(fires) <= 6 and all(f.minute % 5 == 0 and f <= soon for f in fires)

    bad = client.post(PREVIEW, json={"trigger": {
        "type": "interval", "hours": 1, "start_date": end.isoformat(),
        "end_date": start.isoformat()}})
    assert bad.status_code == 400
    assert bad.json["error"]["details"] == [
        {"field": "trigger.end_date", "message": "must be after start_date"}]


@pytest.mark.parametrize(("body", "field"), [
    ({"trigger": {"type": "cron", "expr": "61 * * * *"}}, "trigger.minute"),
    ({"trigger": {"type": "cron", "expr": "* * *"}}, "trigger.expr"),
    ({"trigger": {"type": "cron", "expr": "0 2 * * *", "timezone": "Mars/Base"}},
     "trigger.timezone"),
    ({"trigger": {"type": "weekly"}}, "trigger.type"),
    ({"trigger": {"type": "interval", "minutes": -1}}, "trigger.minutes"),
    ({"trigger": {"type": "cron", "expr": "* * * * *"}, "count": 0}, "count"),
    ({"trigger": {"type": "cron", "expr": "* * * * *"}, "count": 51}, "count"),
    ({"trigger": {"type": "cron", "expr": "* * * * *"}, "count": "5"}, "count"),
    ({"trigger": {"type": "cron", "expr": "* * * * *"}, "extra": 1}, "extra"),
    ({"count": 5}, "trigger"),
    ([1, 2], "body"),
])
def test_a_bad_request_is_a_400_naming_the_field(client, body, field):
    answer = client.post(PREVIEW, json=body)
    assert answer.status_code == 400, answer.json
    assert answer.json["error"]["code"] == "invalid_request"
    assert answer.json["error"]["details"][0]["field"] == field


def test_not_json_is_a_400(client):
    answer = client.post(PREVIEW, data="nope", content_type="application/json")
    assert answer.status_code == 400
    assert answer.json["error"]["details"][0]["field"] == "body"


def test_it_takes_an_admin(make_app):
    client = make_app(start=False, PRUNE_RUNS_CRON="",
                      API_TOKENS={"v-token": "viewer", "a-token": "admin"}).test_client()
    body = {"trigger": {"type": "cron", "expr": "* * * * *"}}
    assert client.post(PREVIEW, json=body).status_code == 401
    viewer = client.post(PREVIEW, json=body, headers={"Authorization": "Bearer v-token"})
    assert viewer.status_code == 403
    admin = client.post(PREVIEW, json=body, headers={"Authorization": "Bearer a-token"})
    assert admin.status_code == 200
