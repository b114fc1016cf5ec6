"""The advisor end to end: one real ``transcode-energy up`` (embedded nats-server, every service), the client
commands as subprocesses that find it without flags, the gateway scraped for real, raw NATS requests.

Expected figures are computed here from the example file's inline telemetry (plain arithmetic) or read from
the gateway's exported metrics, never by calling the project's maths.
"""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from services.up import free_port
from tests.conftest import DATA, EXAMPLES, REPO, require_binary, stop_process, up_argv
from tests.test_gateway_e2e import get, one, parse, trapezoid, values

pytestmark = pytest.mark.slow

RUN_A = "test_results_20251228_203216"
RUN_B = "test_results_20251230_120000"
#: Scenarios of run B whose power samples (and energy) are 1.5 x run A's.
SCALED = (3, 8, 12)  # 1 Streams @ 5000k, 4 Streams @ 2500k, 8 Streams @ 5000k
#: VMAF scores run B carries (run A has none), to exercise --min-vmaf.
B_VMAF = {1: 80.0, 2: 95.0}
PRICE = 0.12  # default region's USD/kWh
CO2 = 400.0  # default region's g/kWh
SERVICES = {"advice", "cost", "exporter", "ingest", "modeling", "qoe"}
KINDS = ["modeling", "cost", "qoe", "advice"]
TIMEOUT = 60.0

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


# ---------------------------------------------------------------------------------------------------------
# Hand-computed figures from the example file
# ---------------------------------------------------------------------------------------------------------


def example() -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((EXAMPLES / f"{RUN_A}.json").read_text())
    return doc


def run_b() -> dict[str, Any]:
    doc = example()
    for i in SCALED:
        tel = doc["scenarios"][i]["telemetry"]
        tel["power_watts"] = [p * 1.5 for p in tel["power_watts"]]
        tel["energy_joules"] *= 1.5
    for i, vmaf in B_VMAF.items():
        doc["scenarios"][i]["vmaf_score"] = vmaf
    return doc


def mbps(bitrate: str) -> float:
    assert bitrate.endswith("k"), bitrate
    return float(bitrate[:-1]) / 1000


def streams_of(raw: dict[str, Any]) -> int:
    first = raw["name"].split()[0]
    return int(first) if first.isdigit() else 1


@dataclass
class Hand:
    """One non-baseline scenario, computed by hand."""

    index: int
    name: str
    ladder: str
    mean_w: float
    throughput_per_watt: float
    pixels_per_joule: float
    cost_per_stream_hour: float


def hand(doc: dict[str, Any]) -> list[Hand]:
    out = []
    for index, raw in enumerate(doc["scenarios"]):
        if raw["bitrate"] == "0k":
            continue  # the idle baseline is never ranked
        tel = raw["telemetry"]
        d = raw["end_time"] - raw["start_time"]
        streams = streams_of(raw)
        outputs = raw["outputs"] or [{"resolution": raw["resolution"], "fps": raw["fps"]}]
        sizes = [tuple(int(x) for x in o["resolution"].split("x")) for o in outputs]
        pixels = streams * d * sum(w * h * o["fps"] for (w, h), o in zip(sizes, outputs, strict=True))
        mean_w = tel["energy_joules"] / d
        energy_cost = trapezoid(tel["power_watts"], tel["step_seconds"]) * PRICE / 3_600_000
        out.append(
            Hand(
                index=index,
                name=raw["name"],
                ladder=",".join(f"{o['resolution']}@{o['fps']}" for o in outputs),
                mean_w=mean_w,
                throughput_per_watt=mbps(raw["bitrate"]) * streams / mean_w,
                pixels_per_joule=pixels / tel["energy_joules"],
                cost_per_stream_hour=energy_cost / (d / 3600 * streams),
            )
        )
    return out


def best_first(rows: list[Hand], key: Callable[[Hand], float]) -> list[Hand]:
    return sorted(rows, key=lambda h: (-key(h), h.index))


# ---------------------------------------------------------------------------------------------------------
# The system
# ---------------------------------------------------------------------------------------------------------


