"""``up``'s supervision and hygiene: a crashed service is restarted and reported without stopping the others,
a bad setting stops ``up`` with one line before anything is announced, a port in use is named, secrets
never reach a command line or the banner, and a clean stop logs no warning."""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from nats.aio.client import Client as NATS

from services.catalog import ServiceSpec
from services.up import StartupFailure, Supervised, _supervise, free_port
from shared import bus, subjects
from shared.schemas import ErrorEvent
from tests.conftest import NatsServer, up_argv
from tests.helpers import decoded, eventually
from tests.test_up import _processes_mentioning


def _noop_flags(parser: argparse.ArgumentParser) -> None:
    return None


async def test_a_crashed_service_is_restarted_and_reported(nc: NATS, nats_server: NatsServer) -> None:
    await bus.ensure_topology(nc.jetstream())
    calls: list[int] = []

    async def flaky(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event | None) -> int:
        calls.append(1)
        assert ready is not None
        ready.set()
        if len(calls) == 1:
            raise RuntimeError("boom")
        await stop.wait()
        return 0

    item = Supervised(ServiceSpec("flaky", _noop_flags, flaky), argparse.Namespace())
    stop, started = asyncio.Event(), asyncio.Event()
    started.set()
    task = asyncio.create_task(_supervise(item, stop, started, nats_server.url))

    async def restarted() -> bool:
        return len(calls) == 2

    await eventually(restarted, timeout=10, what="the service restarted")
    stop.set()
    await asyncio.wait_for(task, 10)
    assert item.restarts == 1
    events = await decoded(
        nc.jetstream(), subjects.EVENTS_STREAM, subjects.error_subject("flaky"), ErrorEvent
    )
    assert [(e.service, e.reason) for e in events] == [("flaky", "crashed")]
    assert "RuntimeError: boom" in events[0].message


async def test_a_bad_setting_before_start_up_stops_up(nats_server: NatsServer) -> None:
    async def refuses(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event | None) -> int:
        raise SystemExit("exporter: cannot listen on 127.0.0.1:9520 (metrics listener): Address in use")

    item = Supervised(ServiceSpec("exporter", _noop_flags, refuses), argparse.Namespace())
    with pytest.raises(StartupFailure, match="9520"):
        await asyncio.wait_for(_supervise(item, asyncio.Event(), asyncio.Event(), nats_server.url), 10)
    assert item.restarts == 0


def test_a_port_in_use_is_one_line_naming_it_and_nothing_is_announced(tmp_path: Path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run(
            up_argv(
                tmp_path / "r", tmp_path / "n", metrics_port=port, results_port=0, qoe_port=0, cost_port=0
            ),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert done.returncode != 0
    assert f"127.0.0.1:{port}" in done.stderr and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert "is up" not in done.stdout


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["in-process", "processes"])
def test_secrets_stay_out_of_command_lines_banner_and_logs(
    tmp_path: Path, nats_server: NatsServer, mode: str
) -> None:
    secret = "s3cr3tT0kenXYZ"
    url = f"nats://{secret}@127.0.0.1:{nats_server.port}"
    env = {
        **os.environ,
        "NATS_URL": url,
        "ELECTRICITY_MAPS_TOKEN": f"em-{secret}",
        "XDG_STATE_HOME": str(tmp_path),
    }
    flags: dict[str, object] = {"metrics_port": free_port(), "results_port": 0, "qoe_port": 0, "cost_port": 0}
    argv = up_argv(tmp_path / "r", tmp_path / "n", **flags) + (["--processes"] if mode == "processes" else [])
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if line.strip() == "ready" or not line:
                break
        assert "ready\n" in lines, "".join(lines)
        assert _processes_mentioning(secret) == []  # no command line anywhere carries it
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    output = "".join(lines) + rest
    assert secret not in output, output
    assert "***@127.0.0.1" in output  # the banner shows where it connects, credentials masked
    assert "WARNING" not in output, output  # a clean stop logs no warning
    assert proc.returncode == 0
