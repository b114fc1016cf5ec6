"""Publishing a parsed run exactly once per distinct content, across crashes and restarts.

Protocol (per run_id, recorded in KV ``te_ingested``):

1. Read the record. Same content already ``published`` -> nothing to do (a touch, a re-save, a restart).
2. Otherwise claim a *generation* with a compare-and-set write, state ``publishing`` (a crashed earlier
   attempt on the same content resumes with its generation).
3. Publish every scenario, then the run's bundle (all scenarios in one message, when it fits in one), then
   the manifest, each with ``Nats-Msg-Id = <digest>:<generation>:<index|bundle|run>``, waiting for each
   JetStream ack.
4. Mark the record ``published``.

A crash in step 3 is retried with the same message ids: inside JetStream's duplicate window the server
drops the copies; after it, the ingest stream keeps one message per subject (``max_msgs_per_subject=1``)
and every consumer keys its state by (digest, index), so a replay replaces rather than adds.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

import msgspec
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue

from shared import subjects
from shared.resultsfile import ParsedRun, ResultsFileError
from shared.schemas import (
    SCHEMA_VERSION,
    ErrorEvent,
    IngestRecord,
    RunManifest,
    ScenarioMessage,
    Telemetry,
)

log = logging.getLogger(__name__)

#: Scenario messages published at once (acks awaited per batch).
PUBLISH_CONCURRENCY = 64
_SAFE_KEY = re.compile(r"^[A-Za-z0-9_=-]+$")


def kv_key(run_id: str) -> str:
    """KV key for a run id. Plain ids stay readable; others are base64url-encoded behind ``b64.``."""
    if _SAFE_KEY.match(run_id):
        return run_id
    return "b64." + base64.urlsafe_b64encode(run_id.encode()).decode()


class PayloadTooLargeError(ResultsFileError):
    """A scenario that cannot travel in one NATS message: the file is rejected like any other bad input."""

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(
            "scenario_too_large",
            f"scenario {index} encodes to {size} bytes, over the server's max payload of {limit} bytes",
            json_path=f"$.scenarios[{index}]",
            expected=f"a scenario that encodes to under {limit} bytes",
        )
        self.index = index


@dataclass(frozen=True)
class PublishOutcome:
    run_id: str
    digest: str
    generation: int
    duplicate: bool


class ClaimLostError(Exception):
    """Another ingest replica updated the record first; the caller retries later."""


class RunPublisher:
    def __init__(self, js: JetStreamContext, kv: KeyValue, *, max_payload: int) -> None:
        self.js = js
        self.kv = kv
        self.max_payload = max_payload
        self._record_decoder = msgspec.json.Decoder(IngestRecord)

    async def _read_record(self, key: str) -> tuple[IngestRecord | None, int]:
        try:
            entry = await self.kv.get(key)
        except KeyNotFoundError:  # also KeyDeletedError
            return None, 0
        if entry.value is None:
            return None, entry.revision or 0
        return self._record_decoder.decode(entry.value), entry.revision or 0

    def encode_scenarios(
        self, run: ParsedRun, enriched: Sequence[Telemetry | None] | None = None
    ) -> list[bytes]:
        """Encode every scenario message, refusing any that cannot travel in one NATS message."""
        payloads = []
        for index, scenario in enumerate(run.results.scenarios):
            message = ScenarioMessage(
                run_id=run.run_id,
                digest=run.digest,
                index=index,
                scenario=scenario,
                extra=run.extras[index],
                enriched=enriched[index] if enriched is not None else None,
            )
            payload = msgspec.json.encode(message)
            # Headers take a little room as well.
            if len(payload) > self.max_payload - 512:
                raise PayloadTooLargeError(index, len(payload), self.max_payload)
            payloads.append(payload)
        return payloads

    async def is_published(self, run: ParsedRun) -> bool:
        """This exact content has been published completely already."""
        record, _ = await self._read_record(kv_key(run.run_id))
        return record is not None and record.file_sha256 == run.sha256 and record.state == "published"

    async def publish(
        self,
        run: ParsedRun,
        enriched: Sequence[Telemetry | None] | None = None,
        *,
        new_generation: bool = False,
    ) -> PublishOutcome:
        """Publish ``run`` unless this content is published already. ``new_generation`` publishes it again
        as a new generation even so (re-enrichment)."""
        payloads = self.encode_scenarios(run, enriched)
        key = kv_key(run.run_id)
        record, revision = await self._read_record(key)
        if record is not None and record.file_sha256 == run.sha256 and not new_generation:
            if record.state == "published":
                return PublishOutcome(run.run_id, run.digest, record.generation, duplicate=True)
            generation = record.generation  # resume a crashed attempt
        else:
            generation = record.generation + 1 if record is not None else 1
            claim = IngestRecord(
                run_id=run.run_id,
                file_sha256=run.sha256,
                generation=generation,
                state="publishing",
                updated_at=time.time(),
            )
            try:
                if revision:
                    revision = await self.kv.update(key, msgspec.json.encode(claim), last=revision)
                else:
                    revision = await self.kv.create(key, msgspec.json.encode(claim))
            except KeyWrongLastSequenceError as exc:
                raise ClaimLostError(run.run_id) from exc

        # Scenario messages go out in overlapping batches (each still waits for its JetStream ack); the
        # manifest follows only once every one of them is stored.
        for start in range(0, len(payloads), PUBLISH_CONCURRENCY):
            await asyncio.gather(
                *(
                    self.js.publish(
                        subjects.scenario_subject(run.digest, index),
                        payloads[index],
                        stream=subjects.INGEST_STREAM,
                        headers={"Nats-Msg-Id": f"{run.digest}:{generation}:{index}"},
                    )
                    for index in range(start, min(start + PUBLISH_CONCURRENCY, len(payloads)))
                )
            )
        bundle = encode_bundle(run.digest, generation, payloads)
        if len(bundle) <= self.max_payload - 512:
            await self.js.publish(
                subjects.bundle_subject(run.digest),
                bundle,
                stream=subjects.INGEST_STREAM,
                headers={"Nats-Msg-Id": f"{run.digest}:{generation}:bundle"},
            )
        manifest = RunManifest(
            run_id=run.run_id,
            digest=run.digest,
            file_name=run.file_name,
            file_sha256=run.sha256,
            file_bytes=run.size,
            scenario_count=len(payloads),
            generation=generation,
            ingested_at=time.time(),
            test_date=run.results.test_date,
            test_metadata=run.results.test_metadata,
        )
        await self.js.publish(
            subjects.run_subject(run.digest),
            msgspec.json.encode(manifest),
            stream=subjects.INGEST_STREAM,
            headers={"Nats-Msg-Id": f"{run.digest}:{generation}:run"},
        )
        done = IngestRecord(
            run_id=run.run_id,
            file_sha256=run.sha256,
            generation=generation,
            state="published",
            updated_at=time.time(),
        )
        await self.kv.put(key, msgspec.json.encode(done))
        return PublishOutcome(run.run_id, run.digest, generation, duplicate=False)


def encode_bundle(digest: str, generation: int, scenarios: Sequence[bytes]) -> bytes:
    """The ``RunBundle`` of already encoded scenario messages (spliced in as they are, not encoded again)."""
    return msgspec.json.encode(
        {
            "digest": digest,
            "generation": generation,
            "scenarios": [msgspec.Raw(p) for p in scenarios],
            "schema_version": SCHEMA_VERSION,
        }
    )


async def publish_error(js: JetStreamContext, event: ErrorEvent) -> None:
    await js.publish(
        subjects.error_subject(event.service), msgspec.json.encode(event), stream=subjects.EVENTS_STREAM
    )
