"""``transcode-energy``: one command, one subcommand per service, plus ``up`` for the whole system.

Only the chosen subcommand's module is imported (``healthcheck`` imports nothing beyond the standard
library), so a container health probe or a client command costs little memory and starts fast.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

DEFAULT_HEALTH_URL = "http://127.0.0.1:8080/health"

#: Commands that are not services: name -> one-line help.
TOOLS: dict[str, str] = {
    "up": "run the whole system (embedded NATS + every service)",
    "healthcheck": "exit 0 when URL answers 200 (container health checks)",
    "schema": "write the JSON Schema of every published message",
}


def version() -> str:
    try:
        return importlib.metadata.version("transcode-energy")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - running from a source tree
        return "unknown"


def healthcheck(url: str, timeout: float) -> int:
    """Probe a /health or /ready URL; for Docker HEALTHCHECK, where images have no curl."""
    if not url.startswith(("http://", "https://")):
        print(f"healthcheck: not an http(s) URL: {url}", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:  # noqa: S310 - scheme checked above
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as exc:
        print(f"healthcheck: {url}: {exc}", file=sys.stderr)
        return 1


def write_schemas(out: Path) -> list[Path]:
    import msgspec

    from shared.schemas import PUBLISHED_MESSAGES

    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, struct in PUBLISHED_MESSAGES.items():
        path = out / f"{name}.schema.json"
        path.write_bytes(msgspec.json.format(msgspec.json.encode(msgspec.json.schema(struct))) + b"\n")
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
            default=os.environ.get("HEALTHCHECK_URL", DEFAULT_HEALTH_URL),
            help=f"URL to probe [env HEALTHCHECK_URL; default {DEFAULT_HEALTH_URL}]",
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
        return healthcheck(args.url, args.timeout)
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
