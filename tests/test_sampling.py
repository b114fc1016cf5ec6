"""The sampling convention (docs/telemetry.md, "Sampling convention"): a series' mean power and energy,
checked against closed forms, never against the code's own output.

* a constant c gives c, whatever the number of samples, the step, or jitter on the timestamps, and an
  energy of c x D over a scenario of D seconds;
* a ramp a + b t over [0, D] gives a + b D / 2, sampled inclusively (both ends), one sample per step (each
  at the middle of its step), or at jittered times from 0 to D;
* the cost family's load-aware energy keeps the old trapezoid: (N-1)/N of c x D for N samples, one per step.
"""

from __future__ import annotations

from itertools import pairwise

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from services.cost.kind import add_arguments as cost_flags
from services.cost.kind import compute_costs
from services.cost.kind import settings_from_args as cost_settings
from services.qoe.kind import add_arguments as qoe_flags
from services.qoe.kind import compute_qoe
from services.qoe.kind import settings_from_args as qoe_settings
from shared.config import parse_flags
from shared.integration import SampledSeries, covered_s, series_energy, time_weighted_mean
from shared.scenario_stats import run_stats
from shared.schemas import Samples, Scenario, Series, Telemetry
from shared.telemetry import resolve, scenario_mean_power_w
from tests.helpers import run_input

REL = 1e-9
COST_ARGV = ["--electricity-maps-url", "http://127.0.0.1:9", "--energy-cost", "0.36"]
#: A realistic unix start time: the scenario's duration is end - start as the code computes it.
START = 1_766_948_030.1292272

watts = st.floats(min_value=0.5, max_value=2000.0, allow_nan=False, allow_infinity=False)
steps = st.floats(min_value=0.05, max_value=60.0, allow_nan=False, allow_infinity=False)
counts = st.integers(min_value=1, max_value=400)
slopes = st.floats(min_value=-1.0, max_value=1.0, allow_nan=False, allow_infinity=False)


def scenario(
    series: Series, step: float | None, duration: float, start: float = START, **more: object
) -> Scenario:
    return Scenario(
        name="1 Streams @ 2500k",
        bitrate="2500k",
        resolution="1280x720",
        fps=30,
        start_time=start,
        end_time=start + duration,
        vmaf_score=90.0,
        telemetry=Telemetry(step_seconds=step, power_watts=series, **more),  # type: ignore[arg-type]
    )


def duration_of(s: Scenario) -> float:
    assert s.start_time is not None and s.end_time is not None
    return float(s.end_time) - float(s.start_time)


def jittered(n_steps: int, step: float, offsets: list[float]) -> list[float]:
    """0, step, ..., n_steps x step, the inner ones moved by up to 0.45 step: strictly increasing, ends exact."""
    inner = [(i + offsets[i % len(offsets)]) * step for i in range(1, n_steps)]
    return [0.0, *inner, n_steps * step]


offsets_st = st.lists(st.floats(min_value=-0.45, max_value=0.45, allow_nan=False), min_size=1, max_size=50)


# ---------------------------------------------------------------------------------------------------------
# The pure functions
# ---------------------------------------------------------------------------------------------------------


class TestConstant:
    @given(c=watts, n=counts, h=steps)
    def test_one_sample_per_step(self, c: float, n: int, h: float) -> None:
        series = SampledSeries.uniform([c] * n, h)
        assert time_weighted_mean(series, n * h) == pytest.approx(c, rel=REL)
        assert series_energy(series, n * h) == pytest.approx(c * n * h, rel=REL)
        assert covered_s(series, n * h) == pytest.approx(n * h, rel=REL)

    @given(c=watts, n=counts, h=steps)
    def test_inclusive(self, c: float, n: int, h: float) -> None:
        series = SampledSeries.uniform([c] * (n + 1), h)
        assert time_weighted_mean(series, n * h) == pytest.approx(c, rel=REL)
        assert series_energy(series, n * h) == pytest.approx(c * n * h, rel=REL)
        assert covered_s(series, n * h) == pytest.approx(n * h, rel=REL)

    @given(c=watts, h=steps, d=st.floats(min_value=0.1, max_value=1e5))
    def test_one_sample(self, c: float, h: float, d: float) -> None:
        assert time_weighted_mean(SampledSeries.uniform([c], h), d) == c
        assert series_energy(SampledSeries.uniform([c], h), d) == pytest.approx(c * d, rel=REL)

    @given(c=watts, n=counts, h=steps, offsets=offsets_st, t0=st.floats(min_value=0, max_value=2e9))
    def test_jittered_timestamps(self, c: float, n: int, h: float, offsets: list[float], t0: float) -> None:
        t = [t0 + x for x in jittered(n, h, offsets)]
        assume(all(b > a for a, b in pairwise(t)))  # not with t0 so large the jitter is lost in rounding
        series = SampledSeries.timed(t, [c] * len(t))
        assert time_weighted_mean(series) == pytest.approx(c, rel=REL)
        assert series_energy(series, 123.0) == pytest.approx(c * 123.0, rel=REL)

    @given(c=watts, n=counts, h=steps, part=st.floats(min_value=0.05, max_value=0.9))
    def test_partial_coverage_extrapolates(self, c: float, n: int, h: float, part: float) -> None:
        # n samples, one per step, over a scenario n*h/part long: mean c, energy c x the whole scenario.
        d = n * h / part
        series = SampledSeries.uniform([c] * n, h)
        assert time_weighted_mean(series, d) == pytest.approx(c, rel=REL)
        assert series_energy(series, d) == pytest.approx(c * d, rel=REL)


