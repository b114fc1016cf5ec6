"""Metric families of the latest run, built from its messages. Pure: no I/O, no maths beyond picking values.

Names, label names and label order are the old exporters' (metric-contract.md 1.1-1.3), plus the metrics the
dashboards query that the Python exporters lacked, plus the model's prediction interval under new names.
Values are the workers' results; a value that is absent or not finite produces no sample, and a family
without samples is not exposed at all (no HELP without samples).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from shared.parsing import encoder_kind, format_number, output_ladder_id, stream_count
from shared.schemas import (
    CostResult,
    ModelingResult,
    ModelingScenario,
    QoEResult,
    RunManifest,
    Scenario,
    ScenarioMessage,
)

RESULTS_LABELS = (
    "run_id",
    "scenario",
    "bitrate",
    "resolution",
    "fps",
    "streams",
    "output_ladder",
    "encoder_type",
    "encoder",
    "preset",
)
COST_LABELS = ("scenario", "currency", "streams", "bitrate", "encoder", "service")
QOE_LABELS = ("scenario",)


@dataclass
class Family:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    kind: str = "gauge"  # or "counter"
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, labels: tuple[str, ...], value: float | None) -> None:
        if value is not None and math.isfinite(value):
            self.samples.append((labels, float(value)))


@dataclass(frozen=True)
class RunView:
    manifest: RunManifest
    scenarios: Sequence[ScenarioMessage]
    modeling: ModelingResult | None = None
    cost: CostResult | None = None
    qoe: QoEResult | None = None


def legacy_scenario_label(name: str | None) -> str:
    """The cost/QoE exporters' form: spaces to underscores, double quotes removed (kept so series continue)."""
    return (name if name is not None else "unknown").replace(" ", "_").replace('"', "")


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def results_labels(run_id: str, s: Scenario) -> tuple[str, ...]:
    return (
        run_id,
        s.name or "",
        _text(s.bitrate),
        s.resolution or "",
        _text(s.fps),
        str(stream_count(s)),
        output_ladder_id(s),
        s.encoder_type or encoder_kind(s),
        s.encoder or "h264",
        s.preset or "veryfast",
    )


def cost_labels(s: Scenario, currency: str) -> tuple[str, ...]:
    return (
        legacy_scenario_label(s.name),
        currency,
        str(stream_count(s)),
        _text(s.bitrate),
        s.encoder_type or "unknown",
        "cost-analysis",
    )


def unique(labelsets: Sequence[tuple[str, ...]], position: int) -> list[tuple[str, ...]]:
    """Make every label set distinct by suffixing the label at ``position`` with `` #2``, `` #3``, ... on
    repeats: two scenarios with one name must not become one series with two values (B-R9, B-C1)."""
    seen: dict[tuple[str, ...], int] = {}
    out = []
    for labels in labelsets:
        count = seen.get(labels, 0) + 1
        seen[labels] = count
        if count > 1:
            labels = (*labels[:position], f"{labels[position]} #{count}", *labels[position + 1 :])
        out.append(labels)
    return out


