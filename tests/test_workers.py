"""Cost and QoE workers: scaling on a real NATS, and their figures on hand-made runs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from services.cost.kind import add_arguments as cost_flags
from services.cost.kind import compute_costs, settings_from_args
from services.exporter.exposition import render_text
from services.ingest.publisher import RunPublisher
from services.qoe.kind import add_arguments as qoe_flags
from services.qoe.kind import compute_qoe, parse_psnr, parse_vmaf
from services.qoe.kind import settings_from_args as qoe_settings
from shared import bus, subjects
from shared.config import parse_flags
from shared.families import Family, legacy_scenario_label, unique
from shared.kinds import Computer
from shared.resultsfile import decode_results
from shared.runs import RunInput
from shared.schemas import CostResult, RunManifest, Scenario, Telemetry
from shared.worker import RunWorker
from tests.conftest import NatsServer
from tests.helpers import decoded, eventually, run_input


def cost_args(*argv: str) -> argparse.Namespace:
    """The cost kind's flags as a user would pass them (defaults from the flag definitions)."""
    return parse_flags(cost_flags, ["--electricity-maps-url", "http://127.0.0.1:9", *argv])


def measured(name: str, power: list[float], cpu: list[float] | None = None, **kw: Any) -> Scenario:
    """A 5 s-step measured scenario lasting as long as its power samples."""
    fields: dict[str, Any] = {"bitrate": "2500k", **kw}
    return Scenario(
        name=name,
        resolution="1280x720",
        fps=30,
        start_time=0.0,
        end_time=5.0 * (len(power) - 1),
        telemetry=Telemetry(step_seconds=5.0, power_watts=power, cpu_usage_cores=cpu),
        **fields,
    )


class TestCost:
    def test_defaults_match_the_old_exporter(self) -> None:
        # Region "default": 0.12/kWh and 400 g/kWh; CPU and GPU free.
        run = run_input(
            measured("Baseline (Idle)", [50.0, 50.0, 50.0]),
            measured("2 Streams @ 2500k", [100.0, 110.0, 120.0], [2.0, 2.0, 2.0]),
        )
        result = compute_costs(run, settings_from_args(cost_args()))
        assert (result.energy_price_per_kwh, result.energy_price_source) == (0.12, "table")
        assert result.co2_intensity_g_per_kwh == 400
        s = result.scenarios[1]
        # Trapezoid: 5/2 * (100 + 2*110 + 120) = 1100 J; x 0.12 / 3.6e6.
        assert s.energy_cost == pytest.approx(1100 * 0.12 / 3.6e6, rel=1e-12)
        assert s.compute_cost == 0.0 and s.total_cost == s.energy_cost
        # Mean 110 W: 0.11 kW x 0.12 = 0.0132/h; baseline 50 W -> savings (0.05 - 0.11) x 0.12 x 720 = -5.184.
        assert s.cost_per_hour == pytest.approx(0.0132, rel=1e-12)
        assert s.monthly_savings == pytest.approx(-5.184, rel=1e-12)
        assert s.co2_monthly_avoided_kg == pytest.approx(400 * (0.05 - 0.11) / 1000 * 720, rel=1e-12)
        assert result.scenarios[0].monthly_savings == pytest.approx(0.0, abs=1e-12)

    def test_flags_and_config(self, tmp_path: Path) -> None:
        run = run_input(measured("x", [100.0, 100.0, 100.0], [1.0, 1.0, 1.0], viewers=4.0))
        explicit = compute_costs(
            run, settings_from_args(cost_args("--energy-cost", "0.3", "--cpu-cost", "0.36"))
        )
        s = explicit.scenarios[0]
        assert explicit.energy_price_source == "flag"
        assert s.energy_cost == pytest.approx(1000 * 0.3 / 3.6e6, rel=1e-12)
        assert s.compute_cost == pytest.approx(10 * 0.36 / 3600, rel=1e-12)  # 10 core-seconds
        # 10 s x 4 viewers = 1/90 watch-hours.
        assert s.cost_per_watch_hour == pytest.approx(s.total_cost / (10 / 3600 * 4), rel=1e-12)  # type: ignore[operator]
        config = tmp_path / "pricing.json"
        config.write_text(
            json.dumps({"electricity_prices": {"eu-west-1": 0}, "co2_intensity": {"eu-west-1": 99}})
        )
        free = compute_costs(
            run, settings_from_args(cost_args("--region", "eu-west-1", "--pricing-config", str(config)))
        )
        assert free.energy_price_per_kwh == 0 and free.scenarios[0].energy_cost == 0.0
        assert free.co2_intensity_g_per_kwh == 99

    def test_scenario_without_telemetry_has_no_costs_not_zero_costs(self) -> None:
        result = compute_costs(run_input(Scenario(name="x", bitrate="1k")), settings_from_args(cost_args()))
        s = result.scenarios[0]
        assert s.total_cost is None and s.energy_cost is None and s.cost_per_hour is None
        assert s.notes == ["no power or CPU telemetry"]


