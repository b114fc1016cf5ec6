"""Timing and table printing shared by every benchmark."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    """One line of the table: the median of ``runs`` measurements and, when one is set, its target.

    ``median`` and ``target`` are in ``unit``: ``"s"`` (seconds, shown as s/ms/µs/ns), ``"MiB"`` or ``"%"``
    (percent of one core). A target is an upper bound: the verdict is ``ok`` when the median is at or under
    it and ``OVER`` when above; rows without a target show ``-``.
    """

    name: str
    median: float
    runs: int
    note: str = ""
    target: float | None = None
    unit: str = "s"

    @property
    def verdict(self) -> str:
        if self.target is None or self.runs == 0:
            return "-"
        return "ok" if self.median <= self.target else "OVER"


def measure(fn: Callable[[], object], *, repeat: int = 7, min_time: float = 0.05) -> tuple[float, int]:
    """Median seconds per call over ``repeat`` rounds; each round loops until it lasts ``min_time``."""
    loops = 1
    while True:
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        if time.perf_counter() - start >= min_time or loops >= 1_000_000:
            break
        loops *= 2
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(loops):
            fn()
        samples.append((time.perf_counter() - start) / loops)
    return statistics.median(samples), repeat * loops


def human(seconds: float) -> str:
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if seconds >= scale:
            return f"{seconds / scale:8.2f} {unit}"
    return f"{seconds / 1e-9:8.1f} ns"


def figure(value: float, unit: str) -> str:
    """``value`` in ``unit``, right-aligned in 11 characters."""
    if unit == "s":
        return human(value)
    if unit == "%":
        return f"{value:8.3f} % "
    return f"{value:8.1f} {unit}"


def print_table(rows: list[Row]) -> None:
    if not rows:
        print("no benchmark rows")
        return
    width = max(len(r.name) for r in rows)
    print(
        f"{'benchmark':<{width}}  {'median':>12}  {'target':>14}  {'/target':>7}  {'verdict':<7}  "
        f"{'runs':>8}  note"
    )
    print("-" * (width + 66))
    for r in rows:
        if r.target is None:
            target, ratio = "-", "-"
        else:
            target = "<= " + figure(r.target, r.unit).strip()
            ratio = f"{r.median / r.target:.2f}" if r.target else "-"
        print(
            f"{r.name:<{width}}  {figure(r.median, r.unit):>12}  {target:>14}  {ratio:>7}  {r.verdict:<7}  "
            f"{r.runs:>8}  {r.note}"
        )
