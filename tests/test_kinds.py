"""The kinds registry: a kind defined here flows end to end, the real kinds derive everything from the list,
re-pricing recomputes stored runs, and GPU energy enters cost and quality figures. Real NATS throughout."""

from __future__ import annotations

import argparse
import asyncio
import json
import urllib.request
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from services.catalog import service_names
from services.cost.kind import KIND as COST
from services.cost.kind import add_arguments as cost_flags
from services.cost.kind import compute_costs, settings_from_args
from services.exporter.service import Gateway, start_listeners
from services.kinds import KINDS, load_kinds
from services.qoe.kind import add_arguments as qoe_flags
from services.qoe.kind import compute_qoe
from services.qoe.kind import settings_from_args as qoe_settings
from services.up import free_port
from shared import bus, subjects
from shared.config import parse_flags
from shared.families import Family, RunView
from shared.kinds import Kind, open_computer
from shared.runs import RunInput, make_result
from shared.schemas import CostResult, ResultEnvelope, Scenario, Telemetry
from shared.worker import RunWorker
from tests.conftest import EXAMPLES
from tests.helpers import decoded, eventually, run_input, running_ingest


class ToyResult(ResultEnvelope, kw_only=True):
    """A kind nobody ships: the number of scenarios with a start time, and the sum of their stream counts."""

    timed: int
    kind: str = "toy"


def toy_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--toy-factor", type=float, default=2.0)


def toy_compute(run: RunInput, factor: float) -> ToyResult:
    return make_result(
        ToyResult, run, timed=sum(1 for m in run.scenarios if m.scenario.start_time is not None)
    )


def toy_families(view: RunView) -> list[Family]:
    result = view.result("toy", ToyResult)
    family = Family("toy_timed_scenarios", "Scenarios with a start time (count)", ("run_id",))
    if result is not None:
        family.add((result.run_id,), result.timed)
    return [family]


TOY = Kind(
    name="toy",
    result=ToyResult,
    add_arguments=toy_flags,
    settings=lambda args: args.toy_factor,
    families=toy_families,
    compute=toy_compute,
)


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_a_kind_defined_in_a_test_flows_from_ingest_to_a_gateway_metric(
    nc: NATS, nats_server: object, results_dir: Path
) -> None:
    url = nats_server.url  # type: ignore[attr-defined]
    example = EXAMPLES / "test_results_20251228_203216.json"
    # Independently of the code: count the scenarios with a start time in the file itself.
    expected = sum(1 for s in json.loads(example.read_text())["scenarios"] if "start_time" in s)
    import nats

    worker_nc, gateway_nc = await nats.connect(url), await nats.connect(url)
    settings = TOY.settings(parse_flags(TOY.add_arguments))
    worker = RunWorker(worker_nc, kind=TOY.name, compute=await open_computer(TOY, worker_nc, settings))
    gateway = Gateway(gateway_nc, [*load_kinds(), TOY])
    port = free_port()
    servers = start_listeners(
        gateway,
        argparse.Namespace(metrics_port=port, results_port=0, qoe_port=0, cost_port=0, bind="127.0.0.1"),
    )
    stop = asyncio.Event()
    tasks = [asyncio.create_task(worker.run(stop)), asyncio.create_task(gateway.run(stop, lag_interval=0.2))]
    try:
        async with running_ingest(url, results_dir):
            (results_dir / example.name).write_bytes(example.read_bytes())

            async def exported() -> bool:
                return f'toy_timed_scenarios{{run_id="{example.stem}"}} {float(expected)}' in scrape(port)

            await eventually(exported, timeout=20, what="the toy kind's metric")
        text = scrape(port)
        assert 'transcode_gateway_results_received_total{kind="toy"} 1.0' in text
        assert 'transcode_consumer_pending_messages{consumer="toy"} 0.0' in text
        stored = await decoded(nc.jetstream(), subjects.RESULTS_STREAM, f"{subjects.RESULTS}.toy", ToyResult)
        assert [r.timed for r in stored] == [expected]
    finally:
        stop.set()
        await asyncio.gather(*tasks)
        for server in servers.values():
            server.stop()
        await worker_nc.close()
        await gateway_nc.close()


def test_everything_derives_from_the_one_list() -> None:
    names = [ref.name for ref in KINDS]
    assert [k.name for k in load_kinds()] == names
    assert service_names() == ["ingest", *names, "exporter"]
    from services.cli import build_parser

    parser = build_parser()
    for name in names:  # one subcommand per kind, parsed with its own flags
        assert parser.parse_args([name]).command == name
    assert subjects.result_subject("toy", "0123456789abcdef") == "te.results.toy.0123456789abcdef"
    with pytest.raises(ValueError):
        subjects.result_subject("no.dots", "0123456789abcdef")


def cost_args(*argv: str) -> argparse.Namespace:
    return parse_flags(cost_flags, ["--electricity-maps-url", "http://127.0.0.1:9", *argv])


