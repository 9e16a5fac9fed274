"""Many runs at once: ``POST /api/runs/batch`` against one ``POST /api/runs`` per run, on the
default deployment (gunicorn, ``gunicorn.conf.py``, 2 workers of 8 run threads, one SQLite
file), started by ``bench.run.Server``.

The same no-op task as every bench (``bench.noop``: its first line sends its start time over
UDP, ``bench/systems/probe.py``), 10,000 runs per round, in two ways:

- ``batch``: ``POST /api/runs/batch`` with batches of 1,000 runs, one after the other, from one
  client (``--batch-size 10000``: one request);
- ``single``: one ``POST /api/runs`` per run, from 8 client threads, each its own
  ``requests.Session``.

Two times per round, from the first request sent: **recorded**, when the last answer came back
(every run is durable by then), and **started**, when the probe heard the last task's first line
(every run has started). Starting 10,000 runs is bounded by execution (16 run threads claiming
and settling runs, and the GIL they share with the requests) as much as by recording them, so
both are given. Each round also reads the server's CPU (gunicorn's master and workers, from
/proc). After each round every run is checked in the database (recorded once, succeeded), and
the next round waits for the queue to be empty. The two ways alternate, the order rotated from
round to round; the figures are medians over rounds, and the ratios are within one run.

    .venv-bench/bin/python -m bench.batch            # 3 rounds of 10,000 runs per way
    .venv-bench/bin/python -m bench.batch --quick    # 2 rounds of 2,000, about a minute
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import requests

from bench.run import (
    Probe,
    Server,
    machine,
    measured_on,
    median_summary,
    quick_output,
    replace_readme_section,
    results_file,
    server_cpu_seconds,
    systems,
    take_turns,
)
from scheduler_app.store import schema

WAYS = ("batch", "single")
CLIENT_THREADS = 8
LABELS = {
    "batch": "`POST /api/runs/batch`",
    "single": f"one `POST /api/runs` per run, {CLIENT_THREADS} client threads",
}


class Harness:
    def __init__(self, tmp: Path, probe: Probe, batch_size: int, run_threads: int) -> None:
        self.tmp, self.probe, self.batch_size = tmp, probe, batch_size
        base = next(s for s in systems(tmp) if s.name == "scheduler_app")
        self.system = replace(base, env={**base.env, "FLASK_WORKER_THREADS": str(run_threads)})
        self.server = Server(self.system)
        self.db = tmp / "service.sqlite3"

    def stop(self) -> None:
        self.server.stop()

    def body(self, key: str) -> dict[str, Any]:
        return self.system.body(key, self.probe.port)  # {"task": "bench.noop", "kwargs": ...}

    def _batches(self, keys: list[str]) -> None:
        with requests.Session() as session:
            for at in range(0, len(keys), self.batch_size):
                chunk = keys[at:at + self.batch_size]
                response = session.post(self.server.url + "/api/runs/batch",
                                        json={"runs": [self.body(k) for k in chunk]})
                if response.status_code != 202 or len(response.json()["ids"]) != len(chunk):
                    raise RuntimeError(f"POST /api/runs/batch: {response.status_code} "
                                       f"{response.text[:300]}")

    def _singles(self, keys: list[str]) -> None:
        failures: list[str] = []

        def send(part: list[str]) -> None:
            with requests.Session() as session:
                for key in part:
                    response = session.post(self.server.url + "/api/runs", json=self.body(key))
                    if response.status_code != 202:
                        failures.append(f"{response.status_code} {response.text[:200]}")
                        return

        threads = [threading.Thread(target=send, args=(keys[i::CLIENT_THREADS],))
                   for i in range(CLIENT_THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failures:
            raise RuntimeError(f"POST /api/runs: {failures[0]}")

    def round(self, way: str, count: int, tag: str) -> dict[str, Any]:
        keys = [f"{tag}-{i}" for i in range(count)]
        cpu_before = server_cpu_seconds(self.server)
        began_wall, began = time.time(), time.perf_counter()
        (self._batches if way == "batch" else self._singles)(keys)
        recorded_s = time.perf_counter() - began
        if not self.probe.wait(keys, 300):
            missing = sum(1 for k in keys if k not in self.probe.seen)
            raise RuntimeError(f"{missing} runs of {tag} never started")
        started_s = max(self.probe.seen[k][0] for k in keys) - began_wall
        entry: dict[str, Any] = {
            "recorded_s": recorded_s, "started_s": started_s,
            "recorded_per_s": count / recorded_s, "started_per_s": count / started_s}
        entry.update(check_recorded(self.db, tag, count))
        entry["server_cpu_ms_per_run"] = (
            (server_cpu_seconds(self.server) - cpu_before) * 1000 / count)
        entry["starts_heard_twice"] = sum(1 for k in keys if len(self.probe.seen[k]) > 1)
        return entry


def check_recorded(db: Path, tag: str, count: int) -> dict[str, int]:
    """The round's runs are in the database once each and succeeded; waits for the queue to be
    empty, so the next round starts on an idle service."""
    conn = sqlite3.connect(db)
    runs = schema.runs.name
    deadline = time.monotonic() + 120
    try:
        while True:
            states = dict(conn.execute(
                f"SELECT state, count(*) FROM {runs} WHERE task = 'bench.noop' AND "
                "json_extract(kwargs, '$.key') LIKE ? GROUP BY state", (f"{tag}-%",)).fetchall())
            active = conn.execute(f"SELECT count(*) FROM {runs} WHERE state IN "
                                  "('queued', 'running')").fetchone()[0]
            if (states.get("succeeded", 0) >= count and not active) \
                    or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        distinct = conn.execute(
            f"SELECT count(DISTINCT json_extract(kwargs, '$.key')) FROM {runs} WHERE "
            "task = 'bench.noop' AND json_extract(kwargs, '$.key') LIKE ?",
            (f"{tag}-%",)).fetchone()[0]
    finally:
        conn.close()
    return {"recorded": sum(states.values()), "succeeded": states.get("succeeded", 0),
            "distinct": int(distinct)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2,000 runs")
    parser.add_argument("--rounds", type=int)
    parser.add_argument("--count", type=int, help="runs per way per round")
    parser.add_argument("--batch-size", type=int, default=1000)
    parser.add_argument("--run-threads", type=int, default=8,
                        help="WORKER_THREADS of each gunicorn worker (default 8, the product's)")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results; leave results.json and README.md alone")
    args = parser.parse_args()
    quick_output(args.quick)
    rounds = args.rounds or (2 if args.quick else 3)
    count = args.count or (2000 if args.quick else 10_000)
    warmup = 200
    load_before = os.getloadavg()
    probe = Probe()
    with tempfile.TemporaryDirectory() as tmp_text:
        harness = Harness(Path(tmp_text), probe, args.batch_size, args.run_threads)
        try:
            per_round = take_turns(harness, list(WAYS), rounds, count, warmup)
        finally:
            harness.stop()
    results: dict[str, Any] = {"ways": {
        way: {"label": LABELS[way], **median_summary(entries, count), "rounds": entries}
        for way, entries in per_round.items()}}
    batch, single = results["ways"]["batch"], results["ways"]["single"]
    results["ratios"] = {
        "recorded_speedup": single["recorded_s"] / batch["recorded_s"],
        "started_speedup": single["started_s"] / batch["started_s"],
        "server_cpu_per_run": batch["server_cpu_ms_per_run"] / single["server_cpu_ms_per_run"],
        "per_round_started_speedup": [s["started_s"] / b["started_s"] for b, s in
                                      zip(batch["rounds"], single["rounds"], strict=True)],
    }
    results["machine"] = machine()
    results["settings"] = {"rounds": rounds, "runs_per_round": count, "warmup": warmup,
                           "batch_size": args.batch_size, "client_threads": CLIENT_THREADS,
                           "gunicorn_workers": harness.system.workers,
                           "run_threads": args.run_threads, "quick": args.quick,
                           "load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    print(json.dumps({"ratios": results["ratios"], "settings": results["settings"]}, indent=2))
    if not args.no_write:
        data = json.loads(results_file().read_text()) if results_file().exists() else {}
        data["batch"] = results
        results_file().write_text(json.dumps(data, indent=2) + "\n")
        write_section(results)


def write_section(results: dict[str, Any]) -> None:
    s, r = results["settings"], results["ratios"]
    rows = ["| way | recorded | started | runs started/s | server CPU per run |",
            "| --- | --- | --- | --- | --- |"]
    for way in WAYS:
        d = results["ways"][way]
        label = d["label"] + (f", batches of {s['batch_size']:,}" if way == "batch" else "")
        rows.append(f"| {label} | {d['recorded_s']:.2f} s | {d['started_s']:.2f} s | "
                    f"{d['started_per_s']:.0f} | {d['server_cpu_ms_per_run']:.2f} ms |")
    once = all(results["ways"][w]["every_run_recorded"] for w in WAYS)
    verdict = "met" if r["started_speedup"] >= 5 else "**not met**"
    batch = results["ways"]["batch"]
    load = s["load_average_before"]
    text = (
        measured_on(results["machine"]) +
        f"{' (--quick)' if s['quick'] else ''}; load average {load[0]:.2f} (1 min) when it "
        f"started, {s['load_average_after'][0]:.2f} when it ended. {s['runs_per_round']:,} "
        f"no-op runs per round, medians of {s['rounds']} rounds, the two ways alternating; "
        f"gunicorn {s['gunicorn_workers']} workers of {s['run_threads']} run threads, one "
        f"SQLite file. Times from the first request sent: recorded (the last answer back) and "
        f"started (the last task's first line heard).\n\n" + "\n".join(rows) + "\n\n"
        f"Batch ÷ one request per run: recorded {r['recorded_speedup']:.1f}× faster, started "
        f"{r['started_speedup']:.2f}× faster (per round: "
        f"{', '.join(f'{x:.1f}×' for x in r['per_round_started_speedup'])}); server CPU per "
        f"run {r['server_cpu_per_run']:.2f}×. Every run in the database once and succeeded: "
        f"{'yes' if once else 'NO'}.\n\n"
        f"\"10,000 runs through the batch API recorded and started at least 5× faster\": "
        f"{verdict}. Recording the batch took {batch['recorded_s']:.2f} s of its "
        f"{batch['started_s']:.2f} s: the rest is execution, {s['gunicorn_workers']} × "
        f"{s['run_threads']} run threads claiming, running and settling queued runs "
        f"({batch['started_per_s']:.0f} starts/s), so past the recording a batch starts its runs "
        f"as fast as the nodes can claim them, and the 5× is bounded by that rate."
    )
    replace_readme_section("batch", text)


if __name__ == "__main__":
    main()
