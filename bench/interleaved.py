"""Issue 15's dispatch targets measured with the systems interleaved request by request: the
bare thread, the durable floor and this service run at once, and each turn sends one sequential
request to each, the order reversed every other turn.

Why beside ``bench.run``: there each system has the machine to itself for its 1,000 requests,
one after the other, and this 2-core machine has slow phases of tens of seconds that fall on
one system and not on the next (on 2026-12-05 the bare thread's p50 ranged 0.70–1.50 ms between
repeats of one run, and this service's 1.04–1.64 ms). Interleaved, a slow phase falls on every
system alike, so the ratios hold still; the absolute figures are a little higher than
``bench.run``'s, since three servers' idle threads share the cores. Dispatch is "request sent →
task's first line" as in ``bench.run`` (the same client, probe and systems); afterwards each
run of this service and of the floor is checked in its database, once and succeeded.

    .venv-bench/bin/python -m bench.interleaved          # ~2 minutes; make bench-interleaved
    .venv-bench/bin/python -m bench.interleaved --rounds 5 --requests 2000
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests

from bench import run as bench
from bench.systems import floor
from scheduler_app.store import schema

SYSTEMS = ("thread", "floor", "scheduler_app")
WARMUP = 50


def reversed_every_other(names: list[str], turn: int) -> list[str]:
    """This bench's order of a turn: as given, then reversed, turn by turn."""
    return names if turn % 2 == 0 else names[::-1]


def interleave(servers: dict[str, tuple[bench.System, bench.Server]], probe: bench.Probe,
               count: int, tag: str,
               order: Callable[[list[str], int], list[str]] = reversed_every_other
               ) -> dict[str, list[float]]:
    """``count`` turns of one sequential request to each system, in the ``order`` of each
    turn (of the systems' names and the turn's number): each one's latencies, ms."""
    sessions = {name: requests.Session() for name in servers}
    latencies: dict[str, list[float]] = {name: [] for name in servers}
    names = list(servers)
    for i in range(count):
        for name in order(names, i):
            system, server = servers[name]
            sent, started = bench.run_now(system, server, sessions[name], probe,
                                          f"{tag}-{name}-t{i}")
            latencies[name].append((started - sent) * 1000)
    return latencies


def summarise(rounds: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """Medians over rounds of each system's p50 and p99, and of the ratios within each round."""
    out: dict[str, Any] = {}
    for name in SYSTEMS:
        out[name] = {q: statistics.median(r[name][q] for r in rounds) for q in ("p50_ms", "p99_ms")}

    def ratio(a: str, b: str, q: str) -> float:
        return statistics.median(r[a][q] / r[b][q] for r in rounds)

    out["ratios"] = {
        "dispatch_p50_vs_thread": ratio("scheduler_app", "thread", "p50_ms"),
        "dispatch_p99_vs_thread": ratio("scheduler_app", "thread", "p99_ms"),
        "floor_p50_vs_thread": ratio("floor", "thread", "p50_ms"),
        "floor_p99_vs_thread": ratio("floor", "thread", "p99_ms"),
        "dispatch_p50_vs_floor": ratio("scheduler_app", "floor", "p50_ms"),
        "dispatch_p99_vs_floor": ratio("scheduler_app", "floor", "p99_ms"),
    }
    out["rounds"] = rounds
    return out


def write_section(results: dict[str, Any]) -> None:
    r, s = results["ratios"], results["settings"]
    per_round = "; ".join(
        f"{each['scheduler_app']['p50_ms'] / each['thread']['p50_ms']:.2f}×"
        for each in results["rounds"])
    lines = [
        bench.measured_on(results["machine"], versions=False) + f". {s['rounds']} round(s) of "
        f"{s['requests']} turns, one sequential request to each system a turn; medians over "
        "rounds of each round's figures and ratios.",
        "",
        "| system | dispatch p50 (× thread) | dispatch p99 (× thread) |",
        "| --- | --- | --- |",
    ]
    ratio_keys = {"thread": (None, None), "floor": ("floor_p50_vs_thread", "floor_p99_vs_thread"),
                  "scheduler_app": ("dispatch_p50_vs_thread", "dispatch_p99_vs_thread")}
    for name in SYSTEMS:
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
        f"p99. The runs sent, {results['recorded']['sent']} to each, in their databases: this "
        f"service {results['recorded']['ours']}, the floor {results['recorded']['floor']}.",
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
        chosen = {s.name: s for s in bench.systems(tmp) if s.name in SYSTEMS}
        servers: dict[str, tuple[bench.System, bench.Server]] = {}
        try:
            for name in SYSTEMS:
                servers[name] = (chosen[name], bench.Server(chosen[name]))
                bench.dispatch(chosen[name], servers[name][1], probe, WARMUP, f"w-{name}",
                               first_wait=60)
            rounds = []
            for n in range(args.rounds):
                latencies = interleave(servers, probe, args.requests, f"r{n}")
                rounds.append({name: {"p50_ms": bench.percentile(v, 0.5),
                                      "p99_ms": bench.percentile(v, 0.99)}
                               for name, v in latencies.items()})
                print(n, json.dumps(rounds[-1]), flush=True)
            sent = args.rounds * args.requests
            recorded = {
                "ours": bench.check_recorded(tmp / bench.SERVICE_DB, schema.runs.name, "r",
                                             sent),
                "floor": bench.check_recorded(tmp / bench.FLOOR_DB, floor.TABLE, "r", sent)}
        finally:
            for _, server in servers.values():
                server.stop()
    results = summarise(rounds)
    results["recorded"] = {
        "sent": sent, **{k: f"{v['succeeded']} succeeded of {v['recorded']} recorded, "
                            f"{v['distinct']} distinct" for k, v in recorded.items()}}
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
