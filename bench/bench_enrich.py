"""Enrichment of the 15-scenario example run against a local VictoriaMetrics.

Compares the concurrent enricher (all 75 queries in flight, bounded) with the same queries one after
another, as the old exporters sent them: straight to VictoriaMetrics on loopback (CPU-bound: it shares our two
cores, so concurrency buys little), and through a proxy adding 20 ms per request, as a Prometheus across a
network does (there the run takes about one round of queries). Skipped without victoria-metrics.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import tempfile
import threading
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import msgspec

from bench.harness import Row, measure
from services.ingest.enrich import Enricher
from services.ingest.service import add_arguments, enrich_settings
from services.up import free_port
from shared.config import parse_flags
from shared.schemas import ResultsFile
from tests.telemetry_data import Timeline, prometheus_text, truths

REPO = Path(__file__).resolve().parent.parent
RUN = REPO / "tests/data/test_results_20251228_203216.json"
#: Added per request by the proxy: a Prometheus across a network, not on loopback.
LATENCY_S = 0.02


class LatencyProxy:
    """Forwards GETs to ``target`` after a fixed delay: what a remote Prometheus costs per query."""

    def __init__(self, target: str, delay_s: float) -> None:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                time.sleep(delay_s)
                with urllib.request.urlopen(target + self.path, timeout=30) as upstream:
                    body = upstream.read()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        class Server(ThreadingHTTPServer):
            request_queue_size = 128  # socketserver's default backlog of 5 stalls concurrent clients

        self._server = Server(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _start_vm(binary: str, store: str) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
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
    return proc, url


def _compare(base: str, label: str) -> list[Row]:
    scenarios = msgspec.json.decode(RUN.read_bytes(), type=ResultsFile).scenarios
    concurrent = Enricher(enrich_settings(parse_flags(add_arguments, ["--prometheus-url", base])))
    serial = Enricher(
        enrich_settings(parse_flags(add_arguments, ["--prometheus-url", base, "--enrich-concurrency", "1"]))
    )
    try:
        t_conc, n_conc = measure(lambda: asyncio.run(concurrent.enrich_run(scenarios)), repeat=3, min_time=0)
        t_ser, n_ser = measure(lambda: asyncio.run(serial.enrich_run(scenarios)), repeat=3, min_time=0)
    finally:
        concurrent.close()
        serial.close()
    return [
        Row(
            f"enrich: 15 x 5 queries, concurrent (16), {label}",
            t_conc,
            n_conc,
            f"sequential / concurrent = {t_ser / t_conc:.1f}",
        ),
        Row(f"enrich: 15 x 5 queries, one at a time, {label}", t_ser, n_ser, "the old exporters' way"),
    ]


def run() -> list[Row]:
    binary = shutil.which("victoria-metrics")
    if binary is None:
        return [Row("enrich: skipped (victoria-metrics not installed)", 0.0, 0)]
    with tempfile.TemporaryDirectory() as store:
        proc, url = _start_vm(binary, store)
        proxy = LatencyProxy(url, LATENCY_S)
        try:
            return _compare(url, "loopback") + _compare(proxy.url, f"+{LATENCY_S * 1000:.0f} ms per query")
        finally:
            proxy.stop()
            proc.terminate()
            proc.wait()
