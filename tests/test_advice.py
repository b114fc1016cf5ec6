"""The advisor's core (shared/advice.py) against hand-computed orderings and figures."""

from __future__ import annotations

import csv
from pathlib import Path

import msgspec
import pytest

from shared.advice import advise, cost_per_stream_hour, fmt, primary_algorithm
from shared.schemas import (
    AdviceResult,
    CostResult,
    CostScenario,
    ModelingResult,
    ModelingScenario,
    QoEResult,
    QoEScenario,
    ResultsFile,
    Scenario,
)
from shared.scoring import Algorithm, ScoreError
from tests.helpers import cost_result, modeling_result

DATA = Path(__file__).parent / "data"
RUN = DATA / "test_results_20251228_203216.json"
ANALYSIS = DATA / "test_results_20251228_203216_analysis.csv"


def example_run() -> tuple[list[Scenario], ModelingResult, dict[str, dict[str, str]]]:
    """The 2025-12-28 run with the analysis CSV's mean power as the measured power (energy = P x D)."""
    scenarios = msgspec.json.decode(RUN.read_bytes(), type=ResultsFile).scenarios
    with ANALYSIS.open(newline="") as f:
        rows = {row["name"]: row for row in csv.DictReader(f)}
    stats = []
    for i, s in enumerate(scenarios):
        assert s.name is not None and s.start_time is not None and s.end_time is not None
        d = float(s.end_time) - float(s.start_time)
        power = float(rows[s.name]["mean_power_w"])
        stats.append(ModelingScenario(index=i, duration_s=d, mean_power_w=power, energy_j=power * d))
    modeling: ModelingResult = modeling_result(stats, run_id="test_results_20251228_203216")
    return scenarios, modeling, rows


def advise_example(**kwargs: float) -> AdviceResult:
    scenarios, modeling, _ = example_run()
    return advise(
        scenarios, modeling, None, None, run_id="r", digest="0123456789abcdef", generation=1, **kwargs
    )


ML5 = "Multi-resolution ladder test 1080p+720p+480p @ 5000k"
ML25 = "Multi-resolution ladder test 1080p+720p+480p @ 2500k"

# Throughput per watt = Mbps x streams / W, by hand from the CSV's mean power:
# 8@5000 40/18.9 = 2.116; 4@5000 20/10.46 = 1.912; 2@5000 10/8.23 = 1.215; 8@2500 20/18.7 = 1.070;
# 4@2500 10/11.34 = 0.882; 1@5000 5/6.83 = 0.732; 2@2500 5/7.56 = 0.661; ML@5000 5/8.97 = 0.557;
# 8@1000 8/17.33 = 0.462; 4@1000 4/10.86 = 0.368; 1@2500 2.5/7.12 = 0.351; ML@2500 2.5/8.13 = 0.308;
# 2@1000 2/8.16 = 0.245; 1@1000 1/6.76 = 0.148.
THROUGHPUT_ORDER = [
    "8 Streams @ 5000k",
    "4 Streams @ 5000k",
    "2 Streams @ 5000k",
    "8 Streams @ 2500k",
    "4 Streams @ 2500k",
    "1 Streams @ 5000k",
    "2 Streams @ 2500k",
    ML5,
    "8 Streams @ 1000k",
    "4 Streams @ 1000k",
    "1 Streams @ 2500k",
    ML25,
    "2 Streams @ 1000k",
    "1 Streams @ 1000k",
]

# Pixels per joule with E = P x D: streams x pixel rate / P. 720p30 is 27,648,000 px/s per stream; the
# ladder 1920x1080 + 1280x720 + 854x480 at 30 fps is 102,153,600 px/s.
# 8@1000 221.184M/17.33 = 12.76M; ML@2500 102.15M/8.13 = 12.57M; 8@2500 /18.7 = 11.83M; 8@5000 /18.9 = 11.70M;
# ML@5000 /8.97 = 11.39M; 4@5000 110.592M/10.46 = 10.57M; 4@1000 /10.86 = 10.18M; 4@2500 /11.34 = 9.75M;
# 2@2500 55.296M/7.56 = 7.31M; 2@1000 /8.16 = 6.78M; 2@5000 /8.23 = 6.72M; 1@1000 27.648M/6.76 = 4.09M;
# 1@5000 /6.83 = 4.05M; 1@2500 /7.12 = 3.88M.
PIXELS_ORDER = [
    "8 Streams @ 1000k",
    ML25,
    "8 Streams @ 2500k",
    "8 Streams @ 5000k",
    ML5,
    "4 Streams @ 5000k",
    "4 Streams @ 1000k",
    "4 Streams @ 2500k",
    "2 Streams @ 2500k",
    "2 Streams @ 1000k",
    "2 Streams @ 5000k",
    "1 Streams @ 1000k",
    "1 Streams @ 5000k",
    "1 Streams @ 2500k",
]


