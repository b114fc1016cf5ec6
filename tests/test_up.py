"""``transcode-energy up`` as a user runs it: a subprocess that starts everything and stops cleanly."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import msgspec
import nats
import pytest

from services.up import free_port
from shared import subjects
from shared.schemas import RunManifest
from tests.conftest import DATA, up_argv

pytestmark = pytest.mark.slow


def _processes_mentioning(marker: str) -> list[tuple[int, str]]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append((int(entry.name), cmdline))
    return found


async def test_up_ingests_a_dropped_file_and_stops_cleanly_on_sigint(tmp_path: Path) -> None:
    results = tmp_path / "results"
    data_dir = tmp_path / "nats-data"
    nats_port = free_port()
    proc = subprocess.Popen(
        up_argv(
            results,
            data_dir,
            nats_port=nats_port,
            metrics_port=free_port(),
            results_port=0,
            qoe_port=0,
            cost_port=0,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    output: list[str] = []
    try:
        assert proc.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = await asyncio.to_thread(proc.stdout.readline)
            output.append(line)
            if "Press Ctrl-C to stop." in line or not line:
                break
        text = "".join(output)
        assert "transcode-energy is up" in text, text
        url = re.search(r"NATS\s+(nats://\S+)", text)
        assert url is not None and url.group(1) == f"nats://127.0.0.1:{nats_port}"
        assert "ingest     watching" in text

        client = await nats.connect(url.group(1))
        try:
            sub = await client.subscribe(f"{subjects.INGEST_RUN}.>")
            # The ingest service may still be starting: drop the file once it is watching.
            await asyncio.sleep(1.0)
            shutil.copy(
                DATA / "test_results_20251229_172550.json", results / "test_results_20251229_172550.json"
            )
            msg = await sub.next_msg(timeout=30)
            manifest = msgspec.json.decode(msg.data, type=RunManifest)
            assert manifest.run_id == "test_results_20251229_172550"
            assert manifest.scenario_count == 1
        finally:
            await client.close()

        children = _processes_mentioning(str(data_dir))
        assert children, "expected the embedded nats-server to be running"
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.to_thread(proc.communicate, timeout=40)
        assert proc.returncode == 0, "".join(output) + rest
        assert "transcode-energy stopped." in rest
        await asyncio.sleep(0.2)
        leftovers = _processes_mentioning(str(results)) + _processes_mentioning(str(data_dir))
        assert leftovers == [], leftovers
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.parametrize(("given", "expected"), [(None, "1"), ("2", "2")])
def test_the_embedded_nats_server_uses_one_core_unless_told(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: str | None, expected: str
) -> None:
    from services.up import start_embedded_nats

    if given is None:
        monkeypatch.delenv("GOMAXPROCS", raising=False)
    else:
        monkeypatch.setenv("GOMAXPROCS", given)
    proc, _ = start_embedded_nats(tmp_path / "nats", 0)
    try:
        environ = Path(f"/proc/{proc.pid}/environ").read_bytes().split(b"\0")
        assert f"GOMAXPROCS={expected}".encode() in environ
    finally:
        proc.terminate()
        proc.wait(timeout=10)
