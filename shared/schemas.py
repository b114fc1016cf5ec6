"""Every data shape the system reads or publishes, as ``msgspec.Struct`` types.

Two groups live here:

* the **results file** written by the benchmark runner (``ResultsFile``, ``Scenario``, ``Output``, ...), which
  keeps every scenario field the old exporters read, with the same names and meanings (``name``, ``bitrate``,
  ``resolution``, ``fps``, ``duration``, ``start_time``/``end_time``, ``outputs``, the scores, the old
  ``power``/``gpu_power`` summaries and series, ...), plus an optional inline ``telemetry`` block;
* the **messages** this system publishes on NATS. Each carries ``schema_version``; a consumer that sees a
  higher major version than it knows should refuse the message rather than guess.

Run ``transcode-energy schema --out docs/schemas`` to regenerate the JSON Schema of every message.
"""

from __future__ import annotations

from typing import Any

import msgspec

#: Bumped when a published message changes incompatibly.
SCHEMA_VERSION = 1

Number = int | float


class Output(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One rendition of a multi-resolution ladder."""

    resolution: str | None = None
    fps: Number | None = None


class PowerSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    """The old ``power`` block: ``{mean_watts, total_energy_joules}`` (read by the old scorer)."""

    mean_watts: float | None = None
    total_energy_joules: float | None = None


class GpuPowerSummary(msgspec.Struct, kw_only=True, omit_defaults=True):
    mean_watts: float | None = None


class CpuPercent(msgspec.Struct, kw_only=True, omit_defaults=True):
    cpu_percent: float | None = None


class Hardware(msgspec.Struct, kw_only=True, omit_defaults=True):
    cpu_model: str | None = None


class Samples(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A measured series. ``timestamps`` (unix seconds) are kept when the source had them (Prometheus);
    without them the samples are taken as uniform, ``step_seconds`` apart: a sample at both ends of the
    scenario or one per step, whichever fits its duration (docs/telemetry.md, "Sampling convention")."""

    values: list[float]
    timestamps: list[float] | None = None


#: A series in a results file may be a plain list of values or a ``Samples`` object.
Series = Samples | list[float]


class Telemetry(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Measurements of one scenario, carried inline so a file is self-sufficient without Prometheus.

    Units are in the field names. ``power_watts`` is CPU package power (RAPL ``package.*`` zones);
    ``power_all_zones_watts`` is the sum over every RAPL zone, which the old cost exporter integrated.
    ``gpu_usage_cores`` is GPUs busy (1.0 = one GPU fully utilised); the ``gpu_*`` power/energy fields cover
    every GPU of the machine, summed.
    """

    step_seconds: float | None = None
    power_watts: Series | None = None
    power_all_zones_watts: Series | None = None
    cpu_usage_cores: Series | None = None
    gpu_usage_cores: Series | None = None
    container_cpu_percent: Series | None = None
    energy_joules: float | None = None
    #: GPU board power summed over the GPUs, W (NVIDIA DCGM ``DCGM_FI_DEV_POWER_USAGE``).
    gpu_power_watts: Series | None = None
    #: GPU energy over the scenario window summed over the GPUs, J (the DCGM energy counter is in mJ; this
    #: field is already converted to J).
    gpu_energy_joules: float | None = None
    #: NVENC encoder utilisation, % (0-100 per GPU; DCGM ``DCGM_FI_DEV_ENC_UTIL``).
    gpu_encoder_percent: Series | None = None
    #: Where the numbers came from: ``file`` (written by the benchmark), ``legacy-fields`` (the old top-level
    #: ``power_watts``/``power`` fields) or ``prometheus``.
    source: str | None = None
    #: Set when telemetry was wanted but could not be had; says why.
    missing_reason: str | None = None


class Scenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One benchmark scenario as the runners write it, with the fields the old exporters read. Every field
    is optional: a scenario with gaps still yields what can be computed, and the workers say what is missing."""

    name: str | None = None
    bitrate: str | Number | None = None
    resolution: str | None = None
    fps: Number | None = None
    duration: Number | None = None
    start_time: Number | None = None
    end_time: Number | None = None
    outputs: list[Output] | None = None
    encoder_type: str | None = None
    encoder: str | None = None
    preset: str | None = None
    #: Explicit stream count; wins over the count inferred from the name.
    streams: int | None = None
    vmaf_score: float | None = None
    psnr_score: float | None = None
    ssim_score: float | None = None
    viewers: float | None = None
    # The old inline measurement fields, still accepted.
    power_watts: list[float] | None = None
    cpu_usage_cores: list[float] | None = None
    gpu_usage_cores: list[float] | None = None
    step_seconds: float | None = None
    power: PowerSummary | None = None
    gpu_power: GpuPowerSummary | None = None
    container_usage: CpuPercent | None = None
    docker_overhead: CpuPercent | None = None
    hardware: Hardware | None = None
    # Written by the Go ResultsWriter (distributed mode). Every number there is a Go float64 or an
    # interface{} taken from the worker's metrics map, so counts may carry a fractional part (1.5e9,
    # 8294400000.5): these fields accept any JSON number.
    #: Achieved frames per second (``Metrics["fps"]``); the frame rate used where ``fps`` is absent.
    avg_fps: Number | None = None
    #: Frames transcoded by the job (count).
    total_frames: Number | None = None
    #: Frames dropped by the job (count).
    dropped_frames: Number | None = None
    #: Total pixels the job processed (count); used where no configured resolution/fps gives the pixels.
    pixels_processed: Number | None = None
    qoe_score: float | None = None
    efficiency_score: float | None = None
    energy_joules: float | None = None
    # For the QoE worker: videos to compare when no score is given.
    reference_file: str | None = None
    output_file: str | None = None
    telemetry: Telemetry | None = None


class ResultsFile(msgspec.Struct, kw_only=True):
    """``test_results_YYYYMMDD_HHMMSS.json``. ``scenarios`` is required (a file without it is rejected)."""

    scenarios: list[Scenario]
    test_date: str | None = None
    test_metadata: dict[str, Any] | None = None


# ---------------------------------------------------------------------------------------------------------
# Published messages
# ---------------------------------------------------------------------------------------------------------


class ScenarioMessage(msgspec.Struct, kw_only=True):
    """Subject ``te.ingest.scenario.<digest>.<index>``: one scenario of an ingested run."""

    run_id: str
    digest: str
    index: int
    scenario: Scenario
    #: Fields of the scenario object this schema does not know, kept verbatim for other tools.
    extra: dict[str, Any] = {}
    #: Telemetry fetched from Prometheus/VictoriaMetrics for this scenario's time window (``source`` =
    #: ``prometheus``), or the reason it could not be (``missing_reason``). None when enrichment is off or
    #: the scenario has no start/end time. ``scenario`` itself stays exactly as the file had it.
    enriched: Telemetry | None = None
    schema_version: int = SCHEMA_VERSION


class RunBundle(msgspec.Struct, kw_only=True):
    """Subject ``te.ingest.bundle.<digest>``: every scenario message of one run generation, in file order,
    published after the scenarios and before the manifest. The same data as the scenario subjects, in one
    message, for readers that want the whole run; absent when the run does not fit in one message."""

    digest: str
    generation: int
    scenarios: list[ScenarioMessage]
    schema_version: int = SCHEMA_VERSION


class RunManifest(msgspec.Struct, kw_only=True):
    """Subject ``te.ingest.run.<digest>``: published after every scenario of the run is stored."""

    run_id: str
    digest: str
    file_name: str
    file_sha256: str
    file_bytes: int
    scenario_count: int
    #: Increases each time a file of this run_id is published with different content.
    generation: int
    ingested_at: float
    test_date: str | None = None
    test_metadata: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION


class ErrorEvent(msgspec.Struct, kw_only=True):
    """Subject ``te.events.error.<service>``: something was rejected or degraded, and why."""

    service: str
    #: Machine-readable reason: ``invalid_json``, ``schema``, ``too_large``, ``truncated``,
    #: ``outside_directory``, ``unreadable``, ``enrichment_failed``, ...
    reason: str
    message: str
    at: float
    file: str | None = None
    #: JSON path of the offending value, e.g. ``$.scenarios[3].fps``.
    json_path: str | None = None
    #: What was expected there, e.g. ``int | float | null``.
    expected: str | None = None
    run_id: str | None = None
    moved_to: str | None = None
    schema_version: int = SCHEMA_VERSION


class RunDeleted(msgspec.Struct, kw_only=True):
    """Subject ``te.events.run.deleted``: a run was removed on request (``transcode-energy runs delete``);
    its scenarios, manifests and results of the listed contents (digests) are purged from the streams."""

    run_id: str
    digests: list[str]
    at: float
    schema_version: int = SCHEMA_VERSION


class TelemetrySourceHealth(msgspec.Struct, kw_only=True):
    """One telemetry source at one health check: did its query answer, and how old is its newest sample."""

    #: ``rapl`` (RAPL power/energy), ``container`` (container CPU %), ``cpu`` (CPU cores, cAdvisor) or ``gpu``
    #: (NVIDIA DCGM).
    name: str
    #: The health query answered without error.
    up: bool
    #: The answer held a sample (within the server's lookback, 5 min by default). A ``gpu`` source that is
    #: up without data is normal on a machine without GPUs.
    has_data: bool
    #: When the check ran, unix seconds.
    checked_at: float
    #: The PromQL asked (``max(timestamp(<metric>))`` by default).
    query: str
    #: Timestamp of the newest sample, unix seconds; None without data.
    newest_sample_at: float | None = None
    #: ``checked_at - newest_sample_at`` (not below 0), seconds; None without data.
    age_seconds: float | None = None
    #: Why the query did not answer (connection refused, timeout, bad query, ...); None when up.
    error: str | None = None


class TelemetryHealth(msgspec.Struct, kw_only=True):
    """Subject ``te.events.telemetry.health``: the ingest service's periodic check of the telemetry sources
    its enrichment reads (``--telemetry-health-interval``). The events stream keeps only the newest one."""

    #: When the check started, unix seconds.
    checked_at: float
    sources: list[TelemetrySourceHealth]
    schema_version: int = SCHEMA_VERSION


class IngestRecord(msgspec.Struct, kw_only=True):
    """Value in KV ``te_ingested`` under the run key: what the ingest service has published for a run."""

    run_id: str
    file_sha256: str
    generation: int
    #: ``publishing`` while scenario messages go out, ``published`` once the manifest is stored.
    state: str
    updated_at: float


# ---------------------------------------------------------------------------------------------------------
# Worker results (subject ``te.results.<kind>.<digest>``, one message per run and kind)
# ---------------------------------------------------------------------------------------------------------


class ResultEnvelope(msgspec.Struct, kw_only=True):
    """What every result message starts with: which run generation it is about, and when and how long it
    took to compute. Built by ``shared.runs.make_result``; each kind adds its own fields and its ``kind``."""

    run_id: str
    digest: str
    generation: int
    computed_at: float
    compute_seconds: float
    schema_version: int = SCHEMA_VERSION


class CandidateScore(msgspec.Struct, kw_only=True):
    """A candidate power model and how it did on held-out scenarios."""

    name: str
    n_params: int
    r2_train: float | None
    r2_cv: float | None
    rmse_cv: float | None
    mae_cv: float | None
    error: str | None = None


class ModelInfo(msgspec.Struct, kw_only=True):
    """The power model used for a run's predictions."""

    name: str
    #: ``cv`` (lowest cross-validated RMSE) or ``rule`` (linear below 6 distinct stream counts, else poly2).
    selection: str
    rule_choice: str
    n_train: int
    distinct_streams: int
    r2: float | None
    residual_std_error: float | None
    confidence_level: float
    coefficients: dict[str, float]
    dropped_features: dict[str, str]
    candidates: list[CandidateScore]
    trained_at: float
    #: sha256 of the CPU model string (``unknown`` when the file names none).
    fingerprint: str = ""
    #: Runs whose scenarios the model was trained on.
    runs: list[str] = []
    #: Feature -> [min, max] over the training points: a prediction outside is an extrapolation.
    feature_ranges: dict[str, list[float]] = {}
    #: Standard error of each coefficient, in the coefficients' units (None: too few points to estimate).
    coefficient_standard_errors: dict[str, float] | None = None


class ModelingScenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Per-scenario statistics (the old results exporter's) and power predictions. Units in the names."""

    index: int
    is_baseline: bool = False
    duration_s: float | None = None
    energy_j: float | None = None
    energy_wh: float | None = None
    mean_power_w: float | None = None
    container_cpu_percent: float | None = None
    docker_overhead_w: float | None = None
    energy_wh_per_min: float | None = None
    energy_wh_per_mbps: float | None = None
    energy_mj_per_frame: float | None = None
    #: Pixels delivered per joule (streams x renditions).
    efficiency_score: float | None = None
    total_pixels: float | None = None
    power_stdev_w: float | None = None
    #: Measured mean power +- 2 sample standard deviations (the old ``prediction_confidence_*``).
    band_high_w: float | None = None
    band_low_w: float | None = None
    delta_power_w: float | None = None
    delta_energy_wh: float | None = None
    power_pct_increase: float | None = None
    delta_container_cpu_percent: float | None = None
    predicted_power_w: float | None = None
    predicted_energy_j: float | None = None
    predicted_efficiency_score: float | None = None
    #: The model's prediction interval for a new run of this configuration, W.
    prediction_interval_low_w: float | None = None
    prediction_interval_high_w: float | None = None
    #: Why a value is missing (telemetry absent, no model, ...).
    notes: list[str] = []


class ModelingResult(ResultEnvelope, kw_only=True):
    scenarios: list[ModelingScenario]
    baseline_index: int | None
    model: ModelInfo | None
    #: Why there is no model (fewer than 3 usable scenarios, ...).
    model_reason: str | None
    kind: str = "modeling"


class CostScenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Cost figures of one scenario, in ``CostResult.currency``. Units in the names."""

    index: int
    energy_cost: float | None = None
    compute_cost: float | None = None
    total_cost: float | None = None
    cost_per_pixel: float | None = None
    cost_per_watch_hour: float | None = None
    #: Energy only: mean power kW x price per kWh (the old ``cost_usd_per_hour``).
    cost_per_hour: float | None = None
    monthly_cost: float | None = None
    monthly_savings: float | None = None
    co2_kg_per_hour: float | None = None
    co2_monthly_kg: float | None = None
    co2_monthly_avoided_kg: float | None = None
    #: Grid carbon intensity used for this scenario, g CO2/kWh: for its own start..end when Electricity Maps'
    #: history is available (``electricity-maps-past``), else ``electricity-maps``, ``config`` or ``table``.
    co2_intensity_g_per_kwh: float | None = None
    co2_intensity_source: str | None = None
    energy_joules: float | None = None
    cpu_core_seconds: float | None = None
    mean_power_w: float | None = None
    notes: list[str] = []


class CostResult(ResultEnvelope, kw_only=True):
    currency: str
    region: str
    energy_price_per_kwh: float
    energy_price_source: str
    cpu_cost_per_hour: float
    gpu_cost_per_hour: float
    co2_intensity_g_per_kwh: float
    co2_intensity_source: str
    baseline_index: int | None
    baseline_power_w: float | None
    scenarios: list[CostScenario]
    kind: str = "cost"


class QoEScenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    index: int
    vmaf_score: float | None = None
    psnr_score: float | None = None
    ssim_score: float | None = None
    #: dropped_frames / total_frames (0..1).
    drop_rate: float | None = None
    #: VMAF per watt of mean power (CPU package [+ GPU]).
    quality_per_watt: float | None = None
    #: Quality-weighted pixels per joule: pixels x VMAF/100 / energy J.
    qoe_efficiency_score: float | None = None
    #: ``file`` (scores in the results file) or ``ffmpeg`` (computed from the named videos).
    source: str | None = None
    #: Seconds spent computing this scenario's quality figures (including any ffmpeg run).
    computation_seconds: float = 0.0
    #: Scores refused, by metric, with the reason (never exported).
    rejected: dict[str, str] = {}


class QoEResult(ResultEnvelope, kw_only=True):
    scenarios: list[QoEScenario]
    kind: str = "qoe"


class PredictRequest(msgspec.Struct, kw_only=True):
    """Request on ``te.predict.power`` (nats.micro service ``transcode-energy-modeling``)."""

    scenario: Scenario
    #: Which machine's model to use; ``unknown`` (files that name no CPU) when absent.
    cpu_model: str | None = None
    schema_version: int = SCHEMA_VERSION


class PredictResponse(msgspec.Struct, kw_only=True):
    mean_power_w: float
    #: Prediction interval for one new run of this configuration (None with too few points to estimate it).
    prediction_interval_low_w: float | None
    prediction_interval_high_w: float | None
    confidence_level: float
    features: dict[str, float]
    model: ModelInfo
    #: Confidence interval of the mean: where the model's expected power for this configuration lies, W
    #: (narrower than the prediction interval, which is where one new run is expected to fall).
    mean_interval_low_w: float | None = None
    mean_interval_high_w: float | None = None
    #: Energy of one hour at the predicted mean power, Wh (= W x 1 h), with the interval's ends.
    energy_wh_per_hour: float | None = None
    energy_wh_per_hour_low: float | None = None
    energy_wh_per_hour_high: float | None = None
    #: One sentence per feature outside the range the model was trained on (an extrapolation).
    warnings: list[str] = []
    schema_version: int = SCHEMA_VERSION


# ---------------------------------------------------------------------------------------------------------
# Advice (shared/advice.py, shared/comparison.py, shared/planning.py)
# ---------------------------------------------------------------------------------------------------------


class AdviceScenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One non-baseline scenario as the advisor sees it: its score under every algorithm (units in the field
    names), its ranks, whether it is on the cost/quality Pareto front and whether it is recommended.

    Ranks start at 1 (best). A scenario without a score under an algorithm has no rank for it, and the
    reason is in ``missing_reasons`` keyed by the algorithm name (``throughput_per_watt``, ...).
    """

    index: int
    name: str | None = None
    output_ladder: str = "unknown"
    streams: int = 1
    #: Measured figures (ModelingScenario) the scores were computed from.
    mean_power_w: float | None = None
    energy_j: float | None = None
    duration_s: float | None = None
    #: Validated VMAF used by the quality scores, and where it came from: ``qoe`` (QoE result) or ``file``.
    vmaf: float | None = None
    vmaf_source: str | None = None
    #: bitrate Mbps x streams / mean power W.
    throughput_mbps_per_watt: float | None = None
    #: total pixels / energy J.
    pixels_per_joule: float | None = None
    #: VMAF / mean power W.
    vmaf_per_watt: float | None = None
    #: total pixels x VMAF/100 / energy J.
    quality_weighted_pixels_per_joule: float | None = None
    #: Why a score is missing, by algorithm name.
    missing_reasons: dict[str, str] = {}
    #: The ``auto`` algorithm for this scenario alone, and why.
    auto_algorithm: str | None = None
    auto_reason: str | None = None
    #: Overall rank (1 = best) among the run's non-baseline scenarios, by algorithm name; scored ones only.
    ranks: dict[str, int] = {}
    #: Rank within its output ladder under ``AdviceResult.primary_algorithm`` (None when unscored).
    ladder_rank: int | None = None
    #: total cost / (duration h x streams), in ``AdviceResult.currency`` per stream-hour.
    cost_per_stream_hour: float | None = None
    #: mean power W / streams (gross, idle power included).
    watts_per_stream: float | None = None
    #: On the Pareto front of ``AdviceResult.pareto_x_metric`` (minimised) vs ``pareto_y_metric``
    #: (maximised).
    pareto: bool = False
    #: Named by at least one recommendation.
    recommended: bool = False
    #: ``vmaf >= AdviceResult.min_vmaf`` (None without a threshold or without a VMAF).
    meets_min_vmaf: bool | None = None


class Recommendation(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One piece of advice: a scenario, the figure that earns it the place and one sentence saying so.

    ``kind`` is ``best_overall``, ``best_in_ladder``, ``cheapest_per_stream_hour`` or
    ``most_streams_per_watt``. ``value``/``unit`` is the cited figure; ``runner_up_*`` the next best
    scenario it is compared with; ``ratio`` = value / runner-up value.
    """

    kind: str
    index: int
    name: str | None
    justification: str
    value: float
    unit: str
    #: The scoring algorithm behind ``value`` (``best_*`` kinds), else None.
    algorithm: str | None = None
    output_ladder: str | None = None
    runner_up_index: int | None = None
    runner_up_name: str | None = None
    runner_up_value: float | None = None
    ratio: float | None = None


class AdviceResult(ResultEnvelope, kw_only=True):
    """The advisor's answer for one run: every non-baseline scenario scored and ranked, the Pareto front and
    a short, deterministic list of recommendations."""

    #: The ``auto`` choice shared by most scenarios (ties: qoe_efficiency, then pixels_per_joule, then
    #: throughput_per_watt); ladder ranks and ``best_overall`` use it. None for a run with no scenario.
    primary_algorithm: str | None
    primary_unit: str | None
    primary_reason: str
    #: Currency of every cost figure (from the cost result); None without one.
    currency: str | None
    min_vmaf: float | None
    baseline_index: int | None
    scenarios: list[AdviceScenario]
    #: Output ladder id -> index of its best scenario under the primary algorithm (ladders with one scored).
    best_per_ladder: dict[str, int]
    #: ``cost_per_stream_hour`` or ``watts_per_stream`` (minimised); None when no front was computed.
    pareto_x_metric: str | None
    #: ``vmaf`` or ``pixels_per_joule`` (maximised).
    pareto_y_metric: str | None
    pareto_indices: list[int]
    recommendations: list[Recommendation]
    #: Why something could not be advised (no modeling result, no scenario meets min_vmaf, ...).
    notes: list[str] = []
    kind: str = "advice"


class ScenarioDelta(msgspec.Struct, kw_only=True, omit_defaults=True):
    """One configuration present in both runs: A and B side by side, ``delta_*`` = B - A and ``pct_*`` =
    (B - A) / A x 100 (None when A is 0 or either side is missing)."""

    #: The configuration both scenarios share, e.g. ``8 streams, 5 Mbps, 1280x720@30, cpu, h264, veryfast``.
    configuration: str
    a_index: int
    b_index: int
    a_name: str | None = None
    b_name: str | None = None
    a_mean_power_w: float | None = None
    b_mean_power_w: float | None = None
    delta_mean_power_w: float | None = None
    pct_mean_power: float | None = None
    a_energy_j: float | None = None
    b_energy_j: float | None = None
    delta_energy_j: float | None = None
    pct_energy: float | None = None
    a_pixels_per_joule: float | None = None
    b_pixels_per_joule: float | None = None
    delta_pixels_per_joule: float | None = None
    pct_pixels_per_joule: float | None = None
    #: Total cost in ``RunComparison.currency`` (None when the runs were costed in different currencies).
    a_total_cost: float | None = None
    b_total_cost: float | None = None
    delta_total_cost: float | None = None
    pct_total_cost: float | None = None
    a_vmaf: float | None = None
    b_vmaf: float | None = None
    delta_vmaf: float | None = None
    pct_vmaf: float | None = None
    #: A's prediction interval for this configuration, W.
    a_prediction_interval_low_w: float | None = None
    a_prediction_interval_high_w: float | None = None
    #: B's measured mean power lies outside A's prediction interval.
    regression: bool = False
    #: Why ``regression`` is set, or why it could not be judged.
    regression_reason: str | None = None


class UnmatchedScenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    """A scenario of one run with no scenario of the same configuration left in the other."""

    run: str
    index: int
    name: str | None = None
    configuration: str = ""


class RunComparison(msgspec.Struct, kw_only=True):
    """Run B against run A, scenario by scenario, matched by configuration."""

    a_run_id: str | None
    b_run_id: str | None
    #: Currency of the cost columns; None when either run has no cost result or they differ (see notes).
    currency: str | None
    deltas: list[ScenarioDelta]
    unmatched: list[UnmatchedScenario]
    #: Number of deltas with ``regression`` set.
    regressions: int
    notes: list[str] = []
    schema_version: int = SCHEMA_VERSION


class FleetPlan(msgspec.Struct, kw_only=True):
    """Hosts, power, energy, money and CO2 to run ``streams`` streams of one configuration for a month
    (30 days of ``hours_per_day``). ``*_low``/``*_high`` carry the per-host prediction interval through
    (summed host by host: fully correlated, see shared/planning.py); None where an input was missing."""

    streams: int
    streams_per_host: int
    hosts: int
    #: Hosts running ``streams_per_host`` streams, and the streams on the last, partly filled host (0: none).
    full_hosts: int
    remainder_streams: int
    hours_per_day: float
    monthly_hours: float
    currency: str
    energy_price_per_kwh: float | None
    co2_intensity_g_per_kwh: float | None
    fleet_mean_power_w: float | None
    fleet_power_low_w: float | None
    fleet_power_high_w: float | None
    energy_kwh_per_month: float | None
    energy_kwh_per_month_low: float | None
    energy_kwh_per_month_high: float | None
    energy_cost_per_month: float | None
    energy_cost_per_month_low: float | None
    energy_cost_per_month_high: float | None
    #: hosts x cores per host x price per core-hour x monthly hours (no interval: it does not depend on power).
    compute_cost_per_month: float | None
    co2_kg_per_month: float | None
    co2_kg_per_month_low: float | None
    co2_kg_per_month_high: float | None
    #: Why a figure is missing or how it was approximated.
    notes: list[str] = []
    #: Inputs outside the power model's training range (shared.planning.extrapolation_warnings).
    warnings: list[str] = []
    schema_version: int = SCHEMA_VERSION


# ---------------------------------------------------------------------------------------------------------
# Advisor API (nats.micro service ``transcode-energy-advisor``; subjects in shared/subjects.py)
# ---------------------------------------------------------------------------------------------------------


class RunSummary(msgspec.Struct, kw_only=True):
    """One ingested run: its newest generation and which kinds have published a result for it."""

    run_id: str
    digest: str
    generation: int
    file_name: str
    scenarios: int
    ingested_at: float
    #: Kinds whose result of this generation is published.
    kinds_done: list[str]
    #: True for the run the gateway exports (the greatest run id).
    latest: bool = False


class RunsRequest(msgspec.Struct, kw_only=True):
    schema_version: int = SCHEMA_VERSION


class RunsResponse(msgspec.Struct, kw_only=True):
    runs: list[RunSummary]
    #: Every kind the system computes, in registry order.
    kinds: list[str]
    schema_version: int = SCHEMA_VERSION


class RecommendRequest(msgspec.Struct, kw_only=True):
    #: None: the latest run.
    run_id: str | None = None
    #: ``auto`` (the run's primary algorithm) or one of throughput_per_watt, pixels_per_joule,
    #: quality_per_watt, qoe_efficiency.
    algorithm: str = "auto"
    #: Only scenarios of this output ladder id (e.g. ``1280x720@30``).
    ladder: str | None = None
    top: int = 10
    min_vmaf: float | None = None
    schema_version: int = SCHEMA_VERSION


class RankedScenario(msgspec.Struct, kw_only=True, omit_defaults=True):
    rank: int
    index: int
    name: str
    output_ladder: str
    score: float
    unit: str
    mean_power_w: float | None = None
    vmaf: float | None = None
    #: currency per stream-hour (see RecommendResponse.currency).
    cost_per_stream_hour: float | None = None
    watts_per_stream: float | None = None
    pareto: bool = False
    recommended: bool = False


class RecommendResponse(msgspec.Struct, kw_only=True):
    run_id: str
    algorithm: str
    unit: str
    currency: str | None
    rows: list[RankedScenario]
    recommendations: list[Recommendation]
    #: Scenarios scored but left out by the filters (ladder, min_vmaf), and unscored ones.
    filtered_out: int = 0
    notes: list[str] = []
    schema_version: int = SCHEMA_VERSION


class CompareRequest(msgspec.Struct, kw_only=True):
    #: The earlier run (its prediction intervals judge regressions) and the newer one.
    run_a: str
    run_b: str
    schema_version: int = SCHEMA_VERSION


class PlanRequest(msgspec.Struct, kw_only=True):
    """A fleet of ``streams`` streams of one configuration (``scenario``: bitrate, resolution, fps, encoder,
    optionally ``outputs`` for a ladder)."""

    streams: int
    scenario: Scenario
    #: Streams one host runs; None: the most streams per host the model was trained on.
    streams_per_host: int | None = None
    #: Pricing region; None: the advisor's configured region.
    region: str | None = None
    hours_per_day: float = 24.0
    cpu_model: str | None = None
    cores_per_host: float | None = None
    schema_version: int = SCHEMA_VERSION


class ReportRequest(msgspec.Struct, kw_only=True):
    #: None: the latest run.
    run_id: str | None = None
    #: Another run to compare with (this run is the newer one).
    compare: str | None = None
    #: ``md``, ``csv`` or ``json``.
    format: str = "md"
    schema_version: int = SCHEMA_VERSION


class ReportResponse(msgspec.Struct, kw_only=True):
    run_id: str
    format: str
    text: str
    schema_version: int = SCHEMA_VERSION


class DeleteRunRequest(msgspec.Struct, kw_only=True):
    run_id: str
    schema_version: int = SCHEMA_VERSION


class DeleteRunResponse(msgspec.Struct, kw_only=True):
    run_id: str
    #: Stream messages removed (scenarios, manifests and results of every generation).
    removed_messages: int
    schema_version: int = SCHEMA_VERSION


#: Message types documented with JSON Schema, by name.
PUBLISHED_MESSAGES: dict[str, type[msgspec.Struct]] = {
    "ScenarioMessage": ScenarioMessage,
    "RunBundle": RunBundle,
    "RunManifest": RunManifest,
    "ErrorEvent": ErrorEvent,
    "IngestRecord": IngestRecord,
    "ResultsFile": ResultsFile,
    "ModelingResult": ModelingResult,
    "CostResult": CostResult,
    "QoEResult": QoEResult,
    "PredictRequest": PredictRequest,
    "PredictResponse": PredictResponse,
    "AdviceResult": AdviceResult,
    "RunComparison": RunComparison,
    "FleetPlan": FleetPlan,
    "RunsRequest": RunsRequest,
    "RunsResponse": RunsResponse,
    "RecommendRequest": RecommendRequest,
    "RecommendResponse": RecommendResponse,
    "CompareRequest": CompareRequest,
    "PlanRequest": PlanRequest,
    "ReportRequest": ReportRequest,
    "ReportResponse": ReportResponse,
    "DeleteRunRequest": DeleteRunRequest,
    "DeleteRunResponse": DeleteRunResponse,
    "RunDeleted": RunDeleted,
    "TelemetryHealth": TelemetryHealth,
}
