"""Recording a run from Python: ``task.enqueue()`` in a host app's own process, beside the HTTP
path and a bare thread, measured in the same run.

Three ways to start the same no-op task, whose first line sends its start time over UDP
(``bench/systems/probe.py``, the body every system of ``bench.run`` runs), one call at a time:

- ``python``: a host app of its own in this process (Flask plus ``Scheduler`` on a SQLite file,
  4 run threads, its node started here, so runs execute here too); ``task.enqueue(key=...,
  port=...)`` inside the app's context, as the host's own view would call it;
- ``http``: ``POST /api/runs`` to the standalone service (``wsgi:app`` with gunicorn.conf.py,
  1 worker, 4 run threads, a SQLite file), started by ``bench.run.Server``, from a
  ``requests.Session`` in this process;
- ``thread``: ``threading.Thread(target=report, ...).start()`` in this process (the baseline:
  nothing recorded, bounded or retried).

For each call: its latency (the call until it returns; request sent until response read for
HTTP) and the dispatch latency (just before the call until the task's first line). CPU per run:
this process's (``time.process_time``: every thread, so the call, the run thread, the run's
writes and the probe's listener) for ``python`` and ``thread``; for ``http`` the gunicorn
master and worker's (``/proc``, as ``bench.run`` measures it) and, apart, this client's. Every
round runs each system once, the order rotated from round to round; p50/p99 are per round and
the figures are medians over rounds. After each round of ``python`` and ``http`` every run is
checked in the database: recorded once, succeeded.

    .venv/bin/python -m bench.enqueue            # 5 rounds of 500 calls per system
    .venv/bin/python -m bench.enqueue --quick    # 2 rounds of 100, under a minute
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import sqlite3
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests
from flask import Flask

from bench.run import (
    Probe,
    Server,
    _own_cpu_seconds,
    machine,
    measured_on,
    median_summary,
    percentile,
    quick_output,
    replace_readme_section,
    results_file,
    server_cpu_seconds,
    systems,
    take_turns,
)
from bench.systems.probe import report
from scheduler_app import RunContext, Scheduler
from scheduler_app.store import schema

RUN_THREADS = 4
SYSTEMS = ("python", "http", "thread")
LABELS = {
    "python": "`task.enqueue()` in the host app's process",
    "http": "`POST /api/runs`, gunicorn 1 worker",
    "thread": "`threading.Thread(...).start()` (baseline)",
}

# The host app's task: bench.noop's body, declared the way a host app declares its tasks.
scheduler = Scheduler()


@scheduler.task(name="bench.enqueue_noop")
def noop(ctx: RunContext, key: str, port: int) -> None:
    """Report the start time to the bench and return."""
    report(key, port)


def host_app(db: Path) -> Flask:
    """A host app as its developer writes it, on a SQLite file, its node started here."""
    app = Flask("bench_host")
    app.config.update(SCHEDULER_DATABASE_URL=f"sqlite:///{db}",
                      SCHEDULER_WORKER_THREADS=RUN_THREADS,
                      SCHEDULER_MAX_QUEUED_RUNS=1_000_000)
    scheduler.init_app(app)
    scheduler.start(app=app)
    return app


# -- one round of one system ------------------------------------------------------------------
def sequential(call: Callable[[str], object], probe: Probe, count: int, tag: str
               ) -> dict[str, Any]:
    """``count`` calls one after the other, each waiting for its task's first line."""
    calls, dispatches = [], []
    for i in range(count):
        key = f"{tag}-{i}"
        sent = time.time()
        began = time.perf_counter()
        call(key)
        calls.append((time.perf_counter() - began) * 1000)
        if not probe.wait([key], 10):
            raise RuntimeError(f"task {key} never started")
        dispatches.append((probe.seen[key][0] - sent) * 1000)
    return {"call_p50_ms": percentile(calls, 0.5), "call_p99_ms": percentile(calls, 0.99),
            "dispatch_p50_ms": percentile(dispatches, 0.5),
            "dispatch_p99_ms": percentile(dispatches, 0.99)}


def check_recorded(db: Path, tag: str, count: int, task: str) -> dict[str, int]:
    """The round's runs are in the database, once each, and succeeded (waits for the last)."""
    conn = sqlite3.connect(db)
    runs = schema.runs.name
    deadline = time.monotonic() + 30
    try:
        while True:
            states = dict(conn.execute(
                f"SELECT state, count(*) FROM {runs} WHERE task = ? AND "
                "json_extract(kwargs, '$.key') LIKE ? GROUP BY state",
                (task, f"{tag}-%")).fetchall())
            if states.get("succeeded", 0) >= count or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        distinct = conn.execute(
            f"SELECT count(DISTINCT json_extract(kwargs, '$.key')) FROM {runs} WHERE "
            "task = ? AND json_extract(kwargs, '$.key') LIKE ?", (task, f"{tag}-%")).fetchone()[0]
    finally:
        conn.close()
    return {"recorded": sum(states.values()), "succeeded": states.get("succeeded", 0),
            "distinct": int(distinct)}


