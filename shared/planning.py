"""Fleet planning: how many hosts, watts, kWh, money and CO2 to run N streams of one configuration for a
month. Pure functions, no I/O.

Inputs are a per-host power estimate at ``streams_per_host`` streams (typically the power model's prediction
with its interval) and, optionally, a separate estimate for the last, partly filled host.

* hosts = ceil(streams / streams_per_host); the last host carries ``streams mod streams_per_host`` streams
  when that is not 0. Without an estimate for it, it is counted at the full-host estimate (conservative: a
  host with fewer streams does not draw more), and a note says so.
* fleet power W = full hosts x host W + remainder-host W. **The interval bounds are summed host by host**:
  fleet low = sum of host lows, fleet high = sum of host highs. That treats the hosts' errors as fully
  correlated, which is what they are when one model predicts every host (a model that is 10 % low is 10 %
  low on every host), and it is the conservative choice: the interval is as wide as it can be.
* month = 30 days of ``hours_per_day`` hours: monthly hours = hours_per_day x 30 (``HOURS_PER_MONTH`` = 720 =
  24 x 30 when the fleet runs around the clock).
* energy kWh/month = fleet W x monthly hours / 1000; energy cost = kWh x price per kWh;
  CO2 kg/month = :func:`shared.cost.co2_kg_per_hour` (fleet W, g/kWh) x monthly hours (the one CO2 formula).
* compute cost/month = hosts x cores per host x price per core-hour x monthly hours; no interval (it does not
  depend on power); None with a note when the price or the core count is unknown.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from shared.cost import co2_kg_per_hour
from shared.schemas import FleetPlan
from shared.units import DAYS_PER_MONTH

_WH_PER_KWH = 1000.0


@dataclass(frozen=True)
class HostPower:
    """One host's power estimate, W: the mean and a prediction interval (any may be None)."""

    mean_w: float | None
    low_w: float | None = None
    high_w: float | None = None


def monthly_hours(hours_per_day: float) -> float:
    """hours_per_day x 30 days (= HOURS_PER_MONTH = 720 at 24 h/day)."""
    return hours_per_day * DAYS_PER_MONTH


def _sum(full_hosts: int, full: float | None, remainder: float | None, has_remainder: bool) -> float | None:
    """full_hosts x full + remainder (when there is a remainder host); None when a needed term is None."""
    if full_hosts > 0 and full is None:
        return None
    total = full_hosts * full if full is not None else 0.0
    if has_remainder:
        if remainder is None:
            return None
        total += remainder
    return total


def _scale(value: float | None, factor: float | None) -> float | None:
    return None if value is None or factor is None else value * factor


