"""What an operator sees when the service cannot start as configured: a schema that is not
there yet (``SCHEMA_AUTO_UPGRADE=false``), or a wrong setting. One clear line, never a dead
worker or a traceback."""

from __future__ import annotations

import sqlite3
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from .servers import BIN, REPO, Servers, server_env

UPGRADE_HINT = "run 'flask scheduler db upgrade'"


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[Servers]:
    with Servers(tmp_path) as group:
        yield group


def flask(db_path: Path, *args: str, **settings: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "flask"), "--app", "wsgi", *args], cwd=REPO,
                          env=server_env(db_path, settings), capture_output=True, text=True,
                          timeout=60)


def tables(db_path: Path) -> set[str]:
    if not db_path.exists():
        return set()
    with sqlite3.connect(db_path) as conn:
        return {row[0] for row in conn.execute("SELECT name FROM sqlite_master "
                                               "WHERE type = 'table'")}


def test_workers_stay_up_and_say_the_schema_is_missing(servers: Servers) -> None:
    server = servers.gunicorn({"SCHEMA_AUTO_UPGRADE": False, "GUNICORN_WORKERS": "2"})
    ready = server.get("/readyz")
    assert ready.status_code == 503
    assert UPGRADE_HINT in ready.json()["reason"]
    assert server.get("/healthz").status_code == 200
    log = server.log_tail(200)
    assert "Worker failed to boot" not in log and "Traceback" not in log
    assert "the scheduler is not started" in log and UPGRADE_HINT in log
    assert not {t for t in tables(servers.db_path) if t.startswith("scheduler_")}


def test_cli_commands_name_the_upgrade_and_db_current_changes_nothing(tmp_path: Path) -> None:
    db_path = tmp_path / "scheduler.sqlite3"
    commands = (["jobs", "list"], ["runs", "show", "1"], ["tasks", "list"],
                ["scheduler", "nodes"], ["scheduler", "jobs", "list"], ["db", "current"])
    # Side by side: each is a process of its own that must change nothing, checked below.
    with ThreadPoolExecutor(len(commands)) as pool:
        *refused, current = pool.map(
            lambda command: flask(db_path, *command, SCHEMA_AUTO_UPGRADE=False), commands)
    for command, done in zip(commands, refused, strict=False):
        assert done.returncode == 1, (command, done.stdout, done.stderr)
        assert "Error: the database schema is at nothing" in done.stderr
        assert UPGRADE_HINT in done.stderr and "Traceback" not in done.stderr
    assert current.returncode == 0 and "never migrated" in current.stdout
    assert not {t for t in tables(db_path) if t.startswith("scheduler_")}
    upgraded = flask(db_path, "scheduler", "db", "upgrade", SCHEMA_AUTO_UPGRADE=False)
    assert upgraded.returncode == 0, upgraded.stderr
    listed = flask(db_path, "jobs", "list", SCHEMA_AUTO_UPGRADE=False)
    assert listed.returncode == 0, listed.stderr


@pytest.mark.parametrize("setting, value, message", [
    ("WORKER_THREADS", "many", "SCHEDULER_WORKER_THREADS must be a valid integer, got 'many'"),
    ("SCHEDULER_ROLE", "boss", "SCHEDULER_ROLE"),
    ("LOG_FORMAT", "xml", "LOG_FORMAT must be one of text, json, got 'xml'"),
])
def test_a_bad_setting_is_one_line(tmp_path: Path, setting: str, value: str,
                                   message: str) -> None:
    done = flask(tmp_path / "scheduler.sqlite3", "jobs", "list", **{setting: value})
    assert done.returncode == 3
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("scheduler_app: configuration error: ")
    assert message in lines[0] and "Traceback" not in done.stderr


def test_gunicorn_stops_on_a_bad_setting_with_one_line_per_worker(servers: Servers) -> None:
    """Every worker fails to boot at once: the master still exits 3 with no traceback
    (gunicorn's halt used to die on a second worker's boot failure, exit 1; four workers make
    that race likely)."""
    server = servers.gunicorn({"WORKER_THREADS": "many", "GUNICORN_WORKERS": "4"}, wait=False)
    server.proc.wait(timeout=30)
    log = server.log_tail(200)
    assert server.proc.returncode == 3, log
    assert "Worker failed to boot" in log and "Traceback" not in log
    assert "scheduler_app: configuration error: SCHEDULER_WORKER_THREADS must be a valid " \
           "integer, got 'many'" in log
