"""The ``modeling`` kind: the old results exporter's per-scenario statistics and the power model's
predictions for every ingested run.

For each run the worker computes the statistics (shared/scenario_stats.py), adds the run's measured scenarios
to the training history of its hardware (KV ``te_history``, bounded), trains the power model on that history
(shared/power_model.py), saves it (KV ``te_models``, keyed by the hardware fingerprint) and publishes a
``ModelingResult``. It also answers "predict power for this configuration" on ``te.predict.power`` (a
nats.micro service). The fitting code (numpy) is imported only when the worker starts (services/modeling/
modeler.py), so the gateway and the CLI, which import this module, stay light.

Its families are the ``results_scenario_*`` metrics of the legacy results listener (:9502); label names and
order are the old exporter's, plus the model's prediction interval under new names.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.config import flag
from shared.families import RESULTS_LABELS, Family, RunView, results_labelsets
from shared.kinds import Computer, Kind
from shared.schemas import ModelingResult, ModelingScenario, QoEResult

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--selection",
        env="MODEL_SELECTION",
        default="cv",
        help="model selection: cv (cross-validated RMSE) or rule (the old linear/poly2 rule)",
    )
    flag(
        parser,
        "--confidence-level",
        env="MODEL_CONFIDENCE_LEVEL",
        default=0.95,
        type=float,
        help="level of the prediction intervals",
    )
    flag(
        parser,
        "--history-limit",
        env="MODEL_HISTORY_LIMIT",
        default=2000,
        type=int,
        help="training points kept per machine (oldest runs are dropped first)",
    )


@dataclass(frozen=True)
class ModelingSettings:
    selection: str
    confidence_level: float
    history_limit: int
    replicas: int


def settings_from_args(args: argparse.Namespace) -> ModelingSettings:
    if args.selection not in ("cv", "rule"):
        raise SystemExit(f"configuration error: --selection must be cv or rule, got {args.selection!r}")
    return ModelingSettings(
        selection=args.selection,
        confidence_level=args.confidence_level,
        history_limit=args.history_limit,
        replicas=getattr(args, "js_replicas", 1),
    )


async def open_modeler(nc: NATS, settings: ModelingSettings) -> Computer:
    from services.modeling.modeler import start_modeler  # numpy: only in the process that fits models

    return await start_modeler(nc, settings)


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


def families(view: RunView) -> list[Family]:
    """``results_scenario_*`` of the scenarios with start and end times, plus ``results_scenarios_total``."""
    modeling_result = view.result("modeling", ModelingResult)
    qoe_result = view.result("qoe", QoEResult)
    modeling = {m.index: m for m in modeling_result.scenarios} if modeling_result else {}
    qoe = {q.index: q for q in qoe_result.scenarios} if qoe_result else {}
    families = [Family(name, help_, RESULTS_LABELS) for name, help_, _ in _RESULTS]
    extra = {
        "vmaf": Family("results_scenario_vmaf_score", "VMAF quality score (0-100)", RESULTS_LABELS),
        "psnr": Family("results_scenario_psnr_score", "PSNR (dB)", RESULTS_LABELS),
        "avg_fps": Family("results_scenario_avg_fps", "Average frames per second achieved", RESULTS_LABELS),
        "total_frames": Family("results_scenario_total_frames", "Frames transcoded (count)", RESULTS_LABELS),
        "dropped_frames": Family("results_scenario_dropped_frames", "Frames dropped (count)", RESULTS_LABELS),
    }
    for message, labels in results_labelsets(view):
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


KIND = Kind(
    name="modeling",
    result=ModelingResult,
    add_arguments=add_arguments,
    settings=settings_from_args,
    families=families,
    open=open_modeler,
    listener="results",
)
