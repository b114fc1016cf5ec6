"""Telemetry enrichment: fetch each scenario's measurements from Prometheus/VictoriaMetrics for its time window.

Enrichment lives in the ingest service, between parsing and publishing, so every worker receives a run whose
scenarios already carry their telemetry and no worker needs Prometheus access.

The default queries and reductions are the ones the old results and cost exporters sent (energy as the
``increase`` of the package RAPL counter over the scenario's window, range queries at a 5 s step; the full
list is in docs/telemetry.md), so the same VictoriaMetrics gives the same numbers. Each query is configurable because sites name their exporters
differently (``--telemetry-queries FILE``, a JSON object with any of the fields of :class:`TelemetryQueries`).

A query that answers with nothing (no series in the scenario's window) is not a failure, but it is not silent
either: it is logged once per run and query, with the query, and counted per query field (``on_empty``).

The same file configures the telemetry-source health check (:meth:`Enricher.check_health`): per source
(``rapl``, ``container``, ``cpu``, ``gpu``) an instant query giving the time of its newest sample.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import msgspec

from shared.promclient import PrometheusClient, PrometheusError, Series
from shared.resultsfile import printable
from shared.schemas import Samples, Scenario, Telemetry, TelemetryHealth, TelemetrySourceHealth

log = logging.getLogger("ingest.enrich")


class TelemetryHealthQueries(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """PromQL per telemetry source for the health check: an instant query, evaluated at the time of the check,
    whose answer is the unix time of the source's newest sample (``max(timestamp(<base metric>))``). An
    empty string leaves the source out of the check.

    ``timestamp()`` sees only samples within the server's lookback (5 min by default, in Prometheus and
    VictoriaMetrics): a source whose newest sample is older answers with nothing (``has_data`` false).
    """

    #: RAPL exporter: feeds ``energy_joules``, ``power_watts`` and ``power_all_zones_watts``.
    rapl: str = "max(timestamp(rapl_power_watts))"
    #: docker-stats exporter: feeds ``container_cpu_percent``.
    container: str = "max(timestamp(docker_containers_total_cpu_percent))"
    #: cAdvisor: feeds ``cpu_usage_cores``.
    cpu: str = "max(timestamp(container_cpu_usage_seconds_total))"
    #: NVIDIA DCGM exporter: feeds the ``gpu_*`` fields. No data is normal on a machine without GPUs.
    gpu: str = "max(timestamp(DCGM_FI_DEV_POWER_USAGE))"


#: The telemetry sources, in the order they are checked and exported.
HEALTH_SOURCES = ("rapl", "container", "cpu", "gpu")


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
    #: Health-check query per telemetry source (``{"health": {"rapl": "..."}}`` overrides one).
    health: TelemetryHealthQueries = msgspec.field(default_factory=TelemetryHealthQueries)

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
#: Fields read from the DCGM exporter: empty on a machine without GPUs, which is normal (logged at DEBUG).
GPU_FIELDS = frozenset({"gpu_power_watts", "gpu_energy_joules", "gpu_usage_cores", "gpu_encoder_percent"})
#: Called with (query field, number of scenarios) for every query field that came back empty in a run.
EmptyListener = Callable[[str, int], None]


@dataclass(frozen=True)
class EnrichSettings:
    """Built from ingest's flags (services.ingest.service.enrich_settings): each default lives in its flag."""

    prometheus_url: str
    queries: TelemetryQueries
    timeout_s: float
    #: How long one run keeps retrying transient failures before it is published with telemetry missing.
    retry_budget_s: float
    concurrency: int


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


def _newest(series: list[Series]) -> float | None:
    values = [v for s in series for v in s.values]
    return max(values) if values else None