async def test_changed_prices_recompute_every_stored_run_at_start(
    nc: NATS, results_dir: Path, nats_server: object
) -> None:
    url = nats_server.url  # type: ignore[attr-defined]
    example = EXAMPLES / "test_results_20251228_203216.json"
    import nats

    async def run_cost(region: str) -> None:
        client = await nats.connect(url)
        settings = settings_from_args(cost_args("--region", region))
        assert COST.fingerprint is not None
        worker = RunWorker(
            client,
            kind="cost",
            compute=await open_computer(COST, client, settings),
            fingerprint=COST.fingerprint(settings),
        )
        stop = asyncio.Event()
        task = asyncio.create_task(worker.run(stop))

        async def priced() -> bool:
            found = await decoded(
                nc.jetstream(), subjects.RESULTS_STREAM, f"{subjects.RESULTS}.cost", CostResult
            )
            return any(r.region == region for r in found)

        try:
            await eventually(priced, timeout=20, what=f"costs in region {region}")
        finally:
            stop.set()
            await task
            await client.close()

    async with running_ingest(url, results_dir):
        (results_dir / example.name).write_bytes(example.read_bytes())
        await run_cost("us-east-1")
    await run_cost("eu-west-1")  # restarted with another region: the stored run is costed again
    [result] = await decoded(nc.jetstream(), subjects.RESULTS_STREAM, f"{subjects.RESULTS}.cost", CostResult)
    # eu-west-1's table price is 0.22/kWh and 250 g/kWh.
    assert (result.region, result.energy_price_per_kwh, result.co2_intensity_g_per_kwh) == (
        "eu-west-1",
        0.22,
        250,
    )


def gpu_scenario() -> Scenario:
    # 10 s, CPU package 100 W flat (3 samples 5 s apart: 1000 J); GPU power 50 W flat (its integral would be
    # 500 J) and its energy counter saying 600 J (the counter wins over the integral), VMAF 90.
    return Scenario(
        name="1 Streams @ 2500k",
        bitrate="2500k",
        resolution="1280x720",
        fps=30,
        start_time=0.0,
        end_time=10.0,
        vmaf_score=90.0,
        telemetry=Telemetry(
            step_seconds=5.0,
            power_watts=[100.0, 100.0, 100.0],
            gpu_power_watts=[50.0, 50.0, 50.0],
            gpu_energy_joules=600.0,
        ),
    )


def test_gpu_energy_enters_cost_co2_and_quality_per_watt() -> None:
    run = run_input(gpu_scenario())
    [cost] = compute_costs(run, settings_from_args(cost_args("--energy-cost", "0.36"))).scenarios
    # Energy priced: CPU 1000 J + GPU 600 J = 1600 J; x 0.36 / 3.6e6 per J = 1.6e-4.
    assert cost.energy_joules == pytest.approx(1600.0)
    assert cost.energy_cost == pytest.approx(1600 * 0.36 / 3.6e6, rel=1e-12)
    # Mean power for the projections: CPU samples' mean 100 W + GPU 600 J / 10 s = 60 W -> 160 W;
    # CO2 per hour at the default 400 g/kWh: 400 x 0.160 kW / 1000 = 0.064 kg/h.
    assert cost.mean_power_w == pytest.approx(160.0)
    assert cost.co2_kg_per_hour == pytest.approx(0.064, rel=1e-12)
    [qoe] = compute_qoe(run, qoe_settings(parse_flags(qoe_flags))).scenarios
    # Quality per watt: 90 / (1000 J / 10 s + 600 J / 10 s) = 90 / 160 = 0.5625.
    assert qoe.quality_per_watt == pytest.approx(0.5625, rel=1e-12)
    # QoE efficiency: 1280 x 720 x 30 x 10 px x 0.9 / 1600 J = 155520.
    assert qoe.qoe_efficiency_score == pytest.approx(1280 * 720 * 30 * 10 * 0.9 / 1600, rel=1e-12)


def test_a_stated_mean_power_wins_for_quality_per_watt() -> None:
    """The old QoE exporter's own example: 78.42 VMAF over a stated 10.9 W is 7.194495 VMAF/W."""
    from shared.schemas import PowerSummary

    scenario = Scenario(
        name="1 Streams @ 2500k",
        bitrate="2500k",
        resolution="1280x720",
        fps=30,
        start_time=0.0,
        end_time=10.0,
        vmaf_score=78.42,
        power=PowerSummary(mean_watts=10.9, total_energy_joules=109.0063),
    )
    [qoe] = compute_qoe(run_input(scenario), qoe_settings(parse_flags(qoe_flags))).scenarios
    assert qoe.quality_per_watt == pytest.approx(78.42 / 10.9, rel=1e-12)
    assert f"{qoe.quality_per_watt:.6f}" == "7.194495"


