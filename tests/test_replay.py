"""bus.OrderedReplay against a real nats-server: every message once, in stream order, pulled continuously
(a pull request per half batch, not per message), through idle expiries, a failing handler and a consumer
deleted under it."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import pytest
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from shared import bus, subjects
from tests.helpers import eventually

SUBJECT = f"{subjects.INGEST_RUN}.>"


def _subject(i: int) -> str:
    return f"{subjects.INGEST_RUN}.{i:016x}"


async def _publish(nc: NATS, numbers: range) -> None:
    js = nc.jetstream()
    for i in numbers:
        await js.publish(_subject(i), str(i).encode())


def _recording() -> tuple[list[int], Callable[[Msg], Awaitable[None]]]:
    """A list and a handler that appends each message's number to it."""
    seen: list[int] = []

    async def handler(msg: Msg) -> None:
        seen.append(int(msg.data))

    return seen, handler


async def test_replays_every_message_once_in_order_with_few_pull_requests(nc: NATS) -> None:
    await bus.ensure_topology(nc.jetstream())
    await _publish(nc, range(700))  # more than two batches stored before the replay starts
    requests: list[bytes] = []
    spy = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.INGEST_STREAM}.>", cb=_append(requests))
    seen: list[int] = []

    async def handler(msg: Msg) -> None:
        seen.append(int(msg.data))
        if int(msg.data) == 3:
            raise RuntimeError("a handler bug must not stop the replay")

    replay = bus.OrderedReplay(nc, SUBJECT, handler)
    try:
        await replay.start()
        await _until(lambda: len(seen) >= 700, timeout=20, what="the stored messages")
        await _publish(nc, range(700, 750))  # live, after catching up
        await _until(lambda: len(seen) >= 750, timeout=20, what="the live messages")
        await asyncio.sleep(0.2)
        assert seen == list(range(750))
        # 750 messages of batches of 256, re-asked at half: 6 requests, not one per message.
        assert len(requests) <= 750 // (bus.OrderedReplay.BATCH // 2) + 1, len(requests)
        assert replay.last_seq == 750
        info = await replay.consumer_info()
        assert info.num_pending == 0
    finally:
        await replay.close()
        await spy.unsubscribe()


async def test_keeps_pulling_after_its_requests_expire(nc: NATS, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bus.OrderedReplay, "PULL_EXPIRES_S", 0.3)
    await bus.ensure_topology(nc.jetstream())
    seen, handler = _recording()
    replay = bus.OrderedReplay(nc, SUBJECT, handler)
    try:
        await replay.start()
        await asyncio.sleep(1.5)  # several expiries with nothing to deliver
        await _publish(nc, range(3))
        await _until(lambda: seen == [0, 1, 2], timeout=10, what="a message after idle expiries")
    finally:
        await replay.close()


async def test_a_deleted_consumer_is_created_again_from_where_it_was(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    await _publish(nc, range(5))
    seen, handler = _recording()
    replay = bus.OrderedReplay(nc, SUBJECT, handler)
    try:
        await replay.start()
        await _until(lambda: len(seen) == 5, timeout=10, what="the first messages")
        first = replay.consumer
        assert first is not None
        await js.delete_consumer(subjects.INGEST_STREAM, first)
        await _until(lambda: replay.consumer != first, timeout=10, what="a new consumer")
        await _publish(nc, range(5, 8))
        await _until(lambda: len(seen) >= 8, timeout=10, what="messages after the deletion")
        await asyncio.sleep(0.2)
        assert seen == list(range(8))  # nothing missed, nothing twice
    finally:
        await replay.close()


def _append(into: list[bytes]) -> Callable[[Msg], Awaitable[None]]:
    async def cb(msg: Msg) -> None:
        into.append(msg.data)

    return cb


async def _until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    async def check() -> bool:
        return predicate()

    await eventually(check, timeout=timeout, what=what)