@dataclass
class System:
    proc: subprocess.Popen[str]
    env: dict[str, str]
    nats_url: str
    metrics_port: int
    results_port: int
    results: Path
    data: Path
    tmp: Path
    log: list[str] = field(default_factory=list)
    #: The gateway's exposition (all families, legacy results) while run A was the latest run.
    scrape_a: str = ""
    legacy_a: str = ""

    def cli(self, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "services", *args],
            env=env or self.env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    def json(self, *args: str) -> Any:
        done = self.cli(*args, "--format", "json")
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)

    def output(self) -> str:
        return "\n".join(self.log)


def wait_for(what: str, predicate: Callable[[], bool], system: System, timeout: float = TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if system.proc.poll() is not None:
            raise AssertionError(f"up exited with {system.proc.returncode}:\n{system.output()}")
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:g}s\n{system.output()[-4000:]}")


def kinds_done(system: System, run_id: str) -> list[str]:
    done = system.cli("runs", "--format", "json")
    if done.returncode != 0:
        return []
    for run in json.loads(done.stdout)["runs"]:
        if run["run_id"] == run_id:
            return list(run["kinds_done"])
    return []


def latest_exported(text: str) -> str | None:
    found = [dict(ls)["run_id"] for (n, ls) in parse(text) if n == "transcode_gateway_latest_run_info"]
    return found[0] if found else None


def exports_advice_of(system: System, run_id: str) -> bool:
    text = get(system.metrics_port)[2]
    if latest_exported(text) != run_id:
        return False
    samples = parse(text)
    return (
        all(
            values(samples, name, run_id=run_id)
            for name in (
                "results_scenario_throughput_mbps_per_watt",
                "results_scenario_mean_power_watts",
                "results_scenario_prediction_interval_low_watts",
            )
        )
        and bool(values(samples, "cost_total_load_aware"))
        and bool(values(samples, "qoe_computation_duration_seconds"))
    )


#: Variables of the developer's shell that would change what this test expects (prices, NATS, enrichment).
IGNORED_ENV = (
    "CLIENT_TIMEOUT",
    "REGION",
    "ENERGY_COST_PER_KWH",
    "CPU_COST_PER_HOUR",
    "GPU_COST_PER_HOUR",
    "CURRENCY",
    "PRICING_CONFIG",
    "ELECTRICITY_MAPS_TOKEN",
    "PROMETHEUS_URL",
    "ADVICE_MIN_VMAF",
)


