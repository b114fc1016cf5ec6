"""Efficiency scores and the recommender, against hand-computed values."""

from __future__ import annotations

import math

import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.recommender import (
    Candidate,
    best_per_ladder,
    pareto_front,
    rank,
    rank_by_ladder,
)
from shared.schemas import Output, Scenario
from shared.scoring import (
    Algorithm,
    Measured,
    ScoreError,
    choose_algorithm,
    choose_algorithm_with_reason,
    score,
    validate_psnr,
    validate_ssim,
    validate_vmaf,
)

S720 = Scenario(name="1 Streams @ 2500k", bitrate="2500k", resolution="1280x720", fps=30, duration=100)


class TestScores:
    def test_pixels_per_joule_worked_example(self) -> None:
        # Pixels per joule = width * height * fps * duration / energy: 720p30 for 100 s at 5000 J
        # = 1280*720*30*100 / 5000 = 552,960 px/J.
        s = score(S720, Measured(energy_j=5000.0), Algorithm.PIXELS_PER_JOULE)
        assert s.value == 552_960.0 and s.unit == "pixels/J"

    def test_qoe_efficiency_worked_example(self) -> None:
        # The old QoE exporter's qoe_efficiency_score = pixels * VMAF/100 / energy:
        # 1280x720, 30 fps, 120 s, VMAF 88, 6000 J -> 3,317,760,000 * 0.88 / 6000
        # = 486,604.8, printed by the old exporter as 4.8660e+05.
        scenario = Scenario(
            name="1 Streams @ 2500k", resolution="1280x720", fps=30, duration=120, vmaf_score=88
        )
        s = score(scenario, Measured(energy_j=6000.0), Algorithm.QOE_EFFICIENCY)
        assert s.value == pytest.approx(486_604.8, rel=1e-12)
        assert f"{s.value:.4e}" == "4.8660e+05"

    def test_throughput_per_watt(self) -> None:
        # 8 streams x 5 Mbps / 18.9 W = 2.1164021164 Mbps/W (the analysis CSV's efficiency_score for that row).
        scenario = Scenario(name="8 Streams @ 5000k", bitrate="5000k")
        s = score(scenario, Measured(mean_power_w=18.9), Algorithm.THROUGHPUT_PER_WATT)
        assert s.value == pytest.approx(2.1164021164021167, rel=1e-12)
        assert s.unit == "Mbps/W"

    def test_quality_per_watt(self) -> None:
        scenario = Scenario(name="x", vmaf_score=90.0)
        assert score(scenario, Measured(mean_power_w=45.0), Algorithm.QUALITY_PER_WATT).value == 2.0

    @pytest.mark.parametrize(
        ("scenario", "measured", "algorithm", "reason"),
        [
            (
                Scenario(name="Baseline", bitrate="0k"),
                Measured(mean_power_w=5),
                "throughput_per_watt",
                "baseline",
            ),
            (Scenario(name="x", bitrate="abc"), Measured(mean_power_w=5), "throughput_per_watt", "bitrate"),
            (S720, Measured(mean_power_w=0), "throughput_per_watt", "power"),
            (S720, Measured(), "pixels_per_joule", "energy"),
            (Scenario(name="x", vmaf_score=120), Measured(mean_power_w=5), "quality_per_watt", "0..100"),
            (Scenario(name="x", vmaf_score=math.nan), Measured(mean_power_w=5), "quality_per_watt", "0..100"),
            (Scenario(name="x"), Measured(mean_power_w=5), "quality_per_watt", "VMAF"),
            (Scenario(name="x", vmaf_score=80), Measured(energy_j=5), "qoe_efficiency", "resolution"),
        ],
    )
    def test_no_value_with_reason(
        self, scenario: Scenario, measured: Measured, algorithm: str, reason: str
    ) -> None:
        s = score(scenario, measured, algorithm)
        assert s.value is None
        assert s.reason is not None and reason in s.reason

    def test_auto(self) -> None:
        ladder = Scenario(
            resolution="1920x1080",
            fps=30,
            outputs=[Output(resolution="1920x1080", fps=30), Output(resolution="1280x720", fps=30)],
        )
        assert choose_algorithm(Scenario(vmaf_score=90)) is Algorithm.QOE_EFFICIENCY
        assert choose_algorithm(ladder) is Algorithm.PIXELS_PER_JOULE
        assert choose_algorithm(S720) is Algorithm.THROUGHPUT_PER_WATT
        one_output = Scenario(resolution="1280x720", fps=30, outputs=[Output(resolution="1280x720", fps=30)])
        assert choose_algorithm(one_output) is Algorithm.THROUGHPUT_PER_WATT
        assert score(S720, Measured(mean_power_w=5.0)).algorithm is Algorithm.THROUGHPUT_PER_WATT

    def test_measured_vmaf_wins_over_the_files(self) -> None:
        # File says 50, the QoE worker measured 90: 90 / 45 W = 2.0 VMAF/W (the file's would give 1.111).
        scenario = Scenario(name="x", vmaf_score=50.0)
        assert (
            score(scenario, Measured(mean_power_w=45.0, vmaf=90.0), Algorithm.QUALITY_PER_WATT).value == 2.0
        )
        # Without a measured VMAF the file's is used, as before: 50 / 45 W.
        assert score(
            scenario, Measured(mean_power_w=45.0), Algorithm.QUALITY_PER_WATT
        ).value == pytest.approx(50 / 45)
        # qoe_efficiency: 1280x720x30 px/s x 100 s x 0.9 / 5000 J = 497,664 (the file's 0.5 would give 276,480).
        s = score(
            msgspec.structs.replace(S720, vmaf_score=50.0),
            Measured(energy_j=5000.0, vmaf=90.0),
            Algorithm.QOE_EFFICIENCY,
        )
        assert s.value == pytest.approx(497_664.0, rel=1e-12)

    def test_auto_counts_a_measured_vmaf(self) -> None:
        # The file has no VMAF (throughput_per_watt), the QoE result has one: auto becomes qoe_efficiency.
        assert choose_algorithm(S720) is Algorithm.THROUGHPUT_PER_WATT
        assert choose_algorithm(S720, Measured(vmaf=80.0)) is Algorithm.QOE_EFFICIENCY
        auto = score(S720, Measured(energy_j=5000.0, vmaf=80.0))
        # 1280x720x30x100 x 0.8 / 5000 = 442,368 quality-weighted pixels/J.
        assert auto.algorithm is Algorithm.QOE_EFFICIENCY and auto.value == pytest.approx(442_368.0)
        algo, reason = choose_algorithm_with_reason(S720)
        assert algo is Algorithm.THROUGHPUT_PER_WATT and "single output" in reason

    def test_validators(self) -> None:
        assert validate_vmaf(0) == 0.0 and validate_vmaf(100) == 100.0
        for bad in (-0.1, 100.1, math.nan, math.inf, None, "90", True):
            with pytest.raises(ScoreError):
                validate_vmaf(bad)  # type: ignore[arg-type]
        assert validate_psnr(42.5) == 42.5
        for bad in (math.inf, -1.0, None):
            with pytest.raises(ScoreError):
                validate_psnr(bad)
        assert validate_ssim(0.98) == 0.98
        with pytest.raises(ScoreError):
            validate_ssim(1.2)


