"""Cluster scaling (performance issue, target 6): runs/s of sleep-like work on 1 and 3 hosts.

Each host is a separate gunicorn process of this service (gunicorn.conf.py, one worker, the
default WORKER_THREADS and DISPATCH_POLL_SECONDS), all on one PostgreSQL database created for
the bench and dropped afterwards. N runs of ``demo.sleep`` (0.2 s, one step) are sent by 8
client threads, either round-robin over the hosts' APIs or all to the first host (which shows
whether queued work spreads to the others), and throughput is N over the time from the first
request to the last run's finish, read from the database. Every run must have succeeded on its
first attempt, once. One host first, then two more join it on the same database.

    .venv/bin/python -m bench.cluster            # 600 runs, 3 repeats
    .venv/bin/python -m bench.cluster --quick    # 300 runs, 1 repeat
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from itertools import cycle
from typing import Any

import requests
import sqlalchemy as sa

from bench.run import (
    Server,
    System,
    machine,
    measured_on,
    quick_output,
    replace_readme_section,
    results_file,
)
from scheduler_app.store import schema

PG_ADMIN_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
SECONDS = 0.2
CLIENT_THREADS = 8
TARGET_RATIO = 2.5


@contextmanager
def scratch_database(prefix: str = "bench_cluster") -> Iterator[str]:
    """A fresh PostgreSQL database (``BENCH_PG_URL``'s server) for a bench, dropped at the
    end, whatever happened."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def host(url: str) -> System:
    return System(
        "cluster_host", "a host", "wsgi:app", "/api/runs", lambda key, port: {},
        env={"FLASK_DATABASE_URL": url,
             "FLASK_TASK_MODULES": json.dumps(["scheduler_app.tasks.demo",
                                               "scheduler_app.tasks.maintenance"]),
             "FLASK_PRUNE_RUNS_CRON": "", "FLASK_MAX_QUEUED_RUNS": "1000000",
             "GUNICORN_ACCESSLOG": "", "FLASK_LOG_LEVEL": "WARNING"},
        conf=True, workers=1)


def wait_alive(servers: list[Server], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        nodes = requests.get(servers[0].url + "/api/nodes", timeout=5).json()["items"]
        if sum(n["alive"] for n in nodes) >= len(servers):
            return
        time.sleep(0.2)
    raise RuntimeError(f"{len(servers)} nodes did not come up")


def measure(servers: list[Server], engine: sa.Engine, count: int, spread: bool
            ) -> dict[str, Any]:
    targets = cycle(servers if spread else servers[:1])
    local = threading.local()
    body = {"task": "demo.sleep", "kwargs": {"seconds": SECONDS, "steps": 1}}

    def send(server: Server) -> int:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        response = local.session.post(server.url + "/api/runs", json=body, timeout=30)
        if response.status_code != 202:
            raise RuntimeError(f"{response.status_code} {response.text[:200]}")
        return int(response.json()["id"])

    began = time.time()
    with ThreadPoolExecutor(CLIENT_THREADS) as pool:
        ids = list(pool.map(send, [next(targets) for _ in range(count)]))
    rows = wait_finished(engine, ids, timeout=60 + count * SECONDS)
    finished = max(r["finished_at"] for r in rows).timestamp()
    states = Counter(r["state"] for r in rows)
    per_node = Counter(r["node"] for r in rows)
    return {
        "hosts": len(servers), "sent_to": "round-robin" if spread else "one host",
        "runs": count, "runs_per_s": count / (finished - began),
        "ideal_runs_per_s": len(servers) * 4 / SECONDS,
        "succeeded": states.get("succeeded", 0),
        "once": len(rows) == count == len(set(ids))
        and all(r["attempt"] == 1 and not r["errors"] for r in rows),
        "per_node": sorted(per_node.values(), reverse=True),
        "first_start_ms": 1000 * (min(r["started_at"] for r in rows).timestamp() - began),
    }


def wait_finished(engine: sa.Engine, ids: list[int], timeout: float) -> list[dict[str, Any]]:
    query = sa.text("SELECT id, state, node, attempt, errors, started_at, finished_at "
                    f"FROM {schema.runs.name} WHERE id = ANY(:ids)")
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query, {"ids": ids}).mappings()]
        if all(r["state"] in ("succeeded", "failed", "cancelled") for r in rows) and rows:
            return rows
        if time.monotonic() > deadline:
            raise RuntimeError(f"runs not finished after {timeout:.0f} s: "
                               f"{Counter(r['state'] for r in rows)}")
        time.sleep(0.1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="300 runs, one repeat")
    args = parser.parse_args()
    quick_output(args.quick)
    count, repeats = (300, 1) if args.quick else (600, 3)
    cases: list[dict[str, Any]] = []
    with scratch_database() as url:
        engine = sa.create_engine(url)
        servers: list[Server] = []
        try:
            servers.append(Server(host(url)))
            wait_alive(servers)
            measure(servers, engine, 20, spread=True)  # warm-up
            for _ in range(repeats):
                cases.append(measure(servers, engine, count, spread=True))
                print(json.dumps(cases[-1]), flush=True)
            servers += [Server(host(url)) for _ in range(2)]
            wait_alive(servers)
            measure(servers, engine, 30, spread=True)
            for _ in range(repeats):
                for spread in (True, False):
                    cases.append(measure(servers, engine, count, spread))
                    print(json.dumps(cases[-1]), flush=True)
        finally:
            for server in reversed(servers):
                server.stop()
            engine.dispose()
    summary = summarise(cases)
    print(json.dumps(summary, indent=2))
    data = json.loads(results_file().read_text()) if results_file().exists() else {}
    data["cluster"] = {**summary, "cases": cases, "machine": machine(),
                       "settings": {"runs": count, "repeats": repeats, "task_seconds": SECONDS,
                                    "client_threads": CLIENT_THREADS, "worker_threads": 4,
                                    "quick": args.quick}}
    results_file().write_text(json.dumps(data, indent=2) + "\n")
    write_section(data["cluster"])


