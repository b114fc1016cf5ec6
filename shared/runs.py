"""Reading a published run back from the ingest stream: the one run loader every service uses.

A run is its manifest (``te.ingest.run.<digest>``) plus one message per scenario
(``te.ingest.scenario.<digest>.<index>``) and, when it fits in one message, the same scenarios again in one
bundle (``te.ingest.bundle.<digest>``); the ingest stream keeps one message per subject, so a direct get by
subject returns the newest copy of each. The loader reads the bundle (one message) and falls back to the
scenario messages (a batched read) when there is none of the manifest's generation.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec

from shared import directget, subjects
from shared.schemas import ResultEnvelope, RunBundle, RunManifest, ScenarioMessage

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS
    from nats.js import JetStreamContext

R = TypeVar("R", bound=ResultEnvelope)

_MANIFEST = msgspec.json.Decoder(RunManifest)
_SCENARIO = msgspec.json.Decoder(ScenarioMessage)
_BUNDLE = msgspec.json.Decoder(RunBundle)


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


async def latest_manifest(nc: NATS, digest: str) -> RunManifest | None:
    """The newest manifest stored for this digest, or None."""
    msg = await directget.last_of(nc, subjects.INGEST_STREAM, subjects.run_subject(digest))
    return _MANIFEST.decode(msg.data) if msg is not None else None


class ScenariosMissingError(Exception):
    """Fewer scenario messages are stored than the manifest counts (a newer publication is replacing them);
    reading again later succeeds."""


class SupersededError(Exception):
    """A newer publication of the same content replaced scenarios after this manifest was stored."""


async def load_scenarios(
    nc: NATS, manifest: RunManifest, *, manifest_seq: int | None = None
) -> list[ScenarioMessage]:
    """Every scenario message of the run, in file order: from the run's bundle when it holds the manifest's
    generation, else from the scenario messages, read in batches (one request per ``directget.PAGE``).

    ``manifest_seq`` (the manifest's stream sequence) makes it check that what it read was stored before
    that manifest: ingest publishes a run's scenarios, its bundle and then its manifest, so anything stored
    later belongs to a newer publication (SupersededError; that publication's own manifest follows)."""
    bundle_msg = await directget.last_of(nc, subjects.INGEST_STREAM, subjects.bundle_subject(manifest.digest))
    if bundle_msg is not None:
        bundle = _BUNDLE.decode(bundle_msg.data)
        if bundle.generation == manifest.generation and len(bundle.scenarios) == manifest.scenario_count:
            if manifest_seq is not None and bundle_msg.seq > manifest_seq:
                raise SupersededError(f"run {manifest.run_id}: it was published again after this manifest")
            return bundle.scenarios
    wildcard = subjects.scenario_wildcard(manifest.digest)
    stored = await directget.every_match(nc, subjects.INGEST_STREAM, wildcard)
    if manifest_seq is not None and any(s.seq > manifest_seq for s in stored):
        raise SupersededError(
            f"run {manifest.run_id}: its scenarios were published again after this manifest"
        )
    by_index = {m.index: m for m in (_SCENARIO.decode(s.data) for s in stored)}
    if len(by_index) != manifest.scenario_count or any(i not in by_index for i in range(len(by_index))):
        raise ScenariosMissingError(
            f"run {manifest.run_id}: {len(by_index)} of {manifest.scenario_count} scenario messages stored"
        )
    return [by_index[i] for i in range(manifest.scenario_count)]


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
    nc: NATS, kind: str, digest: str, data: bytes, headers: Mapping[str, str] | None
) -> bytes:
    """The whole result payload of a message on ``te.results.<kind>.<digest>`` (reassembled from its parts,
    read in one request, when it has the ``TE-Parts`` header)."""
    count = int((headers or {}).get(PARTS_HEADER, "0") or 0)
    if not count:
        return data
    wanted = [subjects.result_part_subject(kind, digest, index) for index in range(count)]
    found = await directget.last_of_each(nc, subjects.RESULTS_STREAM, wanted)
    missing = [index for index, subject in enumerate(wanted) if subject not in found]
    if missing:
        raise PartsMissingError(f"{kind} result of {digest}: part {missing[0]} of {count} is gone")
    payload = b"".join(found[subject].data for subject in wanted)
    expected = int((headers or {}).get("TE-Bytes", "0") or 0)
    if expected and len(payload) != expected:
        raise PartsMissingError(f"{kind} result of {digest}: {len(payload)} of {expected} bytes")
    return payload


async def load_results(
    nc: NATS, digest: str, decoders: Mapping[str, msgspec.json.Decoder[Any]]
) -> dict[str, Any]:
    """The newest result of each kind in ``decoders`` for the run content ``digest``, read in one request
    (plus one per result that travels in parts); a kind with no result yet is absent."""
    wanted = {kind: subjects.result_subject(kind, digest) for kind in decoders}
    found = await directget.last_of_each(nc, subjects.RESULTS_STREAM, list(wanted.values()))
    results: dict[str, Any] = {}
    for kind, subject in wanted.items():
        msg = found.get(subject)
        if msg is not None:
            payload = await result_payload(nc, kind, digest, msg.data, msg.headers)
            results[kind] = decoders[kind].decode(payload)
    return results