def client_env(state: Path) -> dict[str, str]:
    """The environment without settings of the developer's shell, with discovery confined to ``state``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("NATS_") and k not in IGNORED_ENV}
    env["XDG_STATE_HOME"] = str(state)
    return env


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    tmp = tmp_path_factory.mktemp("advisor-e2e")
    results, data, state = tmp / "results", tmp / "data", tmp / "state"
    results.mkdir()
    (results / f"{RUN_A}.json").write_text((EXAMPLES / f"{RUN_A}.json").read_text())
    nats_port, metrics_port, results_port = free_port(), free_port(), free_port()
    env = client_env(state)
    proc = subprocess.Popen(
        up_argv(
            results,
            data,
            nats_port=nats_port,
            metrics_port=metrics_port,
            results_port=results_port,
            qoe_port=0,
            cost_port=0,
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    system = System(
        proc, env, f"nats://127.0.0.1:{nats_port}", metrics_port, results_port, results, data, tmp
    )
    assert proc.stdout is not None
    stdout = proc.stdout
    reader = threading.Thread(target=lambda: system.log.extend(line.rstrip() for line in stdout), daemon=True)
    reader.start()
    try:
        wait_for("up's ready line", lambda: "ready" in system.log, system)
        wait_for("the advice result of run A", lambda: kinds_done(system, RUN_A) == KINDS, system)
        wait_for("the gateway exporting run A's advice", lambda: exports_advice_of(system, RUN_A), system)
        system.scrape_a = get(metrics_port)[2]
        system.legacy_a = get(results_port)[2]
        yield system
    finally:
        stop_process(proc)
        reader.join(timeout=10)


@dataclass
class TwoRuns:
    #: The gateway's exposition once run B was the latest run.
    scrape_b: str
    compare: subprocess.CompletedProcess[str]


@pytest.fixture(scope="module")
def two_runs(system: System) -> TwoRuns:
    """Run B dropped (written aside, then renamed in, as writers should) and fully processed."""
    path = system.results / f"{RUN_B}.json"
    if not path.exists():
        aside = system.results / f"{RUN_B}.json.tmp"
        aside.write_text(json.dumps(run_b()))
        aside.rename(path)
    wait_for("every result of run B", lambda: kinds_done(system, RUN_B) == KINDS, system)
    wait_for("the gateway exporting run B's advice", lambda: exports_advice_of(system, RUN_B), system)
    return TwoRuns(scrape_b=get(system.metrics_port)[2], compare=system.cli("compare", RUN_A, RUN_B))


# ---------------------------------------------------------------------------------------------------------
# runs
# ---------------------------------------------------------------------------------------------------------


def test_discovery_finds_this_up(system: System) -> None:
    endpoint = json.loads((system.data / "endpoint.json").read_text())
    assert endpoint["nats_url"] == system.nats_url and endpoint["pid"] == system.proc.pid
    pointer = json.loads((system.tmp / "state" / "transcode-energy" / "current.json").read_text())
    assert Path(pointer["endpoint"]) == (system.data / "endpoint.json").resolve()


def test_runs_lists_the_run_with_every_kind_done(system: System) -> None:
    table = system.cli("runs")
    assert table.returncode == 0, table.stderr
    (row,) = [line for line in table.stdout.splitlines() if RUN_A in line]
    assert row.split()[-1] == "all" and " 15 " in row
    answer = system.json("runs")
    assert answer["kinds"] == KINDS
    run = next(r for r in answer["runs"] if r["run_id"] == RUN_A)
    assert run["kinds_done"] == KINDS and run["scenarios"] == len(example()["scenarios"])
    assert run["file_name"] == f"{RUN_A}.json"


def test_an_explicit_nats_url_wins_over_discovery(system: System) -> None:
    # Discovery pointed at an empty state directory and no up in the working directory: only the flag works.
    nowhere = client_env(system.tmp / "no-state")
    done = system.cli("runs", "--format", "json", "--nats-url", system.nats_url, env=nowhere)
    assert done.returncode == 0, done.stderr
    assert RUN_A in {r["run_id"] for r in json.loads(done.stdout)["runs"]}


def test_the_live_up_of_the_current_directory_wins_over_the_user_pointer(system: System) -> None:
    """A checkout's own `up` (./var/nats/endpoint.json) is the one its commands talk to, even when the
    per-user pointer names another live `up` (started later, elsewhere); `status` says which it is."""
    elsewhere, checkout, state = system.tmp / "elsewhere", system.tmp / "checkout", system.tmp / "state-2"
    elsewhere.mkdir()
    (checkout / "var" / "nats").mkdir(parents=True)
    (checkout / "var" / "nats" / "endpoint.json").write_text((system.data / "endpoint.json").read_text())
    # Another live `up` as far as discovery can tell (a live pid), whose NATS is not there.
    other = {"nats_url": f"nats://127.0.0.1:{free_port()}", "pid": os.getpid(), "metrics_url": None}
    (elsewhere / "endpoint.json").write_text(json.dumps(other))
    (state / "transcode-energy").mkdir(parents=True)
    pointer = {"endpoint": str(elsewhere / "endpoint.json")}
    (state / "transcode-energy" / "current.json").write_text(json.dumps(pointer))

    def cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**client_env(state), "PYTHONPATH": str(REPO)}
        return subprocess.run(
            [sys.executable, "-m", "services", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    status = cli(checkout, "status")
    first = status.stdout.splitlines()[0]
    assert first == (
        f"system: {system.nats_url} (from the running 'transcode-energy up' of "
        f"{(checkout / 'var' / 'nats').resolve()} (pid {system.proc.pid}))"
    ), status.stdout + status.stderr
    assert RUN_A in cli(checkout, "runs").stdout
    # Outside the checkout the pointer is all there is: the other `up`, which does not answer.
    away = cli(elsewhere, "runs")
    assert away.returncode == 2 and f"cannot reach NATS at {other['nats_url']}" in away.stderr, away.stderr


# ---------------------------------------------------------------------------------------------------------
# recommend
# ---------------------------------------------------------------------------------------------------------


def test_recommend_ranks_by_throughput_per_watt_as_computed_by_hand(system: System) -> None:
    expected = best_first(hand(example()), lambda h: h.throughput_per_watt)
    answer = system.json("recommend", RUN_A, "--top", "100")
    assert answer["run_id"] == RUN_A
    assert (answer["algorithm"], answer["unit"]) == ("throughput_per_watt", "Mbps/W")
    assert [r["name"] for r in answer["rows"]] == [h.name for h in expected]
    assert [r["rank"] for r in answer["rows"]] == list(range(1, len(expected) + 1))
    scraped = parse(system.scrape_a)
    for row, h in zip(answer["rows"], expected, strict=True):
        assert row["score"] == pytest.approx(h.throughput_per_watt, rel=1e-9)
        assert row["mean_power_w"] == pytest.approx(h.mean_w, rel=1e-9)
        assert row["output_ladder"] == h.ladder
        # Bitrate x streams / the power the gateway exports: the same figure from the gateway's side.
        power = one(scraped, "results_scenario_mean_power_watts", scenario=h.name)
        raw = example()["scenarios"][h.index]
        assert row["score"] == pytest.approx(mbps(raw["bitrate"]) * streams_of(raw) / power, rel=1e-9)
    # The table says the same, best first.
    table = system.cli("recommend", RUN_A, "--top", "3")
    assert table.returncode == 0, table.stderr
    assert "ranked by throughput_per_watt (Mbps/W)" in table.stdout
    ranked = [line for line in table.stdout.splitlines() if line[:1].isdigit()]
    assert [line.split()[0] for line in ranked] == ["1", "2", "3"]
    assert all(h.name in line for line, h in zip(ranked, expected, strict=False))


def test_recommend_without_a_run_answers_for_the_latest(system: System) -> None:
    latest = next(r["run_id"] for r in system.json("runs")["runs"] if r["latest"])
    assert system.json("recommend")["run_id"] == latest


def test_recommend_top_ladder_and_algorithm(system: System) -> None:
    rows = hand(example())
    by_tpw = best_first(rows, lambda h: h.throughput_per_watt)

    top = system.json("recommend", RUN_A, "--top", "3")
    assert [r["name"] for r in top["rows"]] == [h.name for h in by_tpw[:3]]
    assert top["filtered_out"] == len(rows) - 3

    for ladder in sorted({h.ladder for h in rows}):
        answer = system.json("recommend", RUN_A, "--ladder", ladder, "--top", "100")
        want = [h.name for h in by_tpw if h.ladder == ladder]
        assert [r["name"] for r in answer["rows"]] == want, ladder
        assert [r["rank"] for r in answer["rows"]] == list(range(1, len(want) + 1))
        assert {r["output_ladder"] for r in answer["rows"]} == {ladder}
    assert {h.ladder for h in rows} == {"1280x720@30", "1920x1080@30,1280x720@30,854x480@30"}
    unknown = system.json("recommend", RUN_A, "--ladder", "640x360@30")
    assert unknown["rows"] == [] and any("640x360@30" in n for n in unknown["notes"])

    ppj = system.json("recommend", RUN_A, "--algorithm", "pixels_per_joule", "--top", "100")
    assert (ppj["algorithm"], ppj["unit"]) == ("pixels_per_joule", "pixels/J")
    expected = best_first(rows, lambda h: h.pixels_per_joule)
    assert [r["name"] for r in ppj["rows"]] == [h.name for h in expected]
    for row, h in zip(ppj["rows"], expected, strict=True):
        assert row["score"] == pytest.approx(h.pixels_per_joule, rel=1e-9)
    # The two orders really differ: the flag is not ignored.
    assert [h.name for h in expected] != [h.name for h in by_tpw]


def test_recommend_min_vmaf(system: System, two_runs: TwoRuns) -> None:
    # Run A has no VMAF: ranks stay, the quality-floored recommendations go, and a note says why.
    plain = system.json("recommend", RUN_A, "--top", "100")
    floored = system.json("recommend", RUN_A, "--top", "100", "--min-vmaf", "90")

    def ranking(answer: dict[str, Any]) -> list[tuple[int, str, float]]:
        return [(r["rank"], r["name"], r["score"]) for r in answer["rows"]]

    assert ranking(floored) == ranking(plain) and len(plain["rows"]) == len(hand(example()))
    kinds = {r["kind"] for r in plain["recommendations"]}
    assert {"cheapest_per_stream_hour", "most_streams_per_watt"} <= kinds
    assert {r["kind"] for r in floored["recommendations"]} == kinds - {
        "cheapest_per_stream_hour",
        "most_streams_per_watt",
    }
    assert any("VMAF of at least 90" in note for note in floored["notes"])
    # Run B has VMAF 80 on scenario 1 and 95 on scenario 2: a floor of 90 drops scenario 1 only.
    b_names = [h.name for h in hand(run_b())]
    b_all = system.json("recommend", RUN_B, "--top", "100", "--algorithm", "throughput_per_watt")
    b_90 = system.json(
        "recommend", RUN_B, "--top", "100", "--algorithm", "throughput_per_watt", "--min-vmaf", "90"
    )
    dropped = run_b()["scenarios"][1]["name"]
    assert sorted(r["name"] for r in b_all["rows"]) == sorted(b_names)
    assert sorted(r["name"] for r in b_90["rows"]) == sorted(set(b_names) - {dropped})
    quality = system.json("recommend", RUN_B, "--algorithm", "quality_per_watt", "--min-vmaf", "90")
    (row,) = quality["rows"]
    scenario = run_b()["scenarios"][2]
    d = scenario["end_time"] - scenario["start_time"]
    assert row["name"] == scenario["name"]
    assert row["score"] == pytest.approx(95.0 / (scenario["telemetry"]["energy_joules"] / d), rel=1e-9)
    bad = system.cli("recommend", RUN_A, "--min-vmaf", "150")
    assert bad.returncode == 2 and "150" in bad.stderr


def test_recommend_unknown_run(system: System) -> None:
    done = system.cli("recommend", "test_results_19990101_000000")
    assert done.returncode == 2
    assert "test_results_19990101_000000" in done.stderr and done.stdout == ""


# ---------------------------------------------------------------------------------------------------------
# The gateway's advice families
# ---------------------------------------------------------------------------------------------------------


def pareto_by_hand(rows: list[Hand]) -> set[str]:
    """Minimise cost per stream-hour, maximise pixels per joule (run A has no VMAF)."""

    def dominated(h: Hand) -> bool:
        return any(
            o.cost_per_stream_hour <= h.cost_per_stream_hour
            and o.pixels_per_joule >= h.pixels_per_joule
            and (o.cost_per_stream_hour < h.cost_per_stream_hour or o.pixels_per_joule > h.pixels_per_joule)
            for o in rows
        )

    return {h.name for h in rows if not dominated(h)}


def check_advice_families(samples: Samples, system: System) -> None:
    rows = hand(example())
    tpw = system.json("recommend", RUN_A, "--top", "100")
    ppj = system.json("recommend", RUN_A, "--top", "100", "--algorithm", "pixels_per_joule")
    for algorithm, answer in (("throughput_per_watt", tpw), ("pixels_per_joule", ppj)):
        field_name = {
            "throughput_per_watt": "throughput_mbps_per_watt",
            "pixels_per_joule": "pixels_per_joule",
        }
        for row in answer["rows"]:
            labels = {"run_id": RUN_A, "scenario": row["name"]}
            score = one(samples, f"results_scenario_{field_name[algorithm]}", **labels)
            assert score == pytest.approx(row["score"], rel=1e-12)
            rank = one(samples, "results_scenario_efficiency_rank", algorithm=algorithm, **labels)
            assert rank == row["rank"]
            assert one(samples, "results_scenario_pareto", **labels) == float(row.get("pareto", False))
            assert one(samples, "results_scenario_recommended", **labels) == float(
                row.get("recommended", False)
            )
    # Independently: the Pareto front of cost per stream-hour against pixels per joule, by hand.
    front = {
        dict(ls)["scenario"] for (n, ls), v in samples.items() if n == "results_scenario_pareto" and v == 1
    }
    assert front == pareto_by_hand(rows)
    for h in rows:
        assert one(samples, "results_scenario_cost_per_stream_hour", scenario=h.name) == pytest.approx(
            h.cost_per_stream_hour, rel=1e-9
        )
    # The best of each ladder under the primary algorithm, by hand.
    firsts = {
        dict(ls)["scenario"]
        for (n, ls), v in samples.items()
        if n == "results_scenario_ladder_rank" and v == 1
    }
    by_tpw = best_first(rows, lambda h: h.throughput_per_watt)
    assert firsts == {
        next(h.name for h in by_tpw if h.ladder == ladder) for ladder in {h.ladder for h in rows}
    }
    # Recommended flags name exactly the scenarios of the recommendations.
    named = {dict(ls)["scenario"] for (n, ls) in samples if n == "results_advice_recommendation_info"}
    flagged = {
        dict(ls)["scenario"] for (n, ls), v in samples.items() if n == "results_scenario_recommended" and v
    }
    assert named == flagged == {r["name"] for r in tpw["recommendations"]}
    assert one(samples, "results_advice_primary_algorithm_info", algorithm="throughput_per_watt") == 1


def test_gateway_exports_the_advice(system: System) -> None:
    check_advice_families(parse(system.scrape_a), system)


def test_legacy_results_listener_serves_the_advice(system: System) -> None:
    legacy = parse(system.legacy_a)
    assert {n for n, _ in legacy} >= {
        "results_scenario_throughput_mbps_per_watt",
        "results_scenario_efficiency_rank",
        "results_scenario_pareto",
        "results_scenario_recommended",
    }
    check_advice_families(legacy, system)
    everything = parse(system.scrape_a)
    assert {k: v for k, v in everything.items() if k in legacy} == legacy


def test_promtool_accepts_the_exposition(system: System) -> None:
    promtool = require_binary("promtool")
    for text in (system.scrape_a, system.legacy_a):
        check = subprocess.run(
            [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        assert "error" not in (check.stdout + check.stderr).lower(), check.stdout + check.stderr


# ---------------------------------------------------------------------------------------------------------
# compare
# ---------------------------------------------------------------------------------------------------------


def test_compare_flags_exactly_the_scenarios_outside_the_interval(system: System, two_runs: TwoRuns) -> None:
    a, b = parse(system.scrape_a), parse(two_runs.scrape_b)
    names = [s["name"] for s in example()["scenarios"]]
    scaled = {names[i] for i in SCALED}
    # Preconditions from the gateway: run B's scaled scenarios lie outside run A's intervals, the rest inside.
    for name in names[1:]:
        low = one(a, "results_scenario_prediction_interval_low_watts", run_id=RUN_A, scenario=name)
        high = one(a, "results_scenario_prediction_interval_high_watts", run_id=RUN_A, scenario=name)
        power_b = one(b, "results_scenario_mean_power_watts", run_id=RUN_B, scenario=name)
        assert (not low <= power_b <= high) == (name in scaled), name

    assert two_runs.compare.returncode == 1, two_runs.compare.stderr
    flagged = [line for line in two_runs.compare.stdout.splitlines() if line.startswith("regression: ")]
    assert sorted(line.split(": ")[1] for line in flagged) == sorted(scaled)

    answer = json.loads(system.cli("compare", RUN_A, RUN_B, "--format", "json").stdout)
    assert (answer["a_run_id"], answer["b_run_id"]) == (RUN_A, RUN_B)
    assert answer["regressions"] == len(SCALED) and answer["unmatched"] == []
    assert {d["b_name"] for d in answer["deltas"] if d.get("regression")} == scaled
    assert len(answer["deltas"]) == len(names)
    for d in answer["deltas"]:
        power_a = one(a, "results_scenario_mean_power_watts", run_id=RUN_A, scenario=d["a_name"])
        power_b = one(b, "results_scenario_mean_power_watts", run_id=RUN_B, scenario=d["b_name"])
        assert d["a_name"] == d["b_name"]
        assert d["delta_mean_power_w"] == pytest.approx(power_b - power_a, rel=1e-9, abs=1e-12)
        if d["b_name"] in scaled:
            assert d["pct_mean_power"] == pytest.approx(50.0, rel=1e-9)
        else:
            assert d["delta_mean_power_w"] == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------------------------------------
# predict and plan
# ---------------------------------------------------------------------------------------------------------


def test_predict_warns_outside_the_trained_range(system: System) -> None:
    config = [
        "--streams",
        "8",
        "--resolution",
        "1920x1080",
        "--fps",
        "60",
        "--bitrate",
        "6M",
        "--encoder",
        "cpu",
    ]
    done = system.cli("predict", *config)
    assert done.returncode == 0, done.stderr
    assert "outside the trained range" in done.stderr and "extrapolation" in done.stderr
    assert "prediction interval" in done.stdout and "outside" not in done.stdout
    answer = system.json("predict", *config)
    assert (
        answer["prediction_interval_low_w"] <= answer["mean_power_w"] <= answer["prediction_interval_high_w"]
    )
    assert answer["prediction_interval_low_w"] < answer["prediction_interval_high_w"]
    assert answer["features"]["streams"] == 8 and answer["features"]["bitrate_mbps"] == 6
    assert any(w.startswith("bitrate_mbps 6 is outside") for w in answer["warnings"])
    # Within the benchmarked range: no warning.
    inside = system.cli(
        "predict", "--streams", "4", "--resolution", "1280x720", "--fps", "30", "--bitrate", "2500k"
    )
    assert inside.returncode == 0 and "outside" not in inside.stderr


def test_plan_matches_a_hand_calculation_from_predict(system: System) -> None:
    config = ["--resolution", "1280x720", "--fps", "30", "--bitrate", "2500k"]
    p8 = system.json("predict", "--streams", "8", *config)
    p4 = system.json("predict", "--streams", "4", *config)
    plan = system.json(
        "plan", "--streams", "100", *config, "--hours-per-day", "24", "--streams-per-host", "8"
    )
    assert (plan["hosts"], plan["full_hosts"], plan["remainder_streams"]) == (13, 12, 4)
    assert plan["monthly_hours"] == 720 and plan["currency"] == "USD"
    assert plan["energy_price_per_kwh"] == PRICE and plan["co2_intensity_g_per_kwh"] == CO2
    for suffix, key in (
        ("", "mean_power_w"),
        ("_low", "prediction_interval_low_w"),
        ("_high", "prediction_interval_high_w"),
    ):
        watts = 12 * p8[key] + p4[key]
        kwh = watts * 720 / 1000
        fleet = plan["fleet_mean_power_w" if not suffix else f"fleet_power{suffix}_w"]
        assert fleet == pytest.approx(watts, rel=1e-9)
        assert plan[f"energy_kwh_per_month{suffix}"] == pytest.approx(kwh, rel=1e-9)
        assert plan[f"energy_cost_per_month{suffix}"] == pytest.approx(kwh * PRICE, rel=1e-9)
        assert plan[f"co2_kg_per_month{suffix}"] == pytest.approx(kwh * CO2 / 1000, rel=1e-9)
    assert plan["warnings"] == []
    table = system.cli("plan", "--streams", "100", *config, "--streams-per-host", "8")
    assert table.returncode == 0 and "100 streams on 13 host(s) of 8 streams" in table.stdout


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def test_report_csv_keeps_the_old_columns(system: System, tmp_path: Path) -> None:
    out = tmp_path / "report.csv"
    done = system.cli("report", RUN_A, "--format", "csv", "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert str(out) in done.stderr and done.stdout == ""
    with (DATA / f"{RUN_A}_analysis.csv").open() as old:
        old_header = next(csv.reader(old))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    header = list(rows[0])
    assert header[: len(old_header)] == old_header
    by_name = {r["name"]: r for r in rows}
    for h in hand(example()):
        assert float(by_name[h.name]["mean_power_w"]) == pytest.approx(h.mean_w, rel=1e-9)


def test_report_markdown_names_its_sources(system: System) -> None:
    done = system.cli("report", RUN_A, "--format", "md")
    assert done.returncode == 0, done.stderr
    sources = done.stdout.split("## Sources", 1)[1]
    assert "energy price: 0.12 USD/kWh (table" in sources
    assert "CO2 intensity: 400 g/kWh (table" in sources
    assert done.stdout.startswith(f"# Run {RUN_A}")


def test_report_compare(system: System, two_runs: TwoRuns) -> None:
    done = system.cli("report", RUN_B, "--compare", RUN_A)
    assert done.returncode == 0, done.stderr
    assert f"## Comparison: {RUN_B} against {RUN_A}" in done.stdout
    assert f"{len(SCALED)} regression(s)" in done.stdout


# ---------------------------------------------------------------------------------------------------------
# status and raw NATS
# ---------------------------------------------------------------------------------------------------------


def test_status(system: System) -> None:
    done = system.cli("status")
    assert done.returncode == 0, done.stdout + done.stderr
    # The block between "services:" and "backlog" lists one service per indented line.
    block = done.stdout.split("services:\n", 1)[1].split("backlog")[0]
    listed = {line.split()[0] for line in block.splitlines() if line.strip()}
    assert done.stdout.splitlines()[0].startswith(f"system: {system.nats_url} (from ")
    assert listed == SERVICES
    answer = system.json("status")
    assert answer["ok"] is True and answer["problems"] == []
    assert {s["service"] for s in answer["services"]} == SERVICES and answer["missing_services"] == []


def test_nats_micro_discovery_and_service_errors(system: System) -> None:
    import nats

    async def ask() -> tuple[dict[str, Any], dict[str, str], bytes]:
        nc = await nats.connect(system.nats_url, connect_timeout=5, allow_reconnect=False)
        try:
            info = await nc.request("$SRV.INFO.transcode-energy-advisor", b"", timeout=5)
            bad = await nc.request("te.advisor.recommend", b"not json", timeout=5)
        finally:
            await nc.close()
        return json.loads(info.data), dict(bad.headers or {}), bad.data

    info, headers, body = asyncio.run(asyncio.wait_for(ask(), 30))
    assert info["name"] == "transcode-energy-advisor"
    endpoints = {e["name"]: e["subject"] for e in info["endpoints"]}
    assert endpoints == {
        "runs": "te.advisor.runs",
        "recommend": "te.advisor.recommend",
        "compare": "te.advisor.compare",
        "plan": "te.advisor.plan",
        "report": "te.advisor.report",
        "delete-run": "te.advisor.runs.delete",
    }
    assert headers["Nats-Service-Error-Code"] == "400"
    assert "malformed" in headers["Nats-Service-Error"].lower() and body == b""


# ---------------------------------------------------------------------------------------------------------
# runs delete (last: it removes run B)
# ---------------------------------------------------------------------------------------------------------


def test_runs_delete_goes_back_to_the_earlier_run(system: System, two_runs: TwoRuns) -> None:
    assert latest_exported(get(system.metrics_port)[2]) == RUN_B
    done = system.cli("runs", "delete", RUN_B)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"deleted {RUN_B} (")
    wait_for(
        "the gateway exporting run A again", lambda: exports_advice_of(system, RUN_A), system, timeout=10
    )
    assert RUN_B not in system.cli("runs").stdout
    assert [r["run_id"] for r in system.json("runs")["runs"]] == [RUN_A]
    # Run A's figures are back, unchanged, not only its name.
    now = parse(get(system.metrics_port)[2])
    before = parse(system.scrape_a)
    business = {k: v for k, v in before.items() if not k[0].startswith("transcode_")}
    assert business and {k: now.get(k) for k in business} == business
    again = system.cli("runs", "delete", RUN_B)
    assert again.returncode == 2 and RUN_B in again.stderr
