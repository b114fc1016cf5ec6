"""Shared fixtures: real servers on loopback, never mocks of them."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import nats
import pytest
from hypothesis import settings
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext

from services.up import find_nats_server, free_port, wait_for_nats

# Speed is measured in bench/, not asserted in tests: no per-example deadline (a busy CI machine is slow).
settings.register_profile("project", deadline=None)
settings.load_profile("project")

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "tests" / "data"
EXAMPLES = REPO / "examples"


def require_binary(name: str) -> str:
    """Path of a system binary the test needs. Skips locally when absent; fails under CI."""
    found = shutil.which(name)
    if found:
        return found
    message = f"{name} is not installed (make test installs it as root via apt)"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@dataclass
class NatsServer:
    url: str
    port: int
    store: Path
    proc: subprocess.Popen[bytes]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=10)

    def start(self) -> None:
        """(Re)start on the same port and store: JetStream state survives, like a real restart."""
        argv = [find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_nats("127.0.0.1", self.port, 15, self.proc)


def start_nats(store: Path) -> NatsServer:
    port = free_port()
    server = NatsServer(
        url=f"nats://127.0.0.1:{port}", port=port, store=store, proc=subprocess.Popen(["true"])
    )
    server.start()
    return server


@pytest.fixture(scope="session")
def nats_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NatsServer]:
    server = start_nats(tmp_path_factory.mktemp("nats-store"))
    yield server
    server.stop()


async def _wipe(js: JetStreamContext) -> None:
    for name in await js.streams_info():
        assert name.config.name is not None
        await js.delete_stream(name.config.name)


@pytest.fixture
async def nc(nats_server: NatsServer) -> AsyncIterator[NATS]:
    """A client on the session server with every stream and bucket deleted first (tests start clean)."""
    client = await nats.connect(nats_server.url)
    await _wipe(client.jetstream())
    yield client
    with contextlib.suppress(Exception):
        await client.close()


@pytest.fixture
def results_dir(tmp_path: Path) -> Path:
    path = tmp_path / "test_results"
    path.mkdir()
    return path


def wait_until(predicate: object, timeout: float = 10.0, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(interval)
    raise AssertionError("condition not met in time")


@dataclass
class VictoriaMetrics:
    """A real VictoriaMetrics on loopback with its own storage directory."""

    url: str
    port: int
    store: Path
    proc: subprocess.Popen[bytes]

    def start(self) -> None:
        argv = [
            require_binary("victoria-metrics"),
            f"-httpListenAddr=127.0.0.1:{self.port}",
            f"-storageDataPath={self.store}",
            "-retentionPeriod=100y",  # the example runs are from 2025
            "-search.latencyOffset=0s",  # freshly imported samples are queryable at once
            "-search.disableCache",  # imports in one test must not be hidden by cached answers
            "-loggerLevel=ERROR",
        ]
        self.proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        import urllib.request

        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"victoria-metrics exited with {self.proc.returncode}")
            try:
                with urllib.request.urlopen(f"{self.url}/health", timeout=1) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("victoria-metrics did not become healthy")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=20)

    def import_text(self, text: str) -> None:
        """Import Prometheus text-format samples (with explicit ms timestamps) and make them queryable."""
        import urllib.request

        request = urllib.request.Request(
            f"{self.url}/api/v1/import/prometheus", data=text.encode(), method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status in (200, 204)
        with urllib.request.urlopen(f"{self.url}/internal/force_flush", timeout=30) as response:
            assert response.status == 200


@pytest.fixture
def victoria_metrics(tmp_path: Path) -> Iterator[VictoriaMetrics]:
    port = free_port()
    vm = VictoriaMetrics(
        url=f"http://127.0.0.1:{port}", port=port, store=tmp_path / "vm", proc=subprocess.Popen(["true"])
    )
    vm.start()
    yield vm
    vm.stop()


def start_prometheus(tmp_path: Path, target: str) -> tuple[subprocess.Popen[bytes], str]:
    """A real Prometheus scraping ``target`` (host:port) every second, as the shipped scrape config does
    (``honor_labels: true``). Returns the process and its base URL."""
    prometheus = require_binary("prometheus")
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
        "scrape_configs:\n  - job_name: transcode-energy\n    honor_labels: true\n"
        f"    static_configs: [{{targets: ['{target}']}}]\n"
    )
    proc = subprocess.Popen(
        [
            prometheus,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc, f"http://127.0.0.1:{port}"


def up_argv(results_dir: Path, data_dir: Path, **flags: object) -> list[str]:
    """``transcode-energy up`` as a subprocess argv; ``metrics_port=1234`` becomes ``--metrics-port 1234``."""
    argv = [
        sys.executable,
        "-m",
        "services",
        "up",
        "--results-dir",
        str(results_dir),
        "--data-dir",
        str(data_dir),
    ]
    for name, value in flags.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def stop_process(proc: subprocess.Popen[str] | subprocess.Popen[bytes]) -> None:
    """SIGINT (what Ctrl-C sends), then SIGKILL if it has not stopped within 30 s."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
