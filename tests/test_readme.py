"""The README's examples, run: its tour and command-line sections are parsed, each ``$ command``
is run as written (``localhost:8000`` becomes the test server's port) against a real gunicorn
with ``make run``'s two workers and the standalone service's tasks, and each answer's shape is
compared with the output the README shows under it: status line, JSON keys, states and error
codes, table headers and rows (times, node names and durations aside). So the README cannot
drift from the service. Also: ``GET /``'s list of endpoints names every route of the app.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers import REPO, Server, Servers, server_env

README = REPO / "README.md"
SECTIONS = [("## A tour in five requests", "## Writing a task"),
            ("## The command line", "## Configuration")]
STANDALONE_TASKS = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance"]
# JSON values compared literally: the rest (ids, times, node names, durations) vary by run.
COMPARED_VALUES = ("state", "code", "type", "task", "cancel_requested", "level", "service")
PAIR = re.compile('"(' + "|".join(COMPARED_VALUES) + r')":\s*("[^"]*"|true|false|null)')
KEY = re.compile(r'"([A-Za-z_]+)":')
VARYING = [re.compile(r"\d{4}-\d\d-\d\dT[\d:.]+(?:Z|[+-]\d\d:\d\d)"),  # times
           re.compile(r"[\w.-]+:\d+:[0-9a-f]{6}"),                        # node ids
           re.compile(r"\b\d+\.\d+\b"),                                    # durations
           re.compile(r"\b\d+%")]                                           # progress


@dataclass
class Example:
    command: str
    expected: str

    @property
    def is_read(self) -> bool:
        """A read-only command (a GET or a listing), safe to repeat until it shows what the
        README shows: a reader types the next command seconds later, a test does not."""
        return ("-X" not in self.command and " -d " not in self.command
                and " add " not in self.command and " run " not in self.command)


def examples() -> list[Example]:
    """Every ``$ command`` in the README's tour and command-line sections, in order, with the
    lines shown under it (a command continues while its quotes are open or a line ends in
    a backslash)."""
    text = README.read_text()
    found: list[Example] = []
    for start, end in SECTIONS:
        section = text[text.index(start):text.index(end)]
        for block in re.findall(r"```sh\n(.*?)```", section, re.S):
            lines = block.splitlines()
            i = 0
            while i < len(lines):
                if not lines[i].startswith("$ "):
                    i += 1
                    continue
                command = lines[i][2:]
                i += 1
                while command.endswith("\\") or not _complete(command):
                    command += "\n" + lines[i]
                    i += 1
                output = []
                while i < len(lines) and not lines[i].startswith("$ "):
                    output.append(lines[i])
                    i += 1
                found.append(Example(command, "\n".join(output)))
    return found


def _complete(command: str) -> bool:
    try:
        shlex.split(command, comments=True)
    except ValueError:  # "No closing quotation"
        return False
    return True


def test_the_readme_has_the_examples_this_test_relies_on() -> None:
    commands = [e.command for e in examples()]
    assert len(commands) >= 15, commands
    for needle in ("POST localhost:8000/api/runs", "api/runs/1/cancel", "api/jobs",
                   "tasks list", "jobs list", "runs list", "scheduler nodes"):
        assert any(needle in c for c in commands), needle
    assert all(e.expected.strip() for e in examples()), "every example shows its output"


# -- comparing shapes ----------------------------------------------------------------------------

def shape_problems(expected: str, actual: str) -> list[str]:
    """What in ``actual`` does not have the shape of ``expected`` (empty: it does)."""
    problems = []
    status = re.search(r"^HTTP/1\.1 (\d+)", expected, re.M)
    if status:
        got = re.search(r"^HTTP/1\.1 (\d+)", actual, re.M)
        if not got or got.group(1) != status.group(1):
            problems.append(f"status {got and got.group(1)}, README shows {status.group(1)}")
        if "Location:" in expected and "Location:" not in actual:
            problems.append("no Location header")
    missing = set(KEY.findall(expected)) - set(KEY.findall(actual))
    if missing:
        problems.append(f"keys missing: {sorted(missing)}")
    pairs = Counter(PAIR.findall(actual))
    pairs.subtract(Counter(PAIR.findall(expected)))
    wrong = [pair for pair, count in pairs.items() if count < 0]
    if wrong:
        problems.append(f"values the README shows but the answer lacks: {wrong}")
    header = expected.splitlines()[0] if expected else ""
    if re.fullmatch(r"[A-Z][A-Z ]+", header.strip()):
        rows = table(expected)
        got_rows = table(actual)
        if not got_rows or got_rows[0] != rows[0]:
            problems.append(f"header {got_rows[:1]}, README shows {rows[0]}")
        elif sorted(got_rows[1:]) != sorted(rows[1:]):
            problems.append(f"rows {got_rows[1:]}, README shows {rows[1:]}")
    return problems


def table(text: str) -> list[list[str]]:
    """A CLI table's rows, cells split on two or more spaces, varying values blanked, and
    case-folded (descriptions' capitals are not the point)."""
    rows = []
    for line in text.strip().splitlines():
        for pattern in VARYING:
            line = pattern.sub("~", line)
        rows.append([cell.casefold() for cell in re.split(r"\s{2,}", line.strip())])
    return rows


def run_example(example: Example, server: Server) -> subprocess.CompletedProcess[str]:
    command = example.command.replace("localhost:8000", f"127.0.0.1:{server.port}")
    env = server_env(server.db_path, {"TASK_MODULES": STANDALONE_TASKS})
    return subprocess.run(["bash", "-c", command], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=60)


@pytest.fixture
def server(tmp_path: Path):
    with Servers(tmp_path) as servers:
        # As `make run` serves it: two workers, the standalone tasks only.
        yield servers.gunicorn({"TASK_MODULES": STANDALONE_TASKS, "GUNICORN_WORKERS": "2"})


@pytest.mark.timeout(90)
def test_the_readme_examples_answer_as_shown(server: Server) -> None:
    server.wait_ready()
    # Both workers' nodes up, as `scheduler nodes` shows two.
    server.wait_for(lambda: len(server.get_json("/api/nodes")["items"]) == 2, message="two nodes")
    for example in examples():
        deadline = time.monotonic() + (10 if example.is_read else 0)
        while True:
            done = run_example(example, server)
            problems = shape_problems(example.expected, done.stdout)
            if done.returncode != 0:
                problems.insert(0, f"exit status {done.returncode}: {done.stderr[-2000:]}")
            if not problems or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert not problems, (f"$ {example.command}\n{done.stdout}\nREADME shows:\n"
                              f"{example.expected}\n" + "\n".join(problems))


def test_shape_comparison_catches_a_wrong_state() -> None:
    shown = '{"id":1,"state":"queued",…}'
    assert shape_problems(shown, '{"id":1,"state":"queued","attempt":1}') == []
    assert shape_problems(shown, '{"id":1,"state":"running"}')
    assert shape_problems('HTTP/1.1 202 ACCEPTED\n{"id":1}', 'HTTP/1.1 201 CREATED\n{"id":1}')
    assert shape_problems('{"error":{"code":"x"}}', '{"id":1}')


# -- GET / lists every route --------------------------------------------------------------------

def test_the_index_lists_every_route_of_the_standalone_app(make_app) -> None:
    from scheduler_app.health import ENDPOINTS

    app = make_app(start=False, PRUNE_RUNS_CRON="")
    listed = set()
    for methods, path, _ in ENDPOINTS:
        head, _, last = path.rpartition("/")
        for leaf in last.split("|"):
            for method in methods.split("|"):
                listed.add((method, f"{head}/{leaf}" if head or leaf else "/"))
    missing = []
    for rule in app.url_map.iter_rules():
        if rule.endpoint.endswith("static") or "<path:" in rule.rule:
            continue  # files: the stylesheet, scripts, Swagger UI's assets
        path = re.sub(r"<[^>]+>", "<id>", rule.rule)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            if (method, path) not in listed:
                missing.append(f"{method} {path}")
    assert not missing, f"routes missing from scheduler_app.health.ENDPOINTS: {missing}"
    answer = app.test_client().get("/", headers={"Accept": "application/json"}).json
    assert {"method": "GET", "path": "/metrics"} in [
        {k: e[k] for k in ("method", "path")} for e in answer["endpoints"]]


# -- FLASK_LOG_FORMAT=json covers gunicorn's lines too --------------------------------------------

@pytest.mark.timeout(60)
def test_json_log_format_makes_every_line_of_gunicorn_json(tmp_path: Path) -> None:
    with Servers(tmp_path) as servers:
        server = servers.gunicorn({"LOG_FORMAT": "json", "GUNICORN_ACCESSLOG": "-"})
        assert server.get("/api/runs/424242").status_code == 404
        server.stop()
        lines = [line for line in server.log_path.read_text().splitlines() if line.strip()]
    entries = [json.loads(line) for line in lines]  # each line is one JSON object
    loggers = {entry["logger"] for entry in entries}
    assert {"gunicorn.error", "gunicorn.access", "scheduler_app.scheduler.node"} <= loggers
    access = [e for e in entries if e["logger"] == "gunicorn.access"]
    assert any('"GET /api/runs/424242 HTTP/1.1" 404' in e["message"] for e in access)
    assert all({"time", "level", "message", "process"} <= set(e) for e in entries)


def test_the_readme_names_the_real_schema_head() -> None:
    from scheduler_app.migrations import head

    text = README.read_text()
    section = text[text.index("### Upgrading the schema"):text.index("### Prometheus")]
    current = head()
    assert f"behind head {current};" in section and f"{current} (head): upgraded" in section \
        and f"The head is `{current}` today" in section, \
        f"README's 'Upgrading the schema' must show the real head, {current}"
