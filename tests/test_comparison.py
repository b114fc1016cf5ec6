"""Run comparison (shared/comparison.py) against hand-computed deltas."""

from __future__ import annotations

import pytest

from shared.comparison import RunData, compare_runs, config_key, pct_change
from shared.schemas import (
    CostResult,
    CostScenario,
    ModelingResult,
    ModelingScenario,
    QoEResult,
    QoEScenario,
    Scenario,
)
from tests.helpers import cost_result, modeling_result


def modeling(run_id: str, rows: list[ModelingScenario]) -> ModelingResult:
    result: ModelingResult = modeling_result(rows, run_id=run_id)
    return result


def cost(run_id: str, currency: str, totals: dict[int, float]) -> CostResult:
    result: CostResult = cost_result(
        [CostScenario(index=i, total_cost=t) for i, t in totals.items()], run_id=run_id, currency=currency
    )
    return result


def p720(name: str, bitrate: str, **kw: object) -> Scenario:
    return Scenario(name=name, bitrate=bitrate, resolution="1280x720", fps=30, **kw)  # type: ignore[arg-type]


A_SCENARIOS = [
    p720("Baseline (Idle)", "0k"),
    p720("4 Streams @ 2500k", "2500k", vmaf_score=90.0),
    p720("8 Streams @ 5000k", "5000k"),
    p720("8 Streams @ 5000k", "5000k"),
    p720("2 Streams @ 1000k", "1000k", encoder="h264_nvenc"),
]
# Same experiments under other names and spellings, in another order.
B_SCENARIOS = [
    p720("8 Streams @ 5M", "5M"),
    p720("Baseline", "0k"),
    p720("4-stream test", "2500kbps", preset="veryfast", encoder="h264"),
    p720("2 Streams @ 1000k", "1000k"),  # CPU: not the GPU scenario of A
    p720("8 Streams @ 5000k", "5000k"),
    p720("1 Streams @ 1000k", "1000k"),
]

A_MODEL = modeling(
    "run-a",
    [
        ModelingScenario(index=0, is_baseline=True, mean_power_w=5.18),
        ModelingScenario(
            index=1,
            mean_power_w=11.34,
            energy_j=1360.8,
            efficiency_score=10_000_000.0,
            prediction_interval_low_w=10.5,
            prediction_interval_high_w=12.0,
        ),
        ModelingScenario(
            index=2, mean_power_w=18.9, prediction_interval_low_w=17.0, prediction_interval_high_w=20.0
        ),
        ModelingScenario(
            index=3, mean_power_w=19.1, prediction_interval_low_w=17.0, prediction_interval_high_w=20.0
        ),
    ],
)
B_MODEL = modeling(
    "run-b",
    [
        ModelingScenario(index=0, mean_power_w=18.0),
        ModelingScenario(index=1, is_baseline=True, mean_power_w=5.0),
        ModelingScenario(index=2, mean_power_w=12.5, energy_j=1500.0, efficiency_score=9_000_000.0),
        ModelingScenario(index=4, mean_power_w=16.5),
    ],
)
B_QOE = QoEResult(
    run_id="run-b",
    digest="0123456789abcdef",
    generation=1,
    scenarios=[QoEScenario(index=2, vmaf_score=85.5)],
    computed_at=0.0,
    compute_seconds=0.0,
)


def run_a(currency: str = "EUR") -> RunData:
    return RunData(A_SCENARIOS, A_MODEL, cost("run-a", currency, {0: 0.0, 1: 0.02}))


def run_b(currency: str = "EUR") -> RunData:
    return RunData(B_SCENARIOS, B_MODEL, cost("run-b", currency, {1: 0.01, 2: 0.025}), B_QOE)


