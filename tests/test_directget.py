"""Batched direct gets against the real nats-server: paging, newest copy per subject, absent subjects, errors,
and the run loader built on them."""

from __future__ import annotations

import msgspec
import nats.errors
import pytest
from nats.aio.client import Client as NATS
from nats.js.api import StreamConfig

from shared import bus, directget, subjects
from shared.runs import ScenariosMissingError, SupersededError, latest_manifest, load_scenarios
from shared.schemas import RunManifest, Scenario, ScenarioMessage

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
