"""Hand-off latency (issue 12): ``POST /api/runs`` on a web node → the task's first line on a
worker node, with wake-ups on and off, beside run-now in-process, all in the same run.

Cases, each a fresh deployment started here on loopback, with this service's defaults
(``DISPATCH_POLL_SECONDS`` 1, gunicorn.conf.py's 2 workers):

- ``sqlite_split``: gunicorn with ``FLASK_SCHEDULER_ROLE=web`` plus one
  ``flask scheduler worker`` process, on one SQLite file (one host): what ``make run-split``
  starts. ``sqlite_split_poll``: the same with ``FLASK_WAKEUPS=false`` (the poll only: how
  every hand-off worked before).
- ``pg_split``: three hosts (three processes) on one PostgreSQL database: a gunicorn web node
  with one worker and two ``flask scheduler worker`` processes. ``pg_split_poll``: the same
  with ``FLASK_WAKEUPS=false``.
- ``in_process``: the default deployment (role ``all``), where a run-now request starts on the
  node that received it.

Requests are sequential (each after the last task started), so a worker's dispatcher is idle,
waiting on its poll, when each one arrives; only a wake-up explains a start in milliseconds.
The task is ``bench.noop``, whose first line sends its start time over UDP to the client.

    .venv/bin/python -m bench.handoff            # 500 runs per case (120 with the poll)
    .venv/bin/python -m bench.handoff --quick    # 100 (20), writes to bench/work/
    .venv/bin/python -m bench.handoff --cases pg_split sqlite_split   # only these cases
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import requests

from bench.cluster import scratch_database
from bench.run import (
    BIN,
    ROOT,
    Probe,
    machine,
    measured_on,
    percentile,
    quick_output,
    replace_readme_section,
    results_file,
)

TASK_MODULES = json.dumps(["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance",
                           "bench.tasks"])
WARM_UP = 20
LABELS = {
    "in_process": "run-now in-process (role all, SQLite, 2 workers)",
    "sqlite_split": "web node → worker node, SQLite (one host), wake-ups",
    "sqlite_split_poll": "web node → worker node, SQLite, poll only (`WAKEUPS=false`)",
    "pg_split": "web node → 2 worker nodes, PostgreSQL (3 hosts), wake-ups",
    "pg_split_poll": "web node → 2 worker nodes, PostgreSQL, poll only (`WAKEUPS=false`)",
}


class Deployment:
    """A gunicorn web (or ``all``) node and ``workers`` worker processes on one database."""

    def __init__(self, url: str, *, role: str, workers: int, gunicorn_workers: int,
                 wakeups: bool) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "GUNICORN_"))}
        env.update(PYTHONPATH=str(ROOT), GUNICORN_CMD_ARGS="--no-control-socket",
                   GUNICORN_ACCESSLOG="", GUNICORN_WORKERS=str(gunicorn_workers),
                   FLASK_DATABASE_URL=url, FLASK_TASK_MODULES=TASK_MODULES,
                   FLASK_PRUNE_RUNS_CRON="", FLASK_LOG_LEVEL="WARNING",
                   FLASK_MAX_QUEUED_RUNS="1000000", FLASK_WAKEUPS=json.dumps(wakeups))
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tempfile.TemporaryFile()
        self.procs = [subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind",
             f"127.0.0.1:{self.port}", "wsgi:app"], cwd=ROOT,
            env={**env, "FLASK_SCHEDULER_ROLE": role}, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)]
        self._wait(lambda: requests.get(self.url + "/readyz", timeout=1).ok, "the web node")
        for _ in range(workers):
            self.procs.append(subprocess.Popen(
                [str(BIN / "flask"), "--app", "wsgi", "scheduler", "worker"], cwd=ROOT, env=env,
                stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True))
        self._wait(lambda: sum(n["alive"] and n["role"] == "worker" for n in requests.get(
            self.url + "/api/nodes", timeout=5).json()["items"]) >= workers, "the workers")

    def _wait(self, ready: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if ready():
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        self.log.seek(0)
        raise RuntimeError(f"{what} did not start:\n{self.log.read().decode()[-3000:]}")

    def stop(self) -> None:
        for proc in self.procs:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def latencies(deployment: Deployment, probe: Probe, count: int, tag: str) -> list[float]:
    """Milliseconds from each request sent to its task's first line, requests sequential."""
    session = requests.Session()
    found = []
    for i in range(count):
        key = f"{tag}-{i}"
        sent = time.time()
        response = session.post(deployment.url + "/api/runs",
                                json={"task": "bench.noop", "kwargs": {"key": key,
                                                                       "port": probe.port}})
        if response.status_code != 202:
            raise RuntimeError(f"{tag}: {response.status_code} {response.text[:200]}")
        if not probe.wait([key], 30):
            raise RuntimeError(f"{tag}: run {key} never started")
        found.append((probe.seen[key][0] - sent) * 1000)
    return found


