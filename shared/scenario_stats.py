"""Per-scenario statistics of a run (the old results exporter's figures), from resolved telemetry. No I/O.

With D = end_time - start_time (s) and E = measured energy (J):

* mean power Pm: shared.telemetry.mean_power_w (a mean the file states, else E / D, else the power samples'
  time-weighted mean, shared.integration's sampling convention; W); without a measured energy, E = that mean
  x D (J); energy Wh = E / 3600;
* container CPU = mean of the container CPU % samples; docker overhead = CPU/100 x Pm (W);
* energy per minute = Wh x 60 / D; per Mbps = Wh / bitrate Mbps (per-stream bitrate, as before);
  per frame = E / (fps x D) x 1000 (mJ), fps = the configured ``fps``, else the achieved ``avg_fps``
  (shared.parsing.frame_rate: the distributed runner's files have only the latter);
* efficiency = shared.scoring.pixels_per_joule: total pixels / E (pixels/J); total pixels as
  shared.parsing.total_pixels: configured renditions x D x streams when known, else ``pixels_processed``;
* power stdev sigma = sample standard deviation of the package power samples; band = Pm +- 2 sigma (low >= 0);
* deltas against the run's baseline b: Pm - Pm_b; (Pm - Pm_b) x D / 3600 (Wh above idle over this
  scenario's own duration); (Pm - Pm_b) / Pm_b x 100 (%); CPU - CPU_b.

A figure that cannot be computed is None, with a note saying why. The baseline gets no deltas, efficiency or
pixels (it transcodes nothing).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import msgspec

from shared.integration import mean, sample_stdev
from shared.parsing import find_baseline, frame_rate, measured_duration_s, total_pixels, try_bitrate_mbps
from shared.schemas import ModelingScenario, Scenario
from shared.scoring import Measured, pixels_per_joule
from shared.telemetry import ResolvedTelemetry, scenario_mean_power_w
from shared.units import JOULES_PER_WH, MILLI, SECONDS_PER_HOUR


@dataclass(frozen=True)
class _Base:
    mean_power_w: float | None
    container_cpu_percent: float | None


def scenario_stats(
    index: int, scenario: Scenario, telemetry: ResolvedTelemetry, baseline: bool
) -> ModelingScenario:
    notes: list[str] = []
    d = measured_duration_s(scenario)
    if d is None:
        return ModelingScenario(
            index=index, is_baseline=baseline, notes=["no start_time/end_time: not measured"]
        )
    energy = telemetry.energy_or_series_j()
    if energy is None:
        notes.append(telemetry.missing_reason or "no energy or power telemetry")
    coverage = telemetry.package_coverage_note()
    if coverage is not None:
        notes.append(coverage)
    pm = scenario_mean_power_w(telemetry, d)
    wh = energy / JOULES_PER_WH if energy is not None else None
    cpu = mean(telemetry.container_cpu_percent)
    overhead = cpu / 100.0 * pm if cpu is not None and pm is not None and pm > 0 else None
    mbps = try_bitrate_mbps(scenario.bitrate)
    fps = frame_rate(scenario)
    sigma = sample_stdev(telemetry.package_power_w)
    pixels = None if baseline else total_pixels(scenario, d)
    band_high = band_low = None
    if pm is not None and pm > 0 and sigma is not None:
        band_high, band_low = pm + 2 * sigma, max(0.0, pm - 2 * sigma)
    return ModelingScenario(
        index=index,
        is_baseline=baseline,
        duration_s=d,
        energy_j=energy,
        energy_wh=wh,
        mean_power_w=pm,
        container_cpu_percent=cpu,
        docker_overhead_w=overhead,
        energy_wh_per_min=wh * 60.0 / d if wh else None,
        energy_wh_per_mbps=wh / mbps if wh and mbps else None,
        energy_mj_per_frame=energy / (fps * d) * MILLI if energy and fps else None,
        efficiency_score=(
            None if baseline else pixels_per_joule(scenario, Measured(energy_j=energy, duration_s=d)).value
        ),
        total_pixels=pixels,
        power_stdev_w=sigma,
        band_high_w=band_high,
        band_low_w=band_low,
        notes=notes,
    )


def with_deltas(stats: ModelingScenario, base: _Base | None) -> ModelingScenario:
    if base is None or stats.is_baseline:
        return stats
    out = {}
    if stats.mean_power_w is not None and base.mean_power_w is not None:
        delta = stats.mean_power_w - base.mean_power_w
        out["delta_power_w"] = delta
        if stats.duration_s is not None:
            out["delta_energy_wh"] = delta * stats.duration_s / SECONDS_PER_HOUR
        if base.mean_power_w > 0:
            out["power_pct_increase"] = delta / base.mean_power_w * 100.0
    if stats.container_cpu_percent is not None and base.container_cpu_percent is not None:
        out["delta_container_cpu_percent"] = stats.container_cpu_percent - base.container_cpu_percent
    if not out:
        return stats
    return msgspec.structs.replace(stats, **out)


def run_stats(
    scenarios: Sequence[Scenario], telemetry: Sequence[ResolvedTelemetry]
) -> tuple[list[ModelingScenario], int | None]:
    """Statistics of every scenario of a run, with deltas against its baseline (shared.parsing.find_baseline)."""
    baseline_index = find_baseline(scenarios)
    stats = [
        scenario_stats(i, s, t, baseline=(i == baseline_index))
        for i, (s, t) in enumerate(zip(scenarios, telemetry, strict=True))
    ]
    base = None
    if baseline_index is not None:
        b = stats[baseline_index]
        if b.mean_power_w is not None:
            base = _Base(b.mean_power_w, b.container_cpu_percent)
    return [with_deltas(s, base) for s in stats], baseline_index
