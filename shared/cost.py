"""Cost of a scenario: load-aware energy and compute cost, per-pixel and per-watch-hour cost, hourly and
monthly projections, savings and CO2 avoided against the idle baseline. Pure functions, no I/O.

Units: prices are in ``currency`` per kWh / per core-hour / per GPU-hour; power in W; energy in J; CPU usage
in cores; CO2 intensity in g/kWh; masses in kg. A missing input gives ``None`` ("no value"), never a 0 that
looks computed (B-C4, B-K3); a zero price with real data is a real 0.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.integration import SampledSeries, integrate
from shared.units import GRAMS_PER_KG, HOURS_PER_MONTH, JOULES_PER_KWH, SECONDS_PER_HOUR, WATTS_PER_KILOWATT


def energy_j(power_w: SampledSeries | None, gpu_energy_j: float | None = None) -> float | None:
    """Energy the cost model prices, J: the trapezoid over the power samples' own span plus the GPU's energy.

    The old cost exporter's integral, kept so the load-aware cost series continue (docs/compatibility.md C9):
    for N samples one per step it is (N-1)/N of the sampling convention's mean x duration."""
    joules = integrate(power_w)
    if joules is None:
        return gpu_energy_j
    return joules + (gpu_energy_j or 0.0)


@dataclass(frozen=True)
class LoadAwareCost:
    """Costs of one scenario, in the model's currency."""

    energy: float | None
    compute: float | None
    total: float | None
    per_pixel: float | None
    per_watch_hour: float | None
    energy_joules: float | None
    cpu_core_seconds: float | None
    gpu_seconds: float | None


@dataclass(frozen=True)
class CostModel:
    """Prices: ``energy_cost_per_kwh`` (currency/kWh), ``cpu_cost_per_hour`` (currency per core-hour),
    ``gpu_cost_per_hour`` (currency per GPU-hour, applied to GPU usage in GPUs busy)."""

    energy_cost_per_kwh: float
    cpu_cost_per_hour: float = 0.0
    gpu_cost_per_hour: float = 0.0
    currency: str = "USD"

    def __post_init__(self) -> None:
        for name in ("energy_cost_per_kwh", "cpu_cost_per_hour", "gpu_cost_per_hour"):
            value = getattr(self, name)
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0, got {value!r}")

    @property
    def price_per_joule(self) -> float:
        """currency/J = (currency/kWh) / 3.6e6."""
        return self.energy_cost_per_kwh / JOULES_PER_KWH

    @property
    def price_per_core_second(self) -> float:
        """currency per core-second = (currency per core-hour) / 3600."""
        return self.cpu_cost_per_hour / SECONDS_PER_HOUR

    @property
    def price_per_gpu_second(self) -> float:
        """currency per GPU-second = (currency per GPU-hour) / 3600."""
        return self.gpu_cost_per_hour / SECONDS_PER_HOUR

    # -- load-aware ----------------------------------------------------------------------------------------

    def energy_cost(self, power_w: SampledSeries | None, gpu_energy_j: float | None = None) -> float | None:
        """(integral(power W) dt [J] + GPU energy J) x price per J. None without either."""
        joules = energy_j(power_w, gpu_energy_j)
        return None if joules is None else joules * self.price_per_joule

    def compute_cost(self, cpu_cores: SampledSeries | None, gpu: SampledSeries | None = None) -> float | None:
        """integral(CPU cores) [core-s] x price per core-s + integral(GPU usage) [GPU-s] x price per GPU-s.

        None without CPU samples. GPU usage is priced at the GPU price (the old code charged it at the CPU
        price and never used ``--gpu-cost``: B-C9); absent GPU samples add nothing.
        """
        core_seconds = integrate(cpu_cores)
        if core_seconds is None:
            return None
        gpu_seconds = integrate(gpu) or 0.0
        return core_seconds * self.price_per_core_second + gpu_seconds * self.price_per_gpu_second

    def load_aware(
        self,
        *,
        power_w: SampledSeries | None,
        cpu_cores: SampledSeries | None,
        gpu: SampledSeries | None = None,
        gpu_energy_j: float | None = None,
        total_pixels: float | None = None,
        duration_s: float | None = None,
        viewers: float | None = None,
    ) -> LoadAwareCost:
        """Every load-aware cost of one scenario.

        ``total`` = energy + compute, counting a missing part as 0 and None only when both are missing (as
        before). ``per_pixel`` = total / pixels. ``per_watch_hour`` = total / (duration h x viewers), None
        without a positive viewer count.
        """
        energy = self.energy_cost(power_w, gpu_energy_j)
        compute = self.compute_cost(cpu_cores, gpu)
        total = None if energy is None and compute is None else (energy or 0.0) + (compute or 0.0)
        per_pixel = None
        if total is not None and total_pixels is not None and total_pixels > 0:
            per_pixel = total / total_pixels
        per_watch_hour = None
        if total is not None and duration_s and duration_s > 0 and viewers and viewers > 0:
            per_watch_hour = total / (duration_s / SECONDS_PER_HOUR * viewers)
        return LoadAwareCost(
            energy=energy,
            compute=compute,
            total=total,
            per_pixel=per_pixel,
            per_watch_hour=per_watch_hour,
            energy_joules=energy_j(power_w, gpu_energy_j),
            cpu_core_seconds=integrate(cpu_cores),
            gpu_seconds=integrate(gpu),
        )

    # -- projections ------------------------------------------------------------------------------------------

    def hourly_energy_cost(self, mean_power_w: float) -> float:
        """``cost_usd_per_hour``: mean power kW x price per kWh (energy only, no compute), currency/h."""
        return mean_power_w / WATTS_PER_KILOWATT * self.energy_cost_per_kwh


