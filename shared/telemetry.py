"""One resolved view of a scenario's measurements, whatever carried them. Pure, no I/O.

Three places can hold measurements of a scenario:

1. the file's ``telemetry`` block (written by the benchmark);
2. the old top-level fields (``power_watts``, ``cpu_usage_cores``, ``gpu_usage_cores``, ``step_seconds``, and
   the summaries ``power`` = {mean_watts, total_energy_joules} and ``gpu_power`` = {mean_watts}; a
   distributed-runner file's top-level ``energy_joules``);
3. enrichment from Prometheus/VictoriaMetrics (``ScenarioMessage.enriched``).

**Precedence, field by field: telemetry block > old fields > Prometheus.** What the benchmark wrote into the
file about its own run is the most specific statement there is; Prometheus fills in only what the file lacks.

GPU measurements (NVIDIA DCGM, summed over the machine's GPUs) follow the same order: GPU power W and NVENC
utilisation % from the block, else Prometheus (there are no old top-level GPU series besides
``gpu_usage_cores``); GPU energy J from the block's ``gpu_energy_joules``, else Prometheus' (the DCGM energy
counter's increase over the window), else the resolved GPU power's mean x the scenario's duration. The old ``gpu_power``
summary stays separate (``gpu_mean_power_w``), as the cost and QoE formulas read it.
(The old cost exporter let a non-empty Prometheus answer overwrite the file's series; see
docs/compatibility.md T1.)
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.integration import SampledSeries, covered_s, mean, series_energy, time_weighted_mean
from shared.parsing import scenario_duration_s
from shared.schemas import Scenario, Series, Telemetry


@dataclass(frozen=True)
class ResolvedTelemetry:
    #: CPU package power, W (RAPL ``package.*`` zones): mean power, stdev, energy fallback.
    package_power_w: SampledSeries | None
    #: Power the cost model integrates, W: the all-zones sum when known (the old cost query), else package power.
    cost_power_w: SampledSeries | None
    cpu_cores: SampledSeries | None
    gpu_usage: SampledSeries | None
    container_cpu_percent: SampledSeries | None
    #: Measured energy over the scenario, J (the ``increase()`` query, or a file's figure).
    energy_j: float | None
    #: A mean power given as a summary only (old ``power.mean_watts``), W.
    summary_mean_power_w: float | None
    #: GPU mean power from the old ``gpu_power`` summary, W.
    gpu_mean_power_w: float | None
    #: Where each series came from, for the record: ``file``, ``legacy-fields``, ``prometheus``.
    sources: tuple[str, ...]
    #: Why enrichment failed, when it did.
    missing_reason: str | None
    #: GPU board power summed over the GPUs, W (DCGM ``DCGM_FI_DEV_POWER_USAGE``).
    gpu_power_w: SampledSeries | None = None
    #: GPU energy over the scenario, J: a measured figure (the DCGM counter's increase, mJ / 1000), else
    #: ``gpu_power_w``'s time-weighted mean x ``duration_s`` (shared.integration.series_energy).
    gpu_energy_j: float | None = None
    #: NVENC encoder utilisation, % (DCGM ``DCGM_FI_DEV_ENC_UTIL``).
    gpu_encoder_percent: SampledSeries | None = None
    #: The scenario's duration, s (shared.parsing.scenario_duration_s): what a series' energy spans and what
    #: decides how a uniform series reads (shared.integration, "sampling convention").
    duration_s: float | None = None

    def energy_or_series_j(self) -> float | None:
        """Measured energy, or, when no energy figure exists, package power's time-weighted mean x the
        scenario's duration, J (shared.integration.series_energy)."""
        return (
            self.energy_j
            if self.energy_j is not None
            else series_energy(self.package_power_w, self.duration_s)
        )

    def package_coverage_note(self) -> str | None:
        """A sentence when the energy comes from package power samples that cover under 90 % of the
        scenario (so mean power and energy assume the rest drew alike); None otherwise."""
        if self.energy_j is not None or self.duration_s is None or self.package_power_w is None:
            return None
        covered = covered_s(self.package_power_w, self.duration_s)
        if covered is None or covered >= COVERAGE_NOTE_BELOW * self.duration_s:
            return None
        return (
            f"power samples cover {covered:g} s of the {self.duration_s:g} s scenario: mean power and energy "
            "assume the rest drew alike"
        )


#: Below this fraction of the scenario covered by its power samples, the statistics say so in a note.
COVERAGE_NOTE_BELOW = 0.9


def _pick(*candidates: tuple[Series | None, float | None, str]) -> tuple[SampledSeries | None, str | None]:
    for series, step, source in candidates:
        resolved = SampledSeries.from_field(series, step)
        if resolved is not None:
            return resolved, source
    return None, None