# Each run's outcome is written just after its task's first line: give the last one time to
# land before the CPU is read, so every run of the round is paid for in it.
SETTLE_S = 0.2


class Harness:
    """The three systems, each callable for one round."""

    def __init__(self, tmp: Path, probe: Probe) -> None:
        self.tmp, self.probe = tmp, probe
        self.host_db = tmp / "host.sqlite3"
        self.app = host_app(self.host_db)
        base = next(s for s in systems(tmp) if s.name == "scheduler_app")
        self.http = replace(base, workers=1,
                            env={**base.env, "FLASK_WORKER_THREADS": str(RUN_THREADS)})
        self.server = Server(self.http)
        self.session = requests.Session()

    def stop(self) -> None:
        self.server.stop()
        scheduler.shutdown(app=self.app)

    def _post(self, key: str) -> None:
        response = self.session.post(self.server.url + self.http.path,
                                     json=self.http.body(key, self.probe.port))
        if response.status_code != 202:
            raise RuntimeError(f"POST /api/runs: {response.status_code} "
                               f"{response.text[:200]}")

    def _thread(self, key: str) -> None:
        threading.Thread(target=report, args=(key, self.probe.port)).start()

    def _enqueue(self, key: str) -> None:
        noop.enqueue(key=key, port=self.probe.port)

    def round(self, system: str, count: int, tag: str) -> dict[str, Any]:
        if system == "http":
            server_before, client_before = server_cpu_seconds(self.server), _own_cpu_seconds()
            entry = sequential(self._post, self.probe, count, tag)
            time.sleep(SETTLE_S)
            server_ms = (server_cpu_seconds(self.server) - server_before) * 1000 / count
            client_ms = (_own_cpu_seconds() - client_before) * 1000 / count
            entry.update(server_cpu_ms_per_run=server_ms, client_cpu_ms_per_run=client_ms,
                         cpu_ms_per_run=server_ms + client_ms)
            entry.update(check_recorded(self.tmp / "service.sqlite3", tag, count, "bench.noop"))
            return entry
        before = time.process_time()
        if system == "python":
            with self.app.app_context():
                entry = sequential(self._enqueue, self.probe, count, tag)
        else:
            entry = sequential(self._thread, self.probe, count, tag)
        time.sleep(SETTLE_S)
        entry["cpu_ms_per_run"] = (time.process_time() - before) * 1000 / count
        if system == "python":
            entry.update(check_recorded(self.host_db, tag, count, noop.name))
        return entry