class Enricher:
    def __init__(self, settings: EnrichSettings, *, on_empty: EmptyListener | None = None) -> None:
        self.settings = settings
        self.on_empty = on_empty
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
        telemetry, _ = await self._enrich_scenario(scenario, deadline)
        return telemetry

    async def _enrich_scenario(
        self, scenario: Scenario, deadline: float
    ) -> tuple[Telemetry | None, list[str] | None]:
        """The telemetry, and the query fields that answered with no data (None when nothing was asked)."""
        if scenario.start_time is None or scenario.end_time is None:
            return None, None
        start, end = float(scenario.start_time), float(scenario.end_time)
        if not (math.isfinite(start) and math.isfinite(end)) or end <= start:
            return Telemetry(source="prometheus", missing_reason="end_time is not after start_time"), None
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
        empty = []
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
            if name not in fields:
                empty.append(name)
        telemetry = Telemetry(
            step_seconds=step,
            source="prometheus",
            missing_reason="; ".join(failures) if failures else None,
            **fields,  # type: ignore[arg-type]
        )
        return telemetry, empty

    async def enrich_run(
        self, scenarios: Sequence[Scenario], *, run_id: str | None = None
    ) -> list[Telemetry | None]:
        """Every scenario of a run, concurrently (bounded by the pool); never raises for query failures.

        Each query field that answered with no data for some scenarios is logged once (WARNING; DEBUG for the
        GPU fields, empty on a machine without GPUs) with its query, and passed to ``on_empty``."""
        deadline = time.monotonic() + self.settings.retry_budget_s
        answers = await asyncio.gather(*(self._enrich_scenario(s, deadline) for s in scenarios))
        self._report_empty(run_id, [empty for _, empty in answers])
        return [telemetry for telemetry, _ in answers]

    def _report_empty(self, run_id: str | None, empties: list[list[str] | None]) -> None:
        asked = sum(1 for e in empties if e is not None)
        for name in (*INSTANT_FIELDS, *RANGE_FIELDS):
            count = sum(1 for e in empties if e is not None and name in e)
            if not count:
                continue
            log.log(
                logging.DEBUG if name in GPU_FIELDS else logging.WARNING,
                "enrichment%s: query %s came back empty for %d of %d scenarios (no samples in their time "
                "windows%s): %s",
                f" of {printable(run_id)}" if run_id else "",
                name,
                count,
                asked,
                "; normal without GPUs" if name in GPU_FIELDS else "; is its exporter scraped?",
                printable(getattr(self.settings.queries, name)),
            )
            if self.on_empty is not None:
                self.on_empty(name, count)

    async def check_health(self) -> TelemetryHealth:
        """One health check of every configured source (concurrently, one attempt each, never raises for a
        source that cannot answer): does its query answer, and how old is its newest sample."""
        checked_at = time.time()
        queries = self.settings.queries.health
        sources = [(name, getattr(queries, name)) for name in HEALTH_SOURCES if getattr(queries, name)]
        loop = asyncio.get_running_loop()
        answers = await asyncio.gather(
            *(loop.run_in_executor(self._pool, self.client.query, expr, checked_at) for _, expr in sources),
            return_exceptions=True,
        )
        out = []
        for (name, expr), answer in zip(sources, answers, strict=True):
            if isinstance(answer, PrometheusError):
                out.append(
                    TelemetrySourceHealth(
                        name=name,
                        up=False,
                        has_data=False,
                        checked_at=checked_at,
                        query=expr,
                        error=str(answer),
                    )
                )
                continue
            if isinstance(answer, BaseException):
                raise answer
            newest = _newest(answer)
            out.append(
                TelemetrySourceHealth(
                    name=name,
                    up=True,
                    has_data=newest is not None,
                    checked_at=checked_at,
                    query=expr,
                    newest_sample_at=newest,
                    # A sample stamped ahead of this clock (skew between hosts) counts as fresh, not negative.
                    age_seconds=None if newest is None else max(0.0, checked_at - newest),
                )
            )
        return TelemetryHealth(checked_at=checked_at, sources=out)
