"""Telemetry enrichment: fetch each scenario's measurements from Prometheus/VictoriaMetrics for its time window.

Enrichment lives in the ingest service, between parsing and publishing, so every worker receives a run whose
scenarios already carry their telemetry and no worker needs Prometheus access.

The default queries and reductions are the ones the old results and cost exporters sent (energy as the
``increase`` of the package RAPL counter over the scenario's window, range queries at a 5 s step; the full
list is in docs/telemetry.md), so the same VictoriaMetrics gives the same numbers. Each query is configurable because sites name their exporters
differently (``--telemetry-queries FILE``, a JSON object with any of the fields of :class:`TelemetryQueries`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from shared.promclient import PrometheusClient, PrometheusError, Series
from shared.schemas import Samples, Scenario, Telemetry

log = logging.getLogger("ingest.enrich")


class TelemetryQueries(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PromQL per measurement. ``{window}`` in the instant queries (``energy_joules``, ``gpu_energy_joules``)
    is replaced by the window in seconds.

    The GPU queries read the NVIDIA DCGM exporter's default counters; on a machine without GPUs they return
    nothing and the GPU fields stay empty (not an error).
    """

    #: Instant query at ``time=int(end)``, window ``max(1, int(end - start))`` s -> ``energy_joules`` (J).
    #: Feeds total energy, mean power (energy / duration), energy per minute/Mbps/frame, efficiency.
    energy_joules: str = 'sum(increase(rapl_energy_joules_total{zone=~"package.*"}[{window}s]))'
    #: Range query -> ``power_watts`` (W, package zones). Feeds the power stdev and the mean +- 2 sigma band.
    power_watts: str = 'sum(rapl_power_watts{zone=~"package.*"})'
    #: Range query -> ``container_cpu_percent`` (%). Feeds container CPU and the docker-overhead estimate.
    container_cpu_percent: str = "docker_containers_total_cpu_percent"
    #: Range query -> ``cpu_usage_cores`` (cores). Feeds the load-aware compute cost.
    cpu_usage_cores: str = 'sum(rate(container_cpu_usage_seconds_total{name!~".*POD.*",name!=""}[30s]))'
    #: Range query -> ``power_all_zones_watts`` (W, every RAPL zone, as the old cost exporter). Feeds the
    #: load-aware energy cost and the hourly/monthly cost and CO2 figures.
    power_all_zones_watts: str = "sum(rapl_power_watts)"
    #: Range query -> ``gpu_power_watts`` (W): board power draw summed over the GPUs.
    gpu_power_watts: str = "sum(DCGM_FI_DEV_POWER_USAGE)"
    #: Instant query like ``energy_joules`` -> ``gpu_energy_joules`` (J). The DCGM counter counts
    #: millijoules since boot, hence ``/ 1000``.
    gpu_energy_joules: str = "sum(increase(DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION[{window}s])) / 1000"
    #: Range query -> ``gpu_usage_cores`` (GPUs busy): SM utilisation % / 100, summed over the GPUs.
    gpu_usage_cores: str = "sum(DCGM_FI_DEV_GPU_UTIL) / 100"
    #: Range query -> ``gpu_encoder_percent`` (%): NVENC utilisation, averaged over the GPUs (0-100).
    gpu_encoder_percent: str = "avg(DCGM_FI_DEV_ENC_UTIL)"
    #: Range-query resolution, seconds.
    step_seconds: float = 5.0

    @classmethod
    def load(cls, path: Path | None) -> TelemetryQueries:
        if path is None:
            return cls()
        try:
            return msgspec.json.decode(path.read_bytes(), type=cls)
        except (OSError, msgspec.DecodeError) as exc:
            raise SystemExit(f"configuration error: telemetry queries file {path}: {exc}") from None


RANGE_FIELDS = (
    "power_watts",
    "container_cpu_percent",
    "cpu_usage_cores",
    "power_all_zones_watts",
    "gpu_power_watts",
    "gpu_usage_cores",
    "gpu_encoder_percent",
)
#: Instant queries evaluated at ``int(end)`` over the ``{window}``; each gives one number.
INSTANT_FIELDS = ("energy_joules", "gpu_energy_joules")


@dataclass(frozen=True)
class EnrichSettings:
    prometheus_url: str
    queries: TelemetryQueries
    timeout_s: float = 10.0
    #: How long one run keeps retrying transient failures before it is published with telemetry missing.
    retry_budget_s: float = 60.0
    concurrency: int = 16


def _samples(series: list[Series]) -> Samples | None:
    """One series keeps its timestamps; several are concatenated (the old reduction: every value of every
    series), which keeps their mean but not their times."""
    if not series:
        return None
    if len(series) == 1:
        only = series[0]
        return Samples(values=only.values, timestamps=only.timestamps) if only.values else None
    values = [v for s in series for v in s.values]
    return Samples(values=values) if values else None


class Enricher:
    def __init__(self, settings: EnrichSettings) -> None:
        self.settings = settings
        self.client = PrometheusClient(settings.prometheus_url, timeout_s=settings.timeout_s)
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, settings.concurrency), thread_name_prefix="promql"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _call(self, deadline: float, fn: object, *args: object) -> list[Series]:
        """Run a blocking query in the pool, retrying transient failures with backoff until ``deadline``."""
        loop = asyncio.get_running_loop()
        delay = 0.25
        while True:
            try:
                return await loop.run_in_executor(self._pool, fn, *args)  # type: ignore[arg-type]
            except PrometheusError as exc:
                if not exc.transient or time.monotonic() + delay > deadline:
                    raise
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def enrich_scenario(self, scenario: Scenario, deadline: float) -> Telemetry | None:
        """Telemetry for the scenario's ``[int(start), int(end)]`` window; None without start/end times."""
        if scenario.start_time is None or scenario.end_time is None:
            return None
        start, end = float(scenario.start_time), float(scenario.end_time)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            return Telemetry(source="prometheus", missing_reason="end_time is not after start_time")
        q = self.settings.queries
        window = max(1, int(end - start))
        step = q.step_seconds
        jobs: dict[str, asyncio.Task[list[Series]]] = {}
        for name in INSTANT_FIELDS:
            expr = getattr(q, name).replace("{window}", str(window))
            jobs[name] = asyncio.ensure_future(self._call(deadline, self.client.query, expr, int(end)))
        for name in RANGE_FIELDS:
            expr = getattr(q, name)
            jobs[name] = asyncio.ensure_future(
                self._call(deadline, self.client.query_range, expr, int(start), int(end), step)
            )
        await asyncio.gather(*jobs.values(), return_exceptions=True)
        fields: dict[str, object] = {}
        failures = []
        for name, job in jobs.items():
            exc = job.exception()
            if exc is not None:
                failures.append(f"{name}: {exc}")
                continue
            result = job.result()
            if name in INSTANT_FIELDS:
                value = result[0].values[0] if result and result[0].values else None
                if value is not None:
                    fields[name] = value
            else:
                samples = _samples(result)
                if samples is not None:
                    fields[name] = samples
        return Telemetry(
            step_seconds=step,
            source="prometheus",
            missing_reason="; ".join(failures) if failures else None,
            **fields,  # type: ignore[arg-type]
        )

    async def enrich_run(self, scenarios: Sequence[Scenario]) -> list[Telemetry | None]:
        """Every scenario of a run, concurrently (bounded by the pool); never raises for query failures."""
        deadline = time.monotonic() + self.settings.retry_budget_s
        return list(await asyncio.gather(*(self.enrich_scenario(s, deadline) for s in scenarios)))
