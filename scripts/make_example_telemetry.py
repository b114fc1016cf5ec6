"""Write ``examples/test_results_20251228_203216.json``: the real run of 2025-12-28 with inline telemetry.

The benchmark file itself has only metadata and start/end times. Its measured per-scenario figures (one row
per scenario with ``name``, ``mean_power_w`` and ``container_cpu_pct``) were recorded in a companion
``test_results_20251228_203216_analysis.csv`` when the run was analysed; both ship in ``tests/data/``. The
file this script writes goes to ``examples/`` (what ``make run`` seeds ``./test_results`` with). This script turns those figures into a ``telemetry`` block per scenario so that the
system shows realistic numbers without Prometheus:

* ``power_watts``: package power every 5 s whose arithmetic mean is exactly the measured ``mean_power_w``
  (a deterministic ripple of whole sine periods around it, so the standard deviation is not zero);
* ``energy_joules``: the measured mean power times the scenario's wall-clock duration;
* ``container_cpu_percent``: constant at the measured ``container_cpu_pct``;
* ``cpu_usage_cores``: container CPU % / 100 (cores busy), every 5 s.

Run: ``python scripts/make_example_telemetry.py [DIR]``, where DIR (default ``tests/data``) holds the
original ``test_results_20251228_203216.json`` and its ``_analysis.csv``.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

STEP_SECONDS = 5.0
RUN = "test_results_20251228_203216"


def ripple(mean: float, n: int, amplitude: float) -> list[float]:
    if n < 2:
        return [round(mean, 4)] * n
    # Whole periods over the n samples keep the mean exact (the sum of the sine terms is zero).
    values = [mean + amplitude * math.sin(2 * math.pi * 3 * i / n) for i in range(n)]
    return [round(v, 4) for v in values]


def main(reference: Path, out: Path) -> None:
    run = json.loads((reference / f"{RUN}.json").read_text())
    with (reference / f"{RUN}_analysis.csv").open() as fh:
        figures = {row["name"]: row for row in csv.DictReader(fh)}
    for scenario in run["scenarios"]:
        row = figures[scenario["name"]]
        duration = scenario["end_time"] - scenario["start_time"]
        n = int(duration // STEP_SECONDS) + 1
        mean_w = float(row["mean_power_w"])
        cpu_pct = float(row["container_cpu_pct"])
        scenario["telemetry"] = {
            "step_seconds": STEP_SECONDS,
            "power_watts": ripple(mean_w, n, amplitude=0.05 * mean_w),
            "cpu_usage_cores": [round(cpu_pct / 100, 4)] * n,
            "container_cpu_percent": [cpu_pct] * n,
            "energy_joules": round(mean_w * duration, 3),
        }
    out.write_text(json.dumps(run, indent=2) + "\n")


if __name__ == "__main__":
    repo = Path(__file__).resolve().parent.parent
    ref = Path(sys.argv[1]) if len(sys.argv) > 1 else repo / "tests" / "data"
    main(ref, repo / "examples" / f"{RUN}.json")
