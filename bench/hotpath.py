"""CPU per recorded run, in one process, without HTTP or a client on the same cores: what the
hot-path changes of issue 15 are measured with (bench/README.md, "A recorded run's CPU").

Two measurements of CPU, each a median (and minimum) over rounds, the variants taking turns
round by round so a busy moment of a shared machine falls on all of them, and a count of what a
run-now writes:

- **store**: ``RunStore.create`` of a run already claimed by this node, then its ``finish``,
  one thread, on a SQLite file: with the statements on the driver (``store/driver.py``) and
  through ``Connection.execute`` (the engine not adopted), in the same process;
- **app**: ``POST /api/runs`` of the no-op ``bench.idle`` through Flask's test client, one
  request at a time (``--threads`` for more), until every run has succeeded, against a bare
  route of the same app answering 202: the process's CPU (every thread: request, run thread,
  group commit, dispatcher, maintenance) per run;
- **frames**: the pages a run-now's insert and its settle each append to SQLite's write-ahead
  log (one frame a page, written with two ``pwrite`` calls), read from the WAL-index header.

    .venv/bin/python -m bench.hotpath            # ~1 minute
    .venv/bin/python -m bench.hotpath --rounds 3 --runs 500
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import sqlalchemy as sa

from scheduler_app import create_app, start_scheduler, stop_scheduler
from scheduler_app.services import services
from scheduler_app.store import Database, NewRun, RunState, Store, driver
from scheduler_app.timeutil import utcnow


def summary(values: list[float]) -> str:
    return f"median {statistics.median(values):.0f} µs, min {min(values):.0f} µs"


def store_rounds(tmp: Path, rounds: int, runs: int) -> dict[str, list[float]]:
    db = Database(f"sqlite:///{tmp / 'store.sqlite3'}")
    db.migrate()
    store = Store(db)

    def one_round() -> float:
        began = time.process_time()
        for _ in range(runs):
            new = NewRun(task="bench.idle", kwargs={"key": "x"}, max_attempts=1,
                         retry_backoff=2.0, timeout=None, scheduled_for=utcnow())
            run = store.runs.create(new, running_on="bench")
            store.runs.finish(run.id, "bench", RunState.SUCCEEDED, result=None)
        return (time.process_time() - began) / runs * 1e6

    one_round()  # warm-up: compilations, the write connection, the checkpointer
    gc.freeze()
    found: dict[str, list[float]] = {"driver": [], "Connection.execute": []}
    try:
        for _ in range(rounds):
            for variant, values in found.items():
                if variant == "driver":
                    driver.adopt(db.engine)
                else:
                    driver.disown(db.engine)
                values.append(one_round())
    finally:
        db.dispose()
    return found


def _log_frames(shm: int) -> tuple[int, bytes]:
    """The frames in a SQLite file's write-ahead log and the log's salt: ``mxFrame`` and
    ``aSalt`` of the WAL-index header at the start of the ``-shm`` file (the u32 at byte 16, in
    the host's byte order, and the 8 bytes at 32; sqlite.org/walformat.html). A new salt: the
    log started over."""
    header = os.pread(shm, 40, 0)
    return int(struct.unpack_from("=I", header, 16)[0]), header[32:40]


def wal_frames(tmp: Path, runs: int) -> dict[str, float]:
    """Pages a run-now's two write transactions append to the log, as the server writes them:
    the insert of a run already started here, then its settle with the statistics it counts.
    A commit writes each page it changed as one frame, with two ``pwrite`` calls (the frame's
    24-byte header, then the page): what a transaction costs in system calls grows with the
    B-trees it touches, the table's and each index's."""
    path = tmp / "frames.sqlite3"
    db = Database(f"sqlite:///{path}")
    db.migrate()
    driver.adopt(db.engine)
    store = Store(db)
    found: dict[str, list[int]] = {"insert": [], "settle": []}
    try:
        with open(f"{path}-shm", "rb") as shm:
            for _ in range(runs):
                new = NewRun(task="bench.idle", kwargs={"key": "x"}, max_attempts=1,
                             retry_backoff=2.0, timeout=None, scheduled_for=utcnow())
                before = _log_frames(shm.fileno())
                run = store.runs.create(new, running_on="bench", count_wait=False)
                between = _log_frames(shm.fileno())
                store.runs.finish_and_claim(run.id, "bench", RunState.SUCCEEDED,
                                            started=run, count_wait=True)
                after = _log_frames(shm.fileno())
                # A log that started over (a checkpoint had copied all of it) counts from 0
                # under a new salt: not a sample.
                if between[1] == before[1]:
                    found["insert"].append(between[0] - before[0])
                if after[1] == between[1]:
                    found["settle"].append(after[0] - between[0])
    finally:
        db.dispose()
    return {name: statistics.median(counts) for name, counts in found.items()}


def app_rounds(tmp: Path, rounds: int, runs: int, threads: int) -> dict[str, list[float]]:
    app = create_app({
        "DATABASE_URL": f"sqlite:///{tmp / 'app.sqlite3'}",
        "TASK_MODULES": ["scheduler_app.tasks.demo", "scheduler_app.tasks.maintenance",
                         "bench.tasks"],
        "PRUNE_RUNS_CRON": "", "MAX_QUEUED_RUNS": 1_000_000, "LOG_LEVEL": "WARNING"})

    @app.post("/bench-bare")
    def bare() -> tuple[dict[str, str], int]:
        return {}, 202

    start_scheduler(app)
    db = services(app).store.db
    local = threading.local()

    def post(path: str, i: int) -> None:
        client = getattr(local, "client", None) or app.test_client()
        local.client = client
        response = client.post(path, json={"task": "bench.idle", "kwargs": {"key": str(i)}})
        if response.status_code != 202:
            raise RuntimeError(f"{path}: {response.status_code} {response.text[:200]}")

    def succeeded() -> int:
        with db.engine.connect() as conn:
            return int(conn.execute(sa.text(
                "SELECT count(*) FROM scheduler_runs WHERE state = 'succeeded'")).scalar_one())

    def one_round(path: str, n: int) -> float:
        before = succeeded()
        send: Callable[[int], None] = lambda i: post(path, i)  # noqa: E731
        began = time.process_time()
        if threads == 1:
            for i in range(n):
                send(i)
        else:
            with ThreadPoolExecutor(threads) as pool:
                list(pool.map(send, range(n)))
        if path == "/api/runs":
            deadline = time.monotonic() + 60
            while succeeded() < before + n:
                if time.monotonic() > deadline:
                    raise RuntimeError("runs did not all succeed within 60 s")
                time.sleep(0.002)
        return (time.process_time() - began) / n * 1e6

    try:
        one_round("/api/runs", 100)
        one_round("/bench-bare", 100)
        gc.freeze()
        found: dict[str, list[float]] = {"POST /api/runs": [], "bare route": []}
        for _ in range(rounds):
            found["bare route"].append(one_round("/bench-bare", runs))
            found["POST /api/runs"].append(one_round("/api/runs", runs))
    finally:
        stop_scheduler(app)
        db.dispose()
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--runs", type=int, default=1000, help="runs per round")
    parser.add_argument("--threads", type=int, default=1, help="client threads (app)")
    args = parser.parse_args()
    load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        print(f"CPU per run; {args.rounds} rounds of {args.runs}; load average {load:.2f}")
        for name, values in store_rounds(tmp, args.rounds, args.runs).items():
            print(f"store, create + finish, {name}: {summary(values)}")
        frames = wal_frames(tmp, args.runs)
        print(f"log frames a run-now writes (median): insert {frames['insert']:.0f}, settle "
              f"{frames['settle']:.0f}; two pwrite calls a frame")
        for name, values in app_rounds(tmp, args.rounds, args.runs, args.threads).items():
            print(f"app, {name} ({args.threads} client thread(s)): {summary(values)}")
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
