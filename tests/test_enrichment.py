"""Telemetry enrichment against a real VictoriaMetrics holding imported telemetry of an example run.

Expected figures are computed here from the imported data itself (see tests/telemetry_data.py), with the
documented semantics: ``increase(c[W s])`` at T is ``C(T) - C(T-W)``; a range point at t is the raw sample at t;
``rate(c[30s])`` at t is ``(C(t) - C(t-30)) / 30``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.ingest.enrich import Enricher, TelemetryQueries
from shared import subjects
from shared.integration import SampledSeries, integrate
from shared.schemas import (
    ErrorEvent,
    PowerSummary,
    RunManifest,
    Samples,
    Scenario,
    ScenarioMessage,
    Telemetry,
)
from shared.telemetry import resolve
from tests.conftest import DATA, NatsServer, VictoriaMetrics
from tests.helpers import count_manifests, decoded, enrich_settings_for, running_ingest
from tests.telemetry_data import (
    DRAM_W,
    Timeline,
    dcgm_text,
    gpu_enc_util,
    gpu_energy_mj_between,
    gpu_power,
    gpu_util,
    prometheus_text,
    truths,
)

RUN = "test_results_20251228_203216"


@pytest.fixture
def timeline(victoria_metrics: VictoriaMetrics) -> Timeline:
    line = Timeline(truths(DATA / f"{RUN}.json", DATA / f"{RUN}_analysis.csv"))
    victoria_metrics.import_text(prometheus_text(line))
    return line


def scenarios() -> list[Scenario]:
    import msgspec

    from shared.schemas import ResultsFile

    return msgspec.json.decode((DATA / f"{RUN}.json").read_bytes(), type=ResultsFile).scenarios


def enricher(url: str, **kw: float) -> Enricher:
    names = {"timeout_s": "--enrich-timeout", "retry_budget_s": "--enrich-retry-seconds"}
    flags = [part for key, value in kw.items() for part in (names[key], str(value))]
    return Enricher(enrich_settings_for(url, *flags))


def values(series: object) -> list[float]:
    assert isinstance(series, Samples)
    return series.values


async def test_enrichment_matches_independent_figures(
    victoria_metrics: VictoriaMetrics, timeline: Timeline
) -> None:
    e = enricher(victoria_metrics.url)
    try:
        results = await e.enrich_run(scenarios())
    finally:
        e.close()
    assert len(results) == 15
    for scenario, telemetry in zip(scenarios(), results, strict=True):
        assert telemetry is not None and telemetry.missing_reason is None, telemetry
        assert scenario.start_time is not None and scenario.end_time is not None
        start, end = int(scenario.start_time), int(scenario.end_time)
        window = max(1, int(scenario.end_time - scenario.start_time))
        grid = list(range(start, end + 1, 5))

        assert telemetry.energy_joules == pytest.approx(timeline.energy_between(end - window, end), rel=1e-9)
        power = values(telemetry.power_watts)
        assert len(power) == len(grid)
        assert power == pytest.approx([timeline.power(t) for t in grid], rel=1e-12)
        assert isinstance(telemetry.power_watts, Samples) and telemetry.power_watts.timestamps == grid
        assert statistics.stdev(power) == pytest.approx(
            statistics.stdev(timeline.power(t) for t in grid), rel=1e-9
        )
        assert values(telemetry.power_all_zones_watts) == pytest.approx(
            [timeline.power(t) + DRAM_W for t in grid], rel=1e-12
        )
        container = values(telemetry.container_cpu_percent)
        assert statistics.mean(container) == pytest.approx(
            statistics.mean(timeline.container_cpu(t) for t in grid), rel=1e-12
        )
        assert values(telemetry.cpu_usage_cores) == pytest.approx(
            [timeline.rate_cores(t) for t in grid], rel=1e-9
        )
        assert telemetry.step_seconds == 5.0 and telemetry.source == "prometheus"
        # No DCGM exporter in this data: the GPU queries answer nothing, which is not a failure.
        assert telemetry.gpu_power_watts is None and telemetry.gpu_energy_joules is None
        assert telemetry.gpu_usage_cores is None and telemetry.gpu_encoder_percent is None


async def test_gpu_enrichment_from_dcgm_series_of_two_gpus(
    victoria_metrics: VictoriaMetrics, timeline: Timeline
) -> None:
    victoria_metrics.import_text(dcgm_text(timeline.first, timeline.last))
    chosen = scenarios()[1:4]
    e = enricher(victoria_metrics.url)
    try:
        results = await e.enrich_run(chosen)
    finally:
        e.close()
    for scenario, telemetry in zip(chosen, results, strict=True):
        assert telemetry is not None and telemetry.missing_reason is None, telemetry
        assert scenario.start_time is not None and scenario.end_time is not None
        start, end = int(scenario.start_time), int(scenario.end_time)
        window = max(1, int(scenario.end_time - scenario.start_time))
        grid = list(range(start, end + 1, 5))

        # Power: the sum over both GPUs of the imported W at each grid second.
        assert isinstance(telemetry.gpu_power_watts, Samples)
        assert telemetry.gpu_power_watts.timestamps == grid
        assert telemetry.gpu_power_watts.values == pytest.approx(
            [gpu_power(0, t) + gpu_power(1, t) for t in grid], rel=1e-12
        )
        # Energy: each counter gains P(k) x 1000 mJ per second; increase over [end - W, end) of both
        # counters, in mJ, / 1000 = J. E.g. 180 W for 60 s = 10,800,000 mJ = 10,800 J.
        expected_mj = gpu_energy_mj_between(0, end - window, end) + gpu_energy_mj_between(
            1, end - window, end
        )
        assert telemetry.gpu_energy_joules == pytest.approx(expected_mj / 1000.0, rel=1e-9)
        # Roughly (61.25 + 118.5) W x W s: a slip of the mJ -> J conversion would be off by 1000x.
        assert telemetry.gpu_energy_joules == pytest.approx(179.75 * window, rel=0.01)
        # GPUs busy: (U0 + U1) / 100.
        assert values(telemetry.gpu_usage_cores) == pytest.approx(
            [(gpu_util(0, t) + gpu_util(1, t)) / 100.0 for t in grid], rel=1e-12
        )
        # NVENC: the mean of the two GPUs' %.
        assert values(telemetry.gpu_encoder_percent) == pytest.approx(
            [(gpu_enc_util(0, t) + gpu_enc_util(1, t)) / 2.0 for t in grid], rel=1e-12
        )

        resolved = resolve(scenario, telemetry)
        assert resolved.gpu_energy_j == telemetry.gpu_energy_joules  # the counter wins over the integral
        assert resolved.gpu_power_w is not None and len(resolved.gpu_power_w) == len(grid)
        assert resolved.gpu_encoder_percent is not None
        assert resolved.gpu_usage is not None


async def test_a_scenario_without_times_is_not_queried(victoria_metrics: VictoriaMetrics) -> None:
    e = enricher(victoria_metrics.url)
    try:
        no_times, backwards = await e.enrich_run(
            [Scenario(name="x"), Scenario(name="y", start_time=10, end_time=5)]
        )
    finally:
        e.close()
    assert no_times is None
    assert backwards is not None and backwards.missing_reason == "end_time is not after start_time"


async def test_unreachable_prometheus_gives_missing_with_reason() -> None:
    from services.up import free_port

    e = enricher(f"http://127.0.0.1:{free_port()}", retry_budget_s=0.5, timeout_s=0.5)
    began = time.monotonic()
    try:
        [telemetry] = await e.enrich_run(scenarios()[:1])
    finally:
        e.close()
    assert time.monotonic() - began < 5
    assert telemetry is not None and telemetry.energy_joules is None and telemetry.power_watts is None
    assert telemetry.missing_reason is not None and "cannot reach" in telemetry.missing_reason


async def test_bad_query_is_not_retried(victoria_metrics: VictoriaMetrics, timeline: Timeline) -> None:
    queries = TelemetryQueries(power_watts="sum(rapl_power_watts{")
    e = Enricher(enrich_settings_for(victoria_metrics.url, "--enrich-retry-seconds", "30", queries=queries))
    began = time.monotonic()
    try:
        [telemetry] = await e.enrich_run(scenarios()[1:2])
    finally:
        e.close()
    assert time.monotonic() - began < 5
    assert telemetry is not None and telemetry.missing_reason is not None
    assert telemetry.missing_reason.startswith("power_watts:")
    assert telemetry.container_cpu_percent is not None  # the other queries still answered


def test_precedence_block_then_legacy_then_prometheus() -> None:
    prom = Telemetry(
        power_watts=Samples(values=[50.0, 50.0], timestamps=[0.0, 5.0]),
        energy_joules=999.0,
        cpu_usage_cores=[9.0, 9.0],
        container_cpu_percent=[10.0, 10.0],
        step_seconds=5.0,
        power_all_zones_watts=[60.0, 60.0],
    )
    block = Scenario(
        telemetry=Telemetry(power_watts=[10.0, 10.0, 10.0], step_seconds=5.0, energy_joules=100.0)
    )
    r = resolve(block, prom)
    assert list(r.package_power_w.values) == [10.0, 10.0, 10.0]  # type: ignore[union-attr]
    assert r.energy_j == 100.0
    assert list(r.cpu_cores.values) == [9.0, 9.0]  # type: ignore[union-attr]  # not in the file: Prometheus
    assert list(r.cost_power_w.values) == [60.0, 60.0]  # type: ignore[union-attr]
    assert r.sources == ("file", "prometheus")

    legacy = Scenario(
        power_watts=[20.0, 20.0],
        cpu_usage_cores=[1.0, 1.0],
        step_seconds=10.0,
        power=PowerSummary(mean_watts=20.0, total_energy_joules=200.0),
    )
    r = resolve(legacy, prom)
    assert integrate(r.package_power_w) == 200.0  # 20 W x 10 s, at the file's own step
    assert integrate(r.cpu_cores) == 10.0
    assert r.energy_j == 200.0
    assert r.sources == ("legacy-fields", "prometheus")

    # GPU: the file's block wins; Prometheus' counter figure next; else the integral of GPU power.
    gpu_prom = Telemetry(
        gpu_power_watts=Samples(values=[100.0, 100.0], timestamps=[0.0, 5.0]),
        gpu_energy_joules=480.0,
        gpu_encoder_percent=[40.0, 40.0],
        step_seconds=5.0,
    )
    gpu_block = Scenario(telemetry=Telemetry(gpu_power_watts=[70.0, 80.0, 90.0], step_seconds=2.0))
    r = resolve(gpu_block, gpu_prom)
    assert list(r.gpu_power_w.values) == [70.0, 80.0, 90.0]  # type: ignore[union-attr]
    assert r.gpu_energy_j == 480.0  # a measured figure beats the integral, as for package energy
    assert list(r.gpu_encoder_percent.values) == [40.0, 40.0]  # type: ignore[union-attr]
    # Without any energy figure: trapezoid of the block's series, 2 s apart: 2/2 x (70 + 2 x 80 + 90) = 320 J.
    assert resolve(gpu_block).gpu_energy_j == 320.0
    r = resolve(Scenario(telemetry=Telemetry(gpu_energy_joules=55.5)), gpu_prom)
    assert r.gpu_energy_j == 55.5
    assert list(r.gpu_power_w.values) == [100.0, 100.0]  # type: ignore[union-attr]
    # Prometheus power only: 100 W over the 5 s between the two samples = 500 J.
    assert (
        resolve(Scenario(name="x"), Telemetry(gpu_power_watts=[100.0, 100.0], step_seconds=5.0)).gpu_energy_j
        == 500.0
    )
    gpu_none = resolve(Scenario(name="x"))
    assert gpu_none.gpu_power_w is None and gpu_none.gpu_energy_j is None

    only_prom = resolve(Scenario(name="x"), prom)
    assert only_prom.energy_j == 999.0 and only_prom.sources == ("prometheus",)
    assert integrate(only_prom.package_power_w) == integrate(SampledSeries.timed([0.0, 5.0], [50.0, 50.0]))
    empty = resolve(Scenario(name="x"))
    assert (empty.package_power_w, empty.cost_power_w, empty.cpu_cores, empty.energy_j) == (
        None,
        None,
        None,
        None,
    )


async def test_ingest_enriches_before_publishing(
    nc: NATS,
    nats_server: NatsServer,
    results_dir: Path,
    victoria_metrics: VictoriaMetrics,
    timeline: Timeline,
) -> None:
    e = enricher(victoria_metrics.url)
    async with running_ingest(nats_server.url, results_dir, enricher=e):
        shutil.copy(DATA / f"{RUN}.json", results_dir)

        await count_manifests(nc, 1)
    e.close()
    messages = await decoded(
        nc.jetstream(), subjects.INGEST_STREAM, subjects.INGEST_SCENARIO, ScenarioMessage
    )
    assert len(messages) == 15
    for message in messages:
        assert message.enriched is not None and message.enriched.missing_reason is None
        assert message.scenario.telemetry is None  # the file's scenario is kept as it was
        s = message.scenario
        assert s.end_time is not None and s.start_time is not None
        end, window = int(s.end_time), max(1, int(s.end_time - s.start_time))
        assert message.enriched.energy_joules == pytest.approx(
            timeline.energy_between(end - window, end), rel=1e-9
        )


async def test_victoriametrics_stopped_mid_run_then_reenriched(
    nc: NATS,
    nats_server: NatsServer,
    results_dir: Path,
    victoria_metrics: VictoriaMetrics,
    timeline: Timeline,
) -> None:
    victoria_metrics.stop()
    e = enricher(victoria_metrics.url, retry_budget_s=1.0, timeout_s=0.5)
    async with running_ingest(nats_server.url, results_dir, enricher=e) as service:
        shutil.copy(DATA / f"{RUN}.json", results_dir)

        await count_manifests(nc, 1)
        failures = service.metrics.registry.get_sample_value("transcode_ingest_enrichment_failures_total")
    e.close()
    assert failures == 15
    messages = await decoded(
        nc.jetstream(), subjects.INGEST_STREAM, subjects.INGEST_SCENARIO, ScenarioMessage
    )
    assert len(messages) == 15
    assert all(m.enriched is not None and m.enriched.missing_reason for m in messages)
    [event] = await decoded(nc.jetstream(), subjects.EVENTS_STREAM, subjects.EVENTS_ERROR, ErrorEvent)
    assert event.reason == "enrichment_failed" and event.run_id == RUN

    victoria_metrics.start()
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "services",
            "ingest",
            "--nats-url",
            nats_server.url,
            "--prometheus-url",
            victoria_metrics.url,
            "--reenrich",
            RUN,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "generation 2" in result.stdout
    manifests = await decoded(nc.jetstream(), subjects.INGEST_STREAM, subjects.INGEST_RUN, RunManifest)
    assert [m.generation for m in manifests] == [2]
    messages = await decoded(
        nc.jetstream(), subjects.INGEST_STREAM, subjects.INGEST_SCENARIO, ScenarioMessage
    )
    assert len(messages) == 15
    assert all(m.enriched is not None and m.enriched.missing_reason is None for m in messages)


def test_queries_file_overrides_defaults(tmp_path: Path) -> None:
    path = tmp_path / "q.json"
    path.write_text(json.dumps({"power_watts": "sum(node_rapl_package_joules_total)", "step_seconds": 1}))
    q = TelemetryQueries.load(path)
    assert q.power_watts == "sum(node_rapl_package_joules_total)" and q.step_seconds == 1
    assert q.container_cpu_percent == "docker_containers_total_cpu_percent"
    path.write_text(
        json.dumps({"gpu_usage_cores": "sum(nvidia_gpu_utilization) / 100", "gpu_energy_joules": "0"})
    )
    q = TelemetryQueries.load(path)
    assert q.gpu_usage_cores == "sum(nvidia_gpu_utilization) / 100" and q.gpu_energy_joules == "0"
    assert q.gpu_power_watts == "sum(DCGM_FI_DEV_POWER_USAGE)"
    path.write_text(json.dumps({"powr_watts": "x"}))
    with pytest.raises(SystemExit, match="powr_watts"):
        TelemetryQueries.load(path)
