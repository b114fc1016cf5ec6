"""Batched direct gets against the real nats-server: paging, newest copy per subject, absent subjects, errors,
and the run loader built on them (the run's bundle, and the scenario messages when there is none)."""

from __future__ import annotations

import json

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from services.ingest.publisher import RunPublisher, encode_bundle
from shared import bus, directget, subjects
from shared.resultsfile import ParsedRun, decode_results
from shared.runs import ScenariosMissingError, SupersededError, latest_manifest, load_scenarios
from shared.schemas import RunBundle, RunManifest, Scenario, ScenarioMessage

STREAM = "DG_TEST"


async def _stream(nc: NATS) -> None:
    config = StreamConfig(name=STREAM, subjects=["dg.>"], allow_direct=True, max_msgs_per_subject=1)
    await nc.jetstream().add_stream(config)


async def test_every_match_pages_through_more_than_one_request(nc: NATS) -> None:
    await _stream(nc)
    js = nc.jetstream()
    count = directget.PAGE * 2 + 7  # three requests: two full pages and a short one
    for index in range(count):
        await js.publish(f"dg.a.{index}", str(index).encode())
    await js.publish("dg.b.0", b"other subject tree")
    await js.publish("dg.a.5", b"newer")  # replaces the first copy (one message per subject)

    found = await directget.every_match(nc, STREAM, "dg.a.*")

    assert len(found) == count
    by_subject = {m.subject: m.data for m in found}
    assert by_subject["dg.a.5"] == b"newer"
    assert by_subject[f"dg.a.{count - 1}"] == str(count - 1).encode()
    assert [m.seq for m in found] == sorted(m.seq for m in found)  # stream order
    assert all(m.subject.startswith("dg.a.") for m in found)


async def test_every_match_with_nothing_stored_is_empty(nc: NATS) -> None:
    await _stream(nc)
    assert await directget.every_match(nc, STREAM, "dg.none.*") == []


async def test_last_of_each_leaves_out_subjects_without_a_message(nc: NATS) -> None:
    await _stream(nc)
    js = nc.jetstream()
    await js.publish("dg.x", b"1")
    await js.publish("dg.x", b"2")
    await js.publish("dg.y", b"3", headers={"TE-Parts": "2"})

    found = await directget.last_of_each(nc, STREAM, ["dg.x", "dg.y", "dg.z"])

    assert sorted(found) == ["dg.x", "dg.y"]
    assert found["dg.x"].data == b"2"
    assert found["dg.y"].headers["TE-Parts"] == "2"
    assert await directget.last_of_each(nc, STREAM, ["dg.z"]) == {}
    assert await directget.last_of_each(nc, STREAM, []) == {}


async def test_a_stream_that_does_not_exist_is_no_responders(nc: NATS) -> None:
    with pytest.raises(nats.errors.NoRespondersError):
        await directget.last_of_each(nc, "DG_MISSING", ["dg.x"])


async def test_too_many_subjects_is_refused_before_asking(nc: NATS) -> None:
    with pytest.raises(ValueError, match="at most"):
        await directget.last_of_each(nc, STREAM, [f"dg.{i}" for i in range(directget.MULTI_LAST_MAX + 1)])


def _manifest(count: int) -> RunManifest:
    return RunManifest(
        run_id="test_results_20990101_000000",
        digest="0123456789abcdef",
        file_name="test_results_20990101_000000.json",
        file_sha256="0" * 64,
        file_bytes=1,
        scenario_count=count,
        generation=1,
        ingested_at=1.0,
    )


