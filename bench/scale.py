"""Scale (performance issue, target 3): 10,000 jobs and 1,000,000 finished runs.

A SQLite file gets the schema from the app's own migrations (``Database.migrate``), 10,000 jobs
through the real service layer (``JobService.create``: half cron, half interval, every next
fire about an hour away) and 1,000,000 finished runs in one bulk transaction (about 90 %
succeeded, 8 % failed, 2 % cancelled, spread over 30 days, jobs and tasks, with the columns and
the ``stats`` totals the product itself writes). This service is then started on it as
``bench.run`` starts it (gunicorn, gunicorn.conf.py, 2 workers, SQLite in WAL mode) and:

1. list latency: p50/p99 over sequential requests of ``GET /api/jobs?limit=50``,
   ``GET /api/runs?limit=50&state=failed``, ``GET /api/runs?limit=50``, and a user paging
   deep into the failed runs and through every job by the ``next_cursor`` the API returns;
2. idle CPU: with no traffic and every job an hour away, the CPU time of the gunicorn master
   and its workers (utime + stime from ``/proc``) over a window, as % of one core;
3. memory soak: steady run-now traffic (``bench.idle``, a task that does nothing) while each
   worker's RSS is sampled every 10 s; growth from the warm sample (after the first minute) to
   the last, and a check that every run sent was recorded once and succeeded.

    .venv/bin/python -m bench.scale            # full: 1,000,000 runs, 60 s idle, 10 min soak
    .venv/bin/python -m bench.scale --quick    # 100,000 runs, 20 s idle, 60 s soak
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sqlite3
import tempfile
import threading
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.run import (
    Server,
    machine,
    measured_on,
    percentile,
    quick_output,
    replace_readme_section,
    results_file,
    systems,
)
from scheduler_app.store import schema

TARGET_P99_MS = 20.0
TARGET_IDLE_CPU_PERCENT = 1.0
TARGET_RSS_GROWTH_PERCENT = 10.0
TASK_MODULES = ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance", "bench.tasks"]
NODES = [f"bench-host-{h}:{1000 + p}:{h}{p}a0c1" for h in range(2) for p in range(4)]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/scheduler_app/scheduler/runner.py", line 279, in _call_task\n'
    "    value = task.fn(ctx, **kwargs)\n"
    "            ^^^^^^^^^^^^^^^^^^^^^^\n"
    '  File "/srv/app/scheduler_app/tasks/demo.py", line 32, in fail\n'
    "    raise RuntimeError(message)\n"
    "RuntimeError: {message}\n")


# -- seeding ----------------------------------------------------------------------------------
def seed_jobs(url: str, count: int) -> list[tuple[str, str, dict[str, Any]]]:
    """``count`` jobs through ``JobService.create``, next fires 60-75 minutes away; returns
    (id, task, kwargs) of each."""
    from scheduler_app import create_app, services
    from scheduler_app.services.models import JobCreate

    app = create_app({"DATABASE_URL": url, "SCHEDULER_AUTOSTART": False, "LOG_LEVEL": "WARNING",
                      "TASK_MODULES": TASK_MODULES, "PRUNE_RUNS_CRON": "",
                      "MAX_JOBS": count + 100})
    rng = random.Random(3)
    made = []
    with app.app_context():
        jobs = services().jobs
        for i in range(count):
            choices: list[tuple[str, dict[str, Any]]] = [
                ("demo.echo", {"value": i}), ("demo.sleep", {"seconds": 0.5, "steps": 5}),
                ("bench.idle", {"key": f"job-{i}"})]
            task, kwargs = choices[i % 3]
            if i % 2 == 0:  # daily, twice a day, weekly, monthly: next at `at` in any case
                at = datetime.now(UTC) + timedelta(minutes=rng.uniform(61, 75))
                weekday = (at.weekday() + 1) % 7  # crontab's numbering: 0 is Sunday
                expr = [f"{at.minute} {at.hour} * * *",
                        f"{at.minute} {at.hour},{(at.hour + 12) % 24} * * *",
                        f"{at.minute} {at.hour} * * {weekday}",
                        f"{at.minute} {at.hour} {at.day} * *"][(i // 2) % 4]
                trigger: dict[str, Any] = {"type": "cron", "expr": expr}
                job_id = f"scale-cron-{i:05d}"
            else:
                trigger = {"type": "interval", "minutes": rng.randint(61, 75)}
                job_id = f"scale-interval-{i:05d}"
            jobs.create(JobCreate(id=job_id, task=task, kwargs=kwargs, trigger=trigger))
            made.append((job_id, task, kwargs))
        services().store.db.dispose()
    return made


def _stamp(moment: datetime) -> str:
    """A time as the product stores it on SQLite (UTC, no zone, microseconds)."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")


