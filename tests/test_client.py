"""Client commands never hang: a refused or silent NATS gives one line naming the URL within the bound, and
Ctrl-C/SIGTERM end a command at any moment."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.up import free_port


def client(*argv: str, home: Path) -> subprocess.Popen[str]:
    env = {**os.environ, "XDG_STATE_HOME": str(home)}
    env.pop("NATS_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "services", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.fixture
def silent_server() -> Iterator[int]:
    """Accepts TCP connections and never says a word (a hung broker, a wrong port)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield listener.getsockname()[1]


def test_a_refused_nats_is_one_line_naming_the_url(tmp_path: Path) -> None:
    port = free_port()
    started = time.monotonic()
    proc = client("recommend", "--nats-url", f"nats://user:secret@127.0.0.1:{port}", home=tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2
    assert time.monotonic() - started < 10
    assert f"nats://***@127.0.0.1:{port}" in err and "secret" not in err
    assert len(err.strip().splitlines()) == 1, err


def test_a_silent_nats_is_bounded_by_the_timeout(tmp_path: Path, silent_server: int) -> None:
    started = time.monotonic()
    proc = client("runs", "--nats-url", f"nats://127.0.0.1:{silent_server}", "--timeout", "2", home=tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and f"127.0.0.1:{silent_server}" in err
    assert time.monotonic() - started < 10


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signals_end_a_waiting_command(tmp_path: Path, silent_server: int, sig: signal.Signals) -> None:
    proc = client(
        "status", "--nats-url", f"nats://127.0.0.1:{silent_server}", "--timeout", "60", home=tmp_path
    )
    time.sleep(1.5)
    started = time.monotonic()
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert proc.returncode == 130 and "interrupted" in err


def test_without_a_running_up_the_default_url_is_named(tmp_path: Path) -> None:
    proc = client("runs", "--timeout", "2", home=tmp_path)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 2 and "no running 'transcode-energy up' found" in err
