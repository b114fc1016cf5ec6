"""File dropped -> metrics scraped, with the real CLI as subprocesses on a real NATS.

Every expected value is computed here from the results file itself (plain Python arithmetic), never by
calling the project's maths.
"""

from __future__ import annotations

import gzip
import http.client
import json
import re
import signal
import statistics
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.up import free_port
from tests.conftest import EXAMPLES, require_binary, start_prometheus, stop_process, up_argv

pytestmark = pytest.mark.slow
RUN = "test_results_20260101_000000"
PRICE = 0.12  # default region's $/kWh
CPU_PRICE = 0.5  # passed with --cpu-cost
CO2 = 400.0  # default region's g/kWh


def trapezoid(values: list[float], step: float) -> float:
    if len(values) == 1:
        return values[0] * step
    return step / 2 * (values[0] + 2 * sum(values[1:-1]) + values[-1])


def make_run() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EXAMPLES / "test_results_20251228_203216.json").read_text())
    scenarios = doc["scenarios"]
    scenarios[1].update(
        vmaf_score=91.5,
        psnr_score=41.25,
        ssim_score=0.981,
        total_frames=3600,
        dropped_frames=36,
        avg_fps=29.7,
    )
    scenarios[2].update(vmaf_score=130.0)  # invalid: must be rejected, never exported
    last = scenarios[-1]
    broken_times = {"start_time": last["end_time"] + 10, "end_time": last["end_time"] + 70}
    scenarios.append(
        {
            "name": "Broken no telemetry",
            "bitrate": "2500k",
            "resolution": "1280x720",
            "fps": 30,
            **broken_times,
        }
    )
    scenarios.append(
        {
            "name": 'Broken "negative" fps',
            "bitrate": "2500k",
            "resolution": "1280x720",
            "fps": -30,
            "encoder_type": "quantum",
            **broken_times,
            "telemetry": {"step_seconds": 5, "power_watts": [9.0] * 13, "energy_joules": 540.0},
        }
    )
    return doc


