"""The ``cost`` kind: load-aware energy and compute cost, per-pixel and per-watch-hour cost, hourly and
monthly projections, CO2, and savings against the idle baseline, for every ingested run.

Pricing flags and defaults are the old cost exporter's, so a user who changes nothing gets the numbers they
got before: region ``default``; energy price from the region when ``--energy-cost`` is absent or 0; CPU and
GPU price 0; currency USD. Its families appear on the legacy cost listener (:9504) as ``cost_*``/``co2_*``.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

from shared.config import flag, positive_float
from shared.cost import CostModel, project
from shared.families import COST_LABELS, Family, RunView, Spec, cost_labels, per_scenario, unique
from shared.kinds import Kind
from shared.parsing import find_baseline, scenario_duration_s, total_pixels
from shared.pricing import RegionalPricing, add_pricing_arguments, effective_energy_price, pricing_from_args
from shared.runs import RunInput, make_result
from shared.schemas import CostResult, CostScenario
from shared.telemetry import cost_mean_power_w, resolve
from shared.units import HOURS_PER_MONTH


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_pricing_arguments(parser)
    flag(
        parser,
        "--viewers",
        env="COST_VIEWERS",
        default=None,
        type=positive_float,
        help="viewers per stream for cost per watch hour when a scenario has no 'viewers' field",
    )


@dataclass(frozen=True)
class CostSettings:
    energy_cost_per_kwh: float | None
    cpu_cost_per_hour: float
    gpu_cost_per_hour: float
    currency: str
    pricing: RegionalPricing
    viewers: float | None


def settings_from_args(args: argparse.Namespace) -> CostSettings:
    return CostSettings(
        energy_cost_per_kwh=args.energy_cost,
        cpu_cost_per_hour=args.cpu_cost,
        gpu_cost_per_hour=args.gpu_cost,
        currency=args.currency,
        pricing=pricing_from_args(args),
        viewers=getattr(args, "viewers", None),
    )


def settings_fingerprint(settings: CostSettings) -> str:
    """What the stored costs depend on: prices, currency, region, the pricing config's content and whether
    live carbon data is used. A change recomputes every stored run at the next start (re-pricing)."""
    import hashlib

    import msgspec

    pricing = settings.pricing
    described = {
        "energy": settings.energy_cost_per_kwh,
        "cpu": settings.cpu_cost_per_hour,
        "gpu": settings.gpu_cost_per_hour,
        "currency": settings.currency,
        "region": pricing.region,
        "config": msgspec.to_builtins(pricing.config) if pricing.config is not None else None,
        "live": pricing.electricity_maps.base_url if pricing.electricity_maps is not None else None,
    }
    return hashlib.sha256(msgspec.json.encode(described)).hexdigest()


def asks_the_network(settings: CostSettings) -> bool:
    """Computing a run may wait on Electricity Maps (once per zone and hour; the answers are cached)."""
    return settings.pricing.electricity_maps is not None


def compute_costs(run: RunInput, settings: CostSettings) -> CostResult:
    """Pure apart from the (cached) carbon-intensity lookup."""
    energy_price = effective_energy_price(settings.energy_cost_per_kwh, settings.pricing)
    times = [(m.scenario.start_time, m.scenario.end_time) for m in run.scenarios]
    known = [(float(a), float(b)) for a, b in times if a is not None and b is not None]
    # The run's own window (all its scenarios) for the run-level figure; each scenario gets its own below.
    intensity = settings.pricing.co2_intensity(
        (min(a for a, _ in known), max(b for _, b in known)) if known else None
    )
    model = CostModel(
        energy_cost_per_kwh=energy_price.value,
        cpu_cost_per_hour=settings.cpu_cost_per_hour,
        gpu_cost_per_hour=settings.gpu_cost_per_hour,
        currency=settings.currency,
    )
    scenarios = [m.scenario for m in run.scenarios]
    resolved = [resolve(m.scenario, m.enriched) for m in run.scenarios]
    durations = [scenario_duration_s(s) for s in scenarios]
    powers = [cost_mean_power_w(t, d) for t, d in zip(resolved, durations, strict=True)]
    baseline_index = find_baseline(scenarios)
    baseline_power = powers[baseline_index] if baseline_index is not None else None
    out = []
    for index, (scenario, tel) in enumerate(zip(scenarios, resolved, strict=True)):
        notes = []
        costs = model.load_aware(
            power_w=tel.cost_power_w,
            cpu_cores=tel.cpu_cores,
            gpu=tel.gpu_usage,
            gpu_energy_j=tel.gpu_energy_j,
            total_pixels=total_pixels(scenario),
            duration_s=durations[index],
            viewers=scenario.viewers if scenario.viewers is not None else settings.viewers,
        )
        if costs.total is None:
            notes.append(tel.missing_reason or "no power or CPU telemetry")
        mean_power = powers[index]
        start, end = times[index]
        own = (
            settings.pricing.co2_intensity((float(start), float(end)))
            if start is not None and end is not None
            else intensity
        )
        projection = None
        if mean_power is not None:
            projection = project(model, mean_power, own.value, baseline_power)
        out.append(
            CostScenario(
                index=index,
                energy_cost=costs.energy,
                compute_cost=costs.compute,
                total_cost=costs.total,
                cost_per_pixel=costs.per_pixel,
                cost_per_watch_hour=costs.per_watch_hour,
                cost_per_hour=projection.cost_per_hour if projection else None,
                monthly_cost=projection.monthly_cost if projection else None,
                monthly_savings=projection.monthly_savings if projection else None,
                co2_kg_per_hour=projection.co2_kg_per_hour if projection else None,
                co2_monthly_kg=projection.co2_monthly_kg if projection else None,
                co2_monthly_avoided_kg=projection.co2_monthly_avoided_kg if projection else None,
                co2_intensity_g_per_kwh=own.value,
                co2_intensity_source=own.source,
                energy_joules=costs.energy_joules,
                cpu_core_seconds=costs.cpu_core_seconds,
                mean_power_w=mean_power,
                notes=notes,
            )
        )
    return make_result(
        CostResult,
        run,
        currency=settings.currency,
        region=settings.pricing.region,
        energy_price_per_kwh=energy_price.value,
        energy_price_source=energy_price.source,
        cpu_cost_per_hour=model.cpu_cost_per_hour,
        gpu_cost_per_hour=model.gpu_cost_per_hour,
        co2_intensity_g_per_kwh=intensity.value,
        co2_intensity_source=intensity.source,
        baseline_index=baseline_index,
        baseline_power_w=baseline_power,
        scenarios=out,
    )


def families(view: RunView) -> list[Family]:
    c = view.result("cost", CostResult)
    if c is None:
        return []
    cur = c.currency
    month = f"{HOURS_PER_MONTH:g} h"
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
        (
            "cost_monthly_projection",
            f"Energy cost of running {month} ({cur}/month)",
            lambda x: x.monthly_cost,
        ),
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
        ("co2_monthly_projection", f"CO2 of running {month} (kg/month)", lambda x: x.co2_monthly_kg),
        (
            "co2_monthly_avoided",
            "Baseline monthly CO2 - this scenario's (kg/month; negative above idle)",
            lambda x: x.co2_monthly_avoided_kg,
        ),
    ]
    labelsets = unique([cost_labels(m.scenario, cur) for m in view.scenarios], position=0)
    families = per_scenario(specs, COST_LABELS, view.scenarios, labelsets, {x.index: x for x in c.scenarios})
    # What the cost series were computed with, so a dashboard (and a person) can tell a repriced run.
    info = Family(
        "cost_pricing_info",
        "Pricing the latest run's costs were computed with (value 1)",
        ("run_id", "region", "currency", "energy_price_source", "co2_intensity_source"),
    )
    info.add((c.run_id, c.region, cur, c.energy_price_source, c.co2_intensity_source), 1.0)
    price = Family(
        "cost_energy_price_per_kwh", f"Electricity price used ({cur}/kWh)", ("region", "currency", "source")
    )
    price.add((c.region, cur, c.energy_price_source), c.energy_price_per_kwh)
    intensity = Family(
        "co2_intensity_g_per_kwh",
        "Grid carbon intensity over the latest run's window (g CO2/kWh)",
        ("region", "source"),
    )
    intensity.add((c.region, c.co2_intensity_source), c.co2_intensity_g_per_kwh)
    return [*families, info, price, intensity]


KIND = Kind(
    name="cost",
    result=CostResult,
    add_arguments=add_arguments,
    settings=settings_from_args,
    families=families,
    compute=compute_costs,
    blocking=asks_the_network,
    listener="cost",
    fingerprint=settings_fingerprint,
)
