"""Reading a published run back from the ingest stream: the one run loader every service uses.

A run is its manifest (``te.ingest.run.<digest>``) plus one message per scenario
(``te.ingest.scenario.<digest>.<index>``); the ingest stream keeps one message per subject, so a direct get
by subject returns the newest copy of each.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from shared import subjects
from shared.schemas import ResultEnvelope, RunManifest, ScenarioMessage

if TYPE_CHECKING:
    from nats.js import JetStreamContext

R = TypeVar("R", bound=ResultEnvelope)

_MANIFEST = msgspec.json.Decoder(RunManifest)
_SCENARIO = msgspec.json.Decoder(ScenarioMessage)


@dataclass(frozen=True)
class RunInput:
    """What a worker computes from: the manifest and every scenario message of one run generation."""

    manifest: RunManifest
    scenarios: list[ScenarioMessage]
    #: Results of the kinds a derived kind needs (``Kind.needs``), by kind name; empty otherwise.
    results: Mapping[str, ResultEnvelope] = field(default_factory=dict)
    #: perf_counter() when the run was loaded; results report the compute time from here.
    started: float = field(default_factory=time.perf_counter)
    #: Runs still waiting behind this one for the same kind (from the consumer), so a kind may defer
    #: costly work that the last run of a burst will do anyway.
    backlog: int = 0

    def result(self, kind: str, cls: type[R]) -> R | None:
        found = self.results.get(kind)
        return found if isinstance(found, cls) else None


def make_result(cls: type[R], run: RunInput, **fields: Any) -> R:
    """The one result envelope: identity of the run generation plus when and how long, then the kind's own
    fields. Every result Struct derives from ``shared.schemas.ResultEnvelope``."""
    m = run.manifest
    return cls(
        run_id=m.run_id,
        digest=m.digest,
        generation=m.generation,
        computed_at=time.time(),
        compute_seconds=time.perf_counter() - run.started,
        **fields,
    )


async def latest_manifest(js: JetStreamContext, digest: str) -> RunManifest | None:
    """The newest manifest stored for this digest, or None."""
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_last_msg(subjects.INGEST_STREAM, subjects.run_subject(digest), direct=True)
    except NotFoundError:
        return None
    return _MANIFEST.decode(raw.data or b"")


#: Requests in flight at once when reading a run's scenarios (round trips overlap; order is kept).
READ_CONCURRENCY = 64


async def load_scenarios(js: JetStreamContext, manifest: RunManifest) -> list[ScenarioMessage]:
    """Every scenario message of the run, in file order."""
    import asyncio

    async def one(index: int) -> ScenarioMessage:
        raw = await js.get_last_msg(
            subjects.INGEST_STREAM, subjects.scenario_subject(manifest.digest, index), direct=True
        )
        return _SCENARIO.decode(raw.data or b"")

    scenarios: list[ScenarioMessage] = []
    for start in range(0, manifest.scenario_count, READ_CONCURRENCY):
        stop = min(start + READ_CONCURRENCY, manifest.scenario_count)
        scenarios += await asyncio.gather(*(one(i) for i in range(start, stop)))
    return scenarios


#: Header of a result message whose payload travels in parts (see shared/subjects.py ``PARTS``).
PARTS_HEADER = "TE-Parts"
#: Room left in a message for headers and protocol overhead, bytes.
_HEADROOM = 4096


class PartsMissingError(Exception):
    """A part of a result is gone (replaced by a newer computation); the newer pointer follows."""


async def publish_result(
    js: JetStreamContext, kind: str, result: ResultEnvelope, msg_id: str, max_payload: int
) -> int:
    """Publish a result on ``te.results.<kind>.<digest>``, whatever its size; returns the parts used (0: one
    message). A payload over the server's limit goes as consecutive byte slices on ``te.parts.*``, then a
    pointer message carrying only the envelope (so index readers need not fetch the parts)."""
    payload = msgspec.json.encode(result)
    subject = subjects.result_subject(kind, result.digest)
    room = max_payload - _HEADROOM
    if len(payload) <= room:
        await js.publish(subject, payload, stream=subjects.RESULTS_STREAM, headers={"Nats-Msg-Id": msg_id})
        return 0
    parts = [payload[i : i + room] for i in range(0, len(payload), room)]
    for index, part in enumerate(parts):
        await js.publish(
            subjects.result_part_subject(kind, result.digest, index),
            part,
            stream=subjects.RESULTS_STREAM,
            headers={"Nats-Msg-Id": f"{msg_id}:part{index}"},
        )
    envelope = ResultEnvelope(
        run_id=result.run_id,
        digest=result.digest,
        generation=result.generation,
        computed_at=result.computed_at,
        compute_seconds=result.compute_seconds,
    )
    await js.publish(
        subject,
        msgspec.json.encode(envelope),
        stream=subjects.RESULTS_STREAM,
        headers={"Nats-Msg-Id": msg_id, PARTS_HEADER: str(len(parts)), "TE-Bytes": str(len(payload))},
    )
    return len(parts)


async def result_payload(
    js: JetStreamContext, kind: str, digest: str, data: bytes, headers: dict[str, str] | None
) -> bytes:
    """The whole result payload of a message on ``te.results.<kind>.<digest>`` (reassembled from its parts
    when it has the ``TE-Parts`` header)."""
    from nats.js.errors import NotFoundError

    count = int((headers or {}).get(PARTS_HEADER, "0") or 0)
    if not count:
        return data
    chunks = []
    for index in range(count):
        try:
            raw = await js.get_last_msg(
                subjects.RESULTS_STREAM, subjects.result_part_subject(kind, digest, index), direct=True
            )
        except NotFoundError:
            raise PartsMissingError(f"{kind} result of {digest}: part {index} of {count} is gone") from None
        chunks.append(raw.data or b"")
    expected = int((headers or {}).get("TE-Bytes", "0") or 0)
    payload = b"".join(chunks)
    if expected and len(payload) != expected:
        raise PartsMissingError(f"{kind} result of {digest}: {len(payload)} of {expected} bytes")
    return payload


async def load_result(
    js: JetStreamContext, kind: str, digest: str, decoder: msgspec.json.Decoder[R]
) -> R | None:
    """The newest ``kind`` result of the run content ``digest``, or None when there is none yet."""
    from nats.js.errors import NotFoundError

    try:
        raw = await js.get_last_msg(
            subjects.RESULTS_STREAM, subjects.result_subject(kind, digest), direct=True
        )
    except NotFoundError:
        return None
    return decoder.decode(await result_payload(js, kind, digest, raw.data or b"", raw.headers))
