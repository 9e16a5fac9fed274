"""Measure this service against the fragile alternatives, side by side, on this machine.

Every system under test is started here, on loopback, behind gunicorn; a Python client sends
"run now" requests for a no-op task whose first line reports its start time over UDP. For each
system: dispatch latency (request sent → task's first line; sequential requests, p50/p99) and
end-to-end throughput (N runs from 8 client threads, until the last task has started). Each
measurement is repeated; medians are reported, with the ratios the performance issue sets
targets for. Results go to bench/results.json and the table in bench/README.md (with --quick,
to bench/work/, which git ignores).

    .venv/bin/python -m bench.run            # full: what bench/README.md reports
    .venv/bin/python -m bench.run --quick    # under two minutes: re-check the ratios
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

import requests

from scheduler_app.store import schema

ROOT = Path(__file__).resolve().parent.parent
BIN = ROOT / ".venv" / "bin"
RESULTS = ROOT / "bench" / "results.json"
README = ROOT / "bench" / "README.md"
# Where --quick runs write instead (ignored by git): one-repeat numbers never replace the
# committed bench/README.md and bench/results.json.
QUICK_DIR = ROOT / "bench" / "work"
_quick = False


def quick_output(quick: bool) -> None:
    """Send this process's results and README sections to bench/work/ when ``quick``."""
    global _quick
    _quick = quick
    if quick:
        QUICK_DIR.mkdir(parents=True, exist_ok=True)
        print(f"--quick: results go to {QUICK_DIR.relative_to(ROOT)}/ "
              "(bench/README.md and bench/results.json are left alone)")


def results_file() -> Path:
    """bench/results.json, or bench/work/results.json for a --quick run."""
    return QUICK_DIR / "results.json" if _quick else RESULTS


def readme_file() -> Path:
    """bench/README.md, or bench/work/README.md for a --quick run."""
    return QUICK_DIR / "README.md" if _quick else README


