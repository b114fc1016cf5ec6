"""Load-aware cost of one hour of 1 s samples (3,600 points per series); target: well under 1 ms."""

from __future__ import annotations

import math

from bench.harness import Row, measure
from shared.cost import CostModel
from shared.integration import SampledSeries, trapezoid_uniform

N = 3600
#: One load-aware cost of an hour of 1 s samples.
TARGET_S = 1e-3


def run() -> list[Row]:
    power = [100 + 10 * math.sin(i / 60) for i in range(N)]
    cpu = [2 + 0.5 * math.sin(i / 30) for i in range(N)]
    gpu = [0.5] * N
    model = CostModel(energy_cost_per_kwh=0.12, cpu_cost_per_hour=0.5, gpu_cost_per_hour=2.0)

    def from_lists() -> None:
        model.load_aware(
            power_w=SampledSeries.uniform(power, 1.0),
            cpu_cores=SampledSeries.uniform(cpu, 1.0),
            gpu=SampledSeries.uniform(gpu, 1.0),
            total_pixels=1e12,
            duration_s=3600.0,
            viewers=100,
        )

    series = (
        SampledSeries.uniform(power, 1.0),
        SampledSeries.uniform(cpu, 1.0),
        SampledSeries.uniform(gpu, 1.0),
    )

    def from_series() -> None:
        model.load_aware(power_w=series[0], cpu_cores=series[1], gpu=series[2], total_pixels=1e12)

    def pure_python() -> float:
        # The old exporter's loop, for comparison: h/2 * (v0 + 2*sum(middle) + vn).
        return 0.5 * (power[0] + 2 * sum(power[1:-1]) + power[-1])

    t_lists, n_lists = measure(from_lists)
    t_series, n_series = measure(from_series)
    t_py, n_py = measure(pure_python)
    t_trap, n_trap = measure(lambda: trapezoid_uniform(series[0].values, 1.0))
    return [
        Row(
            "cost: load-aware, 1 h @ 1 s, from lists",
            t_lists,
            n_lists,
            "power+cpu+gpu, incl. list->tuple",
            target=TARGET_S,
        ),
        Row("cost: load-aware, 1 h @ 1 s, from built series", t_series, n_series, "power+cpu+gpu", TARGET_S),
        Row(
            "cost: one trapezoid, math.fsum (3,600 pts)",
            t_trap,
            n_trap,
            f"plain-sum loop / fsum = {t_py / t_trap:.1f}",
        ),
        Row("cost: one trapezoid, pure Python", t_py, n_py, "the old exporter's way"),
    ]