class TestQoE:
    def test_scores_and_rejections(self) -> None:
        good = measured(
            "a",
            [100.0, 100.0, 100.0],
            vmaf_score=90.0,
            psnr_score=40.0,
            ssim_score=0.95,
            total_frames=300,
            dropped_frames=3,
        )
        bad = measured(
            "b",
            [100.0, 100.0, 100.0],
            vmaf_score=float("nan"),
            ssim_score=2.0,
            total_frames=10,
            dropped_frames=20,
        )
        result = compute_qoe(run_input(good, bad), qoe_settings(parse_flags(qoe_flags)))
        a, b = result.scenarios
        assert (a.vmaf_score, a.psnr_score, a.ssim_score, a.drop_rate) == (90.0, 40.0, 0.95, 0.01)
        assert a.quality_per_watt == pytest.approx(0.9)  # 90 / (1000 J / 10 s)
        assert a.qoe_efficiency_score == pytest.approx(1280 * 720 * 30 * 10 * 0.9 / 1000)
        assert a.source == "file" and a.computation_seconds > 0
        assert b.vmaf_score is None and b.ssim_score is None and b.drop_rate is None
        assert set(b.rejected) == {"vmaf_score", "ssim_score", "drop_rate"}

    def test_videos_without_ffmpeg_are_reported(self, tmp_path: Path) -> None:
        s = Scenario(name="v", reference_file="ref.mp4", output_file="out.mp4")
        [q] = compute_qoe(
            run_input(s),
            qoe_settings(
                parse_flags(qoe_flags, ["--media-root", str(tmp_path), "--ffmpeg", "/nonexistent/ffmpeg"])
            ),
        ).scenarios
        assert q.psnr_score is None and "ffmpeg is not installed" in q.rejected["psnr_score"]
        [q] = compute_qoe(
            run_input(s),
            qoe_settings(parse_flags(qoe_flags, ["--media-root", str(tmp_path), "--ffmpeg", "/bin/false"])),
        ).scenarios
        assert "existing files under" in q.rejected["psnr_score"]

    def test_ffmpeg_output_parsers(self) -> None:
        psnr = "[Parsed_psnr_0 @ 0x5] PSNR y:41.2 u:44.0 v:44.9 average:42.315621 min:38.1 max:45.3\n"
        assert parse_psnr(psnr) == 42.315621
        assert parse_psnr("PSNR y:inf average:inf min:inf max:inf") is None
        assert parse_vmaf("[libvmaf @ 0x1] VMAF score: 93.524176\n") == 93.524176
        assert parse_vmaf("no score") is None


class TestExposition:
    def test_labels_in_declared_order_and_escaped(self) -> None:
        family = Family("m", "help", ("scenario", "a"))
        family.add(('x "y"\\z\nw', "1"), 2.5)
        family.add(("nan", "1"), float("nan"))  # dropped
        text = render_text([family]).decode()
        assert text == '# HELP m help\n# TYPE m gauge\nm{scenario="x \\"y\\"\\\\z\\nw",a="1"} 2.5\n'

    def test_legacy_label_and_uniqueness(self) -> None:
        assert legacy_scenario_label('4 Streams @ "fast"') == "4_Streams_@_fast"
        assert legacy_scenario_label(None) == "unknown"
        assert unique([("a b", "1"), ("a_b", "1"), ("a b", "1"), ("a b", "1")], 0) == [
            ("a b", "1"),
            ("a_b", "1"),
            ("a b #2", "1"),
            ("a b #3", "1"),
        ]


