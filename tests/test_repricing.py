"""Re-pricing: restarting `up` with another region recomputes the costs of every stored run.

A real `up` (in one process, and with one process per service) prices two runs in us-east-1, is stopped,
and is started again on the same NATS with ``--region eu-west-1``. Every stored run's cost result must be
computed again at the new price, the gateway must say so, and `up` must say so in one log line.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import subprocess
import threading
import time
from pathlib import Path

import nats
import pytest

from services.up import free_port
from shared import subjects
from shared.schemas import CostResult
from tests.conftest import EXAMPLES, start_nats, stop_process, up_argv
from tests.helpers import decoded
from tests.test_recovery import exported, get

pytestmark = pytest.mark.slow

RUN_A = "test_results_20251228_203216"
RUN_B = "test_results_20251230_120000"
#: The built-in table's electricity prices (USD/kWh) and grid intensities (g/kWh) of the two regions, as
#: docs/pricing.md cites them.
PRICE = {"us-east-1": 0.12, "eu-west-1": 0.22}
CO2 = {"us-east-1": 390.0, "eu-west-1": 250.0}
#: Variables of the developer's shell that would change the prices under test.
PRICING_ENV = ("REGION", "ENERGY_COST_PER_KWH", "CURRENCY", "PRICING_CONFIG", "ELECTRICITY_MAPS_TOKEN")


class Up:
    def __init__(self, tmp: Path, nats_url: str, region: str, processes: bool) -> None:
        self.metrics_port = free_port()
        flags: dict[str, object] = {
            "nats_url": nats_url,
            "metrics_port": self.metrics_port,
            "results_port": 0,
            "qoe_port": 0,
            "cost_port": 0,
            "region": region,
        }
        argv = up_argv(tmp / "results", tmp / "data", **flags)
        if processes:
            argv.append("--processes")
        env = {k: v for k, v in os.environ.items() if k not in PRICING_ENV and not k.startswith("NATS_")}
        env["XDG_STATE_HOME"] = str(tmp / "state")
        self.proc = subprocess.Popen(
            argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.output.append(line.rstrip())

    def wait(self, what: str, predicate: object, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "up exited:\n" + "\n".join(self.output[-40:])
            if callable(predicate) and predicate():
                return
            time.sleep(0.3)
        raise AssertionError(f"{what}: not within {timeout:g}s\n" + "\n".join(self.output[-40:]))

    def stop(self) -> None:
        stop_process(self.proc)


def stored_costs(url: str) -> dict[str, CostResult]:
    """Every run's cost result as stored on the results stream (the newest per run)."""

    async def read() -> dict[str, CostResult]:
        nc = await nats.connect(url)
        try:
            found = await decoded(
                nc.jetstream(), subjects.RESULTS_STREAM, f"{subjects.RESULTS}.cost.", CostResult
            )
        finally:
            await nc.close()
        return {result.run_id: result for result in found}

    return asyncio.run(read())


def pricing_info(metrics_port: int) -> list[dict[str, str]]:
    from prometheus_client.parser import text_string_to_metric_families

    text = get(f"http://127.0.0.1:{metrics_port}/metrics")[1]
    return [
        dict(sample.labels)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "cost_pricing_info"
    ]


def monthly(result: CostResult) -> dict[int, float]:
    return {s.index: s.monthly_cost for s in result.scenarios if s.monthly_cost}


def co2_monthly(result: CostResult) -> dict[int, float]:
    return {s.index: s.co2_monthly_kg for s in result.scenarios if s.co2_monthly_kg}


@pytest.mark.parametrize("processes", [False, True], ids=["one-process", "processes"])
def test_a_restart_with_another_region_reprices_every_stored_run(tmp_path: Path, processes: bool) -> None:
    server = start_nats(tmp_path / "nats")
    results = tmp_path / "results"
    results.mkdir()
    example = json.loads((EXAMPLES / f"{RUN_A}.json").read_text())
    (results / f"{RUN_A}.json").write_text(json.dumps(example))
    (results / f"{RUN_B}.json").write_text(json.dumps(example))
    try:
        first = Up(tmp_path, server.url, "us-east-1", processes)
        try:
            first.wait("both runs priced", lambda: set(stored_costs(server.url)) == {RUN_A, RUN_B})
            first.wait("run B exported", lambda: exported(first.metrics_port, RUN_B))
        finally:
            first.stop()
        before = stored_costs(server.url)

        second = Up(tmp_path, server.url, "eu-west-1", processes)
        try:

            def repriced() -> bool:
                now = stored_costs(server.url)
                return all(now[run].computed_at > before[run].computed_at for run in (RUN_A, RUN_B))

            second.wait("both stored runs repriced", repriced)
            second.wait(
                "the gateway names the new region",
                lambda: [i["region"] for i in pricing_info(second.metrics_port)] == ["eu-west-1"],
            )
            after = stored_costs(server.url)
            replays = [line for line in second.output if "recomputing every stored run" in line]
        finally:
            second.stop()
    finally:
        server.stop()

    assert len(replays) == 1, second.output
    assert replays[0].endswith("recomputing every stored run (2)"), replays[0]
    for run in (RUN_A, RUN_B):
        old, new = monthly(before[run]), monthly(after[run])
        assert old and set(old) == set(new), run
        for name, value in old.items():
            # Energy only (no CPU/GPU price): the projection scales with the price per kWh alone.
            assert math.isclose(new[name], value * PRICE["eu-west-1"] / PRICE["us-east-1"], rel_tol=1e-9), (
                name
            )
        old_co2, new_co2 = co2_monthly(before[run]), co2_monthly(after[run])
        assert old_co2 and set(old_co2) == set(new_co2)
        for name, value in old_co2.items():
            assert math.isclose(new_co2[name], value * CO2["eu-west-1"] / CO2["us-east-1"], rel_tol=1e-9), (
                name
            )
    for run in (RUN_A, RUN_B):
        assert (before[run].region, before[run].energy_price_per_kwh) == ("us-east-1", PRICE["us-east-1"])
        assert (after[run].region, after[run].energy_price_per_kwh) == ("eu-west-1", PRICE["eu-west-1"])
