"""The gateway asks for consumer lag while messages arrive and rarely when nothing happens, so an idle system
stays idle (real nats-server)."""

from __future__ import annotations

import asyncio
import time

import msgspec
import pytest
from nats.aio.client import Client as NATS

from services.exporter import service
from services.exporter.service import Gateway
from services.kinds import load_kinds
from shared import bus, subjects
from shared.schemas import ErrorEvent


async def _until(predicate: object, timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not (callable(predicate) and predicate()):
            await asyncio.sleep(0.02)


async def test_lag_is_polled_after_activity_and_rarely_when_idle(
    nc: NATS, monkeypatch: pytest.MonkeyPatch
) -> None:
    await bus.ensure_topology(nc.jetstream())
    monkeypatch.setattr(service, "IDLE_LAG_INTERVAL_S", 1.5)
    gateway = Gateway(nc, load_kinds())
    polls: list[float] = []
    poll = gateway._poll_lag

    async def counted() -> None:
        polls.append(time.monotonic())
        await poll()

    gateway._poll_lag = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    task = asyncio.create_task(gateway.run(stop, lag_interval=0.1))
    try:
        await _until(lambda: len(polls) == 1, 5)  # at start
        await asyncio.sleep(0.8)
        assert len(polls) == 1  # idle: not every lag_interval (eight polls before)

        event = ErrorEvent(service="test", reason="test", message="something happened", at=time.time())
        await nc.jetstream().publish(subjects.error_subject("test"), msgspec.json.encode(event))
        await _until(lambda: len(polls) == 2, 1.0)  # a message arrived: polled within lag_interval
        await asyncio.sleep(0.8)
        assert len(polls) == 2  # idle again

        await _until(lambda: len(polls) == 3, 2.0)  # the idle poll, 1.5 s after the last one
        assert polls[2] - polls[1] == pytest.approx(1.5, abs=0.3)
    finally:
        stop.set()
        await task