# -- the probe listener -----------------------------------------------------------------------
class Probe:
    """Receives "<key> <time>" datagrams from tasks' first lines."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 * 1024 * 1024)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.seen: dict[str, list[float]] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._listen, daemon=True).start()

    def _listen(self) -> None:
        while True:
            data = self.sock.recv(256).decode()
            key, stamp = data.split()
            with self.cond:
                self.seen.setdefault(key, []).append(float(stamp))
                self.cond.notify_all()

    def wait(self, keys: list[str], timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.cond:
            while not all(k in self.seen for k in keys):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cond.wait(left)
        return True


# -- systems under test -----------------------------------------------------------------------
@dataclass
class System:
    name: str
    label: str
    app: str
    path: str
    body: Callable[[str, int], dict[str, Any]]
    env: dict[str, str] = field(default_factory=dict)
    conf: bool = False  # use gunicorn.conf.py (this service's hooks)
    workers: int = 1
    runs_task: bool = True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def systems(tmp: Path) -> list[System]:
    ours_env = {
        "FLASK_DATABASE_URL": f"sqlite:///{tmp / 'service.sqlite3'}",
        "FLASK_TASK_MODULES": json.dumps(["scheduler_app.tasks.demo",
                                          "scheduler_app.tasks.maintenance", "bench.tasks"]),
        "FLASK_PRUNE_RUNS_CRON": "", "FLASK_MAX_QUEUED_RUNS": "1000000",
        "GUNICORN_ACCESSLOG": "", "FLASK_LOG_LEVEL": "WARNING",
    }
    fas_body = lambda key, port: {  # noqa: E731
        "id": key, "func": "bench.systems.probe:report", "trigger": "date",
        "kwargs": {"run_key": key, "port": port}}
    return [
        System("bare_route", "bare Flask route (HTTP ceiling)", "bench.systems.bare:app",
               "/noop", lambda key, port: {"key": key}, runs_task=False),
        System("thread", "threading.Thread in the route", "bench.systems.bare:app", "/thread",
               lambda key, port: {"key": key, "port": port}),
        System("fas_memory", "Flask-APScheduler API, memory store", "bench.systems.fas:app",
               "/scheduler/jobs", fas_body, env={"BENCH_JOBSTORE": "memory"}),
        System("fas_sqlite", "Flask-APScheduler API, SQLite store", "bench.systems.fas:app",
               "/scheduler/jobs", fas_body,
               env={"BENCH_JOBSTORE": "sqlite",
                    "BENCH_SQLITE_URL": f"sqlite:///{tmp / 'fas.sqlite3'}"}),
        System("scheduler_app", "this service (2 workers, SQLite WAL)", "wsgi:app",
               "/api/runs", lambda key, port: {"task": "bench.noop",
                                               "kwargs": {"key": key, "port": port}},
               env=ours_env, conf=True, workers=int(os.environ.get("BENCH_WORKERS", "2"))),
    ]


class Server:
    def __init__(self, system: System) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "GUNICORN_"))}
        env.update(PYTHONPATH=str(ROOT), GUNICORN_CMD_ARGS="--no-control-socket", **system.env)
        argv = [str(BIN / "gunicorn"), "--bind", f"127.0.0.1:{self.port}"]
        if system.conf:
            env["GUNICORN_WORKERS"] = str(system.workers)
            argv += ["-c", "gunicorn.conf.py"]
        else:
            argv += ["-k", "gthread", "--threads", "8", "-w", str(system.workers)]
        self.log = tempfile.TemporaryFile()
        # Baselines run from bench/ so gunicorn does not pick up this service's gunicorn.conf.py.
        cwd = ROOT if system.conf else ROOT / "bench"
        self.proc = subprocess.Popen([*argv, system.app], cwd=cwd, env=env,
                                     stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                requests.get(self.url + "/", timeout=1)
                return
            except requests.RequestException:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{system.name} did not start")

    def stop(self) -> None:
        import signal
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


# -- measurements -----------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def dispatch(system: System, server: Server, probe: Probe, count: int, tag: str
             ) -> dict[str, float]:
    session = requests.Session()
    latencies = []
    for i in range(count):
        key = f"{tag}-d{i}"
        sent = time.time()
        response = session.post(server.url + system.path, json=system.body(key, probe.port))
        if response.status_code >= 300:
            raise RuntimeError(f"{system.name}: {response.status_code} {response.text[:200]}")
        if not probe.wait([key], 10):
            raise RuntimeError(f"{system.name}: task {key} never started")
        latencies.append((probe.seen[key][0] - sent) * 1000)
    return {"p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def server_cpu_seconds(server: Server) -> float:
    """CPU time (user + system) used so far by a server's gunicorn master and its workers."""
    pids, total = {server.proc.pid}, 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == server.proc.pid:  # ppid
            pids.add(int(stat.parent.name))
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def throughput(system: System, server: Server, probe: Probe, count: int, tag: str
               ) -> dict[str, float]:
    keys = [f"{tag}-t{i}" for i in range(count)]
    local = threading.local()

    def send(key: str) -> float:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        body = system.body(key, probe.port)
        response = local.session.post(server.url + system.path, json=body)
        if response.status_code >= 300:
            raise RuntimeError(f"{system.name}: {response.status_code} {response.text[:200]}")
        return time.time()

    cpu_before, client_before = server_cpu_seconds(server), _own_cpu_seconds()
    began = time.time()
    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(send, keys))
    if system.runs_task:
        if not probe.wait(keys, 120):
            missing = sum(k not in probe.seen for k in keys)
            raise RuntimeError(f"{system.name}: {missing} tasks never started")
        ended = max(probe.seen[k][0] for k in keys)
    else:
        ended = max(answered)
    duplicates = sum(len(probe.seen.get(k, [])) > 1 for k in keys)
    # Where the ceiling goes: the client and the server share this machine's cores, so every
    # millisecond of server CPU a run costs is taken from the requests per second.
    cpu_ms = (server_cpu_seconds(server) - cpu_before) * 1000 / count
    client_ms = (_own_cpu_seconds() - client_before) * 1000 / count
    return {"runs_per_s": count / (ended - began), "duplicates": duplicates,
            "server_cpu_ms_per_run": cpu_ms, "client_cpu_ms_per_run": client_ms}


def _own_cpu_seconds() -> float:
    times = os.times()
    return times.user + times.system


