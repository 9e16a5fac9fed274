"""This checkout of the service against another one, run-now dispatch under gunicorn, request
by request, with the bare thread beside both: is a change to a run-now's path worth its
microseconds?

Why not two runs of ``bench.run``: there each system has the machine for 1,000 requests in a
row, one after the other, and on this 2-core virtual machine a server start lands its threads
in a quicker or a slower place for all of them, and the machine has slower minutes: one
repeat's p50 ratio ranged 1.22-1.41× against the bare thread for the same code on 2026-12-05,
far more than the 5-30 µs a change to the path moves it. Here each round starts all three
servers afresh (so a start's luck is drawn again every round), and each turn sends one
sequential request to each, each turn's order drawn at random (``bench.run.shuffled``), so
neither side follows any system more often than the other: a request right after a SQLite
system's can meet that server still settling its run, a request right after the bare thread's
does not, and a fixed order favoured one side by 18 µs when both sides ran the same code. The
rounds' differences, not their absolute figures, are what it is for; a runs table of each side
is checked afterwards, every run once and succeeded.

    git worktree add /tmp/base HEAD~1        # the other checkout: any commit
    .venv-bench/bin/python -m bench.compare /tmp/base                 # ~1 minute
    .venv-bench/bin/python -m bench.compare /tmp/base --rounds 20 --requests 400

Prints each round and a summary; writes nothing. "this" is the checkout the bench runs from.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
from pathlib import Path

from bench import run as bench
from scheduler_app.store import schema

SIDES = ("this", "other")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("other", type=Path, help="the other checkout's directory")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--requests", type=int, default=400, help="turns a round")
    args = parser.parse_args()
    if not (args.other / "scheduler_app" / "__init__.py").is_file():
        parser.error(f"{args.other} is not a checkout of this service (no scheduler_app/)")
    if args.rounds < 1 or args.requests < 50:
        parser.error("--rounds must be at least 1 and --requests at least 50")
    probe = bench.Probe()
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        found = {s.name: s for s in bench.systems(tmp)}
        ours = found["scheduler_app"]
        roots = {"this": bench.ROOT, "other": args.other.resolve()}
        p50s: dict[str, list[float]] = {"thread": [], "this": [], "other": []}
        for n in range(args.rounds):
            systems = {"thread": found["thread"]}
            for side in SIDES:
                env = {**ours.env,
                       "FLASK_DATABASE_URL": f"sqlite:///{tmp / f'{side}-{n}.sqlite3'}"}
                systems[side] = dataclasses.replace(ours, env=env)
            latencies = bench.interleaved_round(systems, probe, args.requests, f"r{n}",
                                                roots=roots)
            found_p50 = {name: statistics.median(values) for name, values in latencies.items()}
            for name, value in found_p50.items():
                p50s[name].append(value)
            print(f"{n}: p50 µs thread {found_p50['thread'] * 1000:.0f}, this "
                  f"{found_p50['this'] * 1000:.0f}, other {found_p50['other'] * 1000:.0f}; "
                  f"× thread {found_p50['this'] / found_p50['thread']:.3f} and "
                  f"{found_p50['other'] / found_p50['thread']:.3f}; other − this "
                  f"{(found_p50['other'] - found_p50['this']) * 1000:+.0f} µs", flush=True)
        sent = bench.INTERLEAVED_WARMUP + args.requests
        for side in SIDES:
            for n in range(args.rounds):
                checked = bench.check_recorded(tmp / f"{side}-{n}.sqlite3", schema.runs.name,
                                               f"r{n}-", sent)
                if checked != {"recorded": sent, "succeeded": sent, "distinct": sent}:
                    raise RuntimeError(f"{side}, round {n}: {checked}, of {sent} runs sent")
    differences = [(o - t) * 1000 for t, o in zip(p50s["this"], p50s["other"], strict=True)]

    def times_thread(side: str) -> float:
        return statistics.median(
            a / b for a, b in zip(p50s[side], p50s["thread"], strict=True))

    print(f"dispatch p50 × the bare thread, medians over {args.rounds} rounds: this "
          f"{times_thread('this'):.3f}, other {times_thread('other'):.3f}")
    print(f"other − this: median {statistics.median(differences):+.1f} µs, mean "
          f"{statistics.mean(differences):+.1f} µs; this quicker in "
          f"{sum(d > 0 for d in differences)} of {args.rounds} rounds")


if __name__ == "__main__":
    main()