class TestRamp:
    @given(a=watts, b=slopes, n=st.integers(min_value=1, max_value=400), h=steps)
    def test_inclusive(self, a: float, b: float, n: int, h: float) -> None:
        d = n * h
        series = SampledSeries.uniform([a + b * i * h for i in range(n + 1)], h)
        assert time_weighted_mean(series, d) == pytest.approx(a + b * d / 2, rel=REL, abs=1e-9)
        assert series_energy(series, d) == pytest.approx((a + b * d / 2) * d, rel=REL, abs=1e-9)

    @given(a=watts, b=slopes, n=counts, h=steps)
    def test_one_sample_per_step_at_its_middle(self, a: float, b: float, n: int, h: float) -> None:
        d = n * h
        series = SampledSeries.uniform([a + b * (i + 0.5) * h for i in range(n)], h)
        assert time_weighted_mean(series, d) == pytest.approx(a + b * d / 2, rel=REL, abs=1e-9)

    @given(a=watts, b=slopes, n=counts, h=steps, offsets=offsets_st)
    def test_jittered_timestamps(self, a: float, b: float, n: int, h: float, offsets: list[float]) -> None:
        t = jittered(n, h, offsets)
        d = t[-1]
        series = SampledSeries.timed(t, [a + b * x for x in t])
        assert time_weighted_mean(series, d) == pytest.approx(a + b * d / 2, rel=REL, abs=1e-9)


def test_the_issue_examples() -> None:
    """229.39 W for 60 s: 12 five-second samples, 60 or 61 one-second samples all give 229.39 W and 13763.4 J
    (the old code: 210.27 W, 225.57 W and 229.39 W)."""
    for n, h in ((12, 5.0), (60, 1.0), (61, 1.0), (13, 5.0), (1, 60.0)):
        series = SampledSeries.uniform([229.39] * n, h)
        assert time_weighted_mean(series, 60.0) == pytest.approx(229.39, rel=1e-12), (n, h)
        assert series_energy(series, 60.0) == pytest.approx(13763.4, rel=1e-12), (n, h)


def test_which_reading() -> None:
    # 25 samples 5 s apart for 120 s: inclusive, covering 120 s; 24 for 120 s: one per step, also 120 s.
    v = [1.0, 3.0] + [2.0] * 23
    assert covered_s(SampledSeries.uniform(v, 5.0), 120.0006) == 120.0
    assert covered_s(SampledSeries.uniform(v[:-1], 5.0), 120.0006) == 120.0
    # The ends weigh half when inclusive: (1/2 + 3 + 22 x 2 + 2/2) / 24 = 48.5 / 24; equal weights otherwise.
    assert time_weighted_mean(SampledSeries.uniform(v, 5.0), 120.0006) == pytest.approx(48.5 / 24, rel=1e-15)
    assert time_weighted_mean(SampledSeries.uniform(v[:-1], 5.0), 120.0006) == pytest.approx(
        48 / 24, rel=1e-15
    )
    # Without a duration: inclusive, the old trapezoid over the samples' own span.
    assert series_energy(SampledSeries.uniform([70.0, 80.0, 90.0], 2.0), None) == 320.0


# ---------------------------------------------------------------------------------------------------------
# Through the figures: mean power, energy, efficiency, QoE, cost
# ---------------------------------------------------------------------------------------------------------