async def test_two_cost_workers_split_the_runs_and_publish_each_once(
    nc: NATS, nats_server: NatsServer
) -> None:
    js = nc.jetstream()
    await bus.ensure_topology(js)
    kv = await bus.ensure_kv(js, subjects.KV_INGESTED)
    publisher = RunPublisher(js, kv, max_payload=nc.max_payload)
    clients = [await nats.connect(nats_server.url) for _ in range(2)]
    settings = settings_from_args(cost_args())

    class Slow:
        async def compute(self, run: RunInput) -> CostResult:
            await asyncio.sleep(0.01)  # long enough that both workers get a share
            return compute_costs(run, settings)

        async def close(self) -> None:
            return None

    workers = [RunWorker(c, kind="cost", compute=Slow()) for c in clients]
    stop = asyncio.Event()
    tasks = [asyncio.create_task(w.run(stop)) for w in workers]
    try:
        await asyncio.gather(*(w.ready.wait() for w in workers))
        for r in range(20):
            doc = {
                "scenarios": [
                    {
                        "name": f"{k % 8 + 1} Streams @ 2500k",
                        "bitrate": "2500k",
                        "resolution": "1280x720",
                        "fps": 30,
                        "start_time": 0,
                        "end_time": 10,
                        "telemetry": {"step_seconds": 5, "power_watts": [10.0 + k, 11.0, 12.0]},
                    }
                    for k in range(25)
                ]
            }
            await publisher.publish(
                decode_results(json.dumps(doc).encode(), f"test_results_2026010{r:02d}.json")
            )

        async def all_done() -> bool:
            return sum(w.processed for w in workers) >= 20

        await eventually(all_done, timeout=60, what="20 runs costed")
        await asyncio.sleep(0.5)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for c in clients:
            await c.close()
    assert sum(w.processed for w in workers) == 20
    assert all(w.processed > 0 for w in workers), [w.processed for w in workers]
    results = await decoded(js, subjects.RESULTS_STREAM, f"{subjects.RESULTS}.cost", CostResult)
    assert sorted(r.run_id for r in results) == sorted(f"test_results_2026010{r:02d}" for r in range(20))
    assert all(len(r.scenarios) == 25 for r in results)
    info = await js.stream_info(subjects.RESULTS_STREAM)
    assert info.state.messages == 20 and info.state.last_seq == 20  # nothing published twice
    assert msgspec.json.encode(results[0])  # round-trips


def test_gateway_keeps_only_the_latest_runs_results() -> None:
    from services.exporter.state import GatewayState
    from shared.schemas import QoEResult

    def manifest(run_id: str, generation: int = 1) -> RunManifest:
        return RunManifest(
            run_id=run_id,
            digest="0123456789abcdef",
            file_name="f",
            file_sha256="0",
            file_bytes=1,
            scenario_count=0,
            generation=generation,
            ingested_at=0.0,
        )

    def qoe(run_id: str, generation: int = 1) -> QoEResult:
        return QoEResult(
            run_id=run_id,
            digest="0123456789abcdef",
            generation=generation,
            scenarios=[],
            computed_at=0.0,
            compute_seconds=0.0,
        )

    state = GatewayState()
    state.add_manifest(manifest("test_results_1"))
    assert state.add_result("qoe", qoe("test_results_1"))
    state.add_manifest(manifest("test_results_2"))
    assert ("qoe", "test_results_1") not in state.results  # pruned when a later run appeared
    assert not state.add_result(
        "qoe", qoe("test_results_1")
    )  # late result of an older run: counted, not kept
    assert state.received["qoe"] == 2
    assert state.add_result("qoe", qoe("test_results_3"))  # a result may arrive before its manifest
    assert state.add_result("qoe", qoe("test_results_2", generation=2))
    assert not state.add_result("qoe", qoe("test_results_2", generation=1))  # an older generation never wins
    assert state.latest_run_id == "test_results_2"
    assert not state.add_manifest(manifest("test_results_2", generation=0))


