"""Fleet plans (shared/planning.py) against hand calculations."""

from __future__ import annotations

import math

import pytest

from shared.planning import HostPower, extrapolation_warnings, monthly_hours, plan_fleet

HOST = HostPower(mean_w=18.9, low_w=17.0, high_w=21.0)


def test_fifty_streams_by_hand() -> None:
    plan = plan_fleet(
        streams=50,
        streams_per_host=8,
        host_power=HOST,
        remainder_power=HostPower(mean_w=8.2, low_w=7.5, high_w=9.0),
        energy_price_per_kwh=0.22,
        co2_intensity_g_per_kwh=250.0,
        cpu_price_per_core_hour=0.05,
        cores_per_host=16,
        currency="EUR",
    )
    # 50 = 6 x 8 + 2: 6 full hosts and one carrying 2 streams, 7 hosts.
    assert (plan.hosts, plan.full_hosts, plan.remainder_streams) == (7, 6, 2)
    # Power, host by host: 6 x 18.9 + 8.2 = 121.6 W; low 6 x 17 + 7.5 = 109.5 W; high 6 x 21 + 9 = 135 W.
    assert plan.fleet_mean_power_w == pytest.approx(121.6)
    assert plan.fleet_power_low_w == pytest.approx(109.5)
    assert plan.fleet_power_high_w == pytest.approx(135.0)
    # Month = 24 h x 30 = 720 h. kWh = W x 720 / 1000: 87.552, 78.84, 97.2.
    assert plan.monthly_hours == 720.0
    assert plan.energy_kwh_per_month == pytest.approx(87.552)
    assert plan.energy_kwh_per_month_low == pytest.approx(78.84)
    assert plan.energy_kwh_per_month_high == pytest.approx(97.2)
    # Energy cost = kWh x 0.22 EUR/kWh: 19.26144, 17.3448, 21.384.
    assert plan.energy_cost_per_month == pytest.approx(19.26144)
    assert plan.energy_cost_per_month_low == pytest.approx(17.3448)
    assert plan.energy_cost_per_month_high == pytest.approx(21.384)
    # CO2 = kWh x 250 g/kWh / 1000: 21.888 kg, 19.71 kg, 24.3 kg.
    assert plan.co2_kg_per_month == pytest.approx(21.888)
    assert plan.co2_kg_per_month_low == pytest.approx(19.71)
    assert plan.co2_kg_per_month_high == pytest.approx(24.3)
    # Compute = 7 hosts x 16 cores x 0.05 EUR/core-hour x 720 h = 4032 EUR.
    assert plan.compute_cost_per_month == pytest.approx(4032.0)
    assert plan.currency == "EUR" and plan.notes == []


def test_part_time_fleet_without_interval_or_cpu_price() -> None:
    plan = plan_fleet(
        streams=16,
        streams_per_host=8,
        host_power=HostPower(mean_w=18.9),
        energy_price_per_kwh=0.12,
        co2_intensity_g_per_kwh=400.0,
        hours_per_day=8.0,
    )
    # 2 full hosts, 37.8 W; 8 h x 30 = 240 h; 37.8 x 240 / 1000 = 9.072 kWh; x 0.12 = 1.08864 USD;
    # 9.072 kWh x 400 g/kWh = 3.6288 kg.
    assert (plan.hosts, plan.remainder_streams, plan.monthly_hours) == (2, 0, 240.0)
    assert plan.energy_kwh_per_month == pytest.approx(9.072)
    assert plan.energy_cost_per_month == pytest.approx(1.08864)
    assert plan.co2_kg_per_month == pytest.approx(3.6288)
    assert plan.fleet_power_low_w is None and plan.energy_cost_per_month_high is None
    assert plan.compute_cost_per_month is None
    assert any("compute cost" in n for n in plan.notes)
    assert any("prediction interval" in n for n in plan.notes)


def test_remainder_host_without_its_own_estimate_counts_as_full() -> None:
    plan = plan_fleet(streams=10, streams_per_host=8, host_power=HOST, energy_price_per_kwh=0.1)
    # 2 hosts at 18.9 W each = 37.8 W (low 34, high 42): the 2-stream host is not assumed to draw less.
    assert plan.hosts == 2
    assert plan.fleet_mean_power_w == pytest.approx(37.8)
    assert (plan.fleet_power_low_w, plan.fleet_power_high_w) == pytest.approx((34.0, 42.0))
    assert any("counted at the full-host estimate" in n for n in plan.notes)
    # No CO2 intensity: no CO2 figures, said so.
    assert plan.co2_kg_per_month is None and any("CO2" in n for n in plan.notes)


def test_no_power_estimate() -> None:
    plan = plan_fleet(
        streams=9, streams_per_host=4, host_power=HostPower(mean_w=None), energy_price_per_kwh=0.1
    )
    assert plan.hosts == 3 and plan.fleet_mean_power_w is None and plan.energy_cost_per_month is None
    assert any("no power estimate" in n for n in plan.notes)


def test_monthly_hours_follow_the_720_hour_convention() -> None:
    assert monthly_hours(24.0) == 720.0 and monthly_hours(12.0) == 360.0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"streams": -1},
        {"streams_per_host": 0},
        {"hours_per_day": 0.0},
        {"hours_per_day": 25.0},
        {"energy_price_per_kwh": -0.1},
        {"co2_intensity_g_per_kwh": math.nan},
        {"host_power": HostPower(mean_w=-5.0)},
    ],
)
def test_bad_inputs_are_refused(kwargs: dict[str, object]) -> None:
    args: dict[str, object] = {"streams": 10, "streams_per_host": 4, "host_power": HOST, **kwargs}
    with pytest.raises(ValueError):
        plan_fleet(**args)  # type: ignore[arg-type]


def test_extrapolation_warnings() -> None:
    ranges = {"pixel_rate_mpx": (0.9, 221.0), "streams": (1.0, 8.0)}
    features = {"streams": 8.0, "pixel_rate_mpx": 995.0, "bitrate_mbps": 40.0}
    # streams 8 is on the bound (inside); bitrate has no range; only the pixel rate is outside.
    assert extrapolation_warnings(features, ranges) == [
        "pixel_rate_mpx 995 is outside the trained range 0.9..221"
    ]
    assert extrapolation_warnings({"streams": 0.5}, ranges) == [
        "streams 0.5 is outside the trained range 1..8"
    ]
    assert extrapolation_warnings({"streams": math.inf}, ranges) == [
        "streams inf is not a finite number (trained range 1..8)"
    ]
    assert extrapolation_warnings({}, ranges) == []


def test_warnings_are_carried_into_the_plan() -> None:
    warning = "pixel_rate_mpx 995 is outside the trained range 0.9..221"
    plan = plan_fleet(streams=1, streams_per_host=1, host_power=HOST, warnings=[warning])
    assert plan.warnings == [warning]