def check_recorded(tmp: Path, tag: str, count: int) -> dict[str, int]:
    """Every run of this service is in its database, once, and succeeded."""
    import sqlite3
    runs = schema.runs.name
    db = sqlite3.connect(tmp / "service.sqlite3")
    deadline = time.monotonic() + 60
    while True:
        rows = db.execute(f"SELECT state, count(*) FROM {runs} WHERE task='bench.noop' AND "
                          "json_extract(kwargs, '$.key') LIKE ? GROUP BY state",
                          (f"{tag}-t%",)).fetchall()
        states = dict(rows)
        if states.get("succeeded", 0) == count or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    keys = db.execute("SELECT count(DISTINCT json_extract(kwargs, '$.key')) "
                      f"FROM {runs} WHERE json_extract(kwargs, '$.key') LIKE ?",
                      (f"{tag}-t%",)).fetchone()[0]
    db.close()
    return {"recorded": sum(states.values()), "succeeded": states.get("succeeded", 0),
            "distinct": keys}


def progress_cost(loops: int, repeats: int) -> dict[str, float]:
    """A tight loop calling ctx.progress vs the same loop without it (target: < 2×), twice:
    with an empty body (``total += i``: the loop's own cost only, the worst case), and with a
    body doing a little work (formatting a number, ~0.2 µs), as a task's loop would."""
    from scheduler_app.tasks import RunContext
    ctx = RunContext(1, "bench.loop", 1)

    def loop(report: bool, work: bool) -> float:
        began = time.perf_counter()
        total = 0
        for i in range(loops):
            total += len(f"{i:08d}") if work else i
            if report:
                ctx.progress(i, loops)
        return time.perf_counter() - began

    def median_ms(report: bool, work: bool) -> float:
        return statistics.median(loop(report, work) for _ in range(repeats)) * 1000

    base, cost = median_ms(False, False), median_ms(True, False)
    work_base, work_cost = median_ms(False, True), median_ms(True, True)
    return {"loop_ms": base, "loop_with_progress_ms": cost,
            "per_call_us": (cost - base) / loops * 1000,
            "working_loop_ms": work_base, "working_loop_with_progress_ms": work_cost}


# -- the run ----------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer requests, one repeat")
    parser.add_argument("--only", nargs="*", help="system names to run")
    args = parser.parse_args()
    quick_output(args.quick)
    repeats, n_dispatch, n_tput = (1, 100, 600) if args.quick else (3, 300, 3000)
    probe = Probe()
    results: dict[str, Any] = {"systems": {}}
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        for system in systems(tmp):
            if args.only and system.name not in args.only:
                continue
            runs = []
            for repeat in range(repeats):
                server = Server(system)
                try:
                    tag = f"{system.name}{repeat}"
                    # Warm-up: connections, imports, first database writes.
                    if system.runs_task:
                        dispatch(system, server, probe, 20, f"{tag}w")
                    entry: dict[str, Any] = {}
                    if system.runs_task:
                        entry.update(dispatch(system, server, probe, n_dispatch, tag))
                    entry.update(throughput(system, server, probe, n_tput, tag))
                    if system.name == "scheduler_app":
                        entry.update(check_recorded(tmp, tag, n_tput))
                    runs.append(entry)
                    print(system.name, repeat, json.dumps(entry), flush=True)
                finally:
                    server.stop()
            results["systems"][system.name] = {
                "label": system.label,
                "runs": runs,
                **{k: statistics.median(r[k] for r in runs) for k in runs[0]},
            }
    results["progress"] = progress_cost(100_000, 5)
    results["ratios"] = ratios(results["systems"])
    results["machine"] = machine()
    results["settings"] = {"repeats": repeats, "dispatch_requests": n_dispatch,
                           "throughput_runs": n_tput, "client_threads": 8}
    if not args.only:
        # Other scripts (bench.accuracy, bench.scale…) keep their results under their own keys.
        kept = json.loads(results_file().read_text()) if results_file().exists() else {}
        results_file().write_text(json.dumps({**kept, **results}, indent=2) + "\n")
        write_table(results)
    print(json.dumps(results["ratios"], indent=2))


