"""Fast recovery (issue 12 item 8), with real processes and a real nats-server:

* a worker SIGKILLed while it computes a run: the run's result appears within 30 s, through the other replica
  or the restarted worker;
* a nats-server restart: every service consumes again, a file dropped right after the restart is exported
  with every kind's result in a few seconds;
* a nats-server that starts only after the services began connecting: the system comes up and processes a run.

A run is kept "being computed" by the cost kind's real Electricity Maps client talking to a loopback API that
holds its first request open (the only way to make a real worker busy for as long as the test needs). Timing
bounds are generous; the measured figures are printed (``pytest -s``) and reported in the issue.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import nats
import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js.errors import NotFoundError
from prometheus_client.parser import text_string_to_metric_families

from services.ingest.publisher import RunPublisher
from services.kinds import kind_names
from services.up import find_nats_server, free_port, wait_for_nats
from shared import bus, subjects
from shared.resultsfile import decode_results
from tests.conftest import NatsServer, start_nats, stop_process, up_argv

pytestmark = pytest.mark.slow

#: The run window the cost kind asks Electricity Maps about (unix seconds, January 2026).
T0 = 1_767_225_600


def run_doc(offset: int = 0) -> dict[str, object]:
    """A small measured run; ``offset`` makes the content (and so the digest) differ."""
    return {
        "scenarios": [
            {
                "name": f"{k + 1} Streams @ 2500k",
                "bitrate": "2500k",
                "resolution": "1280x720",
                "fps": 30,
                "start_time": T0 + 100 * k + offset,
                "end_time": T0 + 100 * k + 60 + offset,
                "vmaf_score": 90.0 - k,
                "telemetry": {
                    "step_seconds": 5,
                    "power_watts": [50.0 + 10 * k + i % 3 for i in range(13)],
                    "cpu_usage_cores": [1.0 + k] * 13,
                },
            }
            for k in range(4)
        ]
    }


class HeldCarbonApi:
    """A loopback Electricity Maps API: the first request is held open until :meth:`release` (the worker that
    sent it is "computing"); every later one is answered at once with 503, so the cost kind falls back to
    its table and finishes."""

    def __init__(self) -> None:
        self.first = threading.Event()
        self.released = threading.Event()
        self.requests = 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                api.requests += 1
                if api.requests == 1:
                    api.first.set()
                    api.released.wait(90)
                try:
                    self.send_response(503)
                    self.end_headers()
                except OSError:
                    pass  # the worker holding the request was killed

            def log_message(self, format: str, *args: object) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def release(self) -> None:
        self.released.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def carbon_api() -> Iterator[HeldCarbonApi]:
    api = HeldCarbonApi()
    try:
        yield api
    finally:
        api.release()


def pricing_flags(api: HeldCarbonApi) -> list[str]:
    return ["--region", "us-east-1", "--electricity-maps-token", "t", "--electricity-maps-url", api.url]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def exported(metrics_port: int, run_id: str) -> bool:
    """The gateway exports ``run_id`` as the latest run, with every kind's result."""
    status, text = get(f"http://127.0.0.1:{metrics_port}/metrics")
    if status != 200:
        return False
    latest, kinds = None, set()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "transcode_gateway_latest_run_info":
                latest = sample.labels["run_id"]
            elif sample.name == "transcode_pipeline_latency_seconds":
                kinds.add(sample.labels["kind"])
    return latest == run_id and kinds >= set(kind_names())


def wait_for(check: object, timeout: float, what: str, interval: float = 0.1) -> float:
    """Poll ``check()`` until true; returns when it became true (time.monotonic())."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(check) and check():
            return time.monotonic()
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout:g}s")


def children_of(pid: int, marker: str) -> list[int]:
    """Child processes of ``pid`` whose command line contains ``marker``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        if ppid == pid and marker in cmdline:
            found.append(int(entry.name))
    return found


async def cost_result_exists(js: object, digest: str) -> bool:
    assert isinstance(js, nats.js.JetStreamContext)
    try:
        await js.get_last_msg(subjects.RESULTS_STREAM, subjects.result_subject("cost", digest), direct=True)
    except NotFoundError:
        return False
    return True


async def await_result(js: nats.js.JetStreamContext, digest: str, timeout: float) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await cost_result_exists(js, digest):
            return time.monotonic()
        await asyncio.sleep(0.1)
    raise AssertionError(f"no cost result for {digest} within {timeout:g}s")


# ---------------------------------------------------------------------------------------------------------
# 1. A killed worker's run is recomputed
# ---------------------------------------------------------------------------------------------------------


