"""Timing and table printing shared by every benchmark."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Row:
    name: str
    median_s: float
    runs: int
    note: str = ""


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


def print_table(rows: list[Row]) -> None:
    width = max(len(r.name) for r in rows)
    print(f"{'benchmark':<{width}}  {'median':>11}  {'calls':>8}  note")
    print("-" * (width + 40))
    for r in rows:
        print(f"{r.name:<{width}}  {human(r.median_s)}  {r.runs:>8}  {r.note}")