def resolve(scenario: Scenario, enriched: Telemetry | None = None) -> ResolvedTelemetry:
    """Merge the three sources with the documented precedence (block > old fields > Prometheus)."""
    block = scenario.telemetry or Telemetry()
    prom = enriched or Telemetry()
    block_step = block.step_seconds if block.step_seconds is not None else scenario.step_seconds
    legacy_step = scenario.step_seconds if scenario.step_seconds is not None else block.step_seconds
    prom_step = prom.step_seconds
    sources: list[str] = []

    def pick(
        block_field: Series | None, legacy_field: Series | None, prom_field: Series | None
    ) -> SampledSeries | None:
        series, source = _pick(
            (block_field, block_step, "file"),
            (legacy_field, legacy_step, "legacy-fields"),
            (prom_field, prom_step, "prometheus"),
        )
        if source is not None and source not in sources:
            sources.append(source)
        return series

    package = pick(block.power_watts, scenario.power_watts, prom.power_watts)
    all_zones = pick(block.power_all_zones_watts, None, prom.power_all_zones_watts)
    cpu = pick(block.cpu_usage_cores, scenario.cpu_usage_cores, prom.cpu_usage_cores)
    gpu = pick(block.gpu_usage_cores, scenario.gpu_usage_cores, prom.gpu_usage_cores)
    container = pick(block.container_cpu_percent, None, prom.container_cpu_percent)
    gpu_power = pick(block.gpu_power_watts, None, prom.gpu_power_watts)
    gpu_encoder = pick(block.gpu_encoder_percent, None, prom.gpu_encoder_percent)

    energy = block.energy_joules
    if energy is None and scenario.power is not None:
        energy = scenario.power.total_energy_joules
    if energy is None and scenario.energy_joules is not None:
        energy = scenario.energy_joules
    if energy is None:
        energy = prom.energy_joules

    duration = scenario_duration_s(scenario)
    gpu_energy = block.gpu_energy_joules
    if gpu_energy is None:
        gpu_energy = prom.gpu_energy_joules
    if gpu_energy is None:
        gpu_energy = series_energy(gpu_power, duration)

    return ResolvedTelemetry(
        package_power_w=package,
        cost_power_w=all_zones if all_zones is not None else package,
        cpu_cores=cpu,
        gpu_usage=gpu,
        container_cpu_percent=container,
        energy_j=energy,
        summary_mean_power_w=scenario.power.mean_watts if scenario.power is not None else None,
        gpu_mean_power_w=scenario.gpu_power.mean_watts if scenario.gpu_power is not None else None,
        sources=tuple(sources),
        missing_reason=prom.missing_reason,
        gpu_power_w=gpu_power,
        gpu_energy_j=gpu_energy,
        gpu_encoder_percent=gpu_encoder,
        duration_s=duration,
    )


# ---------------------------------------------------------------------------------------------------------
# Mean power: the one definition
# ---------------------------------------------------------------------------------------------------------


def mean_power_w(
    *, stated_w: float | None, energy_j: float | None, duration_s: float | None, samples: SampledSeries | None
) -> float | None:
    """Mean power of one scenario, W. The one definition every figure uses, in this order of precedence:

    1. a mean the results file states (``power.mean_watts``): the benchmark's own statement of its run;
    2. measured energy J / duration s;
    3. the power samples' time-weighted mean (shared.integration.time_weighted_mean, the sampling convention:
       a constant series gives that constant whatever its length, step or jitter). Their energy is this
       mean x the duration, so this is also "energy / duration" for an energy derived from the samples.

    None when none of them can be had. The cost family deliberately starts at step 3
    (:func:`cost_mean_power_w`); docs/telemetry.md ("Mean power") explains the rule and that exception.
    """
    if stated_w is not None:
        return stated_w
    if energy_j is not None and duration_s is not None and duration_s > 0:
        return energy_j / duration_s
    return time_weighted_mean(samples, duration_s)


def gpu_mean_power_w(tel: ResolvedTelemetry, duration_s: float | None) -> float | None:
    """Mean GPU power, W, by the same precedence: the file's ``gpu_power.mean_watts``, else GPU energy J
    (DCGM's energy counter) / duration s, else the GPU power samples' time-weighted mean. None on a machine
    without GPU telemetry."""
    return mean_power_w(
        stated_w=tel.gpu_mean_power_w,
        energy_j=tel.gpu_energy_j,
        duration_s=duration_s,
        samples=tel.gpu_power_w,
    )


def scenario_mean_power_w(
    tel: ResolvedTelemetry, duration_s: float | None, *, include_gpu: bool = False
) -> float | None:
    """Mean CPU package power (results, modeling), W; with ``include_gpu`` plus the GPU's
    (:func:`gpu_mean_power_w`), as the old QoE exporter added the GPU's stated mean for quality per watt."""
    cpu = mean_power_w(
        stated_w=tel.summary_mean_power_w,
        energy_j=tel.energy_j,
        duration_s=duration_s,
        samples=tel.package_power_w,
    )
    if cpu is None or not include_gpu:
        return cpu
    return cpu + (gpu_mean_power_w(tel, duration_s) or 0.0)


def total_energy_j(tel: ResolvedTelemetry) -> float | None:
    """Energy of the scenario on CPU package and GPU, J (GPU energy adds where GPU telemetry exists)."""
    cpu = tel.energy_or_series_j()
    if cpu is None:
        return tel.gpu_energy_j
    return cpu + (tel.gpu_energy_j or 0.0)


def cost_mean_power_w(tel: ResolvedTelemetry, duration_s: float | None) -> float | None:
    """Mean power of what the cost family prices, W: its CPU series plus the GPU's.

    For the CPU the cost family deliberately keeps the old cost exporter's figure, so that
    ``cost_usd_per_hour``, the monthly projections and CO2 continue their series: the arithmetic mean of the
    samples of the series it integrates (the sum over every RAPL zone when known, else package power), i.e.
    step 3 of :func:`mean_power_w`; without samples, :func:`scenario_mean_power_w` (a stated mean, else
    E / D). The GPU's mean power (:func:`gpu_mean_power_w`) is added where GPU telemetry exists.
    """
    sampled = mean(tel.cost_power_w)
    cpu = sampled if sampled is not None else scenario_mean_power_w(tel, duration_s)
    gpu = gpu_mean_power_w(tel, duration_s)
    if cpu is None:
        return gpu
    return cpu + (gpu or 0.0)
