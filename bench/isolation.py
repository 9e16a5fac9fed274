"""Process isolation, measured beside thread runs in the same run.

1. Mechanisms: starting and joining a no-op child from a single-threaded process: a plain
   ``os.fork`` (what the node's helper does per run), ``multiprocessing`` with fork,
   forkserver and spawn, and a task on a reused ``multiprocessing.Pool`` worker.
2. On the default deployment (``gunicorn.conf.py``: 2 workers, 4 run threads each, a SQLite
   file), the API's latency (``GET /api/runs?limit=1``, one request at a time): idle, with 8
   CPU-bound runs on threads (``bench.spin``), and with the same 8 runs process-isolated
   (``bench.spin_process``).
3. Hard cancel: a process-isolated run in one ``time.sleep(30)`` is cancelled (and, apart,
   runs into its 1 s timeout) with ``KILL_GRACE_SECONDS=1``: from the request to the run's end.
   Zombies are counted in the server's session afterwards.
4. Cost: a no-op run on a thread and in a process, end to end (``POST /api/runs`` until the
   run reads succeeded, polled every 5 ms) and as the run's own duration; the memory of the
   gunicorn workers, of each node's helper and of a run's child (RSS and PSS, ``/proc``).

    .venv/bin/python -m bench.isolation            # about two minutes
    .venv/bin/python -m bench.isolation --quick    # under a minute; writes to bench/work/
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

from bench.run import (
    BIN,
    ROOT,
    _free_port,
    machine,
    measured_on,
    percentile,
    quick_output,
    replace_readme_section,
    results_file,
    take_turns,
)

FINAL = ("succeeded", "failed", "cancelled")
KILL_GRACE = 1.0
SPIN_RUNS = 8
PROCESS_LABEL = '8 CPU-bound runs, isolation="process"'


def _noop() -> None:
    pass


def mechanisms(reps: int) -> dict[str, float]:
    """Median ms to start and join a no-op child, per mechanism."""
    out: dict[str, float] = {}

    def timed(start_join: Any, reps: int = reps) -> float:
        times = []
        for _ in range(reps):
            t0 = time.perf_counter()
            start_join()
            times.append((time.perf_counter() - t0) * 1000)
        return statistics.median(times)

    def fork() -> None:
        pid = os.fork()
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)

    out["os.fork of a single-threaded process"] = timed(fork)
    for method in ("fork", "forkserver", "spawn"):
        ctx = multiprocessing.get_context(method)

        def start_join(ctx: Any = ctx) -> None:
            p = ctx.Process(target=_noop)
            p.start()
            p.join()

        start_join()  # the forkserver's own start is not a run's
        out[f"multiprocessing {method}"] = timed(start_join, min(reps, 5))
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        pool.apply(_noop)
        out["a task on a reused pool worker"] = timed(lambda: pool.apply(_noop))
    return out


class Service:
    """The standalone service under gunicorn.conf.py (2 workers), on a SQLite file."""

    def __init__(self, tmp: Path) -> None:
        self.port = _free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("FLASK_", "GUNICORN_"))}
        env.update(PYTHONPATH=str(ROOT), GUNICORN_CMD_ARGS="--no-control-socket",
                   GUNICORN_ACCESSLOG="", GUNICORN_WORKERS="2",
                   FLASK_DATABASE_URL=f"sqlite:///{tmp / 'bench.sqlite3'}",
                   FLASK_TASK_MODULES='["bench.tasks"]',
                   FLASK_KILL_GRACE_SECONDS=str(KILL_GRACE), FLASK_LOG_LEVEL="WARNING")
        self.log = open(tmp / "server.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "gunicorn.conf.py", "--bind",
             f"127.0.0.1:{self.port}", "wsgi:app"], cwd=ROOT, env=env, stdout=self.log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.url = f"http://127.0.0.1:{self.port}"
        self.http = requests.Session()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if len([n for n in self.get("/api/nodes")["items"] if n["alive"]]) == 2:
                    return
            except (requests.RequestException, ValueError):
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError("the service did not start")

    def get(self, path: str) -> Any:
        return self.http.get(self.url + path, timeout=30).json()

    def post(self, path: str, body: Any = None) -> Any:
        response = self.http.post(self.url + path, json=body, timeout=30)
        assert response.status_code in (200, 202), response.text
        return response.json()

    def submit(self, task: str, **kwargs: Any) -> int:
        return int(self.post("/api/runs", {"task": task, "kwargs": kwargs})["id"])

    def wait(self, run_id: int, states: tuple[str, ...] = FINAL, poll: float = 0.005,
             timeout: float = 60) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/runs/{run_id}")
            if run["state"] in states:
                return run  # type: ignore[no-any-return]
            time.sleep(poll)
        raise TimeoutError(f"run {run_id} never reached {states}")

    def latency(self, count: int) -> dict[str, float]:
        times = []
        for _ in range(count):
            t0 = time.perf_counter()
            self.http.get(self.url + "/api/runs?limit=1", timeout=30).raise_for_status()
            times.append((time.perf_counter() - t0) * 1000)
        return {"p50_ms": percentile(times, 0.5), "p99_ms": percentile(times, 0.99)}

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(30)
        except ProcessLookupError:
            self.proc.wait()
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.log.close()


def _processes() -> dict[int, tuple[int, str, int]]:
    """pid -> (ppid, state, session id) of every process."""
    out = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            out[int(entry)] = (int(fields[1]), fields[0], int(fields[3]))
    return out


def _memory(pid: int) -> dict[str, float]:
    """RSS and PSS of a process in MB."""
    values = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss"):
            values[key.lower() + "_mb"] = round(int(rest.split()[0]) / 1024, 1)
    return values


def tree(master: int) -> dict[str, list[int]]:
    procs = _processes()
    workers = [p for p, (pp, _, _) in procs.items() if pp == master]
    helpers = [p for p, (pp, _, _) in procs.items() if pp in workers]
    children = [p for p, (pp, _, _) in procs.items() if pp in helpers]
    return {"workers": workers, "helpers": helpers, "children": children}


def spin_scenario(svc: Service, task: str, count: int) -> dict[str, Any]:
    ids = [svc.submit(task, seconds=120) for _ in range(SPIN_RUNS)]
    for run_id in ids:
        svc.wait(run_id, ("running",))
    time.sleep(3 if task.endswith("process") else 1)  # the helpers' first start, if any
    out: dict[str, Any] = svc.latency(count)
    if task.endswith("process"):
        procs = tree(svc.proc.pid)
        out["memory"] = {kind: [_memory(p) for p in pids] for kind, pids in procs.items()}
    for run_id in ids:
        svc.post(f"/api/runs/{run_id}/cancel")
    for run_id in ids:
        svc.wait(run_id, timeout=30)
    return out


class _Scenarios:
    """``take_turns``' harness over one service: the API's latency idle (``idle``), beside
    CPU-bound runs on threads (``thread``) or in processes (``process``)."""

    def __init__(self, svc: Service) -> None:
        self.svc = svc

    def round(self, name: str, count: int, tag: str) -> dict[str, Any]:
        if count == 0:  # no warm-up: the service answered its cost runs already
            return {}
        if name == "idle":
            return self.svc.latency(count)
        task = "bench.spin" if name == "thread" else "bench.spin_process"
        return spin_scenario(self.svc, task, count)


def latency_rounds(svc: Service, count: int, rounds: int) -> dict[str, Any]:
    """Idle, thread and process latency, taking turns round by round (the order rotated), so
    a burst of load from elsewhere on the machine lands on all three; medians over rounds."""
    per = take_turns(_Scenarios(svc), ["idle", "thread", "process"], rounds, count, warmup=0)
    out: dict[str, Any] = {}
    for name, entries in per.items():
        out[name] = {key: statistics.median(e[key] for e in entries)
                     for key in ("p50_ms", "p99_ms")}
        out[name]["rounds"] = entries
    return out


def hard_stops(svc: Service, reps: int) -> dict[str, Any]:
    cancels, timeouts = [], []
    for _ in range(reps):
        run_id = svc.submit("bench.sleep_process", seconds=30)
        svc.wait(run_id, ("running",))
        time.sleep(0.3)
        t0 = time.perf_counter()
        svc.post(f"/api/runs/{run_id}/cancel")
        run = svc.wait(run_id)
        assert run["state"] == "cancelled", run
        cancels.append(time.perf_counter() - t0)
    for _ in range(reps):
        run = svc.wait(svc.submit("bench.sleep_process", seconds=30))
        assert run["error"]["type"] == "Timeout", run
        timeouts.append(run["duration_s"])
    zombies = [p for p, (_, state, sid) in _processes().items()
               if state == "Z" and sid == svc.proc.pid]
    return {"cancel_to_end_s": {"median": statistics.median(cancels), "max": max(cancels)},
            "timeout_run_duration_s": {"median": statistics.median(timeouts),
                                       "max": max(timeouts)},
            "zombies": len(zombies)}


def cost(svc: Service, reps: int) -> dict[str, Any]:
    out = {}
    for task in ("bench.noop_thread", "bench.noop_process"):
        svc.wait(svc.submit(task))  # warm: the helper of at least one node
        ends, durations = [], []
        for _ in range(reps):
            t0 = time.perf_counter()
            run = svc.wait(svc.submit(task))
            ends.append((time.perf_counter() - t0) * 1000)
            durations.append(run["duration_s"] * 1000)
        out[task] = {"end_to_end_p50_ms": percentile(ends, 0.5),
                     "end_to_end_p90_ms": percentile(ends, 0.9),
                     "run_duration_p50_ms": percentile(durations, 0.5)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    quick_output(args.quick)
    requests_n = 100 if args.quick else 300
    rounds = 1 if args.quick else 3
    reps = 3 if args.quick else 5
    load_before = os.getloadavg()
    results: dict[str, Any] = {"mechanisms_ms": mechanisms(10 if args.quick else 30)}
    print(json.dumps(results, indent=2), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        svc = Service(Path(tmp))
        try:
            results["cost"] = cost(svc, 10 if args.quick else 30)
            print(json.dumps(results["cost"], indent=2), flush=True)
            latency = latency_rounds(svc, requests_n, rounds)
            results["latency"] = latency
            print(json.dumps(latency, indent=2), flush=True)
            results["hard_stop"] = hard_stops(svc, reps)
            print(json.dumps(results["hard_stop"], indent=2), flush=True)
        finally:
            svc.stop()
    results["machine"] = machine()
    results["settings"] = {"quick": args.quick, "requests": requests_n, "rounds": rounds,
                           "spin_runs": SPIN_RUNS,
                           "kill_grace_seconds": KILL_GRACE, "gunicorn_workers": 2,
                           "run_threads": 4,
                           "load_average_before": [round(x, 2) for x in load_before],
                           "load_average_after": [round(x, 2) for x in os.getloadavg()]}
    if not args.no_write:
        data = json.loads(results_file().read_text()) if results_file().exists() else {}
        data["isolation"] = results
        results_file().write_text(json.dumps(data, indent=2) + "\n")
        write_section(results)


def write_section(r: dict[str, Any]) -> None:
    lat = r["latency"]
    idle = lat["idle"]

    def row(label: str, d: dict[str, float]) -> str:
        return (f"| {label} | {d['p50_ms']:.1f} ms ({d['p50_ms'] / idle['p50_ms']:.1f}×) | "
                f"{d['p99_ms']:.1f} ms ({d['p99_ms'] / idle['p99_ms']:.1f}×) |")

    mech = "\n".join(f"| {k} | {v:.1f} ms |" for k, v in r["mechanisms_ms"].items())
    cost_rows = "\n".join(
        f"| {k} | {v['end_to_end_p50_ms']:.1f} ms | {v['end_to_end_p90_ms']:.1f} ms | "
        f"{v['run_duration_p50_ms']:.1f} ms |" for k, v in r["cost"].items())
    memory = lat["process"]["rounds"][-1].get("memory", {})

    def mem(kind: str) -> str:
        items = memory.get(kind) or []
        if not items:
            return "–"
        rss = statistics.median(m["rss_mb"] for m in items)
        pss = statistics.median(m["pss_mb"] for m in items)
        return f"{rss:.0f} MB RSS, {pss:.0f} MB PSS (median of {len(items)})"

    hs = r["hard_stop"]
    body = f"""## Process isolation (`python -m bench.isolation`)

