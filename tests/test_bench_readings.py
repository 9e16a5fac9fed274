"""How ``bench.run`` turns its interleaved and alternated measurements into the figures issue
15's lines are read from: the order of a turn, the medians of per-round ratios, the HTTP
ceiling of each turn, the record check, and the sentence "Latest results" prints. Pure
arithmetic on made-up rounds: nothing is started."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from bench import run as bench


def test_a_shuffled_order_favours_no_system_and_is_the_same_for_the_same_seed() -> None:
    names = ["thread", "floor", "scheduler_app"]
    follows: Counter[tuple[str, str]] = Counter()
    first: Counter[str] = Counter()
    previous = None
    for turn in range(9000):
        order = bench.shuffled(names, turn, seed="r0")
        assert sorted(order) == sorted(names)
        first[order[0]] += 1
        for name in order:
            if previous is not None:
                follows[(previous, name)] += 1
            previous = name
    requests = 9000
    for name in names:
        assert first[name] / requests == pytest.approx(1 / 3, abs=0.02)
        # Each request follows itself one time in nine (first in its turn, after itself last
        # in the one before) and each other system four in nine, whichever system it is: the
        # bare thread is not after a SQLite system's request more often than this service is.
        assert follows[(name, name)] / requests == pytest.approx(1 / 9, abs=0.015)
        for other in names:
            if other != name:
                assert follows[(other, name)] / requests == pytest.approx(4 / 9, abs=0.02)
    assert [bench.shuffled(names, t, seed="r0") for t in range(20)] == \
        [bench.shuffled(names, t, seed="r0") for t in range(20)]
    assert [bench.shuffled(names, t, seed="r0") for t in range(20)] != \
        [bench.shuffled(names, t, seed="r1") for t in range(20)]


def a_round(thread: float, floor: float, ours: float, *, sent: int = 130,
            recorded: int | None = None, throughput: list[dict[str, float]] | None = None
            ) -> dict[str, Any]:
    counted = sent if recorded is None else recorded
    entry: dict[str, Any] = {
        "thread": {"p50_ms": thread, "p99_ms": 2 * thread},
        "floor": {"p50_ms": floor, "p99_ms": 2 * floor},
        "scheduler_app": {"p50_ms": ours, "p99_ms": 3 * thread},
        "turns": 100, "sent": sent,
        "recorded": {"scheduler_app": {"recorded": counted, "succeeded": counted,
                                       "distinct": counted},
                     "floor": {"recorded": sent, "succeeded": sent, "distinct": sent}}}
    if throughput is not None:
        entry["throughput"], entry["throughput_runs"] = throughput, 500
    return entry


def test_the_p50_line_is_the_median_of_each_rounds_own_ratio() -> None:
    # A slow round (everything 1.5x) must not pull the ratio: each round is divided first.
    rounds = [a_round(1.0, 1.05, 1.16), a_round(1.5, 1.6, 1.8), a_round(1.0, 1.1, 1.3)]
    found = bench.interleaved_summary(rounds)
    assert found["p50_vs_thread_each_round"] == pytest.approx([1.16, 1.2, 1.3])
    assert found["ratios"]["dispatch_p50_vs_thread"] == pytest.approx(1.2)
    assert found["ratios"]["dispatch_p99_vs_thread"] == pytest.approx(1.5)
    assert found["ratios"]["floor_p50_vs_thread"] == pytest.approx(1.0666, abs=1e-3)
    assert found["thread"]["p50_ms"] == pytest.approx(1.0)
    assert found["every_run_recorded"] is True
    assert "throughput" not in found


def test_one_run_missing_from_one_round_is_not_every_run_recorded() -> None:
    rounds = [a_round(1.0, 1.05, 1.16), a_round(1.0, 1.05, 1.16, recorded=129)]
    assert bench.interleaved_summary(rounds)["every_run_recorded"] is False


def test_the_ceiling_of_an_alternated_turn_is_the_higher_of_the_bare_route_and_thread() -> None:
    turns = [
        {"bare_route": 1000.0, "thread": 900.0, "floor": 950.0, "scheduler_app": 800.0},
        # The bare thread measured higher than the bare route this turn: it is the ceiling.
        {"bare_route": 700.0, "thread": 800.0, "floor": 760.0, "scheduler_app": 640.0},
        {"bare_route": 1000.0, "thread": 1000.0, "floor": 900.0, "scheduler_app": 900.0},
    ]
    found = bench.interleaved_summary([a_round(1.0, 1.05, 1.16, throughput=turns)])
    share = found["throughput"]
    assert share["vs_http_ceiling_each_turn"] == pytest.approx([0.8, 0.8, 0.9])
    assert share["vs_http_ceiling"] == pytest.approx(0.8)
    assert share["floor_vs_http_ceiling"] == pytest.approx(0.95)
    assert share["turns"] == 3 and share["runs_a_block"] == 500
    assert share["runs_per_s"]["scheduler_app"] == pytest.approx(800.0)


def test_the_sentence_reads_the_lines_from_the_interleaved_figures_and_shows_the_blocks() -> None:
    turns = [{"bare_route": 1000.0, "thread": 900.0, "floor": 950.0, "scheduler_app": 820.0}]
    inter = bench.interleaved_summary([a_round(1.0, 1.06, 1.17, throughput=turns)])
    text = bench.interleaved_text(inter)
    assert "this service 1.17× the bare thread (each repeat: 1.17×)" in text
    assert "this service 82 % of the turn's HTTP ceiling" in text
    assert "recorded once and succeeded: yes" in text
    inter = bench.interleaved_summary([a_round(1.0, 1.06, 1.17, recorded=3)])
    assert "recorded once and succeeded: NO" in bench.interleaved_text(inter)
