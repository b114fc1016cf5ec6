"""Integration and cost formulas against figures computed by hand in the comments."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.cost import CostModel, co2_kg_per_hour, project
from shared.integration import SampledSeries, integrate, mean, sample_stdev, trapezoid_uniform
from shared.schemas import Samples
from shared.units import HOURS_PER_MONTH

U = SampledSeries.uniform
finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)


class TestTrapezoid:
    def test_hand_computed(self) -> None:
        # 5/2 * (1 + 2*2 + 2*3 + 2*2.5 + 2) = 2.5 * 18 = 45 core-seconds.
        assert trapezoid_uniform([1.0, 2.0, 3.0, 2.5, 2.0], 5.0) == 45.0
        # Two samples: a single trapezoid, 5 * (10 + 20) / 2 = 75.
        assert trapezoid_uniform([10.0, 20.0], 5.0) == 75.0

    def test_single_sample_is_a_rectangle_and_empty_is_no_value(self) -> None:
        assert trapezoid_uniform([7.0], 5.0) == 35.0
        assert trapezoid_uniform([], 5.0) is None
        assert integrate(None) is None
        assert integrate(U([], 5.0)) is None
        assert integrate(U([1.0, 2.0], None)) is None  # no step, no integral

    def test_bad_step(self) -> None:
        with pytest.raises(ValueError):
            trapezoid_uniform([1.0, 2.0], 0.0)

    @given(finite, st.integers(2, 500), st.floats(0.001, 1000))
    def test_constant(self, c: float, n: int, h: float) -> None:
        assert trapezoid_uniform([c] * n, h) == pytest.approx(c * (n - 1) * h, rel=1e-9, abs=1e-6)

    @given(
        st.lists(st.tuples(finite, finite), min_size=1, max_size=200), finite, finite, st.floats(0.01, 100)
    )
    def test_linear(self, pairs: list[tuple[float, float]], a: float, b: float, h: float) -> None:
        x = [p[0] for p in pairs]
        y = [p[1] for p in pairs]
        combined = trapezoid_uniform([a * xi + b * yi for xi, yi in pairs], h)
        tx, ty = trapezoid_uniform(x, h), trapezoid_uniform(y, h)
        assert combined is not None and tx is not None and ty is not None
        scale = max(1.0, abs(a * tx), abs(b * ty))
        assert combined == pytest.approx(a * tx + b * ty, abs=1e-6 * scale)

    def test_real_timestamps_bridge_a_gap(self) -> None:
        # 10 W sampled at t = 0, 5, 10, 30, 35 s: 10 W x 35 s = 350 J. Assuming a uniform 5 s step over the five
        # samples (the old cost exporter) gives 10 W x 20 s = 200 J.
        timed = SampledSeries.timed([0, 5, 10, 30, 35], [10.0] * 5, step_s=5.0)
        assert integrate(timed) == 350.0
        assert integrate(U([10.0] * 5, 5.0)) == 200.0
        # Linear between samples: (0->10 s at 0..10 W) = 50, (10->20 s at 10..30 W) = 200 -> 250 J.
        assert integrate(SampledSeries.timed([0, 10, 20], [0.0, 10.0, 30.0])) == 250.0

    def test_from_field(self) -> None:
        assert SampledSeries.from_field(None, 5.0) is None
        assert SampledSeries.from_field([], 5.0) is None
        series = SampledSeries.from_field(Samples(values=[1.0, 3.0], timestamps=[100.0, 110.0]), 5.0)
        assert integrate(series) == 20.0
        with pytest.raises(ValueError):
            SampledSeries.timed([1.0, 1.0], [1.0, 2.0])

    def test_mean_and_stdev(self) -> None:
        # Sample stdev of 2, 4, 4, 4, 5, 5, 7, 9: mean 5, sum of squares 32, /7 -> sqrt(32/7) = 2.138089935...
        series = U([2, 4, 4, 4, 5, 5, 7, 9], 5.0)
        assert mean(series) == 5.0
        assert sample_stdev(series) == pytest.approx(2.1380899352993950, rel=1e-12)
        assert sample_stdev(U([3.0], 5.0)) == 0.0
        assert mean(None) is None and sample_stdev(None) is None


MODEL = CostModel(energy_cost_per_kwh=0.12, cpu_cost_per_hour=0.5, gpu_cost_per_hour=2.0)


class TestCostModel:
    def test_prices(self) -> None:
        assert MODEL.price_per_joule == 0.12 / 3_600_000
        assert MODEL.price_per_core_second == 0.5 / 3600
        assert MODEL.price_per_gpu_second == 2.0 / 3600

    def test_energy_cost(self) -> None:
        # 100 W for 10 s (three samples 5 s apart) = 1000 J; at 0.12/kWh: 1000 * 0.12 / 3.6e6 = 3.3333e-5.
        assert MODEL.energy_cost(U([100.0] * 3, 5.0)) == pytest.approx(3.333333333e-5, rel=1e-9)
        assert MODEL.energy_cost(None) is None

    def test_compute_cost_prices_gpu_at_the_gpu_price(self) -> None:
        # CPU 2 cores for 10 s = 20 core-s at 0.5/h -> 0.0027778; GPU 1 for 10 s = 10 GPU-s at 2.0/h -> 0.0055556.
        cpu, gpu = U([2.0] * 3, 5.0), U([1.0] * 3, 5.0)
        assert MODEL.compute_cost(cpu) == pytest.approx(20 * 0.5 / 3600, rel=1e-12)
        assert MODEL.compute_cost(cpu, gpu) == pytest.approx(20 * 0.5 / 3600 + 10 * 2.0 / 3600, rel=1e-12)
        assert MODEL.compute_cost(None, gpu) is None

    def test_load_aware_bundle(self) -> None:
        power, cpu = U([100.0] * 3, 5.0), U([2.0] * 3, 5.0)
        cost = MODEL.load_aware(power_w=power, cpu_cores=cpu, total_pixels=1e9, duration_s=1800.0, viewers=10)
        total = 1000 * 0.12 / 3.6e6 + 20 * 0.5 / 3600
        assert cost.total == pytest.approx(total, rel=1e-12)
        assert cost.per_pixel == pytest.approx(total / 1e9, rel=1e-12)
        # watch hours: 0.5 h x 10 viewers = 5.
        assert cost.per_watch_hour == pytest.approx(total / 5, rel=1e-12)
        assert cost.energy_joules == 1000.0 and cost.cpu_core_seconds == 20.0

    def test_missing_inputs_give_no_value_and_zero_prices_give_real_zeros(self) -> None:
        free = CostModel(energy_cost_per_kwh=0.0)
        empty = free.load_aware(power_w=None, cpu_cores=None, total_pixels=1e9, duration_s=60, viewers=3)
        assert (empty.energy, empty.compute, empty.total, empty.per_pixel, empty.per_watch_hour) == (
            None,
        ) * 5
        real = free.load_aware(power_w=U([50.0, 50.0], 5.0), cpu_cores=U([1.0, 1.0], 5.0), total_pixels=10.0)
        assert (real.energy, real.compute, real.total, real.per_pixel) == (0.0, 0.0, 0.0, 0.0)
        only_energy = MODEL.load_aware(power_w=U([100.0] * 3, 5.0), cpu_cores=None)
        assert only_energy.compute is None
        assert only_energy.total == only_energy.energy
        no_viewers = MODEL.load_aware(
            power_w=U([100.0] * 3, 5.0), cpu_cores=None, duration_s=60, viewers=None
        )
        assert no_viewers.per_watch_hour is None

    def test_negative_prices_are_refused(self) -> None:
        with pytest.raises(ValueError):
            CostModel(energy_cost_per_kwh=-1.0)

    @given(st.floats(0.0, 10.0), st.floats(0.01, 10.0))
    def test_costs_scale_linearly_with_price(self, price: float, k: float) -> None:
        power, cpu = U([100.0, 120.0, 90.0], 5.0), U([2.0, 2.5, 1.5], 5.0)
        a = CostModel(energy_cost_per_kwh=price, cpu_cost_per_hour=price).load_aware(
            power_w=power, cpu_cores=cpu
        )
        b = CostModel(energy_cost_per_kwh=price * k, cpu_cost_per_hour=price * k).load_aware(
            power_w=power, cpu_cores=cpu
        )
        assert a.total is not None and b.total is not None
        assert b.total == pytest.approx(a.total * k, rel=1e-9, abs=1e-15)


class TestProjection:
    def test_hand_computed(self) -> None:
        # 150 W at 0.12/kWh: 0.15 kW x 0.12 = 0.018/h; x 720 h = 12.96/month.
        # CO2 at 390 g/kWh: 390 x 0.15 / 1000 = 0.0585 kg/h; x 720 = 42.12 kg/month.
        # Baseline 50 W: 0.05 x 0.12 x 720 = 4.32 -> savings 4.32 - 12.96 = -8.64;
        # CO2: 390 x 0.05 / 1000 x 720 = 14.04 -> avoided 14.04 - 42.12 = -28.08.
        p = project(CostModel(energy_cost_per_kwh=0.12), 150.0, 390.0, 50.0)
        assert p.cost_per_hour == pytest.approx(0.018, rel=1e-12)
        assert p.monthly_cost == pytest.approx(12.96, rel=1e-12)
        assert p.co2_kg_per_hour == pytest.approx(0.0585, rel=1e-12)
        assert p.co2_monthly_kg == pytest.approx(42.12, rel=1e-12)
        assert p.monthly_savings == pytest.approx(-8.64, rel=1e-12)
        assert p.co2_monthly_avoided_kg == pytest.approx(-28.08, rel=1e-12)

    def test_no_baseline_no_savings(self) -> None:
        p = project(CostModel(energy_cost_per_kwh=0.12), 150.0, 390.0, None)
        assert p.monthly_savings is None and p.co2_monthly_avoided_kg is None
        assert project(CostModel(energy_cost_per_kwh=0.12), 150.0, 390.0, 0.0).monthly_savings is None

    def test_constants(self) -> None:
        assert HOURS_PER_MONTH == 24 * 30
        assert co2_kg_per_hour(1000.0, 400.0) == 0.4  # 1 kW for 1 h = 1 kWh at 400 g = 0.4 kg
