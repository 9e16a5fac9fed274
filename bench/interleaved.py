"""Issue 15's dispatch targets measured with the systems interleaved request by request: the
bare thread, the durable floor and this service run at once, and each turn sends one sequential
request to each, each turn's order drawn at random.

Why beside ``bench.run``'s blocks: there each system has the machine to itself for its 1,000
requests, one after the other, and this 2-core machine's speed moves from one half-second to
the next and from one server start to the next (on 2026-12-05 the bare thread's p50 ranged
0.70–1.50 ms between repeats of one run, and the durable floor read 1.05× and 1.24× the bare
thread in two runs of the same code). Interleaved, a slow phase falls on every system alike,
so the ratios hold still. Each round starts the three servers afresh (a start's luck is drawn
again every round) and each turn's order is drawn at random (``bench.run.shuffled``), so no
system follows a SQLite system's request, which that server may still be settling, more often
than another does. ``bench.run`` takes the same measurement in each of its
repeats (``bench.run.interleaved_dispatch``); this is it alone, in about a minute. Dispatch is
"request sent → task's first line" as in ``bench.run`` (the same client, probe and systems);
afterwards each run of this service and of the floor is checked in its database, once and
succeeded. The absolute figures are a little higher than in blocks: three servers' idle threads
share the cores, and each request finds the caches holding the other two's work.

Until 2026-12-05 18:50 UTC the three servers were started once for all rounds and the order
reversed every other turn, which put this service's request right after its own at every other
turn's start; from 18:50 to 20:15 the order was rotated turn by turn, which put the bare
thread's request after a SQLite system's every time and this service's two times in three
(bench/README.md, "2026-12-05, 18:25–21:25 UTC").

    .venv-bench/bin/python -m bench.interleaved          # ~1 minute; make bench-interleaved
    .venv-bench/bin/python -m bench.interleaved --rounds 5 --requests 2000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from bench import run as bench


def write_section(results: dict[str, Any]) -> None:
    r, s = results["ratios"], results["settings"]
    per_round = "; ".join(f"{x:.2f}×" for x in results["p50_vs_thread_each_round"])
    lines = [
        bench.measured_on(results["machine"], versions=False) + f". {s['rounds']} round(s) of "
        f"{s['requests']} turns, each round on fresh servers, one sequential request to each "
        "system a turn, each turn's order drawn at random; medians over rounds of each round's "
        "figures and ratios.",
        "",
        "| system | dispatch p50 (× thread) | dispatch p99 (× thread) |",
        "| --- | --- | --- |",
    ]
    ratio_keys = {"thread": (None, None), "floor": ("floor_p50_vs_thread", "floor_p99_vs_thread"),
                  "scheduler_app": ("dispatch_p50_vs_thread", "dispatch_p99_vs_thread")}
    for name in bench.INTERLEAVED:
        p50_key, p99_key = ratio_keys[name]
        p50 = f"{results[name]['p50_ms']:.2f} ms ({r[p50_key] if p50_key else 1:.2f}×)"
        p99 = f"{results[name]['p99_ms']:.2f} ms ({r[p99_key] if p99_key else 1:.2f}×)"
        lines.append(f"| {results['labels'][name]} | {p50} | {p99} |")
    lines += [
        "",
        f"This service against issue 15's dispatch targets: p50 "
        f"{r['dispatch_p50_vs_thread']:.2f}× the bare thread (≤ 1.2; each round: {per_round}), "
        f"p99 {r['dispatch_p99_vs_thread']:.2f}× (≤ 2); against the durable floor, "
        f"{r['dispatch_p50_vs_floor']:.2f}× at p50 and {r['dispatch_p99_vs_floor']:.2f}× at "
        f"p99. The runs sent to each, warm-ups included, {results['recorded']['sent']}, in their "
        f"databases: this service {results['recorded']['scheduler_app']}, the floor "
        f"{results['recorded']['floor']}.",
    ]
    bench.replace_readme_section("interleaved", "\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--requests", type=int, default=1000, help="turns a round")
    parser.add_argument("--quick", action="store_true", help="1 round of 200; bench/work/")
    args = parser.parse_args()
    if args.quick:
        args.rounds, args.requests = 1, 200
    if args.rounds < 1 or args.requests < 100:
        parser.error("--rounds must be at least 1 and --requests at least 100 (a p99)")
    bench.quick_output(args.quick)
    probe = bench.Probe()
    with tempfile.TemporaryDirectory() as tmp_text:
        tmp = Path(tmp_text)
        chosen = {s.name: s for s in bench.systems(tmp) if s.name in bench.INTERLEAVED}
        rounds = []
        for n in range(args.rounds):
            rounds.append(bench.interleaved_dispatch(chosen, probe, tmp, args.requests, f"r{n}"))
            print(n, json.dumps({k: v for k, v in rounds[-1].items() if k != "recorded"}),
                  flush=True)
    results = bench.interleaved_summary(rounds)
    results["recorded"] = {
        "sent": rounds[0]["sent"] * len(rounds),
        **{name: f"{sum(r['recorded'][name]['succeeded'] for r in rounds)} succeeded of "
                 f"{sum(r['recorded'][name]['recorded'] for r in rounds)} recorded, "
                 f"{sum(r['recorded'][name]['distinct'] for r in rounds)} distinct"
           for name in ("scheduler_app", "floor")}}
    results["labels"] = {name: system.label for name, system in chosen.items()}
    results["machine"] = bench.machine()
    results["settings"] = {"rounds": args.rounds, "requests": args.requests}
    kept = (json.loads(bench.results_file().read_text()) if bench.results_file().exists()
            else {})
    bench.results_file().write_text(json.dumps({**kept, "interleaved": results}, indent=2) + "\n")
    write_section(results)
    print(json.dumps(results["ratios"], indent=2))


if __name__ == "__main__":
    main()
