"""A run of any size arrives whole: 10,000 scenarios get every kind of result end to end, through the real
`up` (results over the NATS payload limit travel in parts), and a result that cannot be published is a
reported error, never a silent drop."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import msgspec
import pytest
from nats.aio.client import Client as NATS

from services.up import free_port
from shared import subjects
from shared.runs import publish_result, result_payload
from shared.schemas import CostResult, CostScenario
from tests.conftest import up_argv
from tests.helpers import cost_result

N = 10_000


def big_run(n: int) -> dict[str, object]:
    scenarios = [
        {
            "name": f"{i % 8 + 1} Streams @ {1000 + 500 * (i % 5)}k",
            "bitrate": f"{1000 + 500 * (i % 5)}k",
            "resolution": "1280x720",
            "fps": 30,
            "start_time": 1_767_000_000 + 20 * i,
            "end_time": 1_767_000_010 + 20 * i,
            "vmaf_score": 80 + i % 15,
            "telemetry": {"step_seconds": 5, "power_watts": [10.0 + i % 8, 11.0 + i % 8, 12.0 + i % 8]},
        }
        for i in range(n)
    ]
    return {"scenarios": scenarios}


async def test_a_result_over_the_payload_limit_travels_in_parts(nc: NATS) -> None:
    from shared import bus

    js = nc.jetstream()
    await bus.ensure_topology(js)
    result: CostResult = cost_result(
        [CostScenario(index=i, energy_cost=i / 7, notes=["x" * 40]) for i in range(20_000)],
        computed_at=1.0,
        compute_seconds=0.5,
    )
    whole = msgspec.json.encode(result)
    assert len(whole) > nc.max_payload  # the point of the test
    parts = await publish_result(js, "cost", result, "0123456789abcdef:1:cost", nc.max_payload)
    assert parts == -(-len(whole) // (nc.max_payload - 4096))
    raw = await js.get_last_msg(subjects.RESULTS_STREAM, subjects.result_subject("cost", result.digest))
    assert len(raw.data or b"") < 1000  # the pointer is the envelope only
    payload = await result_payload(nc, "cost", result.digest, raw.data or b"", raw.headers)
    assert payload == whole
    assert msgspec.json.decode(payload, type=CostResult) == result


@pytest.mark.slow
def test_ten_thousand_scenarios_get_every_kind_of_result(tmp_path: Path) -> None:
    results_dir = tmp_path / "results"
    results_dir.mkdir()
    (results_dir / "test_results_20260301_000000.json").write_text(json.dumps(big_run(N)))
    port = free_port()
    env = {**os.environ, "XDG_STATE_HOME": str(tmp_path / "state")}
    argv = up_argv(results_dir, tmp_path / "nats", metrics_port=port, results_port=0, qoe_port=0, cost_port=0)
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 240
        kinds_done: list[str] = []
        while time.monotonic() < deadline:
            time.sleep(1)
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            done = subprocess.run(
                [sys.executable, "-m", "services", "runs", "--format", "json", "--timeout", "5"],
                env=env,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if done.returncode != 0:
                continue
            answer = json.loads(done.stdout)
            if answer["runs"]:
                kinds_done = answer["runs"][0]["kinds_done"]
                if set(kinds_done) == set(answer["kinds"]):
                    break
        assert set(kinds_done) == {"modeling", "cost", "qoe", "advice"}, kinds_done
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
            text = response.read().decode()
        assert f"results_scenarios_total {float(N)}" in text
        # Every scenario of every family made it to the gateway (one sample per scenario).
        for family in ("results_scenario_mean_power_watts", "cost_total_load_aware", "qoe_vmaf_score"):
            assert sum(1 for line in text.splitlines() if line.startswith(family + "{")) == N, family
    finally:
        proc.terminate()
        proc.wait(timeout=60)