@settings(max_examples=60, deadline=None)
@given(c=watts, n=counts, h=steps, inclusive=st.booleans())
def test_modeling_and_qoe_figures_of_a_constant(c: float, n: int, h: float, inclusive: bool) -> None:
    s = scenario([c] * (n + 1 if inclusive else n), h, n * h)
    d = duration_of(s)
    tel = resolve(s)
    assert scenario_mean_power_w(tel, d) == pytest.approx(c, rel=REL)
    [stats], _ = run_stats([s], [tel])
    assert stats.mean_power_w == pytest.approx(c, rel=REL)
    assert stats.energy_j == pytest.approx(c * d, rel=REL)
    pixels = 1280 * 720 * 30 * d
    assert stats.efficiency_score == pytest.approx(pixels / (c * d), rel=REL)
    [q] = compute_qoe(run_input(s), qoe_settings(parse_flags(qoe_flags))).scenarios
    assert q.quality_per_watt == pytest.approx(90.0 / c, rel=REL)
    assert q.qoe_efficiency_score == pytest.approx(pixels * 0.9 / (c * d), rel=REL)


@settings(max_examples=60, deadline=None)
@given(a=watts, b=slopes, n=counts, h=steps, inclusive=st.booleans())
def test_modeling_mean_power_of_a_ramp(a: float, b: float, n: int, h: float, inclusive: bool) -> None:
    # a + b t over [0, D], D = n h: sampled at 0, h, ..., D (inclusive) or at the middle of each step.
    times = [i * h for i in range(n + 1)] if inclusive else [(i + 0.5) * h for i in range(n)]
    s = scenario([a + b * t for t in times], h, n * h, start=0.0)
    d = n * h
    [stats], _ = run_stats([s], [resolve(s)])
    assert stats.mean_power_w == pytest.approx(a + b * d / 2, rel=REL, abs=1e-9)
    assert stats.energy_j == pytest.approx((a + b * d / 2) * d, rel=REL, abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(c=watts, n=counts, h=steps, offsets=offsets_st)
def test_figures_of_a_constant_at_jittered_times(c: float, n: int, h: float, offsets: list[float]) -> None:
    t = [START + x for x in jittered(n, h, offsets)]
    assume(all(b > a for a, b in pairwise(t)))
    s = scenario(Samples(values=[c] * len(t), timestamps=t), 5.0, n * h)
    d = duration_of(s)
    [stats], _ = run_stats([s], [resolve(s)])
    assert stats.mean_power_w == pytest.approx(c, rel=REL)
    assert stats.energy_j == pytest.approx(c * d, rel=REL)


def test_partial_coverage_is_said() -> None:
    # 6 samples, one per 5 s step, of a 60 s scenario: 30 s covered; 100 W over the whole of it, and a note.
    s = scenario([100.0] * 6, 5.0, 60.0, start=0.0)
    [stats], _ = run_stats([s], [resolve(s)])
    assert stats.mean_power_w == 100.0 and stats.energy_j == 6000.0
    assert any("cover 30 s of the 60 s" in n for n in stats.notes), stats.notes
    full = scenario([100.0] * 12, 5.0, 60.0, start=0.0)
    [stats], _ = run_stats([full], [resolve(full)])
    assert stats.notes == []


@settings(max_examples=60, deadline=None)
@given(c=watts, g=watts, n=counts, h=steps)
def test_gpu_energy_and_quality_per_watt(c: float, g: float, n: int, h: float) -> None:
    s = scenario([c] * n, h, n * h, gpu_power_watts=[g] * n)
    d = duration_of(s)
    tel = resolve(s)
    assert tel.gpu_energy_j == pytest.approx(g * d, rel=REL)
    [q] = compute_qoe(run_input(s), qoe_settings(parse_flags(qoe_flags))).scenarios
    assert q.quality_per_watt == pytest.approx(90.0 / (c + g), rel=REL)


@settings(max_examples=60, deadline=None)
@given(c=watts, n=st.integers(min_value=2, max_value=400), h=steps)
def test_cost_keeps_the_old_trapezoid(c: float, n: int, h: float) -> None:
    """The load-aware energy cost continues the old cost exporter's series: the trapezoid over the samples'
    own (N-1) steps, i.e. c x D x (1 - 1/N) for N samples, one per step; the hourly figures use c."""
    s = scenario([c] * n, h, n * h)
    [cost] = compute_costs(run_input(s), cost_settings(parse_flags(cost_flags, COST_ARGV))).scenarios
    d = n * h
    assert cost.energy_joules == pytest.approx(c * d * (1 - 1 / n), rel=REL)
    assert cost.energy_cost == pytest.approx(c * d * (1 - 1 / n) * 0.36 / 3.6e6, rel=REL)
    assert cost.mean_power_w == pytest.approx(c, rel=REL)
    assert cost.cost_per_hour == pytest.approx(c / 1000 * 0.36, rel=REL)
