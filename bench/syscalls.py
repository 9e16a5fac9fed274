"""System calls a run-now costs in the server: ``strace -c`` counts them in gunicorn's workers
while the bench's client sends sequential requests (``bench.run``'s client, probe and systems)
to the bare thread, the durable floor and this service; the table gives calls per request.

Why count them: on a 2-core virtual machine a system call costs microseconds of the CPU and a
thread's wake-up tens of them, and every run-now makes several of each. What a run's two
write transactions cost SQLite shows here as ``pwrite64``: each page a commit changed goes to
the write-ahead log as a frame, in two calls (its 24-byte header, then the page), so the calls
grow with the B-trees a run touches (the table and each index). ``strace`` slows every traced
call, so only the counts mean anything, not the times.

Needs strace (Debian's package: ``apt-get install strace``). Prints; writes nothing.

    .venv-bench/bin/python -m bench.syscalls                 # ~1 minute
    .venv-bench/bin/python -m bench.syscalls --requests 2000 --only scheduler_app
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench import run as bench
from bench.scale import processes

SYSTEMS = ("thread", "floor", "scheduler_app")
WARMUP = 50


def traced(pid: int) -> bool:
    """Whether every thread of ``pid`` is traced already (strace attaches thread by thread)."""
    for status in Path(f"/proc/{pid}/task").glob("*/status"):
        try:
            lines = status.read_text().splitlines()
        except OSError:
            continue  # a thread that just ended
        if any(line.startswith("TracerPid:") and line.split()[1] == "0" for line in lines):
            return False
    return True


def parse_summary(text: str) -> dict[str, int]:
    """``strace -c``'s table: calls by system call (the ``errors`` column may be empty)."""
    calls: dict[str, int] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 5 or not fields[0][0].isdigit() or fields[-1] == "total":
            continue
        calls[fields[-1]] = int(fields[3])
    return calls


def count(system: bench.System, probe: bench.Probe, requests: int, out: Path) -> dict[str, int]:
    """Calls in the workers of ``system`` over ``requests`` sequential run-nows."""
    server = bench.Server(system)
    try:
        bench.dispatch(system, server, probe, WARMUP, f"{system.name}-w", first_wait=60)
        argv = ["strace", "-f", "-c", "-o", str(out)]
        workers = [pid for pid, role in processes(server.proc.pid).items() if role == "worker"]
        for pid in workers:
            argv += ["-p", str(pid)]
        tracer = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not all(traced(pid) for pid in workers):
                if time.monotonic() > deadline or tracer.poll() is not None:
                    raise RuntimeError(f"strace did not attach to {system.name}'s workers")
                time.sleep(0.05)
            bench.dispatch(system, server, probe, requests, f"{system.name}-s")
        finally:
            tracer.send_signal(signal.SIGINT)
            tracer.wait(60)
    finally:
        server.stop()
    return parse_summary(out.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--only", nargs="*", choices=SYSTEMS, help="systems to count")
    parser.add_argument("--top", type=int, default=16, help="system calls shown")
    args = parser.parse_args()
    if args.requests < 1:
        parser.error("--requests must be at least 1")
    if shutil.which("strace") is None:
        parser.error("needs strace (apt-get install strace)")
    chosen = args.only or list(SYSTEMS)
    probe = bench.Probe()
    per_request: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        systems = {s.name: s for s in bench.systems(tmp)}
        for name in chosen:
            calls = count(systems[name], probe, args.requests, tmp / f"{name}.strace")
            per_request[name] = {k: v / args.requests for k, v in calls.items()}
    last = chosen[-1]
    names = sorted({k for calls in per_request.values() for k in calls},
                   key=lambda k: -per_request[last].get(k, 0.0))
    print(f"System calls a request in gunicorn's workers, {args.requests} sequential run-nows "
          "(strace -f -c):")
    print("| system call | " + " | ".join(chosen) + " |")
    print("| --- |" + " --- |" * len(chosen))
    for name in names[:args.top]:
        print(f"| {name} | " + " | ".join(f"{per_request[s].get(name, 0.0):.2f}"
                                           for s in chosen) + " |")
    print("| all | " + " | ".join(f"{sum(per_request[s].values()):.1f}" for s in chosen) + " |")


if __name__ == "__main__":
    main()
