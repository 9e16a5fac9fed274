"""What a claim costs: ``RunStore.claim`` on a queue of due runs, on a SQLite file and on
PostgreSQL, timed in this process. The point is the overhead of the concurrency controls
(issue 13): a claim of runs with no controls must cost what it cost before them, so this
script only uses what the store had before (``NewRun``'s first fields, ``claim``) and runs
unchanged against an older checkout (``PYTHONPATH=<checkout> python bench/claim.py``).

For each database and each round: queue ``--runs`` due runs of ``demo.echo`` (no controls),
then claim them ``--batch`` at a time, as a node with that many free threads does, until none
is left; report a claim's median wall time (µs) and its median CPU time in this thread
(``time.thread_time``: the claim's Python and, for SQLite, the database's own work; steadier
than wall time on a shared machine), medians over rounds. With
``--controls``, the same with every run under a concurrency key (limit high enough never to
hold one back) and a rate limit with room for all: the cost of counting them.

    .venv/bin/python -m bench.claim                      # SQLite and PostgreSQL, 5 rounds
    .venv/bin/python -m bench.claim --controls
    PYTHONPATH=/tmp/base .venv/bin/python bench/claim.py # the same, on another checkout
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa

from bench.cluster import scratch_database
from scheduler_app.store import Database, NewRun, Store


def new_runs(count: int, controls: bool) -> list[NewRun]:
    due = datetime.now(UTC) - timedelta(seconds=1)
    extra: dict[str, Any] = {}
    if controls:
        extra = {"concurrency_key": "bench", "concurrency_limit": 100_000,
                 "rate_limit": "1000000/h", "rate_key": "bench"}
    return [NewRun(task="demo.echo", kwargs={"value": i}, max_attempts=1, retry_backoff=1.0,
                   timeout=None, scheduled_for=due, **extra) for i in range(count)]


def one_round(store: Store, runs: int, batch: int, controls: bool
              ) -> tuple[list[float], list[float]]:
    with store.db.write() as conn:
        for new in new_runs(runs, controls):
            store.runs.create(new, conn=conn)
    walls, cpus = [], []
    while True:
        began, began_cpu = time.perf_counter(), time.thread_time()
        claimed = store.runs.claim("bench-node", batch, {})
        walls.append(time.perf_counter() - began)
        cpus.append(time.thread_time() - began_cpu)
        if not claimed:
            return walls[:-1], cpus[:-1]
        # Settle them so the next round's queue starts empty and the runs table keeps growing
        # as a real one does.
        with store.db.write() as conn:
            conn.execute(sa.text("UPDATE scheduler_runs SET state = 'succeeded' "
                                 "WHERE node = 'bench-node' AND state = 'running'"))


def measure(url: str, rounds: int, runs: int, batch: int, controls: bool) -> dict[str, float]:
    db = Database(url)
    db.migrate()
    store = Store(db)
    walls, cpus = [], []
    try:
        for _ in range(rounds):
            wall, cpu = one_round(store, runs, batch, controls)
            walls.append(statistics.median(wall) * 1e6)
            cpus.append(statistics.median(cpu) * 1e6)
    finally:
        db.dispose()
    return {"wall_us": round(statistics.median(walls)), "cpu_us": round(statistics.median(cpus))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=400)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--controls", action="store_true")
    parser.add_argument("--no-postgresql", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = measure(f"sqlite:///{tmp}/claim.sqlite3", args.rounds, args.runs, args.batch,
                         args.controls)
    print(f"sqlite      claim of {args.batch}: wall {sqlite['wall_us']} µs, "
          f"cpu {sqlite['cpu_us']} µs")
    if args.no_postgresql:
        return
    with scratch_database("bench_claim") as url:
        pg = measure(url, args.rounds, args.runs, args.batch, args.controls)
    print(f"postgresql  claim of {args.batch}: wall {pg['wall_us']} µs, "
          f"cpu {pg['cpu_us']} µs")


if __name__ == "__main__":
    main()
