"""Cost worker: load-aware energy and compute cost, per-pixel and per-watch-hour cost, hourly and monthly
projections, CO2, and savings against the idle baseline, for every ingested run.

Pricing flags and defaults are the old cost exporter's, so a user who changes nothing gets the numbers they
got before: region ``default``; energy price from the region when ``--energy-cost`` is absent or 0; CPU and
GPU price 0; currency USD.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from shared import subjects
from shared.config import flag, non_negative_float, positive_float
from shared.cost import CostModel, project
from shared.integration import mean
from shared.parsing import find_baseline, scenario_duration_s, total_pixels
from shared.pricing import (
    DEFAULT_ELECTRICITY_MAPS_URL,
    ElectricityMapsClient,
    PricingConfig,
    RegionalPricing,
    effective_energy_price,
)
from shared.schemas import CostResult, CostScenario, Scenario
from shared.telemetry import ResolvedTelemetry, resolve
from shared.worker import RunInput, add_worker_arguments, run_worker_service

log = logging.getLogger("cost")
SERVICE = "cost"


def add_pricing_arguments(parser: argparse.ArgumentParser) -> None:
    """The old cost exporter's pricing flags and defaults (also offered by ``transcode-energy up``)."""
    flag(parser, "--region", env="REGION", default="default", help="pricing/CO2 region (e.g. us-east-1)")
    flag(
        parser,
        "--energy-cost",
        env="ENERGY_COST_PER_KWH",
        default=None,
        type=non_negative_float,
        help="electricity price per kWh; absent or 0 means the region's price",
    )
    flag(
        parser,
        "--cpu-cost",
        env="CPU_COST_PER_HOUR",
        default=0.0,
        type=non_negative_float,
        help="price of one CPU core for one hour",
    )
    flag(
        parser,
        "--gpu-cost",
        env="GPU_COST_PER_HOUR",
        default=0.0,
        type=non_negative_float,
        help="price of one GPU for one hour",
    )
    flag(parser, "--currency", env="CURRENCY", default="USD", help="currency of every price and cost")
    flag(
        parser,
        "--pricing-config",
        env="PRICING_CONFIG",
        default=None,
        type=Path,
        help="JSON file: {electricity_prices: {region: price}, co2_intensity: {region: g_per_kwh}}",
    )
    flag(
        parser,
        "--electricity-maps-token",
        env="ELECTRICITY_MAPS_TOKEN",
        default=None,
        secret=True,
        help="Electricity Maps API token for live carbon intensity",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_worker_arguments(parser)
    add_pricing_arguments(parser)
    flag(
        parser,
        "--electricity-maps-url",
        env="ELECTRICITY_MAPS_URL",
        default=DEFAULT_ELECTRICITY_MAPS_URL,
        help="Electricity Maps API base URL",
    )
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
    model_prices: tuple[float | None, float, float]
    currency: str
    pricing: RegionalPricing
    viewers: float | None = None


def settings_from_args(args: argparse.Namespace) -> CostSettings:
    config = PricingConfig.load(args.pricing_config) if args.pricing_config else None
    live = None
    if args.electricity_maps_token:
        live = ElectricityMapsClient(args.electricity_maps_token, base_url=args.electricity_maps_url)
    return CostSettings(
        model_prices=(args.energy_cost, args.cpu_cost, args.gpu_cost),
        currency=args.currency,
        pricing=RegionalPricing(args.region, config, live),
        viewers=args.viewers,
    )


def _baseline_power(
    scenarios: list[Scenario], resolved: list[ResolvedTelemetry]
) -> tuple[int | None, float | None]:
    """The run's baseline and its mean power (W) of the cost power series."""
    index = find_baseline(scenarios)
    if index is None:
        return None, None
    return index, mean(resolved[index].cost_power_w)


def compute_costs(run: RunInput, settings: CostSettings) -> CostResult:
    """Pure apart from the (cached) carbon-intensity lookup."""
    started = time.perf_counter()
    energy_price = effective_energy_price(settings.model_prices[0], settings.pricing)
    intensity = settings.pricing.co2_intensity()
    model = CostModel(
        energy_cost_per_kwh=energy_price.value,
        cpu_cost_per_hour=settings.model_prices[1],
        gpu_cost_per_hour=settings.model_prices[2],
        currency=settings.currency,
    )
    scenarios = [m.scenario for m in run.scenarios]
    resolved = [resolve(m.scenario, m.enriched) for m in run.scenarios]
    baseline_index, baseline_power = _baseline_power(scenarios, resolved)
    out = []
    for index, (scenario, tel) in enumerate(zip(scenarios, resolved, strict=True)):
        notes = []
        costs = model.load_aware(
            power_w=tel.cost_power_w,
            cpu_cores=tel.cpu_cores,
            gpu=tel.gpu_usage,
            total_pixels=total_pixels(scenario),
            duration_s=scenario_duration_s(scenario),
            viewers=scenario.viewers if scenario.viewers is not None else settings.viewers,
        )
        if costs.total is None:
            notes.append(tel.missing_reason or "no power or CPU telemetry")
        mean_power = mean(tel.cost_power_w)
        projection = None
        if mean_power is not None:
            projection = project(model, mean_power, intensity.value, baseline_power)
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
                energy_joules=costs.energy_joules,
                cpu_core_seconds=costs.cpu_core_seconds,
                mean_power_w=mean_power,
                notes=notes,
            )
        )
    manifest = run.manifest
    return CostResult(
        run_id=manifest.run_id,
        digest=manifest.digest,
        generation=manifest.generation,
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
        computed_at=time.time(),
        compute_seconds=time.perf_counter() - started,
    )


async def main(args: argparse.Namespace, stop: asyncio.Event) -> int:
    settings = settings_from_args(args)

    async def compute(run: RunInput) -> CostResult:
        # The carbon-intensity lookup may block on the network (5 s timeout): keep it off the event loop.
        return await asyncio.to_thread(compute_costs, run, settings)

    return await run_worker_service(args, stop, kind=SERVICE, durable=subjects.CONSUMER_COST, compute=compute)