# (metric name, help, value getter on ModelingScenario)
_RESULTS: list[tuple[str, str, Callable[[ModelingScenario], float | None]]] = [
    (
        "results_scenario_duration_seconds",
        "Wall-clock duration end_time - start_time (seconds)",
        lambda m: m.duration_s,
    ),
    (
        "results_scenario_mean_power_watts",
        "Mean CPU package power: energy / duration (W)",
        lambda m: m.mean_power_w,
    ),
    (
        "results_scenario_measured_power_watts",
        "Same as mean_power_watts, kept for existing queries (W)",
        lambda m: m.mean_power_w,
    ),
    (
        "results_scenario_estimated_docker_overhead_watts",
        "Container CPU % / 100 x mean power (W)",
        lambda m: m.docker_overhead_w,
    ),
    (
        "results_scenario_total_energy_joules",
        "Measured CPU package energy over the scenario (J)",
        lambda m: m.energy_j,
    ),
    (
        "results_scenario_total_energy_wh",
        "Measured CPU package energy over the scenario (Wh)",
        lambda m: m.energy_wh,
    ),
    (
        "results_scenario_container_cpu_percent",
        "Mean container CPU usage (%)",
        lambda m: m.container_cpu_percent,
    ),
    (
        "results_scenario_energy_wh_per_min",
        "Energy per minute of transcoding (Wh/min)",
        lambda m: m.energy_wh_per_min,
    ),
    (
        "results_scenario_energy_wh_per_mbps",
        "Energy per Mbps of per-stream bitrate (Wh/Mbps)",
        lambda m: m.energy_wh_per_mbps,
    ),
    (
        "results_scenario_energy_mj_per_frame",
        "Energy per frame at the scenario fps (mJ/frame)",
        lambda m: m.energy_mj_per_frame,
    ),
    (
        "results_scenario_efficiency_score",
        "Pixels delivered per joule, all streams and renditions (pixels/J)",
        lambda m: m.efficiency_score,
    ),
    (
        "results_scenario_total_pixels",
        "Pixels delivered, all streams and renditions (pixels)",
        lambda m: m.total_pixels,
    ),
    (
        "results_scenario_power_stdev",
        "Sample standard deviation of package power (W)",
        lambda m: m.power_stdev_w,
    ),
    (
        "results_scenario_prediction_confidence_high",
        "Measured mean power + 2 standard deviations (W)",
        lambda m: m.band_high_w,
    ),
    (
        "results_scenario_prediction_confidence_low",
        "Measured mean power - 2 standard deviations, >= 0 (W)",
        lambda m: m.band_low_w,
    ),
    (
        "results_scenario_predicted_power_watts",
        "Power model prediction for this configuration (W)",
        lambda m: m.predicted_power_w,
    ),
    (
        "results_scenario_predicted_energy_joules",
        "Predicted power x duration (J)",
        lambda m: m.predicted_energy_j,
    ),
    (
        "results_scenario_predicted_efficiency_score",
        "Pixels / predicted energy (pixels/J)",
        lambda m: m.predicted_efficiency_score,
    ),
    (
        "results_scenario_prediction_interval_low_watts",
        "Lower end of the model's prediction interval for a new run of this configuration (W)",
        lambda m: m.prediction_interval_low_w,
    ),
    (
        "results_scenario_prediction_interval_high_watts",
        "Upper end of the model's prediction interval for a new run of this configuration (W)",
        lambda m: m.prediction_interval_high_w,
    ),
    (
        "results_scenario_delta_power_watts",
        "Mean power above the run's idle baseline (W)",
        lambda m: m.delta_power_w,
    ),
    (
        "results_scenario_delta_energy_wh",
        "Energy above idle over this scenario's duration (Wh)",
        lambda m: m.delta_energy_wh,
    ),
    (
        "results_scenario_power_pct_increase",
        "Mean power above baseline, relative (%)",
        lambda m: m.power_pct_increase,
    ),
    ("results_scenario_net_power_watts", "Same as delta_power_watts (W)", lambda m: m.delta_power_w),
    ("results_scenario_net_energy_wh", "Same as delta_energy_wh (Wh)", lambda m: m.delta_energy_wh),
    (
        "results_scenario_net_container_cpu_percent",
        "Container CPU above baseline (percentage points)",
        lambda m: m.delta_container_cpu_percent,
    ),
]


def results_families(view: RunView) -> list[Family]:
    """``results_scenario_*`` of the scenarios with start and end times, plus ``results_scenarios_total``."""
    modeling = {m.index: m for m in view.modeling.scenarios} if view.modeling else {}
    qoe = {q.index: q for q in view.qoe.scenarios} if view.qoe else {}
    included = [
        m for m in view.scenarios if m.scenario.start_time is not None and m.scenario.end_time is not None
    ]
    labelsets = unique([results_labels(view.manifest.run_id, m.scenario) for m in included], position=1)
    families = [Family(name, help_, RESULTS_LABELS) for name, help_, _ in _RESULTS]
    extra = {
        "vmaf": Family("results_scenario_vmaf_score", "VMAF quality score (0-100)", RESULTS_LABELS),
        "psnr": Family("results_scenario_psnr_score", "PSNR (dB)", RESULTS_LABELS),
        "avg_fps": Family("results_scenario_avg_fps", "Average frames per second achieved", RESULTS_LABELS),
        "total_frames": Family("results_scenario_total_frames", "Frames transcoded (count)", RESULTS_LABELS),
        "dropped_frames": Family("results_scenario_dropped_frames", "Frames dropped (count)", RESULTS_LABELS),
    }
    for message, labels in zip(included, labelsets, strict=True):
        stats = modeling.get(message.index)
        if stats is not None:
            for family, (_, _, getter) in zip(families, _RESULTS, strict=True):
                family.add(labels, getter(stats))
        s = message.scenario
        q = qoe.get(message.index)
        if q is not None:
            extra["vmaf"].add(labels, q.vmaf_score)
            extra["psnr"].add(labels, q.psnr_score)
        if s.avg_fps is not None and s.avg_fps > 0:
            extra["avg_fps"].add(labels, s.avg_fps)
        if s.total_frames is not None and s.total_frames > 0:
            extra["total_frames"].add(labels, s.total_frames)
            if s.dropped_frames is not None and s.dropped_frames >= 0:
                extra["dropped_frames"].add(labels, s.dropped_frames)
    # The dashboards' name ends in _total, which Prometheus reserves for counters (promtool rejects a gauge
    # so named); it is typed counter. It counts the latest run's scenarios, so it drops when a smaller run
    # becomes the latest: read it as a value, not with rate().
    total = Family("results_scenarios_total", "Scenarios in the latest run (count)", kind="counter")
    total.add((), len(view.scenarios))
    return [total, *families, *extra.values()]