@contextmanager
def database(kind: str, tmp: Path) -> Iterator[str]:
    """A fresh database of ``kind`` for one case, dropped (PostgreSQL) at the end."""
    if kind == "sqlite":
        yield f"sqlite:///{tmp / f'{uuid.uuid4().hex[:8]}.sqlite3'}"
        return
    with scratch_database("bench_handoff") as url:
        yield url


def run_case(name: str, probe: Probe, tmp: Path, count: int) -> dict[str, Any]:
    kind = "pg" if name.startswith("pg") else "sqlite"
    split = name != "in_process"
    with database(kind, tmp) as url:
        deployment = Deployment(
            url, role="web" if split else "all", workers=(2 if kind == "pg" else 1) * split,
            gunicorn_workers=1 if kind == "pg" else 2, wakeups=not name.endswith("_poll"))
        try:
            latencies(deployment, probe, WARM_UP, f"{name}-w")
            found = latencies(deployment, probe, count, name)
        finally:
            deployment.stop()
    return {"runs": count, "p50_ms": percentile(found, 0.5), "p90_ms": percentile(found, 0.9),
            "p99_ms": percentile(found, 0.99), "max_ms": max(found),
            "load_avg_1m": os.getloadavg()[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100 runs per case (20 polled)")
    parser.add_argument("--cases", nargs="+", choices=list(LABELS), default=list(LABELS),
                        metavar="CASE", help=f"only these cases ({', '.join(LABELS)}); "
                        "the others keep their last figures in results.json")
    args = parser.parse_args()
    quick_output(args.quick)
    fast, polled = (100, 20) if args.quick else (500, 120)
    probe = Probe()
    data = json.loads(results_file().read_text()) if results_file().exists() else {}
    cases: dict[str, Any] = dict(data.get("handoff", {}).get("cases", {}))
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.cases:
            cases[name] = run_case(name, probe, Path(tmp),
                                   polled if name.endswith("_poll") else fast)
            print(name, json.dumps(cases[name]), flush=True)
    result = {"machine": machine(), "quick": args.quick,
              "cases": {name: cases[name] for name in LABELS if name in cases}}
    data["handoff"] = result
    results_file().write_text(json.dumps(data, indent=2) + "\n")
    write_section(result)


def write_section(result: dict[str, Any]) -> None:
    cases = result["cases"]
    rows = "\n".join(
        f"| {LABELS[name]} | {c['p50_ms']:.1f} ms | {c['p90_ms']:.1f} ms | {c['p99_ms']:.1f} ms "
        f"| {c['runs']} | {c['load_avg_1m']:.1f} |" for name, c in cases.items())
    verdicts = []
    for name in ("sqlite_split", "pg_split"):
        if name not in cases:
            continue
        c = cases[name]
        ok = c["p50_ms"] <= 10 and c["p99_ms"] <= 50
        verdicts.append(f"{LABELS[name].split(',')[1].strip()}: p50 {c['p50_ms']:.1f} ms, p99 "
                        f"{c['p99_ms']:.1f} ms ({'meets' if ok else 'misses'} p50 ≤ 10 ms, "
                        "p99 ≤ 50 ms)")
    text = (f"{measured_on(result['machine'])}"
            f"{' (--quick)' if result['quick'] else ''}. Sequential `POST /api/runs` of "
            "`bench.noop`, request sent → task's first line, after 20 warm-up runs; "
            "`DISPATCH_POLL_SECONDS` at its default of 1 s. The load average (1 min, 2 cores) "
            "is the machine's at each case's end: other work shared it.\n\n"
            "| deployment | p50 | p90 | p99 | runs | load average |\n"
            "| --- | --- | --- | --- | --- | --- |\n"
            f"{rows}\n\nTarget (issue 12): {'; '.join(verdicts)}.\n")
    replace_readme_section("handoff", text)


if __name__ == "__main__":
    main()