def seed_runs(url: str, path: Path, count: int, jobs: list[tuple[str, str, dict[str, Any]]],
              days: float = 30.0) -> dict[str, int]:
    """``count`` finished runs, oldest first, in one transaction; the ``stats`` totals they
    imply are added as the product adds them (``Tally``)."""
    from scheduler_app.store import Database
    from scheduler_app.store.stats import Tally

    rng = random.Random(7)
    now = datetime.now(UTC).replace(microsecond=0)
    first = now - timedelta(days=days)
    step = (now - timedelta(minutes=5) - first) / count
    tally = Tally()
    states = {"succeeded": 0, "failed": 0, "cancelled": 0}
    adhoc: list[tuple[str, dict[str, Any]]] = [
        ("demo.echo", {"value": "hello"}), ("demo.sleep", {"seconds": 2.0}),
        ("demo.fail", {"message": "boom"}), ("reports.build", {"customer_id": 42})]

    def rows() -> Any:
        for i in range(count):
            due = first + step * i
            if rng.random() < 0.8:
                job_id, task, kwargs = jobs[rng.randrange(len(jobs))]
                due = due.replace(microsecond=0)  # fires fall on whole seconds, one a second
                fire: str | None = _stamp(due)
            else:
                job_id, fire = None, None
                task, kwargs = adhoc[rng.randrange(len(adhoc))]
            created = due + timedelta(microseconds=rng.randint(200, 5000))
            started = created + timedelta(microseconds=rng.randint(100, 20000))
            ended = started + timedelta(seconds=rng.expovariate(1 / 1.5))
            roll = rng.random()
            state = "succeeded" if roll < 0.90 else "failed" if roll < 0.98 else "cancelled"
            states[state] += 1
            max_attempts = 3 if rng.random() < 0.25 else 1
            attempt, error, errors, result = 1, None, [], None
            if state == "failed":
                attempt = max_attempts
                error = {"type": "RuntimeError", "message": f"boom {i % 97}",
                         "traceback": TRACEBACK.format(message=f"boom {i % 97}")}
                errors = [{**error, "attempt": n, "at": (started - timedelta(
                    seconds=4 * (attempt - n))).isoformat()} for n in range(1, attempt + 1)]
            elif state == "succeeded":
                result = kwargs.get("value", {"slept": kwargs.get("seconds")}
                                    if task == "demo.sleep" else None)
            progress: tuple[float | None, float | None, str | None] = (None, None, None)
            if task == "demo.sleep":
                total = float(kwargs.get("steps", 10))
                done = total if state == "succeeded" else float(rng.randint(0, int(total)))
                progress = (done, total, f"step {int(done)} of {int(total)}")
            tally.finished(task, state)
            tally.attempt(task, started, ended)
            tally.waited(task, due, started)
            yield (i + 1, task, json.dumps(kwargs), job_id, fire, state, attempt, max_attempts,
                   2.0, None, int(state == "cancelled"), *progress, json.dumps(result),
                   json.dumps(error), json.dumps(errors), NODES[rng.randrange(len(NODES))],
                   _stamp(created), _stamp(due), _stamp(started), _stamp(ended))

    db = sqlite3.connect(path)
    with db:
        db.executemany(
            f"INSERT INTO {schema.runs.name} (id, task, kwargs, job_id, fire_time, state, "
            "attempt, max_attempts, retry_backoff, timeout, cancel_requested, progress_done, "
            "progress_total, progress_message, result, error, errors, node, created_at, "
            "scheduled_for, started_at, finished_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows())
    db.close()
    store = Database(url)
    with store.write() as conn:
        tally.flush(conn)
    store.dispose()
    return states


# -- measuring --------------------------------------------------------------------------------
def _timed(session: requests.Session, url: str) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    response = session.get(url)
    elapsed = (time.perf_counter() - began) * 1000
    if response.status_code != 200:
        raise RuntimeError(f"GET {url}: {response.status_code} {response.text[:200]}")
    return elapsed, response.json()


def latency(base: str, count: int) -> dict[str, dict[str, float]]:
    """p50/p99 of each list request, ``count`` sequential requests each, after a warm-up."""
    session = requests.Session()
    fixed = {"jobs": "/api/jobs?limit=50", "runs_failed": "/api/runs?limit=50&state=failed",
             "runs": "/api/runs?limit=50"}
    paging = {"runs_failed_paging": "/api/runs?limit=50&state=failed",
              "jobs_paging": "/api/jobs?limit=50"}
    out: dict[str, dict[str, float]] = {}
    for name, path in fixed.items():
        for _ in range(max(20, count // 10)):
            _timed(session, base + path)
        times = [_timed(session, base + path)[0] for _ in range(count)]
        out[name] = _summary(times)
    for name, path in paging.items():
        # A user paging: each request is the previous answer's next_cursor, from the first
        # page again when the list ends.
        times, cursor, page, deepest = [], None, 1, 1
        while len(times) < count:
            url = base + path + (f"&cursor={cursor}" if cursor else "")
            elapsed, body = _timed(session, url)
            times.append(elapsed)
            deepest = max(deepest, page)
            cursor = body["next_cursor"]
            page = page + 1 if cursor else 1
        out[name] = {**_summary(times), "deepest_page": deepest}
    return out


def _summary(times: list[float]) -> dict[str, float]:
    return {"p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99),
            "max_ms": max(times), "requests": len(times)}


def processes(master: int) -> dict[int, str]:
    """The gunicorn master and its workers: pid → role."""
    found = {master: "master"}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == master:
            found[int(entry.name)] = "worker"
    return found


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def idle_cpu(master: int, window: float, settle: float, baseline: int | None = None
             ) -> dict[str, Any]:
    """CPU of the master and workers over ``window`` seconds of no traffic; with
    ``baseline`` (the master of the same deployment on an empty store), that one's too, over
    the same window, so what the jobs and runs cost shows apart from this machine's noise."""
    time.sleep(settle)
    masters = {"store": master} if baseline is None else {"store": master, "empty": baseline}
    procs = {label: processes(pid) for label, pid in masters.items()}
    ticks = os.sysconf("SC_CLK_TCK")
    before = {label: {pid: cpu_ticks(pid) for pid in found} for label, found in procs.items()}
    began = time.monotonic()
    time.sleep(window)
    elapsed = time.monotonic() - began
    used = {label: {pid: (cpu_ticks(pid) - before[label][pid]) / ticks for pid in found}
            for label, found in procs.items()}
    out: dict[str, Any] = {
        "window_s": round(elapsed, 1),
        "cpu_percent": 100 * sum(used["store"].values()) / elapsed,
        "by_process": {f"{procs['store'][pid]} {pid}": round(100 * s / elapsed, 3)
                       for pid, s in used["store"].items()},
    }
    if "empty" in used:
        out["empty_store_cpu_percent"] = 100 * sum(used["empty"].values()) / elapsed
    return out


def soak(base: str, master: int, path: Path, duration: float, rate: float, warm_at: float
         ) -> dict[str, Any]:
    """Run-now traffic at ``rate``/s for ``duration`` s; RSS of each worker every 10 s."""
    workers = [pid for pid, role in processes(master).items() if role == "worker"]
    samples: list[dict[str, Any]] = []
    stop = threading.Event()
    began = time.monotonic()

    def sample() -> None:
        while True:
            samples.append({"t": round(time.monotonic() - began, 1),
                            "rss_kib": {str(p): rss_kib(p) for p in workers}})
            if stop.wait(10):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    session = requests.Session()
    sent, refused, i = 0, 0, 0
    while True:
        due = began + i / rate
        if due - began >= duration:
            break
        pause = due - time.monotonic()
        if pause > 0:
            time.sleep(pause)
        response = session.post(base + "/api/runs",
                                json={"task": "bench.idle", "kwargs": {"key": f"soak-{i}"}})
        sent += 1
        refused += response.status_code != 202
        i += 1
    elapsed = time.monotonic() - began
    stop.set()
    sampler.join()
    samples.append({"t": round(time.monotonic() - began, 1),
                    "rss_kib": {str(p): rss_kib(p) for p in workers}})
    warm = next(s for s in samples if s["t"] >= warm_at)
    last = samples[-1]
    growth = {p: 100 * (last["rss_kib"][p] - warm["rss_kib"][p]) / warm["rss_kib"][p]
              for p in warm["rss_kib"]}
    total_warm, total_last = sum(warm["rss_kib"].values()), sum(last["rss_kib"].values())
    return {
        "duration_s": round(elapsed, 1), "rate_per_s": round(sent / elapsed, 1),
        "sent": sent, "refused": refused, "warm_at_s": warm["t"],
        "rss_warm_mib": {p: round(v / 1024, 1) for p, v in warm["rss_kib"].items()},
        "rss_end_mib": {p: round(v / 1024, 1) for p, v in last["rss_kib"].items()},
        "rss_growth_percent": {p: round(v, 2) for p, v in growth.items()},
        "rss_growth_percent_max": max(growth.values()),
        "rss_growth_percent_total": 100 * (total_last - total_warm) / total_warm,
        "samples": samples,
        **check_recorded(path, sent),
    }


def check_recorded(path: Path, sent: int) -> dict[str, int]:
    """Every soak run is in the database once and succeeded (waits for the last ones)."""
    db = sqlite3.connect(path)
    deadline = time.monotonic() + 60
    while True:
        states = dict(db.execute(f"SELECT state, count(*) FROM {schema.runs.name} "
                                 "WHERE task = 'bench.idle' "
                                 "AND job_id IS NULL GROUP BY state").fetchall())
        if states.get("succeeded", 0) >= sent or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    distinct = db.execute("SELECT count(DISTINCT json_extract(kwargs, '$.key')) "
                          f"FROM {schema.runs.name} "
                          "WHERE task = 'bench.idle' AND job_id IS NULL").fetchone()[0]
    db.close()
    return {"recorded": sum(states.values()), "succeeded": states.get("succeeded", 0),
            "distinct": distinct}


# -- the run ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="100,000 runs, 200 requests, 20 s idle, 60 s soak")
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--runs", type=int)
    parser.add_argument("--requests", type=int)
    parser.add_argument("--idle", type=float, help="idle CPU window, seconds")
    parser.add_argument("--soak", type=float, help="memory soak, seconds")
    parser.add_argument("--rate", type=float, default=50.0, help="soak runs per second")
    parser.add_argument("--no-write", action="store_true",
                        help="print the results; leave results.json and README.md alone")
    args = parser.parse_args()
    quick_output(args.quick)
    quick = args.quick
    n_runs = args.runs or (100_000 if quick else 1_000_000)
    n_requests = args.requests or (200 if quick else 500)
    idle_window = args.idle or (20.0 if quick else 60.0)
    soak_window = args.soak or (60.0 if quick else 600.0)
    warm_at = min(60.0, soak_window / 3)

    results: dict[str, Any] = {"settings": {
        "jobs": args.jobs, "runs": n_runs, "requests": n_requests, "idle_window_s": idle_window,
        "soak_s": soak_window, "soak_rate_per_s": args.rate, "warm_at_s": warm_at,
        "workers": int(os.environ.get("BENCH_WORKERS", "2"))}}
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        base = next(s for s in systems(tmp) if s.name == "scheduler_app")
        url = base.env["FLASK_DATABASE_URL"]
        path = tmp / "service.sqlite3"

        began = time.monotonic()
        from scheduler_app.store import Database
        schema = Database(url)
        schema.migrate()
        schema.dispose()
        jobs = seed_jobs(url, args.jobs)
        jobs_s = time.monotonic() - began
        states = seed_runs(url, path, n_runs, jobs)
        results["seed"] = {"jobs_s": round(jobs_s, 1),
                           "runs_s": round(time.monotonic() - began - jobs_s, 1),
                           "runs_by_state": states,
                           "db_mib": round(path.stat().st_size / 2**20, 1)}
        print("seeded", json.dumps(results["seed"]), flush=True)

        system = replace(base, env={**base.env, "FLASK_MAX_JOBS": str(args.jobs + 100)})
        server = Server(system)
        try:
            results["latency"] = latency(server.url, n_requests)
            print("latency", json.dumps(results["latency"]), flush=True)
            before = _run_count(path)
            # The same deployment on an empty store, idle over the same window: the floor
            # every node pays for polling, whatever it holds.
            (tmp / "empty").mkdir()
            empty_url = f"sqlite:///{tmp / 'empty' / 'service.sqlite3'}"
            empty = Server(replace(base, env={**base.env, "FLASK_DATABASE_URL": empty_url}))
            try:
                results["idle"] = idle_cpu(server.proc.pid, idle_window, settle=5.0,
                                           baseline=empty.proc.pid)
            finally:
                empty.stop()
            results["idle"]["runs_created"] = _run_count(path) - before
            results["idle"]["next_fire_in_s"] = _next_fire_in(path)
            print("idle", json.dumps(results["idle"]), flush=True)
            results["soak"] = soak(server.url, server.proc.pid, path, soak_window, args.rate,
                                   warm_at)
            print("soak", json.dumps({k: v for k, v in results["soak"].items()
                                      if k != "samples"}), flush=True)
        finally:
            server.stop()
    results["targets"] = targets(results)
    results["machine"] = machine()
    print(json.dumps(results["targets"], indent=2))
    if not args.no_write:
        data = json.loads(results_file().read_text()) if results_file().exists() else {}
        data["scale"] = results
        results_file().write_text(json.dumps(data, indent=2) + "\n")
        write_section(results)


def _run_count(path: Path) -> int:
    db = sqlite3.connect(path)
    try:
        return int(db.execute(f"SELECT count(*) FROM {schema.runs.name}").fetchone()[0])
    finally:
        db.close()


def _next_fire_in(path: Path) -> float:
    db = sqlite3.connect(path)
    try:
        due = db.execute(f"SELECT min(next_run_time) FROM {schema.jobs.name}").fetchone()[0]
        return round(float(due) - time.time(), 1)
    finally:
        db.close()


def targets(results: dict[str, Any]) -> dict[str, Any]:
    lat, idle, soaked = results["latency"], results["idle"], results["soak"]
    return {
        "jobs_p99_ms": lat["jobs"]["p99_ms"],
        "runs_failed_p99_ms": lat["runs_failed"]["p99_ms"],
        "lists_met": max(lat["jobs"]["p99_ms"], lat["runs_failed"]["p99_ms"]) < TARGET_P99_MS,
        "idle_cpu_percent": idle["cpu_percent"],
        "idle_empty_store_cpu_percent": idle["empty_store_cpu_percent"],
        "idle_met": idle["cpu_percent"] < TARGET_IDLE_CPU_PERCENT,
        "rss_growth_percent_max": soaked["rss_growth_percent_max"],
        "memory_met": abs(soaked["rss_growth_percent_max"]) <= TARGET_RSS_GROWTH_PERCENT,
        "every_run_recorded": soaked["recorded"] == soaked["succeeded"] == soaked["distinct"]
        == soaked["sent"] and soaked["refused"] == 0,
    }


def write_section(results: dict[str, Any]) -> None:
    m, s, seed = results["machine"], results["settings"], results["seed"]
    lat, idle, soaked, t = results["latency"], results["idle"], results["soak"], \
        results["targets"]
    labels = {
        "jobs": "`GET /api/jobs?limit=50`",
        "runs_failed": "`GET /api/runs?limit=50&state=failed`",
        "runs": "`GET /api/runs?limit=50`",
        "runs_failed_paging": "failed runs, paging on by `next_cursor`",
        "jobs_paging": "jobs, paging on by `next_cursor`",
    }
    rows = ["| request | p50 | p99 | max |", "| --- | --- | --- | --- |"]
    for key, label in labels.items():
        d = lat[key]
        deep = f" (to page {d['deepest_page']})" if "deepest_page" in d else ""
        rows.append(f"| {label}{deep} | {d['p50_ms']:.2f} ms | {d['p99_ms']:.2f} ms "
                    f"| {d['max_ms']:.1f} ms |")
    rss = ", ".join(f"{soaked['rss_warm_mib'][p]:.0f} → {soaked['rss_end_mib'][p]:.0f} MiB "
                    f"({soaked['rss_growth_percent'][p]:+.1f} %)" for p in soaked["rss_warm_mib"])
    mark = {True: "met", False: "**missed**"}
    text = (
        measured_on(m) + ". "
        f"{s['jobs']:,} jobs (half cron, half interval, next fires an hour away), "
        f"{s['runs']:,} finished runs ({seed['runs_by_state']['failed']:,} failed) over 30 days "
        f"in a {seed['db_mib']:,.0f} MiB SQLite file; {s['workers']} workers. "
        f"{s['requests']} sequential requests each, after a warm-up.\n\n"
        + "\n".join(rows) + "\n\n"
        f"- Lists (p99 < {TARGET_P99_MS:.0f} ms): {mark[t['lists_met']]}.\n"
        f"- Idle CPU (< {TARGET_IDLE_CPU_PERCENT:.0f} % of a core): "
        f"{idle['cpu_percent']:.2f} % over {idle['window_s']:.0f} s, master and workers "
        f"together ({', '.join(f'{k}: {v:.2f} %' for k, v in idle['by_process'].items())}); "
        f"{idle['runs_created']} runs created meanwhile; the same deployment on an empty "
        f"store, same window: {idle['empty_store_cpu_percent']:.2f} %: "
        f"{mark[t['idle_met']]}.\n"
        f"- Memory (flat within {TARGET_RSS_GROWTH_PERCENT:.0f} %): {soaked['sent']:,} run-now "
        f"requests at {soaked['rate_per_s']:.0f}/s for {soaked['duration_s']:.0f} s; RSS of "
        f"each worker at {soaked['warm_at_s']:.0f} s → at the end: {rss}: "
        f"{mark[t['memory_met']]}. Recorded {soaked['recorded']:,} of {soaked['sent']:,}, "
        f"{soaked['succeeded']:,} succeeded, {soaked['distinct']:,} distinct, "
        f"{soaked['refused']} refused."
    )
    replace_readme_section("scale", text)


if __name__ == "__main__":
    main()