Spec = tuple[str, str, Callable[..., float | None]]


def _per_scenario(
    specs: Sequence[Spec],
    labelnames: tuple[str, ...],
    scenarios: Sequence[ScenarioMessage],
    labelsets: Sequence[tuple[str, ...]],
    figures_by_index: dict[int, object],
) -> list[Family]:
    """One family per spec, one sample per scenario that has figures (spec = name, help, value getter)."""
    families = [Family(name, help_, labelnames) for name, help_, _ in specs]
    for message, labels in zip(scenarios, labelsets, strict=True):
        figures = figures_by_index.get(message.index)
        if figures is None:
            continue
        for family, (_, _, getter) in zip(families, specs, strict=True):
            family.add(labels, getter(figures))
    return families


def cost_families(view: RunView) -> list[Family]:
    if view.cost is None:
        return []
    c = view.cost
    cur = c.currency
    specs: list[Spec] = [
        (
            "cost_total_load_aware",
            f"Total cost ({cur}) - load-aware: energy + compute",
            lambda x: x.total_cost,
        ),
        (
            "cost_energy_load_aware",
            f"Energy cost ({cur}) - integral of power x price per J",
            lambda x: x.energy_cost,
        ),
        (
            "cost_compute_load_aware",
            f"Compute cost ({cur}) - core-seconds x price per core-second",
            lambda x: x.compute_cost,
        ),
        ("cost_per_pixel", f"Cost per pixel delivered ({cur}/pixel)", lambda x: x.cost_per_pixel),
        (
            "cost_per_watch_hour",
            f"Cost per viewer watch hour ({cur}/watch-hour)",
            lambda x: x.cost_per_watch_hour,
        ),
        (
            "cost_usd_per_hour",
            f"Energy cost per hour at mean power ({cur}/h; named USD for compatibility)",
            lambda x: x.cost_per_hour,
        ),
        ("cost_monthly_projection", f"Energy cost of running 720 h ({cur}/month)", lambda x: x.monthly_cost),
        (
            "cost_monthly_savings",
            f"Baseline monthly cost - this scenario's ({cur}/month; negative above idle)",
            lambda x: x.monthly_savings,
        ),
        (
            "co2_emissions_kg_per_hour",
            "CO2 emitted per hour at mean power (kg/h)",
            lambda x: x.co2_kg_per_hour,
        ),
        ("co2_monthly_projection", "CO2 of running 720 h (kg/month)", lambda x: x.co2_monthly_kg),
        (
            "co2_monthly_avoided",
            "Baseline monthly CO2 - this scenario's (kg/month; negative above idle)",
            lambda x: x.co2_monthly_avoided_kg,
        ),
    ]
    labelsets = unique([cost_labels(m.scenario, cur) for m in view.scenarios], position=0)
    return _per_scenario(specs, COST_LABELS, view.scenarios, labelsets, {x.index: x for x in c.scenarios})


def qoe_families(view: RunView) -> list[Family]:
    if view.qoe is None:
        return []
    specs: list[Spec] = [
        ("qoe_vmaf_score", "VMAF quality score (0-100)", lambda q: q.vmaf_score),
        ("qoe_psnr_score", "PSNR (dB)", lambda q: q.psnr_score),
        ("qoe_quality_per_watt", "VMAF per watt of mean power (VMAF/W)", lambda q: q.quality_per_watt),
        (
            "qoe_efficiency_score",
            "Quality-weighted pixels per joule: pixels x VMAF/100 / J",
            lambda q: q.qoe_efficiency_score,
        ),
        (
            "qoe_computation_duration_seconds",
            "Time spent computing the quality figures (seconds)",
            lambda q: q.computation_seconds,
        ),
        ("qoe_ssim_score", "SSIM (0-1)", lambda q: q.ssim_score),
        ("qoe_drop_rate", "Dropped frames / total frames (ratio)", lambda q: q.drop_rate),
    ]
    labelsets = unique([(legacy_scenario_label(m.scenario.name),) for m in view.scenarios], position=0)
    return _per_scenario(
        specs, QOE_LABELS, view.scenarios, labelsets, {q.index: q for q in view.qoe.scenarios}
    )


def non_empty(families: Iterable[Family]) -> list[Family]:
    return [f for f in families if f.samples]


def up_family(name: str, help_: str) -> Family:
    family = Family(name, help_)
    family.add((), 1.0)
    return family
