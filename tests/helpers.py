"""Test helpers that run real services in-process against the real NATS server."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

from services.ingest.service import (
    IngestMetrics,
    IngestService,
    IngestSettings,
    add_arguments,
    open_publisher,
    settings_from_args,
)
from shared import subjects
from shared.bus import NatsConfig
from shared.config import parse_flags
from shared.runs import RunInput
from shared.schemas import ErrorEvent, RunManifest, Scenario, ScenarioMessage

T = TypeVar("T", bound=msgspec.Struct)


def ingest_settings(results_dir: Path, **overrides: object) -> IngestSettings:
    """Ingest settings through the service's own flags (``settle_seconds=1`` is ``--settle-seconds 1``), with
    the quick debounce and settle time tests want unless overridden."""
    values: dict[str, object] = {"debounce_ms": 50, "settle_seconds": 5.0, **overrides}
    argv = ["--results-dir", str(results_dir)]
    for name, value in values.items():
        option = "--poll" if name == "force_polling" else f"--{name.replace('_', '-')}"
        if isinstance(value, bool):
            argv.append(option if value else f"--no-{option[2:]}")
        else:
            argv += [option, str(value)]
    return settings_from_args(parse_flags(add_arguments, argv))


@contextlib.asynccontextmanager
async def running_ingest(url: str, results_dir: Path, **overrides: Any) -> AsyncIterator[IngestService]:
    enricher = overrides.pop("enricher", None)
    settings = ingest_settings(results_dir, **overrides)
    nc, js, publisher = await open_publisher(NatsConfig(servers=[url]))
    service = IngestService(settings, publisher, js, IngestMetrics(), enricher)
    stop = asyncio.Event()
    task = asyncio.create_task(service.run(stop))
    try:
        await asyncio.wait_for(service.scan_done.wait(), 20)
        yield service
    finally:
        stop.set()
        await asyncio.wait_for(task, 20)
        await nc.close()


async def stream_messages(js: JetStreamContext, stream: str, prefix: str = "") -> list[tuple[str, bytes]]:
    """Every message currently stored in ``stream`` (in sequence order) whose subject starts with prefix."""
    try:
        info = await js.stream_info(stream)
    except NotFoundError:
        return []
    out = []
    first, last = info.state.first_seq, info.state.last_seq
    for seq in range(first, last + 1) if info.state.messages else ():
        try:
            msg = await js.get_msg(stream, seq)
        except NotFoundError:
            continue  # replaced by a newer message on the same subject
        assert msg.subject is not None and msg.data is not None
        if msg.subject.startswith(prefix):
            out.append((msg.subject, msg.data))
    return out


async def decoded(js: JetStreamContext, stream: str, prefix: str, kind: type[T]) -> list[T]:
    return [msgspec.json.decode(data, type=kind) for _, data in await stream_messages(js, stream, prefix)]


async def eventually(
    check: Callable[[], Awaitable[bool]],
    timeout: float = 15.0,
    interval: float = 0.05,
    what: str = "condition",
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout}s")


def without_nulls(value: Any) -> Any:
    """JSON value with null object members removed (how msgspec omits unset optional fields)."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def run_input(*scenarios: Scenario, run_id: str = "r", file_sha256: str = "0" * 64) -> RunInput:
    """An in-memory run of these scenarios, as a worker receives it (``file_sha256``: its content)."""
    manifest = RunManifest(
        run_id=run_id,
        digest="0123456789abcdef",
        file_name="f",
        file_sha256=file_sha256,
        file_bytes=1,
        scenario_count=len(scenarios),
        generation=1,
        ingested_at=0.0,
    )
    return RunInput(
        manifest,
        [
            ScenarioMessage(run_id=run_id, digest=manifest.digest, index=i, scenario=s)
            for i, s in enumerate(scenarios)
        ],
    )


async def manifests(nc: NATS) -> list[RunManifest]:
    return await decoded(nc.jetstream(), subjects.INGEST_STREAM, subjects.INGEST_RUN, RunManifest)


async def scenario_msgs(nc: NATS) -> list[ScenarioMessage]:
    return await decoded(nc.jetstream(), subjects.INGEST_STREAM, subjects.INGEST_SCENARIO, ScenarioMessage)


async def errors(nc: NATS) -> list[ErrorEvent]:
    return await decoded(nc.jetstream(), subjects.EVENTS_STREAM, subjects.EVENTS_ERROR, ErrorEvent)