def _check_non_negative(name: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value >= 0):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def plan_fleet(
    *,
    streams: int,
    streams_per_host: int,
    host_power: HostPower,
    remainder_power: HostPower | None = None,
    energy_price_per_kwh: float | None = None,
    co2_intensity_g_per_kwh: float | None = None,
    hours_per_day: float = 24.0,
    cpu_price_per_core_hour: float | None = None,
    cores_per_host: float | None = None,
    currency: str = "USD",
    warnings: list[str] | None = None,
) -> FleetPlan:
    """The fleet plan (see the module docstring for every formula). ``warnings`` (e.g. from
    :func:`extrapolation_warnings`) are carried into the plan as they are.

    Raises ValueError for streams < 0, streams_per_host < 1, hours_per_day outside (0, 24], or a negative
    or non-finite price, intensity, core count or power.
    """
    if streams < 0:
        raise ValueError(f"streams must be >= 0, got {streams}")
    if streams_per_host < 1:
        raise ValueError(f"streams_per_host must be >= 1, got {streams_per_host}")
    if not (math.isfinite(hours_per_day) and 0 < hours_per_day <= 24):
        raise ValueError(f"hours_per_day must be in (0, 24], got {hours_per_day!r}")
    for name, value in (
        ("energy_price_per_kwh", energy_price_per_kwh),
        ("co2_intensity_g_per_kwh", co2_intensity_g_per_kwh),
        ("cpu_price_per_core_hour", cpu_price_per_core_hour),
        ("cores_per_host", cores_per_host),
    ):
        _check_non_negative(name, value)
    for estimate in (host_power, remainder_power):
        if estimate is not None:
            for name, value in (
                ("mean_w", estimate.mean_w),
                ("low_w", estimate.low_w),
                ("high_w", estimate.high_w),
            ):
                _check_non_negative(f"host power {name}", value)

    notes: list[str] = []
    full_hosts, remainder_streams = divmod(streams, streams_per_host)
    has_remainder = remainder_streams > 0
    hosts = full_hosts + (1 if has_remainder else 0)
    last = remainder_power
    if has_remainder and last is None:
        last = host_power
        notes.append(
            f"the last host runs {remainder_streams} of {streams_per_host} streams and is counted at the "
            "full-host estimate (no estimate for it was given)"
        )
    hours = monthly_hours(hours_per_day)

    def fleet(pick: str) -> float | None:
        return _sum(
            full_hosts,
            getattr(host_power, pick),
            getattr(last, pick) if last is not None else None,
            has_remainder,
        )

    power = {"mean": fleet("mean_w"), "low": fleet("low_w"), "high": fleet("high_w")}
    if hosts > 0 and power["mean"] is None:
        notes.append("no power estimate: no energy, cost or CO2 figures")
    if hosts > 0 and power["mean"] is not None and (power["low"] is None or power["high"] is None):
        notes.append("no prediction interval: low/high figures are missing")
    kwh = {k: _scale(w, hours / _WH_PER_KWH) for k, w in power.items()}
    if energy_price_per_kwh is None:
        notes.append("no energy price: no energy cost")
    energy_cost = {k: _scale(v, energy_price_per_kwh) for k, v in kwh.items()}
    if co2_intensity_g_per_kwh is None:
        notes.append("no CO2 intensity: no CO2 figures")
    co2 = {
        k: None
        if w is None or co2_intensity_g_per_kwh is None
        else co2_kg_per_hour(w, co2_intensity_g_per_kwh) * hours
        for k, w in power.items()
    }
    compute = None
    if cpu_price_per_core_hour is None or cores_per_host is None:
        notes.append("no CPU price per core-hour or cores per host: no compute cost")
    else:
        compute = hosts * cores_per_host * cpu_price_per_core_hour * hours
    return FleetPlan(
        streams=streams,
        streams_per_host=streams_per_host,
        hosts=hosts,
        full_hosts=full_hosts,
        remainder_streams=remainder_streams,
        hours_per_day=hours_per_day,
        monthly_hours=hours,
        currency=currency,
        energy_price_per_kwh=energy_price_per_kwh,
        co2_intensity_g_per_kwh=co2_intensity_g_per_kwh,
        fleet_mean_power_w=power["mean"],
        fleet_power_low_w=power["low"],
        fleet_power_high_w=power["high"],
        energy_kwh_per_month=kwh["mean"],
        energy_kwh_per_month_low=kwh["low"],
        energy_kwh_per_month_high=kwh["high"],
        energy_cost_per_month=energy_cost["mean"],
        energy_cost_per_month_low=energy_cost["low"],
        energy_cost_per_month_high=energy_cost["high"],
        compute_cost_per_month=compute,
        co2_kg_per_month=co2["mean"],
        co2_kg_per_month_low=co2["low"],
        co2_kg_per_month_high=co2["high"],
        notes=notes,
        warnings=list(warnings or ()),
    )


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def extrapolation_warnings(
    features: Mapping[str, float], training_ranges: Mapping[str, tuple[float, float]]
) -> list[str]:
    """One sentence per feature whose value lies outside the range the model was trained on (bounds
    inclusive), in the order of ``features``, e.g. ``pixel_rate_mpx 995 is outside the trained range
    0.9..221``. A non-finite value is reported too. Features without a training range are not judged (the
    model has no range for them, e.g. derived terms)."""
    out = []
    for name, value in features.items():
        bounds = training_ranges.get(name)
        if bounds is None:
            continue
        low, high = bounds
        if not math.isfinite(value):
            out.append(f"{name} {value} is not a finite number (trained range {_fmt(low)}..{_fmt(high)})")
        elif not low <= value <= high:
            out.append(f"{name} {_fmt(value)} is outside the trained range {_fmt(low)}..{_fmt(high)}")
    return out
