"""What a result kind is: everything the CLI, ``up``, a worker and the gateway need to know about one kind.

A kind turns every ingested run into one result message on ``te.results.<name>.<digest>`` and contributes
metric families to the gateway. Each kind lives in one module (``services/<kind>/kind.py``) that defines a
``KIND = Kind(...)``; the list of kinds (name, module, one-line description) is written once, in
services/kinds.py. Nothing else enumerates them:
subjects, durable consumers, CLI subcommands, ``up``'s services, and the gateway's decoders, state, consumer
lag and health all derive from that list.

Kind modules stay light to import (msgspec, argparse, the pure families code): the gateway imports every
kind for its decoders and families. Heavy work (numpy for model fitting) is imported inside ``open``.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from shared.families import Family, RunView
from shared.runs import RunInput
from shared.schemas import ResultEnvelope

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

T = TypeVar("T")

#: The legacy listeners a kind's families may also appear on (besides the gateway's own :9520).
LEGACY_LISTENERS = ("results", "qoe", "cost")


class Computer(Protocol):
    """A kind's computation once started: stateful kinds (KV, request/reply endpoints) hold their state."""

    async def compute(self, run: RunInput) -> ResultEnvelope: ...

    async def close(self) -> None: ...


@runtime_checkable
class InputsIndex(Protocol):
    """A derived kind's computer that follows the results stream itself can spare the worker a read: a
    result that is not the last of its run's set to be stored (two of every three arrivals for advice) is
    acked without one."""

    async def inputs_incomplete(self, digest: str, seq: int, needs: Collection[str]) -> bool: ...


@dataclass(frozen=True)
class Kind:
    #: Subject token (``te.results.<name>.*``), durable consumer name, service name and CLI subcommand.
    name: str
    #: The published result Struct; the gateway decodes with it.
    result: type[ResultEnvelope]
    #: The kind's own flags (every flag declared once, with its env var and default).
    add_arguments: Callable[[argparse.ArgumentParser], None]
    #: Settings from parsed flags (the only way settings are built, tests included).
    settings: Callable[[argparse.Namespace], Any]
    #: Families this kind contributes to the gateway for the latest run.
    families: Callable[[RunView], list[Family]]
    #: Pure computation ``(run, settings) -> result``: on the event loop for a small run, in a worker thread
    #: for a large one (``run_maths``), and always in a thread when ``blocking`` says so.
    compute: Callable[[RunInput, Any], ResultEnvelope] | None = None
    #: Whether ``compute`` may wait on the network with these settings (the cost kind's carbon-intensity
    #: lookup, when Electricity Maps is configured).
    blocking: Callable[[Any], bool] | None = None
    #: For stateful kinds instead of ``compute``: ``await open(nc, settings)`` gives a Computer.
    open: Callable[[NATS, Any], Awaitable[Computer]] | None = None
    #: The legacy listener (``results``, ``qoe``, ``cost``) whose scrape also shows this kind's families.
    listener: str | None = None
    #: Kinds whose results this kind is computed from. Empty: computed from each ingested run (manifest).
    #: Otherwise computed once every needed result of the run's newest generation is published, and
    #: ``RunInput.results`` holds them.
    needs: tuple[str, ...] = ()
    #: A digest of the settings that change results (prices, a region, ...). When it differs from the one
    #: the kind last ran with, the kind's consumer is reset at start-up so every stored run is recomputed.
    fingerprint: Callable[[Any], str] | None = None

    def __post_init__(self) -> None:
        if (self.compute is None) == (self.open is None):
            raise ValueError(f"kind {self.name!r}: give exactly one of compute= or open=")
        if self.listener is not None and self.listener not in LEGACY_LISTENERS:
            raise ValueError(f"kind {self.name!r}: unknown listener {self.listener!r}")


#: A run of up to this many scenarios is computed on the event loop: its maths takes about 2 ms at most
#: there (15 scenarios: 0.7 ms of modeling statistics, about 1 ms of advice), and a worker thread would add
#: the CPU of a hop there and back to every run.
INLINE_MAX_SCENARIOS = 32


async def run_maths(scenarios: int, fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)``, pure CPU work on a run of ``scenarios``: on the event loop for a small run, in a worker
    thread for one large enough to stall scrapes and ingestion in the same process."""
    if scenarios <= INLINE_MAX_SCENARIOS:
        return fn(*args)
    return await asyncio.to_thread(fn, *args)


class _Computer:
    def __init__(self, fn: Callable[[RunInput, Any], ResultEnvelope], settings: Any, blocking: bool) -> None:
        self.fn = fn
        self.settings = settings
        self.blocking = blocking

    async def compute(self, run: RunInput) -> ResultEnvelope:
        if self.blocking:  # it may wait on the network: never on the event loop
            return await asyncio.to_thread(self.fn, run, self.settings)
        return await run_maths(len(run.scenarios), self.fn, run, self.settings)

    async def close(self) -> None:
        return None


async def open_computer(kind: Kind, nc: NATS, settings: Any) -> Computer:
    if kind.open is not None:
        return await kind.open(nc, settings)
    assert kind.compute is not None
    blocking = kind.blocking is not None and kind.blocking(settings)
    return _Computer(kind.compute, settings, blocking)