def test_matching_by_configuration() -> None:
    result = compare_runs(run_a(), run_b())
    assert (result.a_run_id, result.b_run_id) == ("run-a", "run-b")
    # A's order: baseline <-> B1, 4x2.5M <-> B2, first 8x5M <-> B0, second 8x5M <-> B4.
    assert [(d.a_index, d.b_index) for d in result.deltas] == [(0, 1), (1, 2), (2, 0), (3, 4)]
    assert [(u.run, u.index) for u in result.unmatched] == [("a", 4), ("b", 3), ("b", 5)]
    assert result.unmatched[0].configuration == "2 streams, 1 Mbps, 1280x720@30, gpu, h264_nvenc, veryfast"
    assert result.deltas[1].configuration == "4 streams, 2.5 Mbps, 1280x720@30, cpu, h264, veryfast"


def test_deltas_by_hand() -> None:
    d = compare_runs(run_a(), run_b()).deltas[1]
    # Power 11.34 -> 12.5 W: +1.16 W, 1.16 / 11.34 x 100 = +10.229 %.
    assert d.delta_mean_power_w == pytest.approx(1.16)
    assert d.pct_mean_power == pytest.approx(10.22927689594356)
    # Energy 1360.8 -> 1500 J: +139.2 J, 139.2 / 1360.8 x 100 = +10.229 % (same duration).
    assert d.delta_energy_j == pytest.approx(139.2)
    assert d.pct_energy == pytest.approx(10.22927689594356)
    # Efficiency 10M -> 9M pixels/J: -1M, -10 %.
    assert d.delta_pixels_per_joule == pytest.approx(
        -1_000_000.0
    ) and d.pct_pixels_per_joule == pytest.approx(-10.0)
    # Cost 0.02 -> 0.025 EUR: +0.005, +25 %.
    assert d.delta_total_cost == pytest.approx(0.005) and d.pct_total_cost == pytest.approx(25.0)
    # VMAF: A's file 90, B's QoE result 85.5: -4.5, -5 %.
    assert (d.a_vmaf, d.b_vmaf) == (90.0, 85.5)
    assert d.delta_vmaf == pytest.approx(-4.5) and d.pct_vmaf == pytest.approx(-5.0)


def test_percent_is_none_when_a_is_zero_or_missing() -> None:
    baseline = compare_runs(run_a(), run_b()).deltas[0]
    # A's baseline cost 0 -> B's 0.01: the difference exists, the percentage does not.
    assert baseline.delta_total_cost == pytest.approx(0.01) and baseline.pct_total_cost is None
    assert baseline.delta_energy_j is None and baseline.pct_energy is None
    assert pct_change(0.0, 1.0) is None and pct_change(None, 1.0) is None and pct_change(2.0, 3.0) == 50.0


def test_regressions_against_a_prediction_interval() -> None:
    result = compare_runs(run_a(), run_b())
    by_a = {d.a_index: d for d in result.deltas}
    # 12.5 W > 12.0 W: above; 18.0 W in 17..20: fine; 16.5 W < 17 W: below; baseline: A has no interval.
    assert by_a[1].regression and by_a[1].regression_reason == (
        "B's mean power 12.5 W is above A's prediction interval 10.5..12 W"
    )
    assert not by_a[2].regression and by_a[2].regression_reason is None
    assert by_a[3].regression and "below" in (by_a[3].regression_reason or "")
    assert not by_a[0].regression and "no prediction interval" in (by_a[0].regression_reason or "")
    assert result.regressions == 2


def test_costs_in_different_currencies_are_not_compared() -> None:
    result = compare_runs(run_a("EUR"), run_b("USD"))
    assert result.currency is None
    assert all(d.a_total_cost is None and d.delta_total_cost is None for d in result.deltas)
    assert "different currencies" in result.notes[0]


def test_config_key_reads_through_parsing() -> None:
    # "5M" and "5000k" are one bitrate; a missing preset reads as veryfast; the stream count from the name.
    assert config_key(p720("8 Streams @ 5000k", "5000k")) == config_key(
        p720("eight", "5M", streams=8, preset="VeryFast")
    )
    assert config_key(p720("x", "5000k")) != config_key(p720("x", "5000k", preset="slow"))