def cost_worker(url: str, api: HeldCarbonApi, status_port: int) -> subprocess.Popen[bytes]:
    argv = [sys.executable, "-m", "services", "cost", "--nats-url", url, "--status-port", str(status_port)]
    return subprocess.Popen(argv + pricing_flags(api), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def test_a_killed_replicas_run_is_recomputed_by_the_other(
    nc: NATS, nats_server: NatsServer, carbon_api: HeldCarbonApi
) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    publisher = RunPublisher(js, await bus.ensure_kv(js, subjects.KV_INGESTED), max_payload=nc.max_payload)
    ports = [free_port(), free_port()]
    first = cost_worker(nats_server.url, carbon_api, ports[0])
    second: subprocess.Popen[bytes] | None = None
    try:
        await asyncio.to_thread(
            wait_for, lambda: get(f"http://127.0.0.1:{ports[0]}/ready")[0] == 200, 30, "first worker ready"
        )
        run = decode_results(json.dumps(run_doc()).encode(), "test_results_20260101_000000.json")
        await publisher.publish(run)
        assert await asyncio.to_thread(carbon_api.first.wait, 30), "the first worker never started the run"
        second = cost_worker(nats_server.url, carbon_api, ports[1])
        await asyncio.to_thread(
            wait_for, lambda: get(f"http://127.0.0.1:{ports[1]}/ready")[0] == 200, 30, "second worker ready"
        )
        killed = time.monotonic()
        first.send_signal(signal.SIGKILL)
        done = await await_result(js, run.digest, 30)
        print(f"\nkill-to-recomputed (other replica): {done - killed:.1f} s")
    finally:
        for proc in (first, second):
            if proc is not None:
                stop_process(proc)


def test_a_killed_worker_of_up_processes_is_restarted_and_recomputes_the_run(
    tmp_path: Path, nats_server: NatsServer, carbon_api: HeldCarbonApi
) -> None:
    results = tmp_path / "results"
    metrics_port = free_port()
    argv = up_argv(
        results,
        tmp_path / "n",
        nats_url=nats_server.url,
        metrics_port=metrics_port,
        results_port=0,
        qoe_port=0,
        cost_port=0,
    )
    argv += [*pricing_flags(carbon_api), "--processes"]
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{metrics_port}/ready")[0] == 200, 60, "up ready")
        run_id = "test_results_20260102_000000"
        (results / f"{run_id}.json").write_text(json.dumps(run_doc(7)))
        assert carbon_api.first.wait(30), "the cost worker never started the run"
        [worker] = children_of(proc.pid, "services cost")
        killed = time.monotonic()
        os.kill(worker, signal.SIGKILL)
        done = wait_for(lambda: exported(metrics_port, run_id), 30, "the run exported with every kind")
        print(f"\nkill-to-recomputed (restarted worker, up --processes): {done - killed:.1f} s")
        assert children_of(proc.pid, "services cost"), "up did not restart the cost worker"
    finally:
        stop_process(proc)


# ---------------------------------------------------------------------------------------------------------
# 2. A nats-server restart
# ---------------------------------------------------------------------------------------------------------


@dataclass
class UpProcess:
    """``transcode-energy up`` against an external server, its output collected as it comes."""

    proc: subprocess.Popen[str]
    output: list[str]
    metrics_port: int
    results: Path


def start_up(tmp_path: Path, url: str) -> UpProcess:
    results = tmp_path / "results"
    results.mkdir()
    metrics_port = free_port()
    argv = up_argv(
        results,
        tmp_path / "n",
        nats_url=url,
        metrics_port=metrics_port,
        results_port=0,
        qoe_port=0,
        cost_port=0,
    )
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path)}
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)

    threading.Thread(target=read, daemon=True).start()
    return UpProcess(proc, output, metrics_port, results)


def test_every_service_consumes_again_soon_after_a_nats_restart(tmp_path: Path) -> None:
    server = start_nats(tmp_path / "store")
    up = start_up(tmp_path, server.url)
    proc, output, metrics_port, results = up.proc, up.output, up.metrics_port, up.results
    try:
        wait_for(lambda: get(f"http://127.0.0.1:{metrics_port}/ready")[0] == 200, 60, "up ready")
        began = time.monotonic()
        (results / "test_results_20260103_000000.json").write_text(json.dumps(run_doc(1)))
        done = wait_for(lambda: exported(metrics_port, "test_results_20260103_000000"), 60, "first run")
        print(f"\ndrop-to-exported, no restart: {done - began:.1f} s")
        time.sleep(2)  # every worker is idle in a long poll, every ordered consumer caught up
        server.stop()
        time.sleep(1)
        server.start()
        restarted = time.monotonic()
        (results / "test_results_20260103_000001.json").write_text(json.dumps(run_doc(2)))
        done = wait_for(
            lambda: exported(metrics_port, "test_results_20260103_000001"),
            60,
            "the run dropped after the restart exported with every kind",
        )
        print(f"restart-to-exported: {done - restarted:.1f} s")
        assert done - restarted < 10, "".join(output)
        # A file dropped while the server is down waits in ingest's publish retries until it is back.
        server.stop()
        (results / "test_results_20260103_000002.json").write_text(json.dumps(run_doc(3)))
        time.sleep(8)  # several failed attempts: ingest's retry pause has grown
        server.start()
        restarted = time.monotonic()
        try:
            done = wait_for(
                lambda: exported(metrics_port, "test_results_20260103_000002"),
                60,
                "the run dropped during the outage exported with every kind",
            )
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{''.join(output)[-6000:]}") from None
        print(f"restart-to-exported, file dropped during the outage: {done - restarted:.1f} s")
        assert done - restarted < 10, "".join(output)
    finally:
        stop_process(proc)
        server.stop()


