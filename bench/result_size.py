"""A task's result in the writer's turn: how long a settle holds the write transaction (on
SQLite, the file's one writer, which every other write on the host waits for) with results of
growing size, encoded once by the runner before it (``EncodedJSON``), against the same settle
with no result, in the same run. Until ``f01bdf0`` the settle encoded the value again and read
it back decoded inside the transaction; that commit's version of this bench measured both ways
(bench/README.md, "2026-12-05, 06:42–09:42 UTC").

One thread, a SQLite file, each variant in turns round by round; medians over rounds of the
wall time of ``RunStore.finish_and_claim`` (its transaction, uncontended: the writer's turn)
and of the calling thread's CPU for the whole settle, the runner's encoding included.

    .venv/bin/python -m bench.result_size                # ~15 seconds
    .venv/bin/python -m bench.result_size --rounds 9 --runs 50
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from scheduler_app.scheduler.runner import _jsonable
from scheduler_app.store import Database, NewRun, RunState, Store
from scheduler_app.timeutil import utcnow

SIZES = {"small (0.6 KiB)": 10, "medium (67 KiB)": 1_000, "large (700 KiB)": 10_000}


def result_of(items: int) -> dict[str, Any]:
    """A report-like result: a list of records."""
    return {"items": [{"id": i, "name": f"item {i}", "tags": ["a", "b"], "score": i * 0.5}
                      for i in range(items)]}


def measure(store: Store, value: Any, encode: Callable[[Any], Any], runs: int
            ) -> tuple[float, float]:
    """Median wall time of the settle's transaction and mean CPU of encode + settle, in µs."""
    turns: list[float] = []
    began_cpu = time.thread_time()
    for _ in range(runs):
        run = store.runs.create(NewRun(task="bench.idle", kwargs={}, max_attempts=1,
                                       retry_backoff=2.0, timeout=None,
                                       scheduled_for=utcnow()), running_on="bench")
        result = encode(value)
        began = time.perf_counter()
        store.runs.finish_and_claim(run.id, "bench", RunState.SUCCEEDED, result=result,
                                    started=run)
        turns.append(time.perf_counter() - began)
    cpu = (time.thread_time() - began_cpu) / runs
    return statistics.median(turns) * 1e6, cpu * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=30, help="settles per size, variant, round")
    args = parser.parse_args()
    variants: dict[str, Callable[[Any], Any]] = {
        "encoded once by the runner": _jsonable,
        "no result (the baseline)": lambda value: None,
    }
    with tempfile.TemporaryDirectory() as tmp:
        db = Database(f"sqlite:///{Path(tmp) / 'results.sqlite3'}")
        db.migrate()
        store = Store(db)
        try:
            found: dict[tuple[str, str], list[tuple[float, float]]] = {}
            for _ in range(args.rounds):
                for size, items in SIZES.items():
                    value = result_of(items)
                    for variant, encode in variants.items():
                        found.setdefault((size, variant), []).append(
                            measure(store, value, encode, args.runs))
        finally:
            db.dispose()
    print(f"medians of {args.rounds} rounds of {args.runs} settles, variants in turns\n")
    print("| result | settled with | writer's turn (settle transaction) | CPU a settle |")
    print("| --- | --- | --- | --- |")
    for (size, variant), values in found.items():
        turn = statistics.median(v[0] for v in values)
        cpu = statistics.median(v[1] for v in values)
        print(f"| {size} | {variant} | {turn:,.0f} µs | {cpu:,.0f} µs |")


if __name__ == "__main__":
    main()
