"""Process isolation with real processes: a run of an ``isolation="process"`` task executes in
a child forked by the node's helper, reports like a thread run, and can be stopped for real
(cancel, timeout, memory limit); a child that crashes fails its attempt and the node carries
on. Under real gunicorn too."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from scheduler_app import Scheduler
from scheduler_app.errors import ConfigError
from scheduler_app.scheduler import isolation
from scheduler_app.services import services
from tests.conftest import TASK_MODULES, wait_for
from tests.servers import Servers

FINAL = ("succeeded", "failed", "cancelled")
GRACE = 1.0


@pytest.fixture
def iso_app(make_app: Callable[..., Flask], db_url: str) -> Callable[..., Flask]:
    """An app whose helper rebuilds it on this test's database (the rule for a host app: the
    helper builds the app from an import string, here the factory with literal arguments)."""

    def build(**overrides: Any) -> Flask:
        ref = helper_app_ref(db_url)
        settings = {"PROCESS_APP": ref, "KILL_GRACE_SECONDS": GRACE, **overrides}
        return make_app(**settings)

    return build


def helper_app_ref(url: str) -> str:
    """The import string of the test's app, built by a factory that leaves a connection in
    its pool (so a child that inherited it would show it)."""
    config = {"DATABASE_URL": url, "TASK_MODULES": TASK_MODULES}
    return f"tests.tasks_for_tests:create_app_touching_db({config!r})"


def submit(app: Flask, task: str, **kwargs: Any) -> int:
    response = app.test_client().post("/api/runs", json={"task": task, "kwargs": kwargs})
    assert response.status_code == 202, response.get_json()
    return int(response.get_json()["id"])


def view(app: Flask, run_id: int) -> dict[str, Any]:
    return app.test_client().get(f"/api/runs/{run_id}").get_json()  # type: ignore[no-any-return]


def wait_final(app: Flask, run_id: int, timeout: float = 30.0) -> dict[str, Any]:
    return wait_for(lambda: (v := view(app, run_id))["state"] in FINAL and v, timeout=timeout,
                    message=f"run {run_id} to end")  # type: ignore[no-any-return]


def log_lines(app: Flask, run_id: int) -> list[str]:
    body = app.test_client().get(f"/api/runs/{run_id}/logs").get_json()
    return [line["message"] for line in body["items"]]


def helper_pid(app: Flask) -> int:
    """The node's helper process, started now if no isolated run has started it yet."""
    isolation = services(app).scheduler.runner.isolation
    if isolation.helper_pid is None:
        isolation.warm_up()
    return wait_for(lambda: isolation.helper_pid, timeout=60, message="the helper")


