"""``transcode-energy``: one command, one subcommand per service, plus ``up`` for the whole system.

Only the chosen subcommand's module is imported (``healthcheck`` imports nothing beyond the standard
library), so a container health probe or a client command costs little memory and starts fast.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: command -> (the flag naming its status port, that flag's environment variable, its default); a result
#: kind's worker is (--status-port, STATUS_PORT, 0). tests/test_deployment.py checks these against the parser.
_STATUS_PORTS: dict[str, tuple[str, str, int]] = {
    "exporter": ("--metrics-port", "METRICS_PORT", 9520),
    "up": ("--metrics-port", "METRICS_PORT", 9520),
    "ingest": ("--status-port", "INGEST_STATUS_PORT", 0),
}
_WORKER_STATUS_PORT = ("--status-port", "STATUS_PORT", 0)

#: Commands that are not services: name -> one-line help.
TOOLS: dict[str, str] = {
    "up": "run the whole system (embedded NATS + every service)",
    "healthcheck": "exit 0 when URL answers 200 (container health checks)",
    "schema": "write the JSON Schema of every published message",
}


def version() -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version("transcode-energy")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def served_port(argv: Sequence[str], env: dict[str, str] | os._Environ[str]) -> int:
    """The status port of the process started as ``argv`` in environment ``env`` (0: it serves none)."""
    from services.kinds import kind_names

    known = {**_STATUS_PORTS, **{name: _WORKER_STATUS_PORT for name in kind_names()}}
    command = next((arg for arg in argv if arg in known), None)
    if command is None:
        return 0
    option, variable, default = known[command]
    args = list(argv)
    for position, arg in enumerate(args):
        if arg == option and position + 1 < len(args):
            return int(args[position + 1])
        if arg.startswith(option + "="):
            return int(arg.split("=", 1)[1])
    # An empty variable counts as unset, as in the services' own flag handling.
    return int(env[variable]) if env.get(variable) else default


def default_health_url(
    env: dict[str, str] | os._Environ[str], cmdline: Path = Path("/proc/1/cmdline")
) -> str | None:
    """What a container's HEALTHCHECK probes without a URL: ``HEALTHCHECK_URL``, else ``/ready`` on the port the
    container's main process (pid 1) serves, from its command line and the variables the services read."""
    if env.get("HEALTHCHECK_URL"):
        return env["HEALTHCHECK_URL"]
    try:
        argv = cmdline.read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return None
    port = served_port(argv, env)
    return f"http://127.0.0.1:{port}/ready" if port else None


def healthcheck(url: str | None, timeout: float) -> int:
    """Probe a /health or /ready URL; for Docker HEALTHCHECK, where images have no curl.

    Runs every few seconds in every container, so plain http is spoken over a socket (no urllib, no ssl
    module: a probe costs about as much as the interpreter itself); https goes through urllib."""
    if url is None:
        print(
            "healthcheck: this process serves no status port (set one, or HEALTHCHECK_URL)", file=sys.stderr
        )
        return 1
    if url.startswith("https://"):
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - https only
                return 0 if response.status == 200 else 1
        except (urllib.error.URLError, OSError) as exc:
            print(f"healthcheck: {url}: {exc}", file=sys.stderr)
            return 1
    if not url.startswith("http://"):
        print(f"healthcheck: not an http(s) URL: {url}", file=sys.stderr)
        return 2
    import socket

    rest = url[len("http://") :]
    hostport, _, path = rest.partition("/")
    host, _, port_text = hostport.rpartition(":") if ":" in hostport else (hostport, "", "80")
    try:
        with socket.create_connection((host.strip("[]"), int(port_text)), timeout=timeout) as sock:
            sock.sendall(f"GET /{path} HTTP/1.0\r\nHost: {hostport}\r\n\r\n".encode())
            status = sock.recv(64).split(b" ", 2)
    except (OSError, ValueError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1
    return 0 if len(status) > 1 and status[1] == b"200" else 1


def _clean_descriptions(node: Any) -> Any:
    """Docstrings as ``inspect.cleandoc`` gives them, whatever msgspec release generated the schema (0.23
    dedents them itself, earlier releases keep the indentation): the committed schemas are ours to decide."""
    import inspect

    if isinstance(node, dict):
        return {
            key: inspect.cleandoc(value)
            if key == "description" and isinstance(value, str)
            else _clean_descriptions(value)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_clean_descriptions(item) for item in node]
    return node


def write_schemas(out: Path) -> list[Path]:
    import msgspec

    from shared.schemas import PUBLISHED_MESSAGES

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, struct in PUBLISHED_MESSAGES.items():
        path = out / f"{name}.schema.json"
        schema = _clean_descriptions(msgspec.json.schema(struct))
        path.write_bytes(msgspec.json.format(msgspec.json.encode(schema)) + b"\n")
        written.append(path)
    return written


def _commands() -> dict[str, str]:
    from services.catalog import service_help, service_names
    from services.client import COMMANDS

    return {"up": TOOLS["up"], **COMMANDS, **{n: service_help(n) for n in service_names()}, **TOOLS}


def _chosen(argv: Sequence[str]) -> str | None:
    for token in argv:
        if not token.startswith("-"):
            return token
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The CLI's parser. With ``only``, just that subcommand is built in full (the others are listed with
    their help line); without it, every subcommand is (for documentation and tests)."""
    parser = argparse.ArgumentParser(
        prog="transcode-energy",
        description="Energy, cost, CO2 and quality of live-video transcoding benchmarks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"transcode-energy {version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_ in _commands().items():
        command = sub.add_parser(name, help=help_, description=help_)
        if only is None or only == name:
            _populate(name, command)
    return parser


def _populate(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "healthcheck":
        parser.add_argument(
            "url",
            nargs="?",
            default=None,
            help="URL to probe [env HEALTHCHECK_URL; default: /ready on the port the container's main "
            "process serves, from its command line and STATUS_PORT/INGEST_STATUS_PORT/METRICS_PORT]",
        )
        parser.add_argument("--timeout", type=float, default=3.0)
        return
    if name == "schema":
        parser.add_argument("--out", type=Path, default=Path("docs/schemas"))
        return
    from services import client

    if name in client.COMMANDS:
        client.add_arguments(name, parser)
        return
    from shared.config import add_logging_flags

    if name == "up":
        from services import up

        up.add_arguments(parser)
        add_logging_flags(parser)
        return
    from services.catalog import load_service
    from shared import bus

    spec = load_service(name)
    spec.add_arguments(parser)
    bus.add_nats_flags(parser)
    add_logging_flags(parser)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    chosen = _chosen(argv)
    if chosen == "healthcheck":  # the container probe: standard library only, nothing else built
        probe = argparse.ArgumentParser(prog="transcode-energy healthcheck")
        _populate("healthcheck", probe)
        args = probe.parse_args(argv[argv.index("healthcheck") + 1 :])
        return healthcheck(args.url or default_health_url(os.environ), args.timeout)
    args = build_parser(only=chosen or "").parse_args(argv)
    if args.command == "schema":
        for path in write_schemas(args.out):
            print(path)
        return 0
    from services import client

    if args.command in client.COMMANDS:
        return client.run(args)
    from shared.config import setup_logging

    setup_logging(args.log_level, args.command)
    if args.command == "up":
        from services import up

        return up.run(args)
    from services.catalog import load_service
    from shared import bus

    spec = load_service(args.command)
    return bus.run_async(lambda stop: spec.main(args, stop, None))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