def ordering(advice: AdviceResult, algorithm: str) -> list[str | None]:
    ranked = sorted((s for s in advice.scenarios if algorithm in s.ranks), key=lambda s: s.ranks[algorithm])
    return [s.name for s in ranked]


class TestExampleRun:
    def test_baseline_left_out(self) -> None:
        advice = advise_example()
        assert advice.baseline_index == 0
        assert len(advice.scenarios) == 14
        assert "Baseline (Idle)" not in {s.name for s in advice.scenarios}

    def test_throughput_ranks_match_hand_order_and_the_old_csv(self) -> None:
        advice = advise_example()
        assert ordering(advice, "throughput_per_watt") == THROUGHPUT_ORDER
        # The old analysis CSV ranked the same scores independently (its efficiency_rank column).
        _, _, rows = example_run()
        for s in advice.scenarios:
            assert s.name is not None
            assert s.ranks["throughput_per_watt"] == int(rows[s.name]["efficiency_rank"])
            assert s.throughput_mbps_per_watt == pytest.approx(float(rows[s.name]["efficiency_score"]))

    def test_pixels_per_joule_ranks(self) -> None:
        assert ordering(advise_example(), "pixels_per_joule") == PIXELS_ORDER

    def test_quality_scores_missing_with_reason(self) -> None:
        for s in advise_example().scenarios:
            assert s.vmaf_per_watt is None and s.quality_weighted_pixels_per_joule is None
            assert "quality_per_watt" not in s.ranks
            assert s.missing_reasons["qoe_efficiency"] == "no VMAF in the QoE result or the file"

    def test_auto_and_primary(self) -> None:
        advice = advise_example()
        autos = {s.name: s.auto_algorithm for s in advice.scenarios}
        # 12 single-output scenarios choose throughput_per_watt, the 2 ladders pixels_per_joule.
        assert autos[ML5] == autos[ML25] == "pixels_per_joule"
        assert sum(a == "throughput_per_watt" for a in autos.values()) == 12
        assert advice.primary_algorithm == "throughput_per_watt" and advice.primary_unit == "Mbps/W"
        assert advice.primary_reason == "the auto choice of 12 of 14 scenarios"

    def test_ladder_ranks_and_best_per_ladder(self) -> None:
        advice = advise_example()
        ladder = "1920x1080@30,1280x720@30,854x480@30"
        by_name = {s.name: s for s in advice.scenarios}
        assert by_name[ML5].ladder_rank == 1 and by_name[ML25].ladder_rank == 2
        # Within 1280x720@30 the throughput order without the two ladder scenarios.
        single = [n for n in THROUGHPUT_ORDER if n not in (ML5, ML25)]
        assert [by_name[n].ladder_rank for n in single] == list(range(1, 13))
        assert advice.best_per_ladder == {"1280x720@30": 12, ladder: 14}

    def test_recommendations(self) -> None:
        advice = advise_example()
        # No cost result: no cheapest recommendation. Most streams per watt = streams / W:
        # 8@1000 8/17.33 = 0.4616, next 8@2500 8/18.7 = 0.4278, ratio 1.079.
        assert [(r.kind, r.name) for r in advice.recommendations] == [
            ("best_overall", "8 Streams @ 5000k"),
            ("most_streams_per_watt", "8 Streams @ 1000k"),
            ("best_in_ladder", ML5),
        ]
        best, dense, ladder = advice.recommendations
        assert best.justification == (
            "'8 Streams @ 5000k' delivers 2.116 Mbps/W, 1.11x the next best '4 Streams @ 5000k' (1.912 Mbps/W)"
        )
        assert best.ratio == pytest.approx((40 / 18.9) / (20 / 10.46))
        assert dense.value == pytest.approx(8 / 17.33) and dense.unit == "streams/W"
        assert dense.justification == (
            "'8 Streams @ 1000k' serves 0.4616 streams/W, 1.08x the next best '8 Streams @ 2500k' (0.4278 streams/W)"
        )
        # 5/8.97 = 0.5574 against 2.5/8.13 = 0.3075: 1.81x.
        assert ladder.value == pytest.approx(5 / 8.97) and ladder.runner_up_value == pytest.approx(2.5 / 8.13)
        assert "0.5574 Mbps/W, 1.81x" in ladder.justification
        recommended = {s.name for s in advice.scenarios if s.recommended}
        assert recommended == {"8 Streams @ 5000k", "8 Streams @ 1000k", ML5}

    def test_pareto_without_cost_uses_watts_per_stream_and_pixels(self) -> None:
        advice = advise_example()
        assert (advice.pareto_x_metric, advice.pareto_y_metric) == ("watts_per_stream", "pixels_per_joule")
        # 8@1000 has both the lowest W/stream (17.33/8 = 2.166; next 18.7/8 = 2.338) and the highest
        # pixels/J (12.76M, above): it dominates every other scenario.
        assert advice.pareto_indices == [10]
        assert [s.index for s in advice.scenarios if s.pareto] == [10]

    def test_deterministic_and_serialisable(self) -> None:
        a, b = advise_example(), advise_example()
        assert msgspec.json.encode(a) == msgspec.json.encode(b)
        assert msgspec.json.decode(msgspec.json.encode(a), type=AdviceResult) == a