def summarise(cases: list[dict[str, Any]]) -> dict[str, Any]:
    def median(hosts: int, sent_to: str) -> float:
        return float(statistics.median(c["runs_per_s"] for c in cases
                                       if c["hosts"] == hosts and c["sent_to"] == sent_to))

    one = median(1, "round-robin")
    three_rr, three_one = median(3, "round-robin"), median(3, "one host")
    return {"one_host_runs_per_s": one, "three_hosts_round_robin_runs_per_s": three_rr,
            "three_hosts_one_entry_runs_per_s": three_one,
            "ratio_round_robin": three_rr / one, "ratio_one_entry": three_one / one,
            "every_run_once": all(c["once"] and c["succeeded"] == c["runs"] for c in cases)}


def verdict(ratio: float) -> str:
    return f"{ratio:.2f}× ({'met' if ratio >= TARGET_RATIO else 'MISSED'})"


def write_section(result: dict[str, Any]) -> None:
    m, s = result["machine"], result["settings"]
    rows = ["| hosts | requests sent | runs/s (median) | ideal | ratio to 1 host |",
            "| --- | --- | --- | --- | --- |",
            f"| 1 | — | {result['one_host_runs_per_s']:.1f} | {4 / s['task_seconds']:.0f} | 1 |",
            f"| 3 | round-robin | {result['three_hosts_round_robin_runs_per_s']:.1f} | "
            f"{12 / s['task_seconds']:.0f} | {result['ratio_round_robin']:.2f}× |",
            f"| 3 | all to one host | {result['three_hosts_one_entry_runs_per_s']:.1f} | "
            f"{12 / s['task_seconds']:.0f} | {result['ratio_one_entry']:.2f}× |"]
    text = (
        measured_on(m, versions=False) +
        f"{' (--quick)' if s['quick'] else ''}. {s['runs']} runs of `demo.sleep` "
        f"({s['task_seconds']} s, one step) from {s['client_threads']} client threads, "
        f"{s['repeats']} repeat(s); each host one gunicorn worker with "
        f"{s['worker_threads']} run threads, on one PostgreSQL database. Target: 3 hosts ≥ "
        f"{TARGET_RATIO}× one host: round-robin {verdict(result['ratio_round_robin'])}, all "
        f"to one host {verdict(result['ratio_one_entry'])}. Every run succeeded once, on its "
        f"first attempt: "
        f"{'yes' if result['every_run_once'] else 'NO'}.\n\n" + "\n".join(rows))
    replace_readme_section("cluster", text)


if __name__ == "__main__":
    main()