async def _publish_runs(nc: NATS, count: int, first: int = 0) -> None:
    js = nc.jetstream()
    publisher = RunPublisher(js, await bus.ensure_kv(js, subjects.KV_INGESTED), max_payload=nc.max_payload)
    for r in range(first, first + count):
        doc = {
            "scenarios": [
                {
                    "name": "2 Streams @ 2500k",
                    "bitrate": "2500k",
                    "resolution": "1280x720",
                    "fps": 30,
                    "start_time": 0,
                    "end_time": 10,
                    "telemetry": {"step_seconds": 5, "power_watts": [10.0, 11.0, 12.0]},
                }
            ]
        }
        await publisher.publish(decode_results(json.dumps(doc).encode(), f"test_results_2026{r:04d}.json"))


@contextlib.asynccontextmanager
async def _cost_worker(nc: NATS, computer: Computer) -> AsyncIterator[tuple[RunWorker, list[bytes]]]:
    """A running cost worker on ``nc`` (ready when entered, stopped on exit) and the pull requests it sends."""
    requests: list[bytes] = []

    async def spy(msg: Any) -> None:
        requests.append(msg.data)

    sub = await nc.subscribe(f"$JS.API.CONSUMER.MSG.NEXT.{subjects.INGEST_STREAM}.cost", cb=spy)
    worker = RunWorker(nc, kind="cost", compute=computer)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await worker.ready.wait()
        yield worker, requests
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await sub.unsubscribe()


async def test_a_worker_holds_at_most_its_slots_and_asks_once_per_two_runs(nc: NATS) -> None:
    """Runs are pulled continuously, never more than CONCURRENCY in hand (a run taken is a run started), and a
    burst costs about one pull request per two runs, not one per run."""
    from shared import worker as worker_module

    js = nc.jetstream()
    await bus.ensure_topology(js)
    settings = settings_from_args(cost_args())
    gate = asyncio.Event()
    running = 0
    most = 0

    class Gated:
        async def compute(self, run: RunInput) -> CostResult:
            nonlocal running, most
            running += 1
            most = max(most, running)
            await gate.wait()
            running -= 1
            return compute_costs(run, settings)

        async def close(self) -> None:
            return None

    async with _cost_worker(nc, Gated()) as (worker, requests):
        await _publish_runs(nc, 12)

        async def slots_full() -> bool:
            return running == worker_module.CONCURRENCY

        await eventually(slots_full, timeout=10, what="every slot busy")
        await asyncio.sleep(0.3)
        info = await js.consumer_info(subjects.INGEST_STREAM, "cost")
        assert info.num_ack_pending == worker_module.CONCURRENCY  # the other runs wait on the server
        assert info.num_pending == 12 - worker_module.CONCURRENCY
        gate.set()

        async def all_done() -> bool:
            return worker.processed == 12

        await eventually(all_done, timeout=30, what="12 runs costed")
    assert most == worker_module.CONCURRENCY
    assert len(requests) <= 12 // 2 + 2, [r.decode() for r in requests]


async def test_a_worker_creates_its_deleted_consumer_again(nc: NATS) -> None:
    """The durable consumer deleted under the worker (by hand, or by a replica applying new settings that has
    not created it again yet): the worker pauses, creates it and consumes, without hammering the server."""
    from shared import worker as worker_module

    js = nc.jetstream()
    await bus.ensure_topology(js)
    settings = settings_from_args(cost_args())

    class Plain:
        async def compute(self, run: RunInput) -> CostResult:
            return compute_costs(run, settings)

        async def close(self) -> None:
            return None

    async with _cost_worker(nc, Plain()) as (worker, requests):

        async def waiting() -> bool:
            return bool((await js.consumer_info(subjects.INGEST_STREAM, "cost")).num_waiting)

        await eventually(waiting, timeout=10, what="the worker's pull request")
        await js.delete_consumer(subjects.INGEST_STREAM, "cost")
        await _publish_runs(nc, 1)

        async def done() -> bool:
            return worker.processed == 1

        await eventually(done, timeout=10, what="the run after the consumer was deleted")
        info = await js.consumer_info(subjects.INGEST_STREAM, "cost")
        assert info.config.ack_wait == worker_module.ACK_WAIT_S
    assert len(requests) <= 4, [r.decode() for r in requests]  # the first, the one after, a spare