def ratios(found: dict[str, Any]) -> dict[str, float]:
    out: dict[str, float] = {}
    ours, thread, bare = (found.get(k) for k in ("scheduler_app", "thread", "bare_route"))
    if ours and thread:
        out["dispatch_p50_vs_thread"] = ours["p50_ms"] / thread["p50_ms"]
        out["dispatch_p99_vs_thread"] = ours["p99_ms"] / thread["p99_ms"]
    if ours and bare:
        out["throughput_vs_http_ceiling"] = ours["runs_per_s"] / bare["runs_per_s"]
    return out


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {name: metadata.version(name) for name in
                ("flask", "flask-apscheduler", "apscheduler", "sqlalchemy", "gunicorn")}
    return {"cpus": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"), "versions": versions}


def measured_on(m: dict[str, Any], versions: bool = True) -> str:
    """The opening of each section: when, on what machine and (optionally) which versions."""
    text = f"Measured {m['date']} on {m['cpus']} × {m['cpu']}, Python {m['python']}"
    if versions:
        text += "; " + ", ".join(f"{k} {v}" for k, v in m["versions"].items())
    return text


def write_table(results: dict[str, Any]) -> None:
    lines = ["| system | dispatch p50 | dispatch p99 | end-to-end runs/s | server CPU per run |",
             "| --- | --- | --- | --- | --- |"]
    for data in results["systems"].values():
        p50 = f"{data['p50_ms']:.2f} ms" if "p50_ms" in data else "—"
        p99 = f"{data['p99_ms']:.2f} ms" if "p99_ms" in data else "—"
        cpu = data.get("server_cpu_ms_per_run")
        cpu_text = "—" if cpu is None else f"{cpu:.2f} ms"
        lines.append(f"| {data['label']} | {p50} | {p99} | {data['runs_per_s']:.0f} | "
                     f"{cpu_text} |")
    table = "\n".join(lines)
    m = results["machine"]
    r = results["ratios"]
    p = results["progress"]
    ours = results["systems"].get("scheduler_app", {})
    summary = (
        measured_on(m) + ". "
        f"Medians of {results['settings']['repeats']} runs; dispatch over "
        f"{results['settings']['dispatch_requests']} sequential requests, throughput over "
        f"{results['settings']['throughput_runs']} runs from 8 client threads.\n\n"
        f"{table}\n\n"
        f"Ratios (targets in parentheses): dispatch p50 "
        f"{r.get('dispatch_p50_vs_thread', float('nan')):.2f}× the bare thread (≤ 2), "
        f"p99 {r.get('dispatch_p99_vs_thread', float('nan')):.2f}× (≤ 3); throughput "
        f"{100 * r.get('throughput_vs_http_ceiling', float('nan')):.0f} % of the HTTP "
        f"ceiling (≥ 90 %). Every run recorded: {ours.get('recorded', 0):.0f} of "
        f"{results['settings']['throughput_runs']} in the last repeat's database, "
        f"{ours.get('duplicates', 0):.0f} duplicates.\n\n"
        f"`ctx.progress` in a tight loop of 100,000 (target < 2×): {p['per_call_us']:.2f} µs "
        f"a call. With an empty body, {p['loop_with_progress_ms']:.1f} ms vs "
        f"{p['loop_ms']:.1f} ms without "
        f"({p['loop_with_progress_ms'] / p['loop_ms']:.1f}×); with a body doing a little work "
        f"(formatting the number), {p['working_loop_with_progress_ms']:.1f} ms vs "
        f"{p['working_loop_ms']:.1f} ms "
        f"({p['working_loop_with_progress_ms'] / p['working_loop_ms']:.1f}×)."
    )
    replace_readme_section("results", summary)


def replace_readme_section(name: str, body: str) -> None:
    """Replace bench/README.md's text between ``<!-- name:start -->`` and ``<!-- name:end -->``
    (each benchmark owns one such section), or add the section at the end."""
    readme = readme_file()
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    if start in text:
        head, rest = text.split(start, 1)
        text = f"{head}{start}\n{body}\n{end}{rest.split(end, 1)[1]}"
    else:
        text += f"\n{start}\n{body}\n{end}\n"
    readme.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
