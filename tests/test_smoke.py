from tests.conftest import wait_for


def test_run_now_lifecycle(client):
    response = client.post("/api/runs", json={"task": "demo.sleep",
                                              "kwargs": {"seconds": 0.2, "steps": 4}})
    assert response.status_code == 202, response.json
    run = response.json
    assert response.headers["Location"] == f"/api/runs/{run['id']}"
    done = wait_for(lambda: client.get(f"/api/runs/{run['id']}").json["state"] == "succeeded" and
                    client.get(f"/api/runs/{run['id']}").json)
    assert done["result"] == {"slept": 0.2}
    assert done["progress"]["percent"] == 100.0


def test_logs_are_captured(client):
    run = client.post("/api/runs", json={"task": "testing.logs", "kwargs": {"lines": 2}}).json
    wait_for(lambda: client.get(f"/api/runs/{run['id']}").json["state"] == "succeeded")
    lines = client.get(f"/api/runs/{run['id']}/logs").json["items"]
    messages = [(line["level"], line["message"]) for line in lines]
    assert messages == [("INFO", "ctx line 0"), ("INFO", "ctx line 1"),
                        ("WARNING", "through ctx.logger"), ("WARNING", "from a library logger")]