# ---------------------------------------------------------------------------------------------------------
# 3. A nats-server that starts after the services
# ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("before", ["nothing listens", "no JetStream yet"])
def test_services_started_before_the_server_come_up_and_process_a_run(tmp_path: Path, before: str) -> None:
    port = free_port()
    server = NatsServer(
        url=f"nats://127.0.0.1:{port}", port=port, store=tmp_path / "store", proc=subprocess.Popen(["true"])
    )
    if before == "no JetStream yet":
        # A server that accepts clients but answers no JetStream request: what a cluster still electing its
        # leaders looks like to a service starting up.
        argv = [find_nats_server(), "-a", "127.0.0.1", "-p", str(port)]
        server.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_nats("127.0.0.1", port, 15, server.proc)
    up = start_up(tmp_path, server.url)
    proc, output, metrics_port, results = up.proc, up.output, up.metrics_port, up.results
    try:
        time.sleep(3)  # every service is connecting, or waiting for JetStream
        assert proc.poll() is None, "".join(output)
        server.stop()
        server.start()
        started = time.monotonic()
        wait_for(lambda: get(f"http://127.0.0.1:{metrics_port}/ready")[0] == 200, 60, "up ready")
        ready = time.monotonic()
        (results / "test_results_20260104_000000.json").write_text(json.dumps(run_doc(3)))
        wait_for(lambda: exported(metrics_port, "test_results_20260104_000000"), 60, "run exported")
        print(f"\nserver-start-to-ready ({before}): {ready - started:.1f} s")
        assert proc.poll() is None and "Traceback" not in "".join(output), "".join(output)
    finally:
        stop_process(proc)
        server.stop()


async def test_every_start_up_step_waits_for_jetstream(tmp_path: Path) -> None:
    """KV buckets, pull consumers and ordered consumers asked for while the server has no JetStream yet are
    created once it has, instead of failing (one retry helper, shared/bus.py)."""
    server = start_nats(tmp_path / "store")
    setup = await nats.connect(server.url)
    await bus.ensure_topology(setup.jetstream())
    await setup.close()
    await asyncio.to_thread(server.stop)
    server.proc = subprocess.Popen(
        [find_nats_server(), "-a", "127.0.0.1", "-p", str(server.port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    nc: NATS | None = None
    replay: bus.OrderedReplay | None = None
    tasks: list[asyncio.Task[object]] = []
    try:
        await asyncio.to_thread(wait_for_nats, "127.0.0.1", server.port, 15, server.proc)
        nc = await bus.connect(bus.NatsConfig(servers=[server.url]), name="test")
        js = nc.jetstream()
        seen: list[bytes] = []

        async def handler(msg: Msg) -> None:
            seen.append(msg.data)

        replay = bus.OrderedReplay(nc, f"{subjects.INGEST_RUN}.>", handler)
        steps = (
            bus.ensure_kv(js, "recovery_test"),
            bus.ensure_pull_consumer(js, subjects.INGEST_STREAM, "recovery_test", f"{subjects.INGEST_RUN}.>"),
            replay.start(),
        )
        tasks = [asyncio.ensure_future(step) for step in steps]
        await asyncio.sleep(3)
        assert not any(t.done() for t in tasks), [t.exception() for t in tasks if t.done()]
        await asyncio.to_thread(server.stop)
        await asyncio.to_thread(server.start)
        began = time.monotonic()
        await asyncio.wait_for(asyncio.gather(*tasks), 30)
        print(f"\nJetStream-ready-to-started: {time.monotonic() - began:.1f} s")
        await js.publish(f"{subjects.INGEST_RUN}.0123456789abcdef", b"hello")
        deadline = time.monotonic() + 10
        while not seen and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert seen == [b"hello"]
    finally:
        for task in tasks:
            task.cancel()
        if replay is not None:
            await replay.close()
        if nc is not None:
            await nc.close()
        await asyncio.to_thread(server.stop)