def c(name: str, score_: float | None, ladder: str = "1280x720@30", power: float | None = None) -> Candidate:
    return Candidate(name=name, score=score_, unit="Mbps/W", output_ladder=ladder, mean_power_w=power)


CANDIDATES = [
    c("a", 0.5, power=7.0),
    c("b", None, power=5.0),
    c("c", 2.0, power=19.0),
    c("d", 1.0, "1920x1080@30", 9.0),
    c("e", 2.0, power=18.0),
    c("f", 0.2, "1920x1080@30"),
    c("g", None, "854x480@30"),
]


class TestRecommender:
    def test_rank_descending_unscored_last_ties_in_input_order(self) -> None:
        assert [(r.rank, r.candidate.name) for r in rank(CANDIDATES)] == [
            (1, "c"),
            (2, "e"),
            (3, "d"),
            (4, "a"),
            (5, "f"),
            (6, "b"),
            (7, "g"),
        ]

    def test_by_ladder_and_best(self) -> None:
        groups = rank_by_ladder(CANDIDATES)
        assert list(groups) == ["1280x720@30", "1920x1080@30", "854x480@30"]
        assert [r.candidate.name for r in groups["1280x720@30"]] == ["c", "e", "a", "b"]
        assert {k: v.name for k, v in best_per_ladder(CANDIDATES).items()} == {
            "1280x720@30": "c",
            "1920x1080@30": "d",
        }


def dominated_brute_force(points: list[tuple[float, float]]) -> list[int]:
    """O(n^2) reference: i is on the front unless some j has x_j <= x_i, y_j >= y_i, one strictly."""
    front = []
    for i, (xi, yi) in enumerate(points):
        if math.isnan(xi) or math.isnan(yi):
            continue
        beaten = any(
            (xj <= xi and yj >= yi and (xj < xi or yj > yi))
            for j, (xj, yj) in enumerate(points)
            if j != i and not (math.isnan(xj) or math.isnan(yj))
        )
        if not beaten:
            front.append(i)
    return front


class TestParetoFront:
    def test_hand_example(self) -> None:
        # (cost, quality): 0 (1, 90) and 2 (0.5, 80) trade off; 1 (1.2, 85) is beaten by 0 on both;
        # 3 (0.5, 70) is beaten by 2 (same cost, better quality); 4 duplicates 2 and stays with it.
        points = [(1.0, 90.0), (1.2, 85.0), (0.5, 80.0), (0.5, 70.0), (0.5, 80.0)]
        assert pareto_front(points) == [0, 2, 4]

    def test_edges(self) -> None:
        assert pareto_front([]) == []
        assert pareto_front([(1.0, 1.0)]) == [0]
        # Same quality at a higher cost is dominated; NaN is never on the front.
        assert pareto_front([(2.0, 5.0), (1.0, 5.0), (math.nan, 9.0)]) == [1]

    # Small integer grids make ties and duplicates frequent, which is where a sweep goes wrong.
    @given(
        st.lists(
            st.tuples(
                st.integers(0, 6).map(float) | st.floats(allow_nan=True, allow_infinity=True),
                st.integers(0, 6).map(float) | st.floats(allow_nan=True, allow_infinity=True),
            ),
            max_size=30,
        )
    )
    def test_matches_brute_force(self, points: list[tuple[float, float]]) -> None:
        assert pareto_front(points) == dominated_brute_force(points)