def small_run() -> tuple[list[Scenario], ModelingResult, CostResult, QoEResult]:
    """Four 720p30 scenarios plus a baseline with costs and VMAF, figures chosen for hand arithmetic."""
    scenarios = [
        Scenario(name="Baseline (Idle)", bitrate="0k", resolution="1280x720", fps=30),
        Scenario(name="1 Streams @ 2500k", bitrate="2500k", resolution="1280x720", fps=30, vmaf_score=50.0),
        Scenario(name="2 Streams @ 2500k", bitrate="2500k", resolution="1280x720", fps=30, vmaf_score=80.0),
        Scenario(name="4 Streams @ 1000k", bitrate="1000k", resolution="1280x720", fps=30, vmaf_score=70.0),
        Scenario(name="2 Streams @ 5000k", bitrate="5000k", resolution="1280x720", fps=30, vmaf_score=75.0),
    ]
    # (power W, duration s)
    measured = [(5.0, 3600.0), (10.0, 3600.0), (12.0, 3600.0), (20.0, 1800.0), (15.0, 3600.0)]
    modeling = modeling_result(
        [
            ModelingScenario(index=i, mean_power_w=p, duration_s=d, energy_j=p * d, is_baseline=i == 0)
            for i, (p, d) in enumerate(measured)
        ]
    )
    cost = cost_result(
        [CostScenario(index=i, total_cost=t) for i, t in enumerate([0.1, 0.5, 0.6, 0.4, 0.7], start=0)]
    )
    # The QoE worker measured 90 for scenario 1 (the file says 50): 90 wins.
    qoe = QoEResult(
        run_id="r",
        digest="0123456789abcdef",
        generation=1,
        scenarios=[QoEScenario(index=1, vmaf_score=90.0, source="ffmpeg")],
        computed_at=0.0,
        compute_seconds=0.0,
    )
    return scenarios, modeling, cost, qoe


def advise_small(min_vmaf: float | None = None) -> AdviceResult:
    scenarios, modeling, cost, qoe = small_run()
    return advise(
        scenarios, modeling, cost, qoe, run_id="r", digest="0123456789abcdef", generation=1, min_vmaf=min_vmaf
    )


