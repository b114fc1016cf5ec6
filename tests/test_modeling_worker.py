"""The modeling worker end to end on a real NATS server: ingest a run with inline telemetry, read the result."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import statistics
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import nats
import pytest
from nats.aio.client import Client as NATS

from services.modeling.kind import add_arguments as modeling_flags
from services.modeling.kind import settings_from_args
from services.modeling.modeler import Modeler, start_modeler
from shared import bus, subjects
from shared.config import parse_flags
from shared.resultsfile import decode_results
from shared.runs import RunInput
from shared.schemas import ModelingResult, PredictRequest, PredictResponse, Scenario
from shared.worker import RunWorker
from tests.conftest import EXAMPLES, NatsServer
from tests.helpers import decoded, eventually, run_input, running_ingest

RUN = "test_results_20251228_203216"


@contextlib.asynccontextmanager
async def running_modeling(url: str) -> AsyncIterator[Modeler]:
    client = await nats.connect(url)
    await bus.ensure_topology(client.jetstream())
    modeler = await start_modeler(client, settings_from_args(parse_flags(modeling_flags)))
    worker = RunWorker(client, kind="modeling", compute=modeler)
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    await asyncio.wait_for(worker.ready.wait(), 10)
    try:
        yield modeler
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
        await modeler.close()
        await client.close()


async def results(nc: NATS) -> list[ModelingResult]:
    return await decoded(
        nc.jetstream(), subjects.RESULTS_STREAM, f"{subjects.RESULTS}.modeling", ModelingResult
    )


async def wait_results(nc: NATS, n: int = 1) -> list[ModelingResult]:
    async def check() -> bool:
        return len(await results(nc)) >= n

    await eventually(check, timeout=30, what="modeling result")
    return await results(nc)


async def test_statistics_and_predictions_of_an_example_run(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    async with running_modeling(nats_server.url), running_ingest(nats_server.url, results_dir):
        shutil.copy(EXAMPLES / f"{RUN}.json", results_dir)
        [result] = await wait_results(nc)

    doc = json.loads((EXAMPLES / f"{RUN}.json").read_text())
    scenarios = doc["scenarios"]
    assert result.run_id == RUN and result.generation == 1
    assert result.baseline_index == 0
    base = scenarios[0]
    base_mean = base["telemetry"]["energy_joules"] / (base["end_time"] - base["start_time"])
    base_cpu = statistics.mean(base["telemetry"]["container_cpu_percent"])
    for raw, stats in zip(scenarios, result.scenarios, strict=True):
        tel = raw["telemetry"]
        d = raw["end_time"] - raw["start_time"]
        mean_w = tel["energy_joules"] / d
        cpu = statistics.mean(tel["container_cpu_percent"])
        assert stats.duration_s == pytest.approx(d, rel=1e-12)
        assert stats.energy_j == tel["energy_joules"]
        assert stats.mean_power_w == pytest.approx(mean_w, rel=1e-12)
        assert stats.energy_wh == pytest.approx(tel["energy_joules"] / 3600, rel=1e-12)
        assert stats.container_cpu_percent == pytest.approx(cpu, rel=1e-12)
        assert stats.docker_overhead_w == pytest.approx(cpu / 100 * mean_w, rel=1e-12)
        assert stats.power_stdev_w == pytest.approx(statistics.stdev(tel["power_watts"]), rel=1e-12)
        assert stats.band_high_w == pytest.approx(
            mean_w + 2 * statistics.stdev(tel["power_watts"]), rel=1e-12
        )
        assert stats.energy_mj_per_frame == pytest.approx(tel["energy_joules"] / (30 * d) * 1000, rel=1e-12)
        if raw is base:
            assert stats.is_baseline and stats.delta_power_w is None and stats.efficiency_score is None
            assert stats.predicted_power_w is None
            continue
        assert stats.delta_power_w == pytest.approx(mean_w - base_mean, rel=1e-9)
        assert stats.delta_energy_wh == pytest.approx((mean_w - base_mean) * d / 3600, rel=1e-9)
        assert stats.power_pct_increase == pytest.approx((mean_w - base_mean) / base_mean * 100, rel=1e-9)
        assert stats.delta_container_cpu_percent == pytest.approx(cpu - base_cpu, rel=1e-9, abs=1e-12)
        streams = int(raw["name"].split()[0]) if "Streams" in raw["name"] else 1
        per_stream = sum(
            int(o["resolution"].split("x")[0]) * int(o["resolution"].split("x")[1]) * o["fps"]
            for o in (raw["outputs"] or [{"resolution": raw["resolution"], "fps": raw["fps"]}])
        )
        pixels = streams * per_stream * d
        assert stats.total_pixels == pytest.approx(pixels, rel=1e-12)
        assert stats.efficiency_score == pytest.approx(pixels / tel["energy_joules"], rel=1e-12)
        assert stats.energy_wh_per_mbps == pytest.approx(
            tel["energy_joules"] / 3600 / (int(raw["bitrate"].rstrip("k")) / 1000), rel=1e-12
        )
        # Predictions: the model's interval brackets its own mean, and energy follows from power.
        assert stats.predicted_power_w is not None and stats.predicted_power_w > 0
        assert stats.prediction_interval_low_w is not None and stats.prediction_interval_high_w is not None
        assert stats.prediction_interval_low_w <= stats.predicted_power_w <= stats.prediction_interval_high_w
        assert stats.predicted_energy_j == pytest.approx(stats.predicted_power_w * d, rel=1e-12)
    assert result.model is not None and result.model_reason is None
    assert result.model.n_train == 14  # every scenario but the baseline
    assert result.model.runs == [RUN]
    assert {c.name for c in result.model.candidates} == {"linear", "poly2", "multivariate"}


async def test_predict_endpoint_and_discovery(nc: NATS, nats_server: NatsServer, results_dir: Path) -> None:
    async with running_modeling(nats_server.url):
        request = PredictRequest(
            scenario=Scenario(name="4 Streams @ 2500k", bitrate="2500k", resolution="1280x720", fps=30)
        )
        reply = await nc.request(subjects.PREDICT_POWER, msgspec.json.encode(request), timeout=5)
        assert reply.headers and reply.headers.get("Nats-Service-Error-Code") == "404"  # nothing trained yet

        async with running_ingest(nats_server.url, results_dir):
            shutil.copy(EXAMPLES / f"{RUN}.json", results_dir)
            [result] = await wait_results(nc)
        reply = await nc.request(subjects.PREDICT_POWER, msgspec.json.encode(request), timeout=5)
        answer = msgspec.json.decode(reply.data, type=PredictResponse)
        # The same configuration appears in the run: the model's prediction there is the same number.
        [same] = [s for s in result.scenarios if s.index == 8]
        assert answer.mean_power_w == pytest.approx(same.predicted_power_w, rel=1e-12)
        assert answer.prediction_interval_low_w == pytest.approx(same.prediction_interval_low_w, rel=1e-12)
        assert answer.features["streams"] == 4.0 and answer.model.name == result.model.name  # type: ignore[union-attr]
        bad = await nc.request(subjects.PREDICT_POWER, b'{"scenario": {"bitrate": "fast"}}', timeout=5)
        assert bad.headers and bad.headers.get("Nats-Service-Error-Code") == "400"
        ping = await nc.request("$SRV.PING.transcode-energy-modeling", b"", timeout=5)
        assert json.loads(ping.data)["name"] == "transcode-energy-modeling"

    # A restarted worker reloads the saved model and answers at once.
    async with running_modeling(nats_server.url) as modeler:
        assert len(modeler.models) == 1
        reply = await nc.request(subjects.PREDICT_POWER, msgspec.json.encode(request), timeout=5)
        assert msgspec.json.decode(reply.data, type=PredictResponse).mean_power_w == pytest.approx(
            answer.mean_power_w, rel=1e-12
        )


async def test_too_few_scenarios_give_no_model_and_say_why(
    nc: NATS, nats_server: NatsServer, results_dir: Path
) -> None:
    doc = json.loads((EXAMPLES / f"{RUN}.json").read_text())
    doc["scenarios"] = doc["scenarios"][:3]  # baseline + 2 measured scenarios
    async with running_modeling(nats_server.url), running_ingest(nats_server.url, results_dir):
        (results_dir / "test_results_20260101_000000.json").write_text(json.dumps(doc))
        [result] = await wait_results(nc)
    assert result.model is None
    assert result.model_reason is not None and "at least 3" in result.model_reason
    assert all(s.predicted_power_w is None for s in result.scenarios)
    assert any("no prediction" in note for note in result.scenarios[1].notes)
    assert result.scenarios[1].mean_power_w is not None  # the statistics are still there


def _distinct_run(run_id: str, scale: float) -> RunInput:
    """The example run under another id, its energies scaled: another content, the same machine."""
    doc = json.loads((EXAMPLES / f"{RUN}.json").read_text())
    for scenario in doc["scenarios"]:
        scenario["telemetry"]["energy_joules"] *= scale
    parsed = decode_results(json.dumps(doc).encode(), f"{run_id}.json")
    return run_input(*parsed.results.scenarios, run_id=run_id, file_sha256=parsed.sha256)


async def test_runs_waiting_in_hand_defer_training_to_the_last_of_them(nc: NATS) -> None:
    await bus.ensure_topology(nc.jetstream())
    modeler = await start_modeler(nc, settings_from_args(parse_flags(modeling_flags)))
    try:
        first = await modeler.compute(_distinct_run("test_results_20990101_000001", 1.0))
        assert first.model is not None and first.model.runs == ["test_results_20990101_000001"]
        # Two runs in hand at once (the worker holds up to four): the first of them is served by the model
        # of a moment ago, the last trains on every point.
        second, third = await asyncio.gather(
            modeler.compute(_distinct_run("test_results_20990101_000002", 1.1)),
            modeler.compute(_distinct_run("test_results_20990101_000003", 1.2)),
        )
        assert second.model is not None and second.model.runs == ["test_results_20990101_000001"]
        assert third.model is not None and third.model.runs == [
            "test_results_20990101_000001",
            "test_results_20990101_000002",
            "test_results_20990101_000003",
        ]
        assert third.model.n_train == 3 * 14
        # Alone again: a run trains at once.
        fourth = await modeler.compute(_distinct_run("test_results_20990101_000004", 1.3))
        assert fourth.model is not None and fourth.model.n_train == 4 * 14
    finally:
        await modeler.close()


async def test_two_replicas_taking_turns_lose_no_training_point(nc: NATS, nats_server: NatsServer) -> None:
    """Each replica writes the history over the copy it wrote last; when the other wrote in between, the
    compare-and-set fails and the stored history is read again, so no run's points are lost."""
    await bus.ensure_topology(nc.jetstream())
    other = await nats.connect(nats_server.url)
    settings = settings_from_args(parse_flags(modeling_flags))
    replicas = [await start_modeler(nc, settings), await start_modeler(other, settings)]
    try:
        for i in range(4):  # a, b, a, b: every write after the first meets a history the other one changed
            result = await replicas[i % 2].compute(
                _distinct_run(f"test_results_20990101_00001{i}", 1 + i / 10)
            )
        assert result.model is not None and result.model.n_train == 4 * 14
        assert result.model.runs == [f"test_results_20990101_00001{i}" for i in range(4)]
    finally:
        for modeler in replicas:
            await modeler.close()
        await other.close()
