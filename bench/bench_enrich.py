"""Enrichment of the 15-scenario example run against a local VictoriaMetrics.

Compares the concurrent enricher (all 75 queries in flight, bounded) with the same queries one after
another, as the old exporters sent them. Skipped when victoria-metrics is not installed.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

import msgspec

from bench.harness import Row, measure
from services.ingest.enrich import Enricher, EnrichSettings, TelemetryQueries
from services.up import free_port
from shared.schemas import ResultsFile
from tests.telemetry_data import Timeline, prometheus_text, truths

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "tests/data/test_results_20251228_203216.json"


def run() -> list[Row]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        return [Row("enrich: skipped (victoria-metrics not installed)", 0.0, 0)]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory() as store:
        proc = subprocess.Popen(
            [
                binary,
                f"-httpListenAddr=127.0.0.1:{port}",
                f"-storageDataPath={store}",
                "-retentionPeriod=100y",
                "-search.latencyOffset=0s",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            for _ in range(100):
                try:
                    urllib.request.urlopen(f"{url}/health", timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            timeline = Timeline(truths(RUN, REPO / "tests/data/test_results_20251228_203216_analysis.csv"))
            request = urllib.request.Request(
                f"{url}/api/v1/import/prometheus", data=prometheus_text(timeline).encode(), method="POST"
            )
            urllib.request.urlopen(request).close()
            urllib.request.urlopen(f"{url}/internal/force_flush").close()
            scenarios = msgspec.json.decode(RUN.read_bytes(), type=ResultsFile).scenarios
            concurrent = Enricher(
                EnrichSettings(prometheus_url=url, queries=TelemetryQueries(), concurrency=16)
            )
            serial = Enricher(EnrichSettings(prometheus_url=url, queries=TelemetryQueries(), concurrency=1))
            try:
                t_conc, n_conc = measure(
                    lambda: asyncio.run(concurrent.enrich_run(scenarios)), repeat=5, min_time=0
                )
                t_ser, n_ser = measure(
                    lambda: asyncio.run(serial.enrich_run(scenarios)), repeat=5, min_time=0
                )
            finally:
                concurrent.close()
                serial.close()
        finally:
            proc.terminate()
            proc.wait()
    return [
        Row(
            "enrich: 15 scenarios x 5 queries, concurrent (16)",
            t_conc,
            n_conc,
            f"sequential / concurrent = {t_ser / t_conc:.1f}",
        ),
        Row("enrich: 15 scenarios x 5 queries, one at a time", t_ser, n_ser, "the old exporters' way"),
    ]
