"""ensure_kv against the real nats-server: buckets follow the requested replicas, history and size limit."""

from __future__ import annotations

import nats.js.errors
import pytest
from nats.aio.client import Client as NATS

from shared import bus

BUCKET = "te_kv_test"


async def test_same_settings_twice_change_nothing(nc: NATS) -> None:
    js = nc.jetstream()
    kv = await bus.ensure_kv(js, BUCKET, history=5, replicas=1)
    await kv.put("run", b"1")
    before = (await js.stream_info(f"KV_{BUCKET}")).config
    again = await bus.ensure_kv(js, BUCKET, history=5, replicas=1)
    after = (await js.stream_info(f"KV_{BUCKET}")).config
    assert after == before
    assert after.num_replicas == 1 and after.max_msgs_per_subject == 5
    assert (await again.get("run")).value == b"1"


async def test_an_existing_bucket_is_brought_to_the_new_history_and_size(nc: NATS) -> None:
    js = nc.jetstream()
    kv = await bus.ensure_kv(js, BUCKET, history=1, replicas=1)
    await kv.put("run", b"old")
    created = (await js.stream_info(f"KV_{BUCKET}")).config
    assert created.max_msgs_per_subject == 1 and created.max_bytes == -1

    kv = await bus.ensure_kv(js, BUCKET, history=5, replicas=1, max_bytes=1 << 20)
    updated = (await js.stream_info(f"KV_{BUCKET}")).config
    assert updated.max_msgs_per_subject == 5
    assert updated.max_bytes == 1 << 20
    # Only the requested fields moved: the KV flags and the subjects are the bucket's own.
    assert updated.subjects == created.subjects
    assert updated.allow_rollup_hdrs and updated.deny_delete
    # The data survives, and the new history is in force: five revisions are kept now.
    assert (await kv.get("run")).value == b"old"
    for i in range(6):
        await kv.put("run", str(i).encode())
    assert len(await kv.history("run")) == 5

    # max_bytes=None keeps the limit the bucket has rather than lifting it.
    await bus.ensure_kv(js, BUCKET, history=5, replicas=1)
    assert (await js.stream_info(f"KV_{BUCKET}")).config.max_bytes == 1 << 20


async def test_a_replicas_change_reaches_the_server_and_its_refusal_names_the_bucket(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_kv(js, BUCKET, history=5, replicas=1)
    # A single-node server cannot hold three replicas: the update must be sent and its refusal surfaced,
    # not swallowed (the bucket would silently stay at R1 on a cluster that could not take R3 either).
    with pytest.raises(bus.BucketUpdateError) as raised:
        await bus.ensure_kv(js, BUCKET, history=5, replicas=3)
    message = str(raised.value)
    assert BUCKET in message and f"KV_{BUCKET}" in message
    assert "replicas 1 -> 3" in message
    # The server's own answer is kept, and its text is part of the message.
    cause = raised.value.__cause__
    assert isinstance(cause, nats.js.errors.APIError) and cause.description
    assert cause.description in message
    unchanged = (await js.stream_info(f"KV_{BUCKET}")).config
    assert unchanged.num_replicas == 1 and unchanged.max_msgs_per_subject == 5