{measured_on(r["machine"])}. Settings: {json.dumps(r["settings"])}.

Starting and joining a no-op child (median):

| mechanism | time |
| --- | --- |
{mech}

API latency, `GET /api/runs?limit=1` one at a time, on the default deployment (2 gunicorn
workers, 4 run threads each), with {r["settings"]["spin_runs"]} CPU-bound runs in progress:

| | p50 | p99 |
| --- | --- | --- |
{row("idle", idle)}
{row("8 CPU-bound runs on threads", lat["thread"])}
{row(PROCESS_LABEL, lat["process"])}

Each row is the median over {r["settings"]["rounds"]} rounds that take turns (the order rotated
from round to round), so load from elsewhere on this shared machine lands on all three.

Forkserver and spawn children import what the parent's main module imports (here the bench's
own modules; a host app's child would also have to build the app), which is most of their time.

Hard stops of a run in `time.sleep(30)` that never looks at its context, kill grace \
{r["settings"]["kill_grace_seconds"]:g} s: from the cancel request to the run's end, median \
{hs["cancel_to_end_s"]["median"]:.2f} s, max {hs["cancel_to_end_s"]["max"]:.2f} s. A 1 s \
timeout ends the run {hs["timeout_run_duration_s"]["median"]:.2f} s after its start \
(max {hs["timeout_run_duration_s"]["max"]:.2f} s). Zombies left in the server's session: \
{hs["zombies"]}.

Cost of a no-op run (end to end: `POST /api/runs` until it reads succeeded, polled every 5 ms):

| task | end to end p50 | p90 | the run's own duration p50 |
| --- | --- | --- | --- |
{cost_rows}

A process run's own duration is the fork, the child's set-up and its report; the child runs
at nice 19, so on this shared machine (its load average is in the settings above) it also waits
its turn for a CPU.

Memory, while the process runs were in progress: a gunicorn worker {mem("workers")}; \
a node's helper {mem("helpers")}; a run's child {mem("children")}. A child shares the \
helper's pages until it writes them (PSS divides shared pages among their users)."""
    replace_readme_section("isolation", body)


if __name__ == "__main__":
    main()
