"""Gateway scrapes for a run of 100 scenarios: target p50 at most 1 ms (issue 10). A scrape serialises the snapshot; it
never recomputes maths. Shown: rebuilding the snapshot (once per state change), the first render of a
snapshot, and a cached scrape over HTTP on loopback two ways: as Prometheus scrapes (one kept-alive
connection, ``Accept-Encoding: gzip``), which the target applies to, and with a new connection and an
uncompressed body per scrape (urllib's way; most of that time is the client's and the connection's)."""

from __future__ import annotations

import argparse
import asyncio
import http.client
import statistics
import time
import urllib.request

from bench.harness import Row, measure
from services.exporter.service import Gateway, start_listeners
from services.exporter.state import GatewayState, build_snapshot, health_families, kind_groups
from services.kinds import load_kinds
from services.up import free_port
from shared.schemas import (
    CostResult,
    CostScenario,
    ModelingResult,
    ModelingScenario,
    QoEResult,
    QoEScenario,
    RunManifest,
    Scenario,
    ScenarioMessage,
)

N = 100


def state() -> GatewayState:
    s = GatewayState()
    digest = "0123456789abcdef"
    s.add_manifest(
        RunManifest(
            run_id="test_results_20260101_000000",
            digest=digest,
            file_name="f",
            file_sha256="0",
            file_bytes=1,
            scenario_count=N,
            generation=1,
            ingested_at=time.time(),
        )
    )
    scenarios = [
        ScenarioMessage(
            run_id="r",
            digest=digest,
            index=i,
            scenario=Scenario(
                name=f"{i % 8 + 1} Streams @ {1000 + i}k",
                bitrate=f"{1000 + i}k",
                resolution="1280x720",
                fps=30,
                start_time=0.0,
                end_time=120.0,
            ),
        )
        for i in range(N)
    ]
    s.set_scenarios("test_results_20260101_000000", 1, scenarios)
    f = {k: 1.0 + k for k in range(N)}
    s.add_result(
        "modeling",
        ModelingResult(
            run_id="test_results_20260101_000000",
            digest=digest,
            generation=1,
            scenarios=[
                ModelingScenario(
                    index=i,
                    duration_s=120.0,
                    energy_j=f[i] * 100,
                    energy_wh=f[i] / 36,
                    mean_power_w=f[i],
                    container_cpu_percent=30.0,
                    docker_overhead_w=0.3,
                    energy_wh_per_min=0.1,
                    energy_wh_per_mbps=0.2,
                    energy_mj_per_frame=3.0,
                    efficiency_score=5e6,
                    total_pixels=3e9,
                    power_stdev_w=0.5,
                    band_high_w=f[i] + 1,
                    band_low_w=f[i] - 1,
                    delta_power_w=1.0,
                    delta_energy_wh=0.1,
                    power_pct_increase=10.0,
                    delta_container_cpu_percent=1.0,
                    predicted_power_w=f[i],
                    predicted_energy_j=f[i] * 120,
                    predicted_efficiency_score=5e6,
                    prediction_interval_low_w=f[i] - 2,
                    prediction_interval_high_w=f[i] + 2,
                )
                for i in range(N)
            ],
            baseline_index=None,
            model=None,
            model_reason="x",
            computed_at=time.time(),
            compute_seconds=0.0,
        ),
    )
    s.add_result(
        "cost",
        CostResult(
            run_id="test_results_20260101_000000",
            digest=digest,
            generation=1,
            currency="USD",
            region="default",
            energy_price_per_kwh=0.12,
            energy_price_source="table",
            cpu_cost_per_hour=0.5,
            gpu_cost_per_hour=0.0,
            co2_intensity_g_per_kwh=400,
            co2_intensity_source="table",
            baseline_index=None,
            baseline_power_w=None,
            scenarios=[
                CostScenario(
                    index=i,
                    energy_cost=1e-5,
                    compute_cost=2e-5,
                    total_cost=3e-5,
                    cost_per_pixel=1e-14,
                    cost_per_hour=0.01,
                    monthly_cost=7.2,
                    monthly_savings=-1.0,
                    co2_kg_per_hour=0.004,
                    co2_monthly_kg=2.9,
                    co2_monthly_avoided_kg=-1.0,
                )
                for i in range(N)
            ],
            computed_at=time.time(),
            compute_seconds=0.0,
        ),
    )
    s.add_result(
        "qoe",
        QoEResult(
            run_id="test_results_20260101_000000",
            digest=digest,
            generation=1,
            scenarios=[
                QoEScenario(
                    index=i,
                    vmaf_score=90.0,
                    psnr_score=40.0,
                    quality_per_watt=9.0,
                    qoe_efficiency_score=1e6,
                    computation_seconds=1e-5,
                )
                for i in range(N)
            ],
            computed_at=time.time(),
            compute_seconds=0.0,
        ),
    )
    return s


def run() -> list[Row]:
    st = state()
    kinds = load_kinds()

    def build() -> object:
        health = health_families(st, ready=True, lag={}, kinds=kinds)
        return build_snapshot(st.version, health, kind_groups(st.view(), kinds, st.family_errors))

    t_build, n_build = measure(build)

    class _NC:  # the listeners only need a connection flag for /ready
        is_connected = True

        def jetstream(self) -> None:
            return None

    gateway = Gateway(_NC(), kinds)  # type: ignore[arg-type]
    gateway.state = st
    asyncio.run(gateway.rebuild())
    port = free_port()
    servers = start_listeners(
        gateway,
        argparse.Namespace(metrics_port=port, results_port=0, qoe_port=0, cost_port=0, bind="127.0.0.1"),
    )
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url) as response:
            size = len(response.read())
        samples = []
        for _ in range(200):
            started = time.perf_counter()
            with urllib.request.urlopen(url) as response:
                response.read()
            samples.append(time.perf_counter() - started)
        kept = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        prometheus_like = []
        gzip_size = 0
        for _ in range(200):
            started = time.perf_counter()
            kept.request("GET", "/metrics", headers={"Accept-Encoding": "gzip"})
            answer = kept.getresponse()
            gzip_size = len(answer.read())
            prometheus_like.append(time.perf_counter() - started)
            assert answer.getheader("Content-Encoding") == "gzip"
        kept.close()
        asyncio.run(gateway.rebuild())
        first = []
        for _ in range(20):
            asyncio.run(gateway.rebuild())
            started = time.perf_counter()
            with urllib.request.urlopen(url) as response:
                response.read()
            first.append(time.perf_counter() - started)
    finally:
        for server in servers.values():
            server.stop()
    p50 = statistics.median(samples)
    p99 = sorted(samples)[int(len(samples) * 0.99) - 1]
    kept_p99 = sorted(prometheus_like)[int(len(prometheus_like) * 0.99) - 1]
    return [
        Row(f"gateway: build snapshot, {N} scenarios", t_build, n_build, "once per state change"),
        Row(
            f"gateway: scrape after a change, {N} scenarios",
            statistics.median(first),
            len(first),
            "renders the snapshot once",
        ),
        Row(
            f"gateway: scrape p50, {N} scenarios, as Prometheus scrapes",
            statistics.median(prometheus_like),
            len(prometheus_like),
            f"kept-alive connection, gzip: p99 {kept_p99 * 1000:.2f} ms, {gzip_size / 1024:.0f} KiB per scrape",
            target=1e-3,
        ),
        Row(
            f"gateway: scrape p50, {N} scenarios, new connection, uncompressed",
            p50,
            len(samples),
            f"urllib: p99 {p99 * 1000:.2f} ms, {size / 1024:.0f} KiB per scrape",
        ),
    ]