def co2_kg_per_hour(mean_power_w: float, intensity_g_per_kwh: float) -> float:
    """kg CO2 per hour at a constant draw: intensity g/kWh x mean power kW / 1000."""
    return intensity_g_per_kwh * (mean_power_w / WATTS_PER_KILOWATT) / GRAMS_PER_KG


def monthly(per_hour: float) -> float:
    """Per-hour figure x HOURS_PER_MONTH (720)."""
    return per_hour * HOURS_PER_MONTH


@dataclass(frozen=True)
class Projection:
    """Running the scenario around the clock for a month (HOURS_PER_MONTH), against the idle baseline."""

    cost_per_hour: float
    monthly_cost: float
    co2_kg_per_hour: float
    co2_monthly_kg: float
    #: Baseline monthly cost - this scenario's monthly cost. Negative when the scenario draws more than idle
    #: (kept from the old exporter so existing series continue); None without a baseline power.
    monthly_savings: float | None
    #: Baseline monthly CO2 kg - this scenario's. Same sign convention.
    co2_monthly_avoided_kg: float | None


def project(
    model: CostModel, mean_power_w: float, intensity_g_per_kwh: float, baseline_power_w: float | None
) -> Projection:
    """The hourly and monthly figures of one scenario: the old cost exporter's ``cost_usd_per_hour``,
    ``cost_monthly_*`` and ``co2_*`` (currency/h, currency/month, kg/h, kg/month)."""
    per_hour = model.hourly_energy_cost(mean_power_w)
    co2_hour = co2_kg_per_hour(mean_power_w, intensity_g_per_kwh)
    savings = avoided = None
    if baseline_power_w is not None and baseline_power_w > 0:
        savings = monthly(model.hourly_energy_cost(baseline_power_w)) - monthly(per_hour)
        avoided = monthly(co2_kg_per_hour(baseline_power_w, intensity_g_per_kwh)) - monthly(co2_hour)
    return Projection(
        cost_per_hour=per_hour,
        monthly_cost=monthly(per_hour),
        co2_kg_per_hour=co2_hour,
        co2_monthly_kg=monthly(co2_hour),
        monthly_savings=savings,
        co2_monthly_avoided_kg=avoided,
    )