async def test_the_run_loader_returns_file_order_and_notices_a_missing_scenario(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    manifest = _manifest(4)
    # Published out of order: the loader orders by the scenario's index, not by stream sequence.
    for index in (2, 0, 3, 1):
        message = ScenarioMessage(
            run_id=manifest.run_id, digest=manifest.digest, index=index, scenario=Scenario(name=f"s{index}")
        )
        await js.publish(subjects.scenario_subject(manifest.digest, index), msgspec.json.encode(message))
    await js.publish(subjects.run_subject(manifest.digest), msgspec.json.encode(manifest))

    loaded = await load_scenarios(nc, manifest)
    assert [s.scenario.name for s in loaded] == ["s0", "s1", "s2", "s3"]
    assert await latest_manifest(nc, manifest.digest) == manifest
    assert await latest_manifest(nc, "fedcba9876543210") is None

    with pytest.raises(ScenariosMissingError, match="4 of 5"):
        await load_scenarios(nc, _manifest(5))


async def test_scenarios_stored_after_the_manifest_mean_a_newer_publication(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    manifest = _manifest(2)
    for index in range(2):
        message = ScenarioMessage(
            run_id=manifest.run_id, digest=manifest.digest, index=index, scenario=Scenario()
        )
        await js.publish(subjects.scenario_subject(manifest.digest, index), msgspec.json.encode(message))
    ack = await js.publish(subjects.run_subject(manifest.digest), msgspec.json.encode(manifest))
    assert len(await load_scenarios(nc, manifest, manifest_seq=ack.seq)) == 2

    # A re-publication (say, re-enriched telemetry) replaces scenario 1 after that manifest was stored.
    again = ScenarioMessage(
        run_id=manifest.run_id, digest=manifest.digest, index=1, scenario=Scenario(name="new")
    )
    await js.publish(subjects.scenario_subject(manifest.digest, 1), msgspec.json.encode(again))
    with pytest.raises(SupersededError):
        await load_scenarios(nc, manifest, manifest_seq=ack.seq)
    # Without the manifest's sequence nothing is checked: readers that want the newest content get it.
    assert (await load_scenarios(nc, manifest))[1].scenario.name == "new"


async def test_last_of_answers_with_the_message_alone(nc: NATS) -> None:
    await _stream(nc)
    js = nc.jetstream()
    await js.publish("dg.one", b"old")
    ack = await js.publish("dg.one", b"new")

    found = await directget.last_of(nc, STREAM, "dg.one")

    assert found is not None and (found.subject, found.seq, found.data) == ("dg.one", ack.seq, b"new")
    assert await directget.last_of(nc, STREAM, "dg.nothing") is None


def _run(file_name: str, count: int) -> ParsedRun:
    scenarios = [
        {
            "name": f"{i + 1} Streams @ 2500k",
            "bitrate": "2500k",
            "start_time": 1e9 + 10 * i,
            "end_time": 1e9 + 10 * i + 5,
        }
        for i in range(count)
    ]
    return decode_results(json.dumps({"scenarios": scenarios}).encode(), file_name)


def _scenario(manifest: RunManifest, index: int, name: str) -> bytes:
    return msgspec.json.encode(
        ScenarioMessage(
            run_id=manifest.run_id, digest=manifest.digest, index=index, scenario=Scenario(name=name)
        )
    )


async def _publish_bundle(
    nc: NATS, digest: str, generation: int, names: list[str], manifest: RunManifest
) -> int:
    ack = await nc.jetstream().publish(
        subjects.bundle_subject(digest),
        encode_bundle(digest, generation, [_scenario(manifest, i, n) for i, n in enumerate(names)]),
    )
    return ack.seq


async def test_the_run_loader_reads_the_bundle_of_the_manifests_generation(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    manifest = _manifest(2)
    for index in range(2):
        await js.publish(
            subjects.scenario_subject(manifest.digest, index), _scenario(manifest, index, f"msg{index}")
        )
    await _publish_bundle(nc, manifest.digest, 1, ["bundled0", "bundled1"], manifest)
    ack = await js.publish(subjects.run_subject(manifest.digest), msgspec.json.encode(manifest))

    # The names tell which copy was read: the bundle, in one request.
    loaded = await load_scenarios(nc, manifest, manifest_seq=ack.seq)
    assert [s.scenario.name for s in loaded] == ["bundled0", "bundled1"]

    # A bundle of another generation (a newer publication's too large to bundle left the old one) is not
    # the manifest's: the scenario messages are read instead.
    second = msgspec.structs.replace(manifest, generation=2)
    assert [s.scenario.name for s in await load_scenarios(nc, second)] == ["msg0", "msg1"]
    # Nor is a bundle with fewer scenarios than the manifest counts.
    await _publish_bundle(nc, manifest.digest, 1, ["only one"], manifest)
    assert [s.scenario.name for s in await load_scenarios(nc, manifest)] == ["msg0", "msg1"]


async def test_a_bundle_stored_after_the_manifest_means_a_newer_publication(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    manifest = _manifest(1)
    await js.publish(subjects.scenario_subject(manifest.digest, 0), _scenario(manifest, 0, "a"))
    ack = await js.publish(subjects.run_subject(manifest.digest), msgspec.json.encode(manifest))
    await _publish_bundle(nc, manifest.digest, 1, ["again"], manifest)

    with pytest.raises(SupersededError):
        await load_scenarios(nc, manifest, manifest_seq=ack.seq)
    assert [s.scenario.name for s in await load_scenarios(nc, manifest)] == ["again"]


async def test_ingest_bundles_a_run_only_when_it_fits_in_one_message(nc: NATS) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    kv = await bus.ensure_kv(js, subjects.KV_INGESTED)
    small = _run("test_results_20990101_000001.json", 3)
    outcome = await RunPublisher(js, kv, max_payload=nc.max_payload).publish(small)

    stored = await directget.last_of(nc, subjects.INGEST_STREAM, subjects.bundle_subject(small.digest))
    assert stored is not None and stored.headers["Nats-Msg-Id"] == f"{small.digest}:1:bundle"
    bundle = msgspec.json.decode(stored.data, type=RunBundle)
    assert (bundle.digest, bundle.generation) == (small.digest, outcome.generation)
    # The bundle holds exactly the scenario messages, byte for byte.
    singles = await directget.every_match(
        nc, subjects.INGEST_STREAM, subjects.scenario_wildcard(small.digest)
    )
    assert [msgspec.json.encode(s) for s in bundle.scenarios] == [m.data for m in singles]

    # Each scenario fits in a message of this size, the three together do not: no bundle, and the run still
    # loads from its scenario messages.
    big = _run("test_results_20990101_000002.json", 3)
    one = max(len(m.data) for m in singles)
    await RunPublisher(js, kv, max_payload=one + 1024).publish(big)
    assert await directget.last_of(nc, subjects.INGEST_STREAM, subjects.bundle_subject(big.digest)) is None
    manifest = await latest_manifest(nc, big.digest)
    assert manifest is not None and len(await load_scenarios(nc, manifest)) == 3
