"""``transcode-energy``: one command, one subcommand per service, plus ``up`` for the whole system."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Protocol, cast

import msgspec

from shared import bus
from shared.config import add_logging_flags, setup_logging
from shared.schemas import PUBLISHED_MESSAGES


class ServiceModule(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    main: Callable[[argparse.Namespace, asyncio.Event], Awaitable[int]]


#: Subcommand -> module with ``add_arguments(parser)`` and ``async main(args, stop) -> int``.
SERVICE_MODULES: dict[str, str] = {
    "ingest": "services.ingest.service",
    "modeling": "services.modeling.service",
    "cost": "services.cost.service",
    "qoe": "services.qoe.service",
    "exporter": "services.exporter.service",
}

_DESCRIPTIONS = {
    "ingest": "watch the results directory and publish every run onto NATS",
    "modeling": "per-scenario statistics and power predictions (worker)",
    "cost": "energy/compute cost, CO2 and projections (worker)",
    "qoe": "VMAF/PSNR quality and quality per watt (worker)",
    "exporter": "gateway serving the established Prometheus metrics",
}


def _load(name: str) -> ModuleType | None:
    try:
        return importlib.import_module(SERVICE_MODULES[name])
    except ModuleNotFoundError as exc:
        if exc.name == SERVICE_MODULES[name]:
            return None  # not built yet
        raise


def available_services() -> list[str]:
    return [name for name in SERVICE_MODULES if _load(name) is not None]


def write_schemas(out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for name, struct in PUBLISHED_MESSAGES.items():
        path = out / f"{name}.schema.json"
        path.write_bytes(msgspec.json.format(msgspec.json.encode(msgspec.json.schema(struct))) + b"\n")
        written.append(path)
    return written


DEFAULT_HEALTH_URL = "http://127.0.0.1:8080/health"


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


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, ModuleType]]:
    parser = argparse.ArgumentParser(
        prog="transcode-energy",
        description="Energy, cost, CO2 and quality of live-video transcoding benchmarks.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    modules: dict[str, ModuleType] = {}

    from services import up

    up_parser = sub.add_parser("up", help="run the whole system (embedded NATS + every service)")
    up.add_arguments(up_parser)
    add_logging_flags(up_parser)

    for name in SERVICE_MODULES:
        module = _load(name)
        if module is None:
            continue
        modules[name] = module
        service_parser = sub.add_parser(name, help=_DESCRIPTIONS[name])
        cast(ServiceModule, module).add_arguments(service_parser)
        bus.add_nats_flags(service_parser)
        add_logging_flags(service_parser)

    health_parser = sub.add_parser(
        "healthcheck", help="exit 0 when URL answers 200 (container health checks)"
    )
    health_parser.add_argument(
        "url",
        nargs="?",
        default=os.environ.get("HEALTHCHECK_URL", DEFAULT_HEALTH_URL),
        help=f"URL to probe [env HEALTHCHECK_URL; default {DEFAULT_HEALTH_URL}]",
    )
    health_parser.add_argument("--timeout", type=float, default=3.0)

    schema_parser = sub.add_parser("schema", help="write the JSON Schema of every published message")
    schema_parser.add_argument("--out", type=Path, default=Path("docs/schemas"))
    return parser, modules


def main(argv: Sequence[str] | None = None) -> int:
    parser, modules = build_parser()
    args = parser.parse_args(argv)
    if args.command == "healthcheck":
        return healthcheck(args.url, args.timeout)
    if args.command == "schema":
        for path in write_schemas(args.out):
            print(path)
        return 0
    setup_logging(args.log_level, args.command)
    if args.command == "up":
        from services import up

        return up.run(args, available_services())
    module = cast(ServiceModule, modules[args.command])
    return bus.run_async(lambda stop: module.main(args, stop))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
