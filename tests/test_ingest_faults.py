"""Ingest under hostile input and hostile timing, against a real nats-server (issue 12).

One test per promise: values the maths cannot hold are rejected with their JSON path; every candidate file
ends in exactly one state; FIFOs are never opened; nothing dropped at start-up is lost; one-shot mode never
hangs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import msgspec
import pytest
from nats.aio.client import Client as NATS

from services.ingest.service import IngestMetrics, IngestService, open_publisher
from services.up import free_port
from shared import subjects
from shared.bus import NatsConfig
from shared.resultsfile import ResultsFileError
from tests.conftest import DATA, NatsServer
from tests.helpers import (
    OpenWatch,
    count_errors,
    count_manifests,
    errors,
    ingest_settings,
    manifests,
    running_ingest,
    scenario_msgs,
    sidecar,
)

GOOD = DATA / "test_results_20251229_172550.json"
BIG = "1" + "0" * 400  # a valid JSON integer no float can hold

#: name -> (the second scenario of the file as JSON text or a dict, or a whole document after "DOC:";
#: the reason; the JSON path)
POISON: dict[str, tuple[dict[str, Any] | str, str, str]] = {
    "fps": (f'{{"fps": {BIG}}}', "out_of_range", "$.scenarios[1].fps"),
    "output_fps": (
        f'{{"outputs": [{{"resolution": "1280x720", "fps": 30}}, {{"fps": {BIG}}}]}}',
        "out_of_range",
        "$.scenarios[1].outputs[1].fps",
    ),
    "total_frames": (f'{{"total_frames": {BIG}}}', "out_of_range", "$.scenarios[1].total_frames"),
    "dropped_frames": ({"dropped_frames": -1}, "out_of_range", "$.scenarios[1].dropped_frames"),
    "duration": (f'{{"duration": {BIG}}}', "out_of_range", "$.scenarios[1].duration"),
    "start_time": (f'{{"start_time": {BIG}}}', "out_of_range", "$.scenarios[1].start_time"),
    "end_time": ({"start_time": 1.7e9, "end_time": 1e11}, "out_of_range", "$.scenarios[1].end_time"),
    "streams": (f'{{"streams": {BIG}}}', "out_of_range", "$.scenarios[1].streams"),
    "bitrate": (f'{{"bitrate": {BIG}}}', "out_of_range", "$.scenarios[1].bitrate"),
    "unknown_field": (
        f'{{"gpu": {{"clock hz": [1, {BIG}]}}}}',
        "out_of_range",
        '$.scenarios[1].gpu["clock hz"][1]',
    ),
    "metadata": (
        f'DOC:{{"scenarios": [{{"name": "a"}}], "test_metadata": {{"seed": {BIG}}}}}',
        "out_of_range",
        "$.test_metadata.seed",
    ),
    "values": (
        '{"telemetry": {"power_watts": [1.0, 2.0, 1e400]}}',
        "out_of_range",
        "$.scenarios[1].telemetry.power_watts[2]",
    ),
    "timestamp_value": (
        f'{{"telemetry": {{"power_watts": {{"values": [1.0], "timestamps": [{BIG}]}}}}}}',
        "out_of_range",
        "$.scenarios[1].telemetry.power_watts.timestamps[0]",
    ),
    "lengths": (
        {"telemetry": {"power_watts": {"values": [1.0, 2.0, 3.0], "timestamps": [1.7e9, 1.7e9 + 1]}}},
        "inconsistent",
        "$.scenarios[1].telemetry.power_watts.timestamps",
    ),
    "order": (
        {
            "telemetry": {
                "cpu_usage_cores": {"values": [1.0, 2.0, 3.0], "timestamps": [1.7e9, 1.7e9 + 2, 1.7e9 + 2]}
            }
        },
        "inconsistent",
        "$.scenarios[1].telemetry.cpu_usage_cores.timestamps[2]",
    ),
    "step": (
        {"telemetry": {"step_seconds": 0, "power_watts": [1.0]}},
        "out_of_range",
        "$.scenarios[1].telemetry.step_seconds",
    ),
    "legacy_step": (
        {"step_seconds": -1, "power_watts": [1.0]},
        "out_of_range",
        "$.scenarios[1].step_seconds",
    ),
    "empty": ('DOC:{"test_date": "2026-01-01", "scenarios": []}', "empty_run", "$.scenarios"),
}


def _poison_document(body: dict[str, Any] | str) -> str:
    if isinstance(body, str) and body.startswith("DOC:"):
        return body.removeprefix("DOC:")
    second = body if isinstance(body, str) else json.dumps(body)
    return f'{{"scenarios": [{{"name": "1 Streams @ 1000k", "fps": 30}}, {second}]}}'


def rejected_count(service: IngestService, reason: str) -> float:
    value = service.metrics.registry.get_sample_value(
        "transcode_ingest_rejected_files_total", {"reason": reason}
    )
    return value or 0.0


async def test_values_the_maths_cannot_hold_are_rejected_with_their_path(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    names = {key: f"test_results_poison_{key}.json" for key in POISON}
    for key, (body, _, _) in POISON.items():  # half found by the start-up scan ...
        if len(names[key]) % 2:
            (results_dir / names[key]).write_text(_poison_document(body))
    async with running_ingest(nats_server.url, results_dir) as service:
        for key, (body, _, _) in POISON.items():  # ... half by the watcher
            if not len(names[key]) % 2:
                (results_dir / names[key]).write_text(_poison_document(body))
        shutil.copy(GOOD, results_dir / GOOD.name)
        events = await count_errors(nc, len(POISON))
        await count_manifests(nc, 1)
        reasons = {reason for _, reason, _ in POISON.values()}
        for reason in reasons:
            expected = sum(1 for _, r, _ in POISON.values() if r == reason)
            assert rejected_count(service, reason) == expected, reason

    by_file = {event.file: event for event in events}
    assert len(events) == len(POISON) == len(by_file)
    for key, (_, reason, path) in POISON.items():
        name = names[key]
        assert not (results_dir / name).exists(), key
        assert (results_dir / "rejected" / name).is_file(), key
        record = sidecar(results_dir, name)
        for seen in (record, msgspec.to_builtins(by_file[name])):
            assert (seen["reason"], seen["json_path"]) == (reason, path), key
            assert seen["moved_to"] == str(results_dir / "rejected" / name)
        assert BIG not in by_file[name].message  # 400 digits say nothing; their count does
    [manifest] = await manifests(nc)
    assert manifest.run_id == GOOD.stem
    # Everything that was published holds floats, as every consumer will make of it.
    for message in await scenario_msgs(nc):
        for value in msgspec.to_builtins(message.scenario).values():
            if isinstance(value, int | float):
                assert abs(float(value)) < float("inf")


def _deep(levels: int) -> str:
    return "[" * levels + "]" * levels


async def test_every_candidate_ends_in_exactly_one_state(
    nc: NATS, nats_server: NatsServer, results_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ingest")
    good_bytes = GOOD.read_bytes()
    root = os.fsencode(results_dir)
    not_utf8_name = b"test_results_\xff\xfe.json"
    # Corrupt the KV record of one run: publishing it fails with an error no rule anticipates.
    async with running_ingest(nats_server.url, tmp_path / "setup"):
        pass
    kv = await nc.jetstream().key_value(subjects.KV_INGESTED)
    await kv.put("test_results_kv_corrupt", b"{not a record")

    expected: dict[str, str] = {  # display name -> reason
        "test_results_utf8.json": "invalid_utf8",
        "test_results_deep.json": "too_deep",
        "test_results_deep200.json": "too_deep",
        "test_results_loop.json": "bad_symlink",
        "test_results_dangling.json": "bad_symlink",
        "test_results_dir.json": "not_regular_file",
        "test_results_bad\\nname.json": "invalid_json",
        "test_results_\\udcff\\udcfe.json": "bad_name",
        "test_results_kv_corrupt.json": "internal_error",
    }
    published = ["test_results_good\nline.json", "test_results_after.json"]

    def drop_all() -> None:
        (results_dir / "test_results_utf8.json").write_bytes(b'{"scenarios": [{"name": "caf\xe9"}]}')
        (results_dir / "test_results_deep.json").write_text(
            '{"scenarios": [{"name": "x", "future": ' + _deep(1000) + "}]}"
        )
        (results_dir / "test_results_deep200.json").write_text(
            '{"scenarios": [{"name": "x", "future": ' + _deep(200) + "}]}"
        )
        (results_dir / "test_results_loop.json").symlink_to(results_dir / "test_results_loop.json")
        (results_dir / "test_results_dangling.json").symlink_to(results_dir / "nowhere.json")
        (results_dir / "test_results_dir.json").mkdir()
        (results_dir / "test_results_bad\nname.json").write_text('{"scenarios": [}')
        (results_dir / "test_results_kv_corrupt.json").write_bytes(good_bytes)
        (results_dir / "test_results_good\nline.json").write_bytes(good_bytes)

    drop_all()  # found by the start-up scan
    async with running_ingest(nats_server.url, results_dir, settle_seconds=1.0) as service:
        # A name that is not UTF-8 stops watchfiles itself: the watcher must come back and rescan.
        fd = os.open(root + b"/" + not_utf8_name, os.O_WRONLY | os.O_CREAT, 0o644)
        os.write(fd, good_bytes)
        os.close(fd)
        await count_errors(nc, len(expected), timeout=30)
        (results_dir / published[1]).write_bytes(good_bytes)  # the watcher still works afterwards
        await count_manifests(nc, 2)
        assert rejected_count(service, "internal_error") == 1

    by_file = {event.file: event for event in await errors(nc)}
    assert {name: event.reason for name, event in by_file.items()} == expected
    assert sorted(m.run_id for m in await manifests(nc)) == sorted(Path(n).stem for n in published)
    # Published files stay; everything else was moved aside.
    assert sorted(p.name for p in results_dir.iterdir()) == sorted(["rejected", *published])
    rejected = results_dir / "rejected"
    moved = sorted(p.name for p in rejected.iterdir())
    assert len(moved) == 2 * len(expected)  # each file and its sidecar
    for display, reason in expected.items():
        [side] = [
            n
            for n in moved
            if n.endswith(".error.json") and json.loads((rejected / n).read_bytes())["file"] == display
        ]
        record = json.loads((rejected / side).read_bytes())  # valid JSON, whatever the name
        assert record["reason"] == reason
        assert os.path.lexists(rejected / side.removesuffix(".error.json"))
        assert "\n" not in record["moved_to"]
    assert (by_file["test_results_deep200.json"].json_path or "").startswith("$.scenarios[0].future[0][0]")
    assert by_file["test_results_utf8.json"].message.endswith("(byte 0xe9)")
    assert by_file["test_results_kv_corrupt.json"].message.startswith(("ValidationError", "DecodeError"))
    assert (rejected / "test_results_dir.json").is_dir()
    assert (rejected / "test_results_loop.json").is_symlink()
    # Every log line about a file is one line, whatever its name.
    lines = [r.getMessage() for r in caplog.records if r.name == "ingest"]
    assert any("test_results_bad\\nname.json" in line for line in lines)
    assert not any("\n" in line for line in lines)


def _fifo_readers(paths: list[Path]) -> list[Path]:
    """The FIFOs someone holds open for reading, a thread stuck in ``open()`` included. Opening them for
    writing, as this does, also lets such a reader go (so a failing test ends instead of hanging)."""
    held = []
    for path in paths:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
        except OSError as exc:
            if exc.errno in (errno.ENXIO, errno.ENOENT):  # no reader / not here
                continue
            raise
        os.close(fd)
        held.append(path)
    return held


async def test_fifos_are_never_opened_and_do_not_block_the_good_file(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    fifos = [f"test_results_fifo_{n}.json" for n in range(8)]
    places = [d / name for name in fifos for d in (results_dir, results_dir / "rejected")]
    watch = OpenWatch(results_dir)
    try:
        for name in fifos[:4]:  # found by the start-up scan
            os.mkfifo(results_dir / name)
        async with running_ingest(nats_server.url, results_dir):
            for name in fifos[4:]:  # seen by the watcher
                os.mkfifo(results_dir / name)
            shutil.copy(GOOD, results_dir / GOOD.name)
            events = await count_errors(nc, len(fifos))
            await count_manifests(nc, 1)
        opened = watch.opened()
    finally:
        watch.close()
        held = _fifo_readers(places)
    assert held == []
    assert GOOD.name in opened  # the watch does see opens
    assert not opened & set(fifos)
    assert sorted(e.file or "" for e in events) == sorted(fifos)
    assert {e.reason for e in events} == {"not_regular_file"}
    assert all("FIFO" in e.message for e in events)
    for name in fifos:
        assert (results_dir / "rejected" / name).is_fifo() and not (results_dir / name).exists()
        assert sidecar(results_dir, name)["reason"] == "not_regular_file"


def _drop(directory: Path, prefix: str, n: int, document: bytes) -> None:
    for i in range(n):  # a tight loop: no pause for any watcher to catch up
        (directory / f"test_results_{prefix}_{i:03d}.json").write_bytes(document)


class _DropOnWatching(logging.Handler):
    """Drops the files inside the "watching" log line itself, in the service's own thread: nothing at all
    can happen between readiness being announced and the files arriving."""

    def __init__(self, directory: Path, prefix: str, n: int, document: bytes) -> None:
        super().__init__(logging.INFO)
        self.args = (directory, prefix, n, document)
        self.dropped = False

    def emit(self, record: logging.LogRecord) -> None:
        if not self.dropped and record.getMessage().startswith("watching "):
            self.dropped = True
            _drop(*self.args)


def _drop_on_scan_done(service: IngestService, directory: Path, prefix: str, n: int, document: bytes) -> None:
    while not service.scan_done.is_set():
        pass  # spin: react as fast as any outside observer of /ready could
    _drop(directory, prefix, n, document)


@pytest.mark.parametrize("polling", [False, True], ids=["inotify", "polling"])
async def test_files_dropped_the_moment_ingest_is_ready_are_all_published(
    nc: NATS, nats_server: NatsServer, tmp_path: Path, polling: bool, caplog: pytest.LogCaptureFixture
) -> None:
    """Start on an empty directory and drop 50 files the instant ingest says it is ready: from another
    thread watching ``scan_done`` (as a script polling /ready would), and from inside the "watching" log
    line. Before the fix readiness came before the watcher existed, and those files were never published."""
    caplog.set_level(logging.INFO, logger="ingest")
    document = json.dumps({"scenarios": [{"name": "1 Streams @ 1000k", "fps": 30}]}).encode()
    n, total = 50, 0
    for attempt, trigger in enumerate(["log", "scan_done", "log", "scan_done"]):
        directory = tmp_path / f"attempt{attempt}"
        directory.mkdir()
        prefix = f"a{attempt}"
        cn, js, publisher = await open_publisher(NatsConfig(servers=[nats_server.url]))
        settings = ingest_settings(directory, force_polling=polling)
        service = IngestService(settings, publisher, js, IngestMetrics())
        handler = _DropOnWatching(directory, prefix, n, document)
        dropper = threading.Thread(
            target=_drop_on_scan_done, args=(service, directory, prefix, n, document), daemon=True
        )
        if trigger == "log":
            logging.getLogger("ingest").addHandler(handler)
        else:
            dropper.start()
        stop = asyncio.Event()
        task = asyncio.create_task(service.run(stop))
        try:
            await asyncio.wait_for(service.scan_done.wait(), 20)
            if trigger == "log":
                assert handler.dropped
            else:
                await asyncio.to_thread(dropper.join, 30)
            total += n
            await count_manifests(nc, total)
        finally:
            logging.getLogger("ingest").removeHandler(handler)
            stop.set()
            await asyncio.wait_for(task, 20)
            await cn.close()
    assert len({m.run_id for m in await manifests(nc)}) == total


def _ingest(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "services", "ingest", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


async def test_one_shot_never_hangs(tmp_path: Path) -> None:
    closed = free_port()  # nothing listens here
    url = f"nats://someone:s3cret@127.0.0.1:{closed}"
    bound = 3.0
    started = time.monotonic()
    one_shot = _ingest("--nats-url", url, "--connect-timeout-total", str(bound), str(GOOD))
    reenrich = _ingest(
        "--nats-url",
        url,
        "--connect-timeout-total",
        str(bound),
        "--prometheus-url",
        f"http://127.0.0.1:{closed}",
        "--reenrich",
        GOOD.stem,
    )
    for proc in (one_shot, reenrich):
        _, stderr = await asyncio.to_thread(proc.communicate, timeout=bound + 30)
        assert proc.returncode == 2, stderr
        last = stderr.strip().splitlines()[-1]
        assert f"cannot reach NATS at nats://***@127.0.0.1:{closed} within 3s" in last
        assert "s3cret" not in stderr and "Traceback" not in stderr
    # The bound holds (interpreter start-up on a busy machine is the slack).
    assert time.monotonic() - started < bound + 20

    for sig in (signal.SIGTERM, signal.SIGINT):
        proc = _ingest(
            "--nats-url", f"nats://127.0.0.1:{closed}", "--connect-timeout-total", "600", str(GOOD)
        )
        assert proc.stderr is not None
        # Wait until it is really trying (its signal handling is in place by then), then give it 1 s more.
        line = await asyncio.to_thread(proc.stderr.readline)
        while "connecting to NATS" not in line:
            assert line, "ingest exited before connecting"
            line = await asyncio.to_thread(proc.stderr.readline)
        await asyncio.sleep(1.0)
        proc.send_signal(sig)
        sent = time.monotonic()
        _, rest = await asyncio.to_thread(proc.communicate, timeout=30)
        assert time.monotonic() - sent < 10, sig
        assert proc.returncode == 130, (sig, rest)
        assert "interrupted" in rest and "Traceback" not in rest


async def test_a_blocked_read_is_abandoned_and_frees_its_slot(
    nc: NATS, nats_server: NatsServer, results_dir: Path, tmp_path: Path
) -> None:
    """A read that blocks in the kernel (here: a blocking open of a FIFO, as a dead network file system
    would) costs its file ``read_timeout`` and a rejection, not the service: with one read slot, the next
    read still goes through."""
    fifo = tmp_path / "stuck"
    os.mkfifo(fifo)
    async with running_ingest(nats_server.url, results_dir, read_timeout=0.5, read_concurrency=1) as service:
        started = time.monotonic()
        with pytest.raises(ResultsFileError) as excinfo:
            await service._off_loop(fifo.read_bytes, "reading the file")
        assert excinfo.value.reason == "read_timeout"
        assert 0.4 < time.monotonic() - started < 5
        assert await service._off_loop(GOOD.read_bytes, "reading the file") == GOOD.read_bytes()
        shutil.copy(GOOD, results_dir / GOOD.name)
        await count_manifests(nc, 1)
    assert _fifo_readers([fifo]) == [fifo]  # the abandoned thread was still blocked; now it is let go