class TestWithCostAndQuality:
    def test_qoe_vmaf_wins_and_scores(self) -> None:
        advice = advise_small()
        one = advice.scenarios[0]
        assert (one.index, one.vmaf, one.vmaf_source) == (1, 90.0, "qoe")
        assert advice.scenarios[1].vmaf_source == "file"
        # 90 / 10 W = 9 VMAF/W; 27,648,000 px/s x 3600 s x 0.9 / 36,000 J = 2,488,320.
        assert one.vmaf_per_watt == 9.0
        assert one.quality_weighted_pixels_per_joule == pytest.approx(2_488_320.0)
        assert all(s.auto_algorithm == "qoe_efficiency" for s in advice.scenarios)
        assert advice.primary_algorithm == "qoe_efficiency"

    def test_cost_per_stream_hour(self) -> None:
        advice = advise_small()
        # total / (h x streams): 0.5/(1x1) = 0.5; 0.6/(1x2) = 0.3; 0.4/(0.5x4) = 0.2; 0.7/(1x2) = 0.35.
        assert [s.cost_per_stream_hour for s in advice.scenarios] == pytest.approx([0.5, 0.3, 0.2, 0.35])
        # 10/1, 12/2, 20/4, 15/2 W per stream.
        assert [s.watts_per_stream for s in advice.scenarios] == pytest.approx([10.0, 6.0, 5.0, 7.5])
        assert cost_per_stream_hour(None, 3600.0, 1) is None and cost_per_stream_hour(1.0, 0.0, 1) is None

    def test_pareto_cost_against_vmaf(self) -> None:
        advice = advise_small()
        assert (advice.pareto_x_metric, advice.pareto_y_metric) == ("cost_per_stream_hour", "vmaf")
        # (0.5, 90), (0.3, 80), (0.2, 70) trade off; (0.35, 75) is beaten by (0.3, 80).
        assert advice.pareto_indices == [1, 2, 3]

    def test_recommendations_with_min_vmaf(self) -> None:
        advice = advise_small(min_vmaf=75)
        # qoe_efficiency = streams x 27,648,000 px/s x VMAF/100 / W: 1: 2,488,320; 2: 2x0.8/12 -> 3,686,400;
        # 3: 4x0.7/20 -> 3,870,720; 4: 2x0.75/15 -> 2,764,800. Best 3, next 2, ratio 1.05.
        # VMAF >= 75 keeps 1 (90), 2 (80), 4 (75). Cheapest: 2 at 0.3 vs 4 at 0.35 (0.857x).
        # Streams per watt: 2/12 = 0.1667 vs 2/15 = 0.1333 (1.25x) vs 1/10.
        assert [(r.kind, r.index) for r in advice.recommendations] == [
            ("best_overall", 3),
            ("cheapest_per_stream_hour", 2),
            ("most_streams_per_watt", 2),
        ]
        best, cheap, dense = advice.recommendations
        assert best.justification == (
            "'4 Streams @ 1000k' delivers 3,871,000 quality-weighted pixels/J, 1.05x the next best "
            "'2 Streams @ 2500k' (3,686,000 quality-weighted pixels/J)"
        )
        assert cheap.justification == (
            "'2 Streams @ 2500k' costs 0.3 EUR/stream-hour at VMAF >= 75, 0.86x the next cheapest "
            "'2 Streams @ 5000k' (0.35 EUR/stream-hour)"
        )
        assert cheap.ratio == pytest.approx(0.3 / 0.35)
        assert dense.value == pytest.approx(2 / 12) and dense.ratio == pytest.approx(1.25)
        assert [s.meets_min_vmaf for s in advice.scenarios] == [True, True, False, True]

    def test_without_min_vmaf_the_cheapest_is_the_cheapest(self) -> None:
        cheap = advise_small().recommendations[1]
        assert (cheap.kind, cheap.index, cheap.runner_up_index) == ("cheapest_per_stream_hour", 3, 2)

    def test_unreachable_min_vmaf_is_a_note(self) -> None:
        advice = advise_small(min_vmaf=95)
        assert [r.kind for r in advice.recommendations] == ["best_overall"]
        assert "no scenario has a VMAF of at least 95" in advice.notes

    def test_invalid_min_vmaf_is_refused(self) -> None:
        with pytest.raises(ScoreError):
            advise_small(min_vmaf=101)


class TestMissingInputs:
    def test_no_modeling_result(self) -> None:
        scenarios, _, _, _ = small_run()
        advice = advise(scenarios, None, None, None, run_id="r", digest="0123456789abcdef", generation=1)
        assert advice.recommendations == [] and advice.pareto_indices == []
        assert advice.pareto_x_metric is None
        assert all(
            s.missing_reasons["throughput_per_watt"] == "no modeling result for this scenario"
            for s in advice.scenarios
        )
        assert advice.notes[0].startswith("no modeling result")

    def test_empty_run(self) -> None:
        advice = advise([], None, None, None, run_id="r", digest="0123456789abcdef", generation=1)
        assert advice.primary_algorithm is None and advice.scenarios == []


def test_primary_algorithm_tie_break() -> None:
    tpw, ppj, qoe = Algorithm.THROUGHPUT_PER_WATT, Algorithm.PIXELS_PER_JOULE, Algorithm.QOE_EFFICIENCY
    assert primary_algorithm([tpw, tpw, ppj]) is tpw
    # One each: the order auto prefers (qoe_efficiency, pixels_per_joule, throughput_per_watt) decides.
    assert primary_algorithm([tpw, ppj]) is ppj
    assert primary_algorithm([tpw, ppj, qoe]) is qoe
    assert primary_algorithm([]) is None


def test_fmt() -> None:
    assert [fmt(2.1164), fmt(0.35), fmt(3_870_720.0), fmt(12_763.0)] == [
        "2.116",
        "0.35",
        "3,871,000",
        "12,760",
    ]