def children(pid: int) -> list[tuple[int, str]]:
    """(pid, state) of ``pid``'s child processes, from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid:
            found.append((int(entry), fields[0]))
    return found


def test_a_process_run_reports_progress_logs_and_result_as_a_thread_run_does(
        iso_app: Callable[..., Flask], db_url: str) -> None:
    app = iso_app()
    run = wait_final(app, submit(app, "testing.proc_report", steps=3))
    assert run["state"] == "succeeded", run
    result = run["result"]
    assert result["pid"] != os.getpid()
    assert result["pgid"] == result["pid"], "the child leads a process group of its own"
    assert result["nice"] == 19, "the child runs at the lowest CPU priority"
    assert result["app"] == "scheduler_app"
    assert result["database_url"] == db_url, "it runs in the host app's context"
    db_file = db_url.removeprefix("sqlite:///")
    assert not [fd for fd in result["fds"] if fd.startswith(db_file)], \
        "no database connection is inherited"
    assert result["engines"] >= 1 and result["pooled_connections"] == 0, \
        "the app's engines are there, with no connection in their pools"
    assert run["progress"]["done"] == 3 and run["progress"]["total"] == 3
    assert run["progress"]["message"] == "step 3"
    assert log_lines(app, run["id"]) == ["ctx line 0", "ctx line 1", "ctx line 2",
                                         "from a library logger"]
    # Once ended, the child is reaped (by the helper, just after its run ends): no zombie.
    helper = helper_pid(app)
    wait_for(lambda: not children(helper), timeout=2, message="the child to be reaped")

    failed = wait_final(app, submit(app, "testing.proc_report", fail=True))
    assert failed["state"] == "failed"
    assert failed["error"]["type"] == "ValueError"
    assert failed["error"]["message"] == "the task failed on purpose"
    assert "raise ValueError" in failed["error"]["traceback"]
    assert log_lines(app, failed["id"])[-1] == "from a library logger"


def test_a_node_default_of_process_isolates_tasks_that_do_not_say(
        iso_app: Callable[..., Flask]) -> None:
    app = iso_app(ISOLATION="process")
    run = wait_final(app, submit(app, "testing.whereami"))
    assert run["state"] == "succeeded"
    assert run["result"] != os.getpid()
    # A task that says isolation="thread" stays in the node's process.
    run = wait_final(app, submit(app, "testing.whereami_thread"))
    assert run["result"] == os.getpid()


@pytest.mark.parametrize("how", ["cancel", "timeout"])
def test_cancel_and_timeout_stop_a_task_that_never_looks_at_its_context(
        iso_app: Callable[..., Flask], how: str) -> None:
    app = iso_app()
    helper = helper_pid(app)
    task = "testing.proc_sleep" if how == "cancel" else "testing.proc_sleep_timeout"
    run_id = submit(app, task, seconds=30)
    wait_for(lambda: view(app, run_id)["state"] == "running", message="running")
    child = wait_for(lambda: children(helper), message="the run's child process")[0][0]
    if how == "cancel":
        asked = time.monotonic()
        assert app.test_client().post(f"/api/runs/{run_id}/cancel").status_code == 202
    else:
        asked = time.monotonic()  # the timeout (1 s) is already running from its start
    run = wait_final(app, run_id)
    took = time.monotonic() - asked
    limit = GRACE + 1 + (1.0 if how == "timeout" else 0)
    assert took <= limit, f"stopped after {took:.2f} s, more than {limit} s"
    if how == "cancel":
        assert run["state"] == "cancelled"
    else:
        assert run["state"] == "failed" and run["error"]["type"] == "Timeout"
        assert "SIGTERM" in run["error"]["message"]
    assert not Path(f"/proc/{child}").exists(), "the child is gone, reaped (no zombie)"
    assert not children(helper)


def test_a_cancel_reaches_a_task_that_looks_first(iso_app: Callable[..., Flask]) -> None:
    app = iso_app(KILL_GRACE_SECONDS=10.0)
    helper_pid(app)  # started, so the time below is the cancel's alone
    run_id = submit(app, "testing.proc_sleep_polite", seconds=30)
    wait_for(lambda: view(app, run_id)["state"] == "running", message="running")
    asked = time.monotonic()
    app.test_client().post(f"/api/runs/{run_id}/cancel")
    assert wait_final(app, run_id)["state"] == "cancelled"
    assert time.monotonic() - asked < 2, "ctx.sleep woke at the cancel, long before the grace"


def test_a_run_over_its_memory_limit_fails_with_memory_limit(
        iso_app: Callable[..., Flask]) -> None:
    app = iso_app()
    run = wait_final(app, submit(app, "testing.proc_memory", mb=400))
    assert run["state"] == "failed"
    assert run["error"]["type"] == "MemoryLimit"
    assert "memory_limit_mb of 150" in run["error"]["message"]
    crossed = [float(line.split()[1]) for line in log_lines(app, run["id"])
               if line.startswith("crossed ")]
    assert crossed, "the task saw itself cross the limit before it was stopped"
    finished = datetime.fromisoformat(run["finished_at"]).timestamp()
    assert finished - crossed[0] <= 1.0, f"recorded {finished - crossed[0]:.2f} s after crossing"
    assert wait_final(app, submit(app, "testing.proc_report"))["state"] == "succeeded"


@pytest.mark.parametrize(("how", "says"), [("abort", "signal SIGABRT (6)"),
                                           ("null", "signal SIGSEGV (11)"),
                                           ("exit", "exited with code 3")])
def test_a_crashing_child_fails_its_attempt_and_the_next_run_succeeds(
        iso_app: Callable[..., Flask], how: str, says: str) -> None:
    app = iso_app()
    run = wait_final(app, submit(app, "testing.proc_crash", how=how))
    assert run["state"] == "failed", run
    assert run["attempt"] == 2, "a crash is a failed attempt, retried while attempts remain"
    assert run["error"]["type"] == "WorkerCrashed"
    assert says in run["error"]["message"]
    retried = wait_final(app, submit(app, "testing.proc_crash", how=how, attempts_crashing=1))
    assert retried["state"] == "succeeded" and retried["result"] == "survived attempt 2"
    assert wait_final(app, submit(app, "testing.proc_crash"))["state"] == "succeeded"
    helper = helper_pid(app)
    wait_for(lambda: not children(helper), timeout=2, message="every child reaped")


def test_isolation_options_and_settings_are_checked() -> None:
    scheduler = Scheduler()
    with pytest.raises(ValueError, match="isolation must be 'thread' or 'process'"):
        scheduler.task(name="bad.isolation", isolation="fork")(lambda: None)
    with pytest.raises(ValueError, match="memory_limit_mb needs isolation='process'"):
        scheduler.task(name="bad.limit", memory_limit_mb=100)(lambda: None)
    with pytest.raises(ValueError, match="memory_limit_mb must be a positive"):
        scheduler.task(name="bad.limit2", isolation="process", memory_limit_mb=0)(lambda: None)


@pytest.mark.parametrize(("key", "value"), [("SCHEDULER_ISOLATION", "fork"),
                                            ("SCHEDULER_KILL_GRACE_SECONDS", 0)])
def test_bad_isolation_settings_stop_start_up(tmp_path: Path, key: str, value: Any) -> None:
    app = Flask("host", instance_path=str(tmp_path))
    app.config[key] = value
    with pytest.raises(ConfigError, match=key):
        Scheduler(app)


def test_under_gunicorn_a_crash_or_a_hard_cancel_never_hurts_the_worker(
        tmp_path: Path) -> None:
    with Servers(tmp_path) as factory:
        server = factory.gunicorn({"KILL_GRACE_SECONDS": GRACE})
        server.wait_ready()
        worker = [n for n in server.get_json("/api/nodes")["items"] if n["alive"]][0]["pid"]

        def run(task: str, **kwargs: Any) -> int:
            response = server.post("/api/runs", json={"task": task, "kwargs": kwargs})
            assert response.status_code == 202, response.text
            return int(response.json()["id"])

        done = server.wait_run(run("testing.proc_report"), *FINAL, timeout=60)
        assert done["state"] == "succeeded", done
        assert done["result"]["pid"] not in (worker, server.pid)
        crashed = server.wait_run(run("testing.proc_crash", how="abort"), *FINAL)
        assert crashed["error"]["type"] == "WorkerCrashed"
        assert "SIGABRT" in crashed["error"]["message"]
        sleeping = run("testing.proc_sleep", seconds=30)
        server.wait_run(sleeping, "running")
        asked = time.monotonic()
        assert server.post(f"/api/runs/{sleeping}/cancel").status_code == 202
        assert server.wait_run(sleeping, *FINAL)["state"] == "cancelled"
        assert time.monotonic() - asked <= GRACE + 1
        assert server.wait_run(run("testing.proc_crash"), *FINAL)["state"] == "succeeded"
        alive = [n for n in server.get_json("/api/nodes")["items"] if n["alive"]]
        assert [n["pid"] for n in alive] == [worker], "the same worker serves and runs"
        helper = [pid for pid, _ in children(worker)]
        assert len(helper) == 1, "one helper per node"
        wait_for(lambda: not children(helper[0]), timeout=2,
                 message="no child left, no zombie")


def test_a_thread_run_that_ignores_its_timeout_or_a_cancel_says_so_on_its_view(
        make_app: Callable[..., Flask]) -> None:
    app = make_app()
    run_id = submit(app, "testing.thread_sleep", seconds=3)
    running = wait_for(lambda: (v := view(app, run_id))["state"] == "running" and v,
                       message="running")
    started = datetime.fromisoformat(running["started_at"])
    if (datetime.now(started.tzinfo) - started).total_seconds() < 0.4:  # a busy machine may
        assert running["overdue"] is None, "not yet past its timeout"  # be late to look
    note = wait_for(lambda: view(app, run_id)["overdue"], message="the overdue note")
    assert note.startswith("Still running")
    assert "past its 0.5 s timeout" in note
    assert "runs on a thread, which cannot be stopped" in note
    page = app.test_client().get(f"/runs/{run_id}").get_data(as_text=True)
    assert "past its 0.5 s timeout" in page, "the dashboard's run page shows it too"
    final = wait_final(app, run_id)
    assert final["overdue"] is None
    # It ended on its own: its work is done, so it succeeded, and its log says what happened.
    assert final["state"] == "succeeded"
    last = log_lines(app, run_id)[-1]
    assert last.startswith("its timeout of 0.5 s passed, but the task did not look at its "
                           "context and ended on its own"), last
    # A cancel that the task ignores reads the same way, without a timeout to be past.
    cancelled = submit(app, "testing.thread_sleep_untimed", seconds=2)
    wait_for(lambda: view(app, cancelled)["state"] == "running", message="running")
    app.test_client().post(f"/api/runs/{cancelled}/cancel")
    note = view(app, cancelled)["overdue"]
    assert note.startswith("Still running after it was asked to cancel: it runs on a thread")
    assert wait_final(app, cancelled)["state"] == "succeeded"
    assert log_lines(app, cancelled)[-1].startswith(
        "it was asked to cancel, but the task did not look at its context")


def test_a_process_run_past_its_timeout_says_it_will_be_stopped(
        iso_app: Callable[..., Flask]) -> None:
    app = iso_app(KILL_GRACE_SECONDS=3.0)
    helper_pid(app)
    run_id = submit(app, "testing.proc_sleep_timeout", seconds=30)
    note = wait_for(lambda: view(app, run_id)["overdue"], message="the overdue note")
    assert "past its 1 s timeout: its process is stopped" in note
    assert wait_final(app, run_id)["error"]["type"] == "Timeout"


def test_the_helper_ends_with_its_node_and_a_restarted_node_starts_another(
        iso_app: Callable[..., Flask]) -> None:
    from scheduler_app import start_scheduler, stop_scheduler

    app = iso_app()
    first = helper_pid(app)
    assert wait_final(app, submit(app, "testing.proc_report"))["state"] == "succeeded"
    stop_scheduler(app)
    wait_for(lambda: not Path(f"/proc/{first}").exists(), message="the helper to exit")
    assert first not in [pid for pid, _ in children(os.getpid())]
    start_scheduler(app)
    run = wait_final(app, submit(app, "testing.proc_report"))
    assert run["state"] == "succeeded"
    assert helper_pid(app) != first


def test_an_app_the_helper_cannot_build_fails_the_run_and_says_why(
        make_app: Callable[..., Flask]) -> None:
    app = make_app(PROCESS_APP="no_such_module_here:create_app()")
    run = wait_final(app, submit(app, "testing.proc_report"))
    assert run["state"] == "failed"
    assert run["error"]["type"] == "IsolationUnavailable"
    assert "cannot build the app from 'no_such_module_here:create_app()'" in \
        run["error"]["message"]
    # Thread runs on the same node are unaffected.
    assert wait_final(app, submit(app, "testing.whereami_thread"))["state"] == "succeeded"


def test_a_helper_that_failed_to_start_is_tried_again_only_after_a_growing_delay(
        make_app: Callable[..., Flask], monkeypatch: pytest.MonkeyPatch) -> None:
    """Each start of a helper builds the host app: when that fails, the runs that follow fail
    at once with the same error until the delay is over, instead of each paying for (and
    logging) another failed start."""
    monkeypatch.setattr(isolation, "HELPER_RETRY_FIRST", 2.0)
    starts: list[float] = []
    real_popen = subprocess.Popen

    def counting_popen(*args: Any, **kwargs: Any) -> Any:
        starts.append(time.monotonic())
        return real_popen(*args, **kwargs)

    monkeypatch.setattr(isolation.subprocess, "Popen", counting_popen)
    app = make_app(PROCESS_APP="no_such_module_here:create_app()")
    first = wait_final(app, submit(app, "testing.proc_report"))
    assert first["error"]["type"] == "IsolationUnavailable"
    assert len(starts) == 1
    second = wait_final(app, submit(app, "testing.proc_report"))
    assert len(starts) == 1, "a second helper start within the delay"
    assert second["error"]["type"] == "IsolationUnavailable"
    assert "cannot build the app from 'no_such_module_here:create_app()'" in \
        second["error"]["message"]
    assert "not tried again for another" in second["error"]["message"]

    def a_run_starts_a_helper() -> bool:
        wait_final(app, submit(app, "testing.proc_report"))
        return len(starts) > 1

    wait_for(a_run_starts_a_helper, timeout=20, message="a helper start after the delay")
    assert starts[1] - starts[0] >= 2.0


def test_on_postgresql_the_child_inherits_no_pooled_connection(
        pg_url: str, make_app: Callable[..., Flask]) -> None:
    app = make_app(DATABASE_URL=pg_url, PROCESS_APP=helper_app_ref(pg_url))
    run = wait_final(app, submit(app, "testing.proc_report"))
    assert run["state"] == "succeeded", run
    assert run["result"]["database_url"] == pg_url
    assert run["result"]["engines"] >= 1
    assert run["result"]["pooled_connections"] == 0
    assert log_lines(app, run["id"])[:1] == ["ctx line 0"]


SCRIPT = '''
import os, sys
from flask import Flask
from scheduler_app import RunContext, Scheduler

app = Flask(__name__)
app.config["SCHEDULER_DATABASE_URL"] = os.environ["SCRIPT_DB_URL"]
scheduler = Scheduler(app)


@scheduler.task(name="script.where", isolation="process")  # a name the same in both
def where(ctx: RunContext) -> list:
    return [os.getpid(), __name__]


if __name__ == "__main__":
    scheduler.start()
    with app.app_context():
        run = where.enqueue().wait(timeout=60)
    scheduler.shutdown()
    print("RESULT", run.state, run.result, run.error, os.getpid(), flush=True)
'''


def test_an_app_made_in_the_script_python_runs_is_found_by_the_helper(
        tmp_path: Path, db_url: str) -> None:
    import subprocess
    import sys

    script = tmp_path / "myscript.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "SCRIPT_DB_URL": db_url,
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    env.pop("FLASK_APP", None)
    done = subprocess.run([sys.executable, str(script)], env=env, capture_output=True,
                          text=True, timeout=120, cwd=tmp_path)
    line = [ln for ln in done.stdout.splitlines() if ln.startswith("RESULT")]
    assert line, done.stdout + done.stderr
    _, state, *rest = line[0].split(" ", 2)
    assert state == "succeeded", line[0] + done.stderr[-2000:]
    assert "'myscript'" in line[0], "the helper imported the script as a module"


def test_a_node_stopping_hands_back_a_process_run_and_leaves_no_process(
        iso_app: Callable[..., Flask]) -> None:
    from scheduler_app import stop_scheduler

    app = iso_app(SHUTDOWN_GRACE_SECONDS=3.0)
    helper = helper_pid(app)
    run_id = submit(app, "testing.proc_sleep", seconds=30)
    wait_for(lambda: view(app, run_id)["state"] == "running", message="running")
    child = wait_for(lambda: children(helper), message="the run's child process")[0][0]
    stopped = time.monotonic()
    stop_scheduler(app)
    assert time.monotonic() - stopped <= 3.0 + GRACE + 1
    run = view(app, run_id)
    assert run["state"] == "queued", "handed back for another node (or the next start)"
    assert run["attempt"] == 1 and run["error"] is None, "a shutdown is not the task's failure"
    assert not Path(f"/proc/{child}").exists() and not Path(f"/proc/{helper}").exists()


def test_a_process_run_works_in_a_process_with_over_1024_descriptors_open(
        iso_app: Callable[..., Flask]) -> None:
    """A busy web worker can hold more than 1,024 descriptors (``select`` refuses those
    numbers); the node's sockets to its helper and its runs then get such numbers too."""
    held = []
    try:
        while not held or held[-1] < 1100:
            held.append(os.open(os.devnull, os.O_RDONLY))
        app = iso_app(ISOLATION="process")
        run = wait_final(app, submit(app, "testing.whereami"))
        assert run["state"] == "succeeded", run
        assert run["result"] != os.getpid()
    finally:
        for fd in held:
            os.close(fd)
