"""Ingest against a real nats-server: what is published, what is not, and what is rejected and how."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from services.ingest.service import IngestService
from shared import subjects
from shared.schemas import IngestRecord
from tests.conftest import DATA, EXAMPLES, NatsServer
from tests.helpers import (
    count_manifests,
    errors,
    eventually,
    manifests,
    running_ingest,
    scenario_msgs,
    stream_messages,
    without_nulls,
)

EXAMPLE_FILES = sorted(DATA.glob("test_results_*.json")) + sorted(EXAMPLES.glob("test_results_*.json"))


def files_count(service: IngestService, outcome: str) -> float:
    value = service.metrics.registry.get_sample_value("transcode_ingest_files_total", {"outcome": outcome})
    return value or 0.0


@pytest.mark.parametrize("source", EXAMPLE_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
async def test_dropped_example_yields_exactly_its_scenarios(
    nc: NATS, nats_server: NatsServer, results_dir: Path, source: Path
) -> None:
    async with running_ingest(nats_server.url, results_dir):
        shutil.copy(source, results_dir / source.name)
        await count_manifests(nc, 1)

    raw = source.read_bytes()
    expected = json.loads(raw)
    sha = hashlib.sha256(raw).hexdigest()
    digest = hashlib.sha256(f"{source.stem}\n{sha}".encode()).hexdigest()[:16]
    [manifest] = await manifests(nc)
    assert manifest.run_id == source.stem
    assert manifest.file_sha256 == sha
    assert manifest.digest == digest
    assert manifest.scenario_count == len(expected["scenarios"])
    assert manifest.generation == 1
    assert manifest.test_date == expected["test_date"]
    assert manifest.file_bytes == len(raw)

    messages = sorted(await scenario_msgs(nc), key=lambda m: m.index)
    assert [m.index for m in messages] == list(range(len(expected["scenarios"])))
    for message, scenario in zip(messages, expected["scenarios"], strict=True):
        assert message.run_id == source.stem
        assert message.digest == digest
        assert msgspec.to_builtins(message.scenario) == without_nulls(scenario)
        assert message.extra == {}
        assert message.schema_version == 1
    assert await errors(nc) == []


async def test_unknown_fields_are_preserved_in_extra(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    doc = {"scenarios": [{"name": "1 Streams @ 1000k", "bitrate": "1000k", "gpu_model": "L4", "tags": ["a"]}]}
    async with running_ingest(nats_server.url, results_dir):
        (results_dir / "test_results_20260101_000000.json").write_text(json.dumps(doc))
        await count_manifests(nc, 1)
    [message] = await scenario_msgs(nc)
    assert message.extra == {"gpu_model": "L4", "tags": ["a"]}
    assert message.scenario.name == "1 Streams @ 1000k"


async def test_redrop_touch_and_restart_publish_nothing_new(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    source = DATA / "test_results_20251229_092224.json"
    target = results_dir / source.name
    async with running_ingest(nats_server.url, results_dir) as service:
        shutil.copy(source, target)
        await count_manifests(nc, 1)
        info = await nc.jetstream().stream_info(subjects.INGEST_STREAM)
        last_seq = info.state.last_seq
        # Same bytes written again, and a touch: both are events, neither is new content.
        target.write_bytes(source.read_bytes())
        os.utime(target)

        async def seen_duplicates() -> bool:
            return files_count(service, "duplicate") >= 1

        await eventually(seen_duplicates, what="the re-save to be recognised as a duplicate")
    # A restart scans the directory again.
    async with running_ingest(nats_server.url, results_dir):
        pass
    info = await nc.jetstream().stream_info(subjects.INGEST_STREAM)
    assert info.state.last_seq == last_seq
    assert len(await manifests(nc)) == 1


async def test_changed_file_is_a_new_generation(nc: NATS, nats_server: NatsServer, results_dir: Path) -> None:
    doc = json.loads((DATA / "test_results_20251229_172550.json").read_text())
    target = results_dir / "test_results_20251229_172550.json"
    async with running_ingest(nats_server.url, results_dir):
        target.write_text(json.dumps(doc))
        await count_manifests(nc, 1)
        doc["scenarios"][0]["vmaf_score"] = 91.5
        target.write_text(json.dumps(doc))
        await count_manifests(nc, 2)
    generations = sorted(m.generation for m in await manifests(nc))
    assert generations == [1, 2]
    latest = [m for m in await scenario_msgs(nc) if m.scenario.vmaf_score == 91.5]
    assert len(latest) == 1


async def test_partially_written_file_is_published_once_complete(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    raw = (DATA / "test_results_20251228_203216.json").read_bytes()
    target = results_dir / "test_results_20251228_203216.json"
    async with running_ingest(nats_server.url, results_dir, settle_seconds=20):
        with target.open("wb") as fh:
            fh.write(raw[: len(raw) // 2])
            fh.flush()
            await asyncio.sleep(0.6)  # the watcher sees the half-written file and must wait
            assert await manifests(nc) == []
            fh.write(raw[len(raw) // 2 :])
        await count_manifests(nc, 1)
        await asyncio.sleep(0.3)
    assert len(await manifests(nc)) == 1
    assert len(await scenario_msgs(nc)) == 15
    assert await errors(nc) == []
    assert not (results_dir / "rejected").exists()


def _huge(path: Path, size: int) -> None:
    with path.open("wb") as fh:
        fh.write(b'{"scenarios": [' + b" " * (size - 20) + b"]}")


BAD_FILES: list[tuple[str, str, str | None, str | None]] = [
    # (content or marker, reason, json_path, expected)
    ('{"scenarios": [}', "invalid_json", None, "valid JSON"),
    ('{"scenarios": [{"name": "x", "fps": "thirty"}]}', "schema", "$.scenarios[0].fps", "int | float | null"),
    ('{"test_date": "2025-12-28"}', "schema", "$", None),
    ("HUGE", "too_large", None, f"<= {16 * 1024 * 1024} bytes"),
    ('{"scenarios": [{"name": "x", "vmaf_score": NaN}]}', "invalid_json", None, "valid JSON"),
]


@pytest.mark.parametrize(
    ("content", "reason", "json_path", "expected"),
    BAD_FILES,
    ids=["malformed", "wrong-type", "no-scenarios", "20MiB", "nan"],
)
async def test_bad_file_is_rejected_and_next_file_still_flows(
    nc: NATS,
    nats_server: NatsServer,
    results_dir: Path,
    content: str,
    reason: str,
    json_path: str | None,
    expected: str | None,
) -> None:
    bad = results_dir / "test_results_20250101_000000.json"
    good = DATA / "test_results_20251229_172550.json"
    async with running_ingest(nats_server.url, results_dir, settle_seconds=1.0):
        if content == "HUGE":
            _huge(bad, 20 * 1024 * 1024)
        else:
            bad.write_text(content)

        async def rejected() -> bool:
            return (results_dir / "rejected" / bad.name).exists() and len(await errors(nc)) == 1

        await eventually(rejected, what="the bad file to be moved aside")
        shutil.copy(good, results_dir / good.name)
        await count_manifests(nc, 1)

    assert not bad.exists()
    sidecar = json.loads((results_dir / "rejected" / f"{bad.name}.error.json").read_text())
    [event] = await errors(nc)
    for record in (sidecar, msgspec.to_builtins(event)):
        assert record["reason"] == reason
        assert record["file"] == bad.name
        assert record.get("json_path") == json_path
        assert record.get("expected") == expected
        assert record["service"] == "ingest"
        assert record["moved_to"] == str(results_dir / "rejected" / bad.name)
    if reason == "schema" and json_path == "$":
        assert "scenarios" in event.message
    if content.endswith("NaN}]}"):
        assert "NaN" in event.message and "line 1" in event.message
    [manifest] = await manifests(nc)
    assert manifest.run_id == good.stem


async def test_symlink_out_of_directory_is_not_read(
    nc: NATS, nats_server: NatsServer, results_dir: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "secret.json"
    shutil.copy(DATA / "test_results_20251229_172550.json", outside)
    link = results_dir / "test_results_20250102_000000.json"
    async with running_ingest(nats_server.url, results_dir):
        link.symlink_to(outside)

        async def rejected() -> bool:
            return len(await errors(nc)) == 1

        await eventually(rejected, what="the escaping symlink to be reported")
        shutil.copy(
            DATA / "test_results_20251229_172550.json", results_dir / "test_results_20251229_172550.json"
        )
        await count_manifests(nc, 1)
    [event] = await errors(nc)
    assert event.reason == "outside_directory"
    assert outside.exists()  # the target is never touched
    assert (results_dir / "rejected" / link.name).is_symlink()
    assert [m.run_id for m in await manifests(nc)] == ["test_results_20251229_172550"]


async def test_symlink_inside_directory_is_followed(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    inner = results_dir / "archive"
    inner.mkdir()
    shutil.copy(DATA / "test_results_20251229_172550.json", inner / "run.json")
    async with running_ingest(nats_server.url, results_dir):
        (results_dir / "test_results_20251229_172550.json").symlink_to(inner / "run.json")
        await count_manifests(nc, 1)


async def test_non_matching_names_are_ignored(nc: NATS, nats_server: NatsServer, results_dir: Path) -> None:
    async with running_ingest(nats_server.url, results_dir):
        (results_dir / "notes.json").write_text("{not json")
        (results_dir / "test_results_x.json.tmp").write_text("{")
        shutil.copy(
            DATA / "test_results_20251229_172550.json", results_dir / "test_results_20251229_172550.json"
        )
        await count_manifests(nc, 1)
        await asyncio.sleep(0.3)
    assert await errors(nc) == []
    assert (results_dir / "notes.json").exists()


async def test_crash_mid_publication_resumes_without_duplicates(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    """Simulate a crash after some scenarios went out: the record says 'publishing', no manifest exists."""
    from services.ingest.publisher import kv_key
    from shared.resultsfile import decode_results

    source = DATA / "test_results_20251229_092224.json"
    run = decode_results(source.read_bytes(), source.name)
    js = nc.jetstream()
    async with running_ingest(nats_server.url, results_dir / "elsewhere"):
        pass  # creates the streams and bucket
    kv = await js.key_value(subjects.KV_INGESTED)
    await kv.put(
        kv_key(run.run_id),
        msgspec.json.encode(
            IngestRecord(
                run_id=run.run_id, file_sha256=run.sha256, generation=1, state="publishing", updated_at=0.0
            )
        ),
    )
    for index in range(3):
        await js.publish(
            subjects.scenario_subject(run.digest, index),
            b"{}",
            headers={"Nats-Msg-Id": f"{run.digest}:1:{index}"},
        )
    shutil.copy(source, results_dir / source.name)
    async with running_ingest(nats_server.url, results_dir):
        await count_manifests(nc, 1)
    subjects_seen = [
        s for s, _ in await stream_messages(js, subjects.INGEST_STREAM, subjects.INGEST_SCENARIO)
    ]
    assert len(subjects_seen) == 12 == len(set(subjects_seen))
    record = msgspec.json.decode((await kv.get(kv_key(run.run_id))).value or b"", type=IngestRecord)
    assert (record.state, record.generation) == ("published", 1)


async def test_nats_outage_delays_but_loses_nothing(results_dir: Path, tmp_path: Path) -> None:
    from tests.conftest import start_nats

    server = start_nats(tmp_path / "store")
    try:
        async with running_ingest(server.url, results_dir) as service:
            server.stop()
            shutil.copy(DATA / "test_results_20251229_092224.json", results_dir)
            await asyncio.sleep(1.5)  # the ingest tries, fails, backs off
            server.start()

            async def published() -> bool:
                return files_count(service, "published") == 1

            await eventually(published, timeout=30, what="publication after NATS came back")
        import nats as nats_client

        client = await nats_client.connect(server.url)
        try:
            assert len(await manifests(client)) == 1
            assert len(await scenario_msgs(client)) == 12
        finally:
            await client.close()
    finally:
        server.stop()


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args], capture_output=True, text=True, timeout=60, env=env
    )


async def test_one_shot_mode(nc: NATS, nats_server: NatsServer, tmp_path: Path) -> None:
    good = DATA / "test_results_20251229_172550.json"
    result = await asyncio.to_thread(_cli, "ingest", "--nats-url", nats_server.url, str(good))
    assert result.returncode == 0, result.stderr
    assert "published as run test_results_20251229_172550" in result.stdout
    again = await asyncio.to_thread(_cli, "ingest", "--nats-url", nats_server.url, str(good))
    assert again.returncode == 0 and "already published" in again.stdout

    bad = tmp_path / "test_results_bad.json"
    bad.write_text('{"scenarios": [{"fps": "thirty"}]}')
    failed = await asyncio.to_thread(_cli, "ingest", "--nats-url", nats_server.url, str(bad))
    assert failed.returncode == 1
    assert f"{bad}: schema at $.scenarios[0].fps" in failed.stderr
    assert "Traceback" not in failed.stderr
    assert bad.exists()  # one-shot mode never moves the user's file
    assert len(await manifests(nc)) == 1
    assert [e.reason for e in await errors(nc)] == ["schema"]


async def test_malformed_env_value_is_one_clear_line(nats_server: NatsServer) -> None:
    env = {**os.environ, "INGEST_SETTLE_SECONDS": "soon"}
    result = await asyncio.to_thread(_cli, "ingest", "--help", env=env)
    assert result.returncode != 0
    assert "INGEST_SETTLE_SECONDS" in result.stderr and "Traceback" not in result.stderr


async def test_hundred_scenarios_of_one_hour_telemetry_fit_the_payload_limit(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    n = 3600
    scenario = {
        "name": "4 Streams @ 2500k",
        "bitrate": "2500k",
        "resolution": "1280x720",
        "fps": 30,
        "start_time": 1_766_948_030.5,
        "end_time": 1_766_948_030.5 + n,
        "telemetry": {
            "step_seconds": 1,
            "power_watts": [round(10 + (i % 17) * 0.123456, 6) for i in range(n)],
            "cpu_usage_cores": [round(2 + (i % 13) * 0.0123456, 6) for i in range(n)],
            "container_cpu_percent": [round(40 + (i % 11) * 0.123456, 6) for i in range(n)],
            "gpu_usage_cores": [round((i % 7) * 0.0123456, 6) for i in range(n)],
            "energy_joules": 40_000.0,
        },
    }
    doc = {"test_date": "2026-01-01T00:00:00", "scenarios": [scenario] * 100}
    (results_dir / "test_results_20260101_120000.json").write_text(json.dumps(doc))
    async with running_ingest(nats_server.url, results_dir):
        await count_manifests(nc, 1)
    messages = await scenario_msgs(nc)
    assert len(messages) == 100
    power = messages[0].scenario.telemetry.power_watts if messages[0].scenario.telemetry else None
    assert isinstance(power, list) and len(power) == n