# -- the run ----------------------------------------------------------------------------------
def _freeze_like_a_gunicorn_worker() -> None:
    """The gunicorn worker freezes what it built before serving (gunicorn.conf.py); the host
    app here gets the same, so a full collection lands on neither."""
    gc.collect()
    gc.freeze()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 100, under a minute")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--count", type=int, help="calls per system per round")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results; leave results.json and README.md alone")
    args = parser.parse_args()
    quick_output(args.quick)
    rounds = args.rounds or (2 if args.quick else 5)
    count = args.count or (100 if args.quick else 500)
    warmup = 20 if args.quick else 50
    load_before = os.getloadavg()
    probe = Probe()
    with tempfile.TemporaryDirectory() as tmp_text:
        harness = Harness(Path(tmp_text), probe)
        try:
            per_round = take_turns(harness, list(SYSTEMS), rounds, count, warmup,
                                   after_warmup=_freeze_like_a_gunicorn_worker)
        finally:
            harness.stop()
    results: dict[str, Any] = {"systems": {
        name: {"label": LABELS[name], **median_summary(entries, count), "rounds": entries}
        for name, entries in per_round.items()}}
    results["ratios"] = ratios(results["systems"])
    results["machine"] = machine()
    results["settings"] = {"rounds": rounds, "calls_per_round": count, "warmup": warmup,
                           "run_threads": RUN_THREADS, "http_workers": 1, "quick": args.quick,
                           "load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"ratios": results["ratios"], "settings": results["settings"]}, indent=2))
    if not args.no_write:
        data = json.loads(results_file().read_text()) if results_file().exists() else {}
        data["enqueue"] = results
        results_file().write_text(json.dumps(data, indent=2) + "\n")
        write_section(results)


def ratios(found: dict[str, Any]) -> dict[str, float]:
    py, http, thread = found["python"], found["http"], found["thread"]
    out = {}
    for key in ("call_p50_ms", "call_p99_ms", "dispatch_p50_ms", "dispatch_p99_ms"):
        out[f"{key.removesuffix('_ms')}_vs_http"] = py[key] / http[key]
        out[f"{key.removesuffix('_ms')}_vs_thread"] = py[key] / thread[key]
    out["cpu_vs_http_server"] = py["cpu_ms_per_run"] / http["server_cpu_ms_per_run"]
    out["cpu_vs_http_server_and_client"] = py["cpu_ms_per_run"] / http["cpu_ms_per_run"]
    out["cpu_vs_thread"] = py["cpu_ms_per_run"] / thread["cpu_ms_per_run"]
    return out


def write_section(results: dict[str, Any]) -> None:
    s, r = results["settings"], results["ratios"]
    py, http, thread = (results["systems"][k] for k in SYSTEMS)
    rows = ["| system | call p50 | call p99 | dispatch p50 | dispatch p99 | CPU per run |",
            "| --- | --- | --- | --- | --- | --- |"]
    for name in SYSTEMS:
        d = results["systems"][name]
        cpu = f"{d['cpu_ms_per_run']:.2f} ms"
        if name == "http":
            cpu = (f"{d['server_cpu_ms_per_run']:.2f} ms server + "
                   f"{d['client_cpu_ms_per_run']:.2f} ms client")
        rows.append(f"| {d['label']} | {d['call_p50_ms']:.2f} ms | {d['call_p99_ms']:.2f} ms | "
                    f"{d['dispatch_p50_ms']:.2f} ms | {d['dispatch_p99_ms']:.2f} ms | {cpu} |")
    cheaper = {"call": py["call_p50_ms"] < http["call_p50_ms"],
               "dispatch": py["dispatch_p50_ms"] < http["dispatch_p50_ms"],
               "cpu": py["cpu_ms_per_run"] < http["server_cpu_ms_per_run"]}
    verdict = "met" if all(cheaper.values()) else "**not met**"
    recorded = py.get("every_run_recorded") and http.get("every_run_recorded")
    load = s["load_average_before"]
    text = (
        measured_on(results["machine"]) +
        f"{' (--quick)' if s['quick'] else ''}; load average {load[0]:.2f} (1 min) "
        f"when it started. Medians of {s['rounds']} rounds of {s['calls_per_round']} "
        f"sequential calls per system, the systems alternating; {s['run_threads']} run "
        f"threads on both recorded paths, SQLite files.\n\n" + "\n".join(rows) + "\n\n"
        f"Python ÷ HTTP: call p50 {r['call_p50_vs_http']:.2f}×, p99 {r['call_p99_vs_http']:.2f}×; "
        f"dispatch p50 {r['dispatch_p50_vs_http']:.2f}×, p99 {r['dispatch_p99_vs_http']:.2f}×; "
        f"CPU per run {r['cpu_vs_http_server']:.2f}× the server's "
        f"({r['cpu_vs_http_server_and_client']:.2f}× server and client). "
        f"Python ÷ bare thread: call p50 {r['call_p50_vs_thread']:.2f}×, "
        f"p99 {r['call_p99_vs_thread']:.2f}×; dispatch p50 {r['dispatch_p50_vs_thread']:.2f}×, "
        f"p99 {r['dispatch_p99_vs_thread']:.2f}×; CPU {r['cpu_vs_thread']:.2f}×. "
        f"Every run of both recorded paths in its database once and succeeded: "
        f"{'yes' if recorded else 'NO'}.\n\n"
        f"\"Recording a run from Python costs less than the HTTP path\": {verdict} "
        f"(call {'less' if cheaper['call'] else 'MORE'}, "
        f"dispatch {'less' if cheaper['dispatch'] else 'MORE'}, "
        f"CPU per run {'less' if cheaper['cpu'] else 'MORE'} than the server's alone). "
        f"The call is the time a host's view spends recording the run: "
        f"{py['call_p50_ms']:.2f} ms in process against {http['call_p50_ms']:.2f} ms for the "
        f"request, which adds the HTTP round trip, the request's parsing and serialising in "
        f"the service and the client's own work ({http['client_cpu_ms_per_run']:.2f} ms of CPU "
        f"here, which a host calling over HTTP pays in its own process on top of the "
        f"service's {http['server_cpu_ms_per_run']:.2f} ms). Both paths then do the same "
        f"work: validate, insert the run already claimed by a free run thread, start it. "
        f"Against the bare thread, the difference is what recording costs: the insert and "
        f"its commit before the call returns, the run's context and its outcome's write "
        f"after; the bare thread records nothing and cannot be retried, listed or cancelled."
    )
    replace_readme_section("enqueue", text)


if __name__ == "__main__":
    main()
