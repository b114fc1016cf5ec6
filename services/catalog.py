"""The services a system runs: ingest, one worker per result kind, and the gateway.

Each has flags and an ``async main(args, stop, ready)``; the CLI runs one of them, ``up`` runs them all (in
one process by default, or one process each). Modules are imported only when a service is asked for, so a
process imports only what it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from services.kinds import KINDS, load_kind

Main = Callable[[argparse.Namespace, asyncio.Event, "asyncio.Event | None"], Awaitable[int]]


@dataclass(frozen=True)
class ServiceSpec:
    name: str
    #: The service's own flags (NATS and logging flags are added by whoever builds the parser).
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Main


#: Services that are not result kinds: name -> (module with add_arguments and main, one-line help).
OTHER_SERVICES: dict[str, tuple[str, str]] = {
    "ingest": ("services.ingest.service", "watch the results directory and publish every run onto NATS"),
    "exporter": ("services.exporter.service", "gateway serving the established Prometheus metrics"),
}


def service_names() -> list[str]:
    """Every service, in start order: ingest first, then the workers, the gateway last."""
    return ["ingest", *(ref.name for ref in KINDS), "exporter"]


def service_help(name: str) -> str:
    if name in OTHER_SERVICES:
        return OTHER_SERVICES[name][1]
    return next(ref.description for ref in KINDS if ref.name == name)


def load_service(name: str) -> ServiceSpec:
    if name in OTHER_SERVICES:
        module = importlib.import_module(OTHER_SERVICES[name][0])
        return ServiceSpec(name, module.add_arguments, module.main)
    kind = load_kind(name)
    needs = {need: load_kind(need).result for need in kind.needs}
    from shared.worker import add_worker_arguments, run_worker_service

    def add_arguments(parser: argparse.ArgumentParser) -> None:
        add_worker_arguments(parser)
        kind.add_arguments(parser)

    async def main(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event | None = None) -> int:
        return await run_worker_service(args, stop, kind, ready, needs)

    return ServiceSpec(name, add_arguments, main)


def service_parser(spec: ServiceSpec, prog: str | None = None) -> argparse.ArgumentParser:
    """The complete parser of one service: its flags, NATS connection and logging."""
    from shared import bus
    from shared.config import add_logging_flags

    parser = argparse.ArgumentParser(prog=prog or f"transcode-energy {spec.name}")
    spec.add_arguments(parser)
    bus.add_nats_flags(parser)
    add_logging_flags(parser)
    return parser
