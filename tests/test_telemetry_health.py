"""Telemetry-source health (issue 13 item 3) against a real VictoriaMetrics and a real NATS.

VictoriaMetrics holds RAPL and docker-stats samples imported with explicit timestamps a few seconds old,
no cAdvisor and no DCGM series. Every expected age is computed here from the timestamps the test imported and
the test's own clock, never taken from the code under test.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import time
import urllib.request
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS
from prometheus_client.parser import text_string_to_metric_families

from services.exporter.service import Gateway, start_listeners
from services.ingest.enrich import HEALTH_SOURCES, Enricher, TelemetryQueries
from services.ingest.service import (
    IngestMetrics,
    add_arguments,
    make_enricher,
    publish_telemetry_health,
    telemetry_health_loop,
)
from services.kinds import load_kinds
from services.up import free_port
from shared import bus, subjects
from shared.config import parse_flags
from shared.schemas import ScenarioMessage, TelemetryHealth, TelemetrySourceHealth
from tests.conftest import NatsServer, VictoriaMetrics
from tests.helpers import (
    count_manifests,
    decoded,
    enrich_settings_for,
    eventually,
    running_ingest,
    scenario_msgs,
)


def rapl_and_docker_text(now: float) -> tuple[str, float, float]:
    """RAPL samples at now-80 s and now-20.25 s (two zones), docker-stats samples at now-110 s and now-50 s.
    Returns the text and the newest RAPL and docker sample times (unix seconds, millisecond precision)."""
    rapl_newest = round(now - 20.25, 3)
    docker_newest = round(now - 50.0, 3)
    lines = []
    for t, watts in ((now - 80.0, 7.0), (rapl_newest, 8.0)):
        ms = round(t * 1000)
        lines.append(f'rapl_power_watts{{zone="package-0"}} {watts} {ms}')
        lines.append(f'rapl_power_watts{{zone="dram"}} 2.0 {ms}')
        lines.append(f'rapl_energy_joules_total{{zone="package-0"}} {watts * 100} {ms}')
    for t in (now - 110.0, docker_newest):
        lines.append(f'docker_containers_total_cpu_percent{{name="ffmpeg"}} 31.5 {round(t * 1000)}')
    return "\n".join(lines) + "\n", rapl_newest, docker_newest


def by_name(report: TelemetryHealth) -> dict[str, TelemetrySourceHealth]:
    return {s.name: s for s in report.sources}


def health_enricher(url: str, queries: TelemetryQueries | None = None) -> Enricher:
    return Enricher(enrich_settings_for(url, "--enrich-timeout", "2", queries=queries or TelemetryQueries()))


async def test_health_check_reports_each_source(victoria_metrics: VictoriaMetrics) -> None:
    text, rapl_newest, docker_newest = rapl_and_docker_text(time.time())
    victoria_metrics.import_text(text)
    e = health_enricher(victoria_metrics.url)
    try:
        before = time.time()
        report = await e.check_health()
        after = time.time()
        sources = by_name(report)
        assert [s.name for s in report.sources] == list(HEALTH_SOURCES)
        assert before <= report.checked_at <= after

        rapl = sources["rapl"]
        assert rapl.up and rapl.has_data and rapl.error is None
        assert rapl.query == "max(timestamp(rapl_power_watts))"
        assert rapl.newest_sample_at == pytest.approx(rapl_newest, abs=1e-3)
        assert rapl.age_seconds is not None
        assert abs(rapl.age_seconds - (after - rapl_newest)) < 1.0
        assert rapl.age_seconds == pytest.approx(20.25, abs=1.0)

        container = sources["container"]
        assert container.up and container.has_data
        assert container.newest_sample_at == pytest.approx(docker_newest, abs=1e-3)
        assert container.age_seconds is not None and abs(container.age_seconds - (after - docker_newest)) < 1

        # No cAdvisor and no DCGM exporter here: they answer, with nothing. For gpu that is normal.
        for name in ("cpu", "gpu"):
            source = sources[name]
            assert source.up and not source.has_data, source
            assert source.newest_sample_at is None and source.age_seconds is None and source.error is None
        assert sources["gpu"].query == "max(timestamp(DCGM_FI_DEV_POWER_USAGE))"

        victoria_metrics.stop()
        began = time.monotonic()
        down = await e.check_health()
        assert time.monotonic() - began < 5  # one attempt per source, no retries
        for source in down.sources:
            assert not source.up and not source.has_data, source
            assert source.age_seconds is None and source.newest_sample_at is None
            assert source.error is not None
            assert source.error.startswith(f"cannot reach {victoria_metrics.url}"), source.error
    finally:
        e.close()


async def test_health_queries_are_configurable(victoria_metrics: VictoriaMetrics, tmp_path: Path) -> None:
    text, rapl_newest, _ = rapl_and_docker_text(time.time())
    victoria_metrics.import_text(text)
    config = tmp_path / "queries.json"
    config.write_text(json.dumps({"health": {"cpu": "", "rapl": "max(timestamp(rapl_energy_joules_total))"}}))
    e = health_enricher(victoria_metrics.url, TelemetryQueries.load(config))
    try:
        report = await e.check_health()
    finally:
        e.close()
    sources = by_name(report)
    assert list(sources) == ["rapl", "container", "gpu"]  # "" leaves a source out
    assert sources["rapl"].query == "max(timestamp(rapl_energy_joules_total))"
    assert sources["rapl"].newest_sample_at == pytest.approx(rapl_newest, abs=1e-3)
    config.write_text(json.dumps({"health": {"rappl": "max(timestamp(x))"}}))
    with pytest.raises(SystemExit, match="rappl"):
        TelemetryQueries.load(config)


def scrape(port: int) -> dict[str, dict[str, float]]:
    """family name -> {source: value} for the telemetry-source families."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        text = response.read().decode()
    out: dict[str, dict[str, float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("transcode_telemetry_source_"):
                out.setdefault(sample.name, {})[sample.labels["source"]] = sample.value
    return out


async def test_gateway_exports_the_health_the_ingest_loop_publishes(
    nc: NATS, nats_server: NatsServer, victoria_metrics: VictoriaMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest")
    text, rapl_newest, docker_newest = rapl_and_docker_text(time.time())
    victoria_metrics.import_text(text)
    js = nc.jetstream()
    await bus.ensure_topology(js)
    gateway_nc = await nats.connect(nats_server.url)
    gateway = Gateway(gateway_nc, load_kinds())
    port = free_port()
    servers = start_listeners(
        gateway,
        argparse.Namespace(metrics_port=port, results_port=0, qoe_port=0, cost_port=0, bind="127.0.0.1"),
    )
    e = health_enricher(victoria_metrics.url)
    stop = asyncio.Event()
    tasks = [
        asyncio.create_task(gateway.run(stop, lag_interval=1.0)),
        asyncio.create_task(telemetry_health_loop(js, e, 0.3, stop)),
    ]
    try:

        async def exported() -> bool:
            return len(scrape(port).get("transcode_telemetry_source_up", {})) == 4

        await eventually(exported, timeout=20, what="the telemetry-source families")
        # Let several checks go by: the events stream keeps only the newest report.
        await asyncio.sleep(1.0)
        metrics = scrape(port)
        now = time.time()
        assert metrics["transcode_telemetry_source_up"] == {"rapl": 1, "container": 1, "cpu": 1, "gpu": 1}
        assert metrics["transcode_telemetry_source_has_data"] == {
            "rapl": 1,
            "container": 1,
            "cpu": 0,
            "gpu": 0,
        }
        ages = metrics["transcode_telemetry_source_age_seconds"]
        assert set(ages) == {"rapl", "container"}  # no age without data
        assert abs(ages["rapl"] - (now - rapl_newest)) < 1.0
        assert abs(ages["container"] - (now - docker_newest)) < 1.0
        checked = metrics["transcode_telemetry_source_checked_at_seconds"]
        assert set(checked) == set(HEALTH_SOURCES)
        assert all(now - 2.0 < t <= now for t in checked.values()), checked
        stored = await decoded(js, subjects.EVENTS_STREAM, subjects.TELEMETRY_HEALTH, TelemetryHealth)
        assert len(stored) == 1

        # One log line per source state, not one per check: cpu has no data (warning), gpu neither (info).
        lines = [r for r in caplog.records if r.name == "ingest" and "telemetry source" in r.getMessage()]
        cpu = [r for r in lines if "source cpu has no recent samples" in r.getMessage()]
        gpu = [r for r in lines if "source gpu has no recent samples" in r.getMessage()]
        assert len(cpu) == 1 and cpu[0].levelno == logging.WARNING
        assert len(gpu) == 1 and gpu[0].levelno == logging.INFO
        assert "normal on a machine without GPUs" in gpu[0].getMessage()

        victoria_metrics.stop()

        async def down() -> bool:
            return set(scrape(port).get("transcode_telemetry_source_up", {}).values()) == {0.0}

        await eventually(down, timeout=20, what="every source down")
        metrics = scrape(port)
        assert set(metrics["transcode_telemetry_source_has_data"].values()) == {0.0}
        assert "transcode_telemetry_source_age_seconds" not in metrics
        downs = [
            r for r in caplog.records if r.name == "ingest" and "is down: cannot reach" in r.getMessage()
        ]
        assert sorted(r.getMessage().split()[2] for r in downs) == sorted(HEALTH_SOURCES)
    finally:
        stop.set()
        await asyncio.wait_for(asyncio.gather(*tasks), 20)
        e.close()
        for server in servers.values():
            server.stop()
        await gateway_nc.close()


async def test_gateway_keeps_the_newest_check(nc: NATS, nats_server: NatsServer) -> None:
    """Replayed at start-up from the events stream; a report older than the one held is ignored."""
    js = nc.jetstream()
    await bus.ensure_topology(js)
    now = time.time()

    def report(at: float, up: bool) -> TelemetryHealth:
        source = TelemetrySourceHealth(
            name="rapl",
            up=up,
            has_data=up,
            checked_at=at,
            query="q",
            newest_sample_at=at - 3.0 if up else None,
            age_seconds=3.0 if up else None,
            error=None if up else "HTTP 503",
        )
        return TelemetryHealth(checked_at=at, sources=[source])

    await publish_telemetry_health(js, report(now - 10.0, up=True))
    gateway_nc = await nats.connect(nats_server.url)
    gateway = Gateway(gateway_nc, load_kinds())
    port = free_port()
    servers = start_listeners(
        gateway,
        argparse.Namespace(metrics_port=port, results_port=0, qoe_port=0, cost_port=0, bind="127.0.0.1"),
    )
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop, lag_interval=1.0))
    try:

        async def replayed() -> bool:
            return "transcode_telemetry_source_up" in scrape(port)

        await eventually(replayed, timeout=20, what="the replayed report")
        metrics = scrape(port)
        # 3 s old at a check 10 s ago: 13 s old now.
        assert metrics["transcode_telemetry_source_age_seconds"]["rapl"] == pytest.approx(
            time.time() - (now - 13.0), abs=1.0
        )
        assert metrics["transcode_telemetry_source_checked_at_seconds"]["rapl"] == pytest.approx(now - 10.0)
        await publish_telemetry_health(js, report(now - 20.0, up=False))  # older than the one held
        await asyncio.sleep(1.0)
        assert scrape(port)["transcode_telemetry_source_up"] == {"rapl": 1.0}
        await publish_telemetry_health(js, report(now, up=False))

        async def newer() -> bool:
            return scrape(port)["transcode_telemetry_source_up"] == {"rapl": 0.0}

        await eventually(newer, timeout=10, what="the newer report")
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        for server in servers.values():
            server.stop()
        await gateway_nc.close()


async def test_an_empty_enrichment_answer_is_logged_and_counted(
    nc: NATS,
    nats_server: NatsServer,
    victoria_metrics: VictoriaMetrics,
    results_dir: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """VictoriaMetrics has docker-stats samples over the run but no RAPL, cAdvisor or DCGM series."""
    caplog.set_level(logging.DEBUG, logger="ingest.enrich")
    start = int(time.time()) - 600
    windows = [(start, start + 60), (start + 100, start + 160)]
    victoria_metrics.import_text(
        "".join(
            f'docker_containers_total_cpu_percent{{name="ffmpeg"}} 30.0 {t * 1000}\n'
            for t in range(start - 30, start + 200, 5)
        )
    )
    run = {
        "scenarios": [
            {
                "name": f"s{i}",
                "bitrate": "2500k",
                "resolution": "1280x720",
                "fps": 30,
                "start_time": a,
                "end_time": b,
            }
            for i, (a, b) in enumerate(windows)
        ]
    }
    metrics = IngestMetrics()
    args = parse_flags(
        add_arguments, ["--prometheus-url", victoria_metrics.url, "--enrich-retry-seconds", "1"]
    )
    enricher = make_enricher(args, metrics)
    assert enricher is not None
    try:
        async with running_ingest(nats_server.url, results_dir, enricher=enricher) as service:
            (results_dir / "test_results_20260102_000000.json").write_text(json.dumps(run))
            await count_manifests(nc, 1)
            failures = service.metrics.registry.get_sample_value("transcode_ingest_enrichment_failures_total")
    finally:
        enricher.close()
    published: list[ScenarioMessage] = sorted(await scenario_msgs(nc), key=lambda m: m.index)
    assert len(published) == 2
    for message in published:
        assert message.enriched is not None
        assert message.enriched.container_cpu_percent is not None  # this one answered
        assert message.enriched.power_watts is None and message.enriched.energy_joules is None
        assert message.enriched.missing_reason is None  # empty is not a failure...
    assert failures == 0

    # ...but it is counted, per query field and scenario,
    def empty(query: str) -> float | None:
        return metrics.registry.get_sample_value("transcode_ingest_enrichment_empty_total", {"query": query})

    for query in ("energy_joules", "power_watts", "power_all_zones_watts", "cpu_usage_cores"):
        assert empty(query) == 2.0, query
    for query in ("gpu_power_watts", "gpu_energy_joules", "gpu_usage_cores", "gpu_encoder_percent"):
        assert empty(query) == 2.0, query
    assert empty("container_cpu_percent") is None

    # ...and logged once per run and query, with the query: a warning, except the GPU queries (normal).
    records = [r for r in caplog.records if r.name == "ingest.enrich" and "came back empty" in r.getMessage()]
    warnings = {r.getMessage() for r in records if r.levelno == logging.WARNING}
    power = [m for m in warnings if "query power_watts " in m]
    assert power == [
        "enrichment of test_results_20260102_000000: query power_watts came back empty for 2 of 2 scenarios "
        "(no samples in their time windows; is its exporter scraped?): "
        'sum(rapl_power_watts{zone=~"package.*"})'
    ]
    assert any("query energy_joules " in m and "rapl_energy_joules_total" in m for m in warnings)
    assert not any("gpu_" in m for m in warnings)
    gpu = [r for r in records if "query gpu_power_watts " in r.getMessage()]
    assert len(gpu) == 1 and gpu[0].levelno == logging.DEBUG
    assert len(records) == 8


def test_telemetry_health_round_trips() -> None:
    source = TelemetrySourceHealth(name="gpu", up=True, has_data=False, checked_at=1.5, query="q")
    message = TelemetryHealth(checked_at=1.5, sources=[source])
    assert msgspec.json.decode(msgspec.json.encode(message), type=TelemetryHealth) == message
    assert subjects.TELEMETRY_HEALTH.startswith(f"{subjects.PREFIX}.events.")
