"""The overview's runs-per-minute chart as plain geometry for an inline SVG.

Stacked bars, one per minute, succeeded at the bottom, then failed, then cancelled; the
scale's top is a round number (1, 2, 5 × 10ⁿ) at or above the busiest minute. Drawn on the
server so the chart needs no script and shows in the first paint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime

from ..store.overview import MinuteCount

WIDTH = 600
HEIGHT = 120
GAP = 0.2  # of each bar's slot


@dataclass(frozen=True)
class Segment:
    state: str
    count: int
    y: float
    height: float


@dataclass(frozen=True)
class Bar:
    start: datetime
    x: float
    width: float
    total: int
    segments: tuple[Segment, ...]

    @property
    def summary(self) -> str:
        parts = [f"{s.count} {s.state}" for s in self.segments]
        return ", ".join(parts) if parts else "no runs finished"


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    scale: int
    total: int
    peak: int
    bars: tuple[Bar, ...]


def nice_ceiling(value: int) -> int:
    """The smallest of 1, 2, 5, 10, 20, 50… that is at least ``value`` (and at least 1)."""
    if value <= 1:
        return 1
    power: int = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5):
        if step * power >= value:
            return step * power
    return 10 * power


def minute_chart(minutes: list[MinuteCount], width: int = WIDTH,
                 height: int = HEIGHT) -> Chart:
    peak = max((m.total for m in minutes), default=0)
    scale = nice_ceiling(peak)
    slot = width / max(len(minutes), 1)
    bars = []
    for i, minute in enumerate(minutes):
        bottom = float(height)
        segments = []
        for state, count in (("succeeded", minute.succeeded), ("failed", minute.failed),
                             ("cancelled", minute.cancelled)):
            if not count:
                continue
            size = height * count / scale
            bottom -= size
            segments.append(Segment(state, count, round(bottom, 2), round(size, 2)))
        bars.append(Bar(minute.start, round(i * slot + slot * GAP / 2, 2),
                        round(slot * (1 - GAP), 2), minute.total, tuple(segments)))
    return Chart(width, height, scale, sum(m.total for m in minutes), peak, tuple(bars))