async def count_manifests(nc: NATS, n: int) -> None:
    """Wait until the ingest stream holds at least ``n`` run manifests."""

    async def check() -> bool:
        return len(await manifests(nc)) >= n

    await eventually(check, what=f"{n} run manifest(s)")


async def count_errors(nc: NATS, n: int, timeout: float = 15.0) -> list[ErrorEvent]:
    """Wait until the events stream holds at least ``n`` error events; return them."""

    async def check() -> bool:
        return len(await errors(nc)) >= n

    await eventually(check, timeout=timeout, what=f"{n} error event(s)")
    return await errors(nc)


def sidecar(results_dir: Path, name: str) -> dict[str, Any]:
    """The ``.error.json`` written beside a file moved to ``rejected/``."""
    raw = (results_dir / "rejected" / f"{name}.error.json").read_bytes()
    decoded: dict[str, Any] = msgspec.json.decode(raw)
    return decoded


class OpenWatch:
    """Which entries of a directory get opened, from the kernel's inotify ``IN_OPEN`` events.

    Proves a file was never opened (a FIFO must not be), by whatever means: a read, an ``O_NONBLOCK`` open
    followed by ``fstat``, anything. Linux only; events of the directory itself carry no name and are skipped.
    """

    _IN_OPEN = 0x20
    _HEADER = struct.Struct("iIII")  # wd, mask, cookie, len (struct inotify_event)

    def __init__(self, directory: Path) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._fd = self._libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self._fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if self._libc.inotify_add_watch(self._fd, os.fsencode(directory), self._IN_OPEN) < 0:
            os.close(self._fd)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self._opened: set[str] = set()

    def opened(self) -> set[str]:
        """Names opened so far (every event read is remembered)."""
        while True:
            try:
                chunk = os.read(self._fd, 65536)
            except BlockingIOError:
                return set(self._opened)
            offset = 0
            while offset < len(chunk):
                _, mask, _, length = self._HEADER.unpack_from(chunk, offset)
                offset += self._HEADER.size
                name = chunk[offset : offset + length].rstrip(b"\0")
                offset += length
                if mask & self._IN_OPEN and name:
                    self._opened.add(os.fsdecode(name))

    def close(self) -> None:
        os.close(self._fd)


def enrich_settings_for(url: str, *flags: str, queries: Any = None) -> Any:
    """Enrichment settings through ingest's own flags (``"--enrich-timeout", "0.5"``), optionally with
    query overrides given as a TelemetryQueries object."""
    import dataclasses

    from services.ingest.service import enrich_settings

    settings = enrich_settings(parse_flags(add_arguments, ["--prometheus-url", url, *flags]))
    return settings if queries is None else dataclasses.replace(settings, queries=queries)


#: The envelope every result builder below starts from: run ``r``, generation 1, computed at time 0.
_ENVELOPE: dict[str, Any] = {
    "run_id": "r",
    "digest": "0123456789abcdef",
    "generation": 1,
    "computed_at": 0.0,
    "compute_seconds": 0.0,
}


def cost_result(scenarios: list[Any], **fields: Any) -> Any:
    """A CostResult of run ``r`` priced in eu-west-1's table figures (0.22 EUR/kWh, 250 g/kWh), with these
    scenario figures; any field can be overridden."""
    from shared.schemas import CostResult

    values: dict[str, Any] = {
        **_ENVELOPE,
        "currency": "EUR",
        "region": "eu-west-1",
        "energy_price_per_kwh": 0.22,
        "energy_price_source": "table",
        "cpu_cost_per_hour": 0.0,
        "gpu_cost_per_hour": 0.0,
        "co2_intensity_g_per_kwh": 250.0,
        "co2_intensity_source": "table",
        "baseline_index": 0,
        "baseline_power_w": 5.0,
        **fields,
    }
    return CostResult(scenarios=scenarios, **values)


def modeling_result(scenarios: list[Any], **fields: Any) -> Any:
    """A ModelingResult of run ``r`` with these per-scenario figures, no model, baseline at index 0; any field
    can be overridden."""
    from shared.schemas import ModelingResult

    values: dict[str, Any] = {
        **_ENVELOPE,
        "baseline_index": 0,
        "model": None,
        "model_reason": None,
        **fields,
    }
    return ModelingResult(scenarios=scenarios, **values)