@pytest.mark.parametrize(
    ("vmaf", "old_printed", "ours_6_digits"),
    [
        (88.0, "1.1057e+07", "1.10572e+07"),  # the old contract's example VMAF
        (44.25835, "5.5610e+06", "5.56107e+06"),  # a VMAF giving issue 20's pair
    ],
)
def test_qoe_efficiency_counts_the_measured_duration(
    vmaf: float, old_printed: str, ours_6_digits: str
) -> None:
    """docs/compatibility.md Q1: the old QoE exporter counted the ladder's pixels over the configured 120 s and
    printed %.4e; ours counts them over the measured end - start and keeps every digit."""
    from shared.schemas import PowerSummary

    doc = json.loads((EXAMPLES / "test_results_20251228_203216.json").read_text())
    [raw] = [
        s for s in doc["scenarios"] if s["name"] == "Multi-resolution ladder test 1080p+720p+480p @ 2500k"
    ]
    scenario = msgspec.convert(raw, Scenario)
    scenario = msgspec.structs.replace(
        scenario,
        vmaf_score=vmaf,
        power=PowerSummary(total_energy_joules=975.604),  # the old exporter's input
    )
    per_second = (1920 * 1080 + 1280 * 720 + 854 * 480) * 30  # the three renditions at 30 fps, px/s
    measured = 1766950176.7471232 - 1766950056.7466147  # 120.000509 s
    old = per_second * 120 * (vmaf / 100) / 975.604
    ours = per_second * measured * (vmaf / 100) / 975.604
    [q] = compute_qoe(run_input(scenario), qoe_settings(parse_flags(qoe_flags))).scenarios
    assert q.qoe_efficiency_score is not None
    assert q.qoe_efficiency_score == pytest.approx(ours, rel=1e-12)
    assert q.qoe_efficiency_score / old - 1 == pytest.approx(4.2379e-6, rel=1e-4)  # measured / configured
    assert f"{old:.4e}" == old_printed
    assert f"{q.qoe_efficiency_score:.6g}" == ours_6_digits


def test_results_are_result_envelopes() -> None:
    for kind in load_kinds():
        assert issubclass(kind.result, ResultEnvelope)
        assert msgspec.json.schema(kind.result)


async def test_a_derived_kind_is_handed_only_the_results_it_needs(nc: NATS) -> None:
    """Its durable consumer filters on the needed kinds: its own results (and other kinds') never reach it."""
    await bus.ensure_topology(nc.jetstream())
    computer = await open_computer(TOY, nc, TOY.settings(parse_flags(TOY.add_arguments)))
    worker = RunWorker(nc, kind="toy", compute=computer, needs={"cost": CostResult, "qoe": ResultEnvelope})
    stop = asyncio.Event()
    task = asyncio.create_task(worker.run(stop))
    try:
        await asyncio.wait_for(worker.ready.wait(), 15)
        js = nc.jetstream()
        info = await js.consumer_info(subjects.RESULTS_STREAM, "toy")
        assert info.config.filter_subjects == [f"{subjects.RESULTS}.cost.>", f"{subjects.RESULTS}.qoe.>"]
        for kind in ("toy", "modeling"):
            await js.publish(subjects.result_subject(kind, "0123456789abcdef"), b"{}")
        info = await js.consumer_info(subjects.RESULTS_STREAM, "toy")
        assert info.num_pending == 0 and info.num_ack_pending == 0
        assert (info.delivered.stream_seq if info.delivered else 0) == 0
    finally:
        stop.set()
        await asyncio.wait_for(task, 15)


async def test_small_runs_are_computed_on_the_loop_large_ones_and_network_lookups_in_a_thread() -> None:
    import threading

    from shared import kinds as kinds_module

    loop_thread = threading.get_ident()
    where: list[int] = []

    def record(run: RunInput, settings: object) -> ResultEnvelope:
        where.append(threading.get_ident())
        return make_result(ResultEnvelope, run)

    def scenario(i: int) -> Scenario:
        return Scenario(name=f"s{i}", start_time=0.0, end_time=1.0)

    small = run_input(*(scenario(i) for i in range(kinds_module.INLINE_MAX_SCENARIOS)))
    large = run_input(*(scenario(i) for i in range(kinds_module.INLINE_MAX_SCENARIOS + 1)))
    kind = Kind(
        name="probe",
        result=ResultEnvelope,
        add_arguments=lambda parser: None,
        settings=lambda args: None,
        families=lambda view: [],
        compute=record,
    )
    computer = await open_computer(kind, None, None)  # type: ignore[arg-type]
    await computer.compute(small)
    await computer.compute(large)
    assert where[0] == loop_thread and where[1] != loop_thread
    # The cost kind asks the network only with Electricity Maps configured; then never on the loop.
    assert COST.blocking is not None
    assert not COST.blocking(settings_from_args(parse_flags(cost_flags, [])))
    with_maps = settings_from_args(parse_flags(cost_flags, ["--electricity-maps-token", "t"]))
    assert COST.blocking(with_maps)
    networked = await open_computer(
        Kind(**{**vars(kind), "blocking": lambda settings: True}),
        None,  # type: ignore[arg-type]
        None,
    )
    await networked.compute(small)
    assert where[2] != loop_thread