def parse(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def values(
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str
) -> list[float]:
    want = set(labels.items())
    return [v for (n, ls), v in samples.items() if n == name and want <= set(ls)]


def one(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    found = values(samples, name, **labels)
    assert len(found) == 1, (name, labels, found)
    return found[0]


def get(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, "", ""
    except OSError:  # not listening yet
        return 0, "", ""


@dataclass
class System:
    proc: subprocess.Popen[str]
    ports: dict[str, int]
    results: Path
    nats_url: str


@pytest.fixture
def system(tmp_path: Path) -> Iterator[System]:
    ports = {name: free_port() for name in ("metrics", "results", "qoe", "cost")}
    results = tmp_path / "results"
    results.mkdir()
    nats_port = free_port()
    proc = subprocess.Popen(
        up_argv(
            results,
            tmp_path / "nats",
            nats_port=nats_port,
            metrics_port=ports["metrics"],
            results_port=ports["results"],
            qoe_port=ports["qoe"],
            cost_port=ports["cost"],
            cpu_cost=CPU_PRICE,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    system = System(proc, ports, results, f"nats://127.0.0.1:{nats_port}")
    try:
        (results / f"{RUN}.json").write_text(json.dumps(make_run()))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status, _, _ = get(ports["metrics"], "/ready")
            text = get(ports["metrics"])[2] if status == 200 else ""
            if (
                "results_scenario_predicted_power_watts" in text
                and "cost_total_load_aware" in text
                and "qoe_vmaf_score" in text
            ):
                break
            time.sleep(0.3)
        else:
            proc.kill()
            raise AssertionError(proc.communicate()[0])
        yield system
    finally:
        stop_process(proc)


def test_every_listener_serves_the_contract(system: System) -> None:
    doc = make_run()
    scenarios = doc["scenarios"]
    cost = parse(get(system.ports["cost"])[2])
    results = parse(get(system.ports["results"])[2])
    qoe = parse(get(system.ports["qoe"])[2])
    everything = parse(get(system.ports["metrics"])[2])

    # --- which families live where ---------------------------------------------------------------------
    def names(samples: dict[tuple[str, frozenset[tuple[str, str]]], float]) -> set[str]:
        return {n for n, _ in samples}

    assert one(cost, "cost_exporter_alive") == 1 and one(results, "results_exporter_up") == 1
    assert all(n.startswith(("cost_", "co2_")) for n in names(cost))
    assert all(n.startswith("results_") for n in names(results))
    assert all(n.startswith("qoe_") for n in names(qoe))
    assert names(cost) | names(results) | names(qoe) <= names(everything)
    assert "transcode_gateway_ready" in names(everything)

    base = scenarios[0]
    base_power = statistics.mean(base["telemetry"]["power_watts"])
    base_mean = base["telemetry"]["energy_joules"] / (base["end_time"] - base["start_time"])
    assert one(results, "results_scenarios_total") == len(scenarios)

    for raw in scenarios[:15]:
        tel = raw["telemetry"]
        d = raw["end_time"] - raw["start_time"]
        name = raw["name"]
        legacy = name.replace(" ", "_")
        streams = int(name.split()[0]) if "Streams" in name else 1
        outputs = raw["outputs"] or [{"resolution": raw["resolution"], "fps": raw["fps"]}]
        pixels = (
            streams
            * d
            * sum(
                int(o["resolution"].split("x")[0]) * int(o["resolution"].split("x")[1]) * o["fps"]
                for o in outputs
            )
        )

        # cost family: scenario label in the old underscore form, six labels.
        energy_cost = trapezoid(tel["power_watts"], 5) * PRICE / 3_600_000
        compute_cost = trapezoid(tel["cpu_usage_cores"], 5) * CPU_PRICE / 3600
        labels = {
            "scenario": legacy,
            "currency": "USD",
            "streams": str(streams),
            "bitrate": raw["bitrate"],
            "encoder": "unknown",
            "service": "cost-analysis",
        }
        assert one(cost, "cost_energy_load_aware", **labels) == pytest.approx(energy_cost, rel=1e-9)
        assert one(cost, "cost_compute_load_aware", **labels) == pytest.approx(compute_cost, rel=1e-9)
        assert one(cost, "cost_total_load_aware", **labels) == pytest.approx(
            energy_cost + compute_cost, rel=1e-9
        )
        assert one(cost, "cost_per_pixel", **labels) == pytest.approx(
            (energy_cost + compute_cost) / pixels, rel=1e-9
        )
        assert values(cost, "cost_per_watch_hour", scenario=legacy) == []  # no viewers anywhere
        mean_p = statistics.mean(tel["power_watts"])
        assert one(cost, "cost_usd_per_hour", **labels) == pytest.approx(mean_p / 1000 * PRICE, rel=1e-9)
        assert one(cost, "cost_monthly_projection", **labels) == pytest.approx(
            mean_p / 1000 * PRICE * 720, rel=1e-9
        )
        assert one(cost, "cost_monthly_savings", **labels) == pytest.approx(
            (base_power - mean_p) / 1000 * PRICE * 720, rel=1e-9, abs=1e-12
        )
        assert one(cost, "co2_emissions_kg_per_hour", **labels) == pytest.approx(CO2 * mean_p / 1e6, rel=1e-9)
        assert one(cost, "co2_monthly_projection", **labels) == pytest.approx(
            CO2 * mean_p / 1e6 * 720, rel=1e-9
        )
        assert one(cost, "co2_monthly_avoided", **labels) == pytest.approx(
            CO2 * (base_power - mean_p) / 1e6 * 720, rel=1e-9, abs=1e-12
        )

        # results family: ten labels, raw scenario name.
        ladder = ",".join(f"{o['resolution']}@{o['fps']}" for o in outputs)
        rl = {
            "run_id": RUN,
            "scenario": name,
            "bitrate": raw["bitrate"],
            "resolution": raw["resolution"],
            "fps": "30",
            "streams": str(streams),
            "output_ladder": ladder,
            "encoder_type": "cpu",
            "encoder": "h264",
            "preset": "veryfast",
        }
        mean_w = tel["energy_joules"] / d
        assert one(results, "results_scenario_duration_seconds", **rl) == pytest.approx(d, rel=1e-12)
        assert one(results, "results_scenario_mean_power_watts", **rl) == pytest.approx(mean_w, rel=1e-12)
        assert one(results, "results_scenario_measured_power_watts", **rl) == pytest.approx(mean_w, rel=1e-12)
        assert one(results, "results_scenario_total_energy_joules", **rl) == pytest.approx(
            tel["energy_joules"]
        )
        assert one(results, "results_scenario_total_energy_wh", **rl) == pytest.approx(
            tel["energy_joules"] / 3600
        )
        cpu = statistics.mean(tel["container_cpu_percent"])
        assert one(results, "results_scenario_container_cpu_percent", **rl) == pytest.approx(cpu, rel=1e-12)
        assert one(results, "results_scenario_estimated_docker_overhead_watts", **rl) == pytest.approx(
            cpu / 100 * mean_w, rel=1e-12
        )
        sigma = statistics.stdev(tel["power_watts"])
        assert one(results, "results_scenario_power_stdev", **rl) == pytest.approx(sigma, rel=1e-9)
        assert one(results, "results_scenario_prediction_confidence_high", **rl) == pytest.approx(
            mean_w + 2 * sigma
        )
        assert one(results, "results_scenario_prediction_confidence_low", **rl) == pytest.approx(
            max(0.0, mean_w - 2 * sigma)
        )
        assert one(results, "results_scenario_energy_wh_per_min", **rl) == pytest.approx(
            tel["energy_joules"] / 3600 * 60 / d, rel=1e-12
        )
        if raw is base:
            assert values(results, "results_scenario_delta_power_watts", scenario=name) == []
            assert values(results, "results_scenario_efficiency_score", scenario=name) == []
            assert values(results, "results_scenario_predicted_power_watts", scenario=name) == []
            continue
        assert one(results, "results_scenario_efficiency_score", **rl) == pytest.approx(
            pixels / tel["energy_joules"], rel=1e-9
        )
        assert one(results, "results_scenario_total_pixels", **rl) == pytest.approx(pixels, rel=1e-12)
        assert one(results, "results_scenario_delta_power_watts", **rl) == pytest.approx(
            mean_w - base_mean, rel=1e-9
        )
        assert one(results, "results_scenario_net_power_watts", **rl) == pytest.approx(
            mean_w - base_mean, rel=1e-9
        )
        assert one(results, "results_scenario_power_pct_increase", **rl) == pytest.approx(
            (mean_w - base_mean) / base_mean * 100, rel=1e-9
        )
        predicted = one(results, "results_scenario_predicted_power_watts", **rl)
        low = one(results, "results_scenario_prediction_interval_low_watts", **rl)
        high = one(results, "results_scenario_prediction_interval_high_watts", **rl)
        assert low <= predicted <= high
        assert one(results, "results_scenario_predicted_energy_joules", **rl) == pytest.approx(predicted * d)
        assert one(results, "results_scenario_predicted_efficiency_score", **rl) == pytest.approx(
            pixels / (predicted * d), rel=1e-9
        )
        assert one(qoe, "qoe_computation_duration_seconds", scenario=legacy) > 0

    # --- QoE: valid scores exported, invalid ones not ----------------------------------------------------------
    s1 = scenarios[1]
    d1 = s1["end_time"] - s1["start_time"]
    assert one(qoe, "qoe_vmaf_score", scenario="1_Streams_@_1000k") == 91.5
    assert one(qoe, "qoe_psnr_score", scenario="1_Streams_@_1000k") == 41.25
    assert one(qoe, "qoe_ssim_score", scenario="1_Streams_@_1000k") == 0.981
    assert one(qoe, "qoe_drop_rate", scenario="1_Streams_@_1000k") == pytest.approx(36 / 3600)
    assert one(qoe, "qoe_quality_per_watt", scenario="1_Streams_@_1000k") == pytest.approx(
        91.5 / (s1["telemetry"]["energy_joules"] / d1), rel=1e-9
    )
    assert one(qoe, "qoe_efficiency_score", scenario="1_Streams_@_1000k") == pytest.approx(
        1280 * 720 * 30 * d1 * 0.915 / s1["telemetry"]["energy_joules"], rel=1e-9
    )
    assert values(qoe, "qoe_vmaf_score", scenario="1_Streams_@_2500k") == []  # 130 is not a VMAF
    assert one(results, "results_scenario_vmaf_score", scenario="1 Streams @ 1000k") == 91.5
    assert one(results, "results_scenario_avg_fps", scenario="1 Streams @ 1000k") == 29.7
    assert one(results, "results_scenario_total_frames", scenario="1 Streams @ 1000k") == 3600
    assert one(results, "results_scenario_dropped_frames", scenario="1 Streams @ 1000k") == 36

    # --- bad data inside a valid file: partial output, not a crash --------------------------------------------
    assert one(results, "results_scenario_duration_seconds", scenario="Broken no telemetry") == 60
    assert values(results, "results_scenario_mean_power_watts", scenario="Broken no telemetry") == []
    assert values(cost, "cost_total_load_aware", scenario="Broken_no_telemetry") == []
    weird = 'Broken "negative" fps'
    assert one(results, "results_scenario_mean_power_watts", scenario=weird) == 9.0
    assert (
        one(
            results,
            "results_scenario_mean_power_watts",
            scenario=weird,
            encoder_type="quantum",
            output_ladder="unknown",
            fps="-30",
        )
        == 9.0
    )
    assert values(results, "results_scenario_energy_mj_per_frame", scenario=weird) == []
    assert one(cost, "cost_energy_load_aware", scenario="Broken_negative_fps", encoder="quantum") > 0

    # No NaN or Inf anywhere, no duplicate series (parse() would have collapsed them: compare counts).
    text = get(system.ports["metrics"])[2]
    sample_lines = [line for line in text.splitlines() if line and not line.startswith("#")]
    assert len(sample_lines) == len(parse(text))
    assert not re.search(r" (NaN|[+-]Inf)$", text, re.MULTILINE)


def test_label_order_escaping_and_endpoints(system: System) -> None:
    status, content_type, text = get(system.ports["cost"])
    assert status == 200 and content_type.startswith("text/plain")
    line = next(x for x in text.splitlines() if x.startswith("cost_total_load_aware{"))
    assert re.match(
        r'cost_total_load_aware\{scenario="[^"]*",currency="USD",streams="\d+",bitrate="[^"]*",'
        r'encoder="[^"]*",service="cost-analysis"\} ',
        line,
    )
    results_line = next(
        x
        for x in get(system.ports["results"])[2].splitlines()
        if x.startswith("results_scenario_mean_power_watts{")
    )
    assert re.match(
        r'results_scenario_mean_power_watts\{run_id="[^"]+",scenario="[^"]*",bitrate=.*,resolution=.*,'
        r"fps=.*,streams=.*,output_ladder=.*,encoder_type=.*,encoder=.*,preset=.*\} ",
        results_line,
    )
    assert 'scenario="Broken \\"negative\\" fps"' in get(system.ports["results"])[2]
    for port in system.ports.values():
        assert get(port, "/health")[:1] == (200,)
        assert get(port, "/ready")[:1] == (200,)
        assert get(port, "/nope")[:1] == (404,)


def test_a_client_that_accepts_gzip_gets_the_same_exposition_compressed(system: System) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", system.ports["metrics"], timeout=5)

    def scrape(accept_encoding: str) -> tuple[str | None, bytes]:
        connection.request("GET", "/metrics", headers={"Accept-Encoding": accept_encoding})
        answer = connection.getresponse()
        body = answer.read()
        assert answer.status == 200 and answer.getheader("Vary") == "Accept-Encoding"
        return answer.getheader("Content-Encoding"), body

    try:
        # Prometheus asks this way, on one kept-alive connection. The exposition may still change (results
        # arriving, a lag poll) between two scrapes: compare until two agree.
        for _ in range(20):
            plain = get(system.ports["metrics"])[2]
            packed = [scrape("gzip"), scrape("gzip")]
            if all(gzip.decompress(body).decode() == plain for _, body in packed):
                break
            time.sleep(0.5)
        else:
            raise AssertionError("the gzip exposition never matched the plain one")
        for encoding, body in packed:
            assert encoding == "gzip" and len(body) * 5 < len(plain.encode())
        encoding, body = scrape("gzip;q=0, identity")
        assert encoding is None and body.startswith(b"# HELP")
        connection.request("GET", "/health", headers={"Accept-Encoding": "gzip"})
        answer = connection.getresponse()
        assert answer.getheader("Content-Encoding") is None and answer.read() == b"OK\n"  # too small to pack
    finally:
        connection.close()


def test_promtool_accepts_every_listener(system: System) -> None:
    promtool = require_binary("promtool")
    for name, port in system.ports.items():
        text = get(port)[2]
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        # promtool exits 0 when the exposition parses; lint remarks (if any) are printed, not fatal.
        assert check.returncode == 0, f"{name}: {check.stdout}{check.stderr}"
        assert "error" not in (check.stdout + check.stderr).lower(), f"{name}: {check.stdout}{check.stderr}"


def test_a_real_prometheus_scrapes_the_gateway(system: System, tmp_path: Path) -> None:
    proc, prom_url = start_prometheus(tmp_path, f"127.0.0.1:{system.ports['metrics']}")
    try:
        doc = make_run()
        s = doc["scenarios"][4]  # 2 Streams @ 1000k
        d = s["end_time"] - s["start_time"]
        expected_power = s["telemetry"]["energy_joules"] / d
        expected_cost = (
            trapezoid(s["telemetry"]["power_watts"], 5) * PRICE / 3_600_000
            + trapezoid(s["telemetry"]["cpu_usage_cores"], 5) * CPU_PRICE / 3600
        )

        def query(expr: str) -> list[dict]:  # type: ignore[type-arg]
            url = f"{prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.load(response)["data"]["result"]  # type: ignore[no-any-return]

        deadline = time.monotonic() + 60
        cost: list[dict] = []  # type: ignore[type-arg]
        power: list[dict] = []  # type: ignore[type-arg]
        while time.monotonic() < deadline:
            try:
                cost = query('cost_total_load_aware{scenario="2_Streams_@_1000k"}')
                power = query('results_scenario_mean_power_watts{scenario="2 Streams @ 1000k"}')
                if cost and power:
                    break
            except OSError:
                pass
            time.sleep(0.5)
        assert cost and power, "Prometheus never scraped the gateway"
        assert float(cost[0]["value"][1]) == pytest.approx(expected_cost, rel=1e-9)
        assert cost[0]["metric"]["service"] == "cost-analysis"  # honor_labels keeps the exported label
        assert float(power[0]["value"][1]) == pytest.approx(expected_power, rel=1e-9)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_gateway_restart_rebuilds_state_before_ready(system: System) -> None:
    before = parse(get(system.ports["metrics"])[2])
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "services",
            "exporter",
            "--nats-url",
            system.nats_url,
            "--metrics-port",
            str(port),
            "--results-port",
            "0",
            "--qoe-port",
            "0",
            "--cost-port",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and get(port, "/ready")[0] != 200:
            time.sleep(0.1)
        after = parse(get(port)[2])
        business = {k: v for k, v in before.items() if not k[0].startswith("transcode_")}
        assert business and {k: after.get(k) for k in business} == business
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
