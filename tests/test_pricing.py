"""Regional pricing: tables, config precedence, and the Electricity Maps client against a real local HTTP
server on loopback that answers the way the API does (good, slow, 500, garbage), for the latest figure and
for a past range (``/v3/carbon-intensity/past-range``)."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from shared.pricing import (
    ElectricityMapsClient,
    PricingConfig,
    PricingConfigError,
    RegionalPricing,
    effective_energy_price,
)

TOKEN = "em-secret-token-123"


#: 2026-01-10T09:00:00Z, 10:00 and 11:00 in unix seconds.
H9 = 1768035600
H10 = H9 + 3600
H11 = H9 + 7200


class FakeApi:
    """What the fake API answers next, and what it saw. ``mode`` applies to the latest endpoint,
    ``range_mode`` to past-range (``None``: same as ``mode``)."""

    def __init__(self) -> None:
        self.mode = "good"
        self.range_mode: str | None = None
        self.intensity: object = 312.5
        #: The past-range ``data`` list, as the API sends it (hourly, ``datetime`` at the start of the hour).
        self.hourly: list[dict[str, Any]] = [
            {
                "zone": "IE",
                "datetime": "2026-01-10T09:00:00.000Z",
                "carbonIntensity": 200,
                "isEstimated": False,
            },
            {
                "zone": "IE",
                "datetime": "2026-01-10T10:00:00.000Z",
                "carbonIntensity": 300,
                "isEstimated": False,
            },
            {
                "zone": "IE",
                "datetime": "2026-01-10T11:00:00.000Z",
                "carbonIntensity": 260,
                "isEstimated": True,
            },
        ]
        self.requests: list[tuple[str, str | None]] = []


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    state = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("auth-token")))
            past = self.path.startswith("/v3/carbon-intensity/past-range?")
            mode = (state.range_mode or state.mode) if past else state.mode
            if mode == "slow":
                time.sleep(1.0)
            if mode == "500":
                body, code = b'{"error": "internal"}', 500
            elif mode == "garbage":
                body, code = b"<html>not json", 200
            elif past:
                answer = {"zone": "IE", "temporalGranularity": "hourly", "data": state.hourly}
                body, code = json.dumps(answer).encode(), 200
            else:
                body, code = json.dumps({"zone": "IE", "carbonIntensity": state.intensity}).encode(), 200
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def client(base: str, **kw: Any) -> ElectricityMapsClient:
    return ElectricityMapsClient(TOKEN, base_url=base, timeout_s=kw.pop("timeout_s", 0.3), **kw)


class TestTables:
    @pytest.mark.parametrize(
        ("region", "price", "co2"),
        [
            ("us-east-1", 0.12, 390),
            ("eu-west-1", 0.22, 250),
            ("default", 0.12, 400),
            ("us-west-2", 0.10, 180),
            ("ap-southeast-2", 0.21, 650),
            ("mars-1", 0.12, 400),
        ],
    )
    def test_fallback_tables(self, region: str, price: float, co2: float) -> None:
        pricing = RegionalPricing(region)
        assert pricing.electricity_price().value == price
        assert pricing.co2_intensity().value == co2
        assert pricing.electricity_price().source == "table"


class TestConfig:
    def test_region_then_default_then_table_and_zero_is_real(self, tmp_path: Path) -> None:
        path = tmp_path / "pricing.json"
        path.write_text(
            json.dumps(
                {
                    "electricity_prices": {"eu-west-1": 0.3, "default": 0.15},
                    "co2_intensity": {"eu-west-1": 0, "us-east-1": 100},
                }
            )
        )
        config = PricingConfig.load(path)
        assert RegionalPricing("eu-west-1", config).electricity_price().value == 0.3
        assert RegionalPricing("us-east-1", config).electricity_price().value == 0.15  # config default
        zero = RegionalPricing("eu-west-1", config).co2_intensity()
        assert (zero.value, zero.source) == (0, "config")  # B-P1: a configured 0 is a real 0
        assert RegionalPricing("us-west-2", config).co2_intensity().value == 180  # table, no config default

    def test_invalid_config_names_the_problem(self, tmp_path: Path) -> None:
        path = tmp_path / "pricing.json"
        path.write_text('{"electricity_prices": {"eu-west-1": "cheap"}}')
        with pytest.raises(PricingConfigError, match=r"electricity_prices.*eu-west-1"):
            PricingConfig.load(path)
        path.write_text('{"co2_intensity": {"x": -5}}')
        with pytest.raises(PricingConfigError, match=r"co2_intensity\.x must be a number >= 0"):
            PricingConfig.load(path)
        with pytest.raises(PricingConfigError, match="cannot read"):
            PricingConfig.load(tmp_path / "missing.json")

    def test_explicit_energy_cost_overrides_and_zero_means_regional(self) -> None:
        pricing = RegionalPricing("eu-west-1")
        assert effective_energy_price(0.3, pricing).value == 0.3
        assert effective_energy_price(0.0, pricing).value == 0.22
        assert effective_energy_price(None, pricing).value == 0.22


class TestElectricityMaps:
    def test_good_answer_is_used_and_cached(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        em = client(base)
        pricing = RegionalPricing("eu-west-1", electricity_maps=em)
        first = pricing.co2_intensity()
        assert (first.value, first.source) == (312.5, "electricity-maps")
        assert state.requests == [("/v3/carbon-intensity/latest?zone=IE", TOKEN)]
        state.intensity = 999
        assert pricing.co2_intensity().value == 312.5  # cached for an hour
        assert len(state.requests) == 1

    def test_cache_expires(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        now = [0.0]
        em = client(base, cache_ttl_s=3600, clock=lambda: now[0])
        assert em.carbon_intensity("IE") == 312.5
        state.intensity = 200
        now[0] = 3599.0
        assert em.carbon_intensity("IE") == 312.5
        now[0] = 3601.0
        assert em.carbon_intensity("IE") == 200

    @pytest.mark.parametrize("mode", ["slow", "500", "garbage", "no-field", "negative"])
    def test_failures_fall_back_with_one_warning_and_no_token(
        self, api: tuple[FakeApi, str], mode: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        state, base = api
        state.mode = "good" if mode in ("no-field", "negative") else mode
        state.intensity = None if mode == "no-field" else (-1 if mode == "negative" else 312.5)
        pricing = RegionalPricing("eu-west-1", electricity_maps=client(base))
        with caplog.at_level(logging.DEBUG):
            first = pricing.co2_intensity()
            second = pricing.co2_intensity()  # failure is remembered: no second call, no second warning
        assert (first.value, first.source) == (250, "table")
        assert second.value == 250
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert TOKEN not in caplog.text
        assert len(state.requests) == 1

    def test_config_beats_the_api_and_unknown_zone_never_calls(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        config = PricingConfig(co2_intensity={"eu-west-1": 123.0})
        assert RegionalPricing("eu-west-1", config, client(base)).co2_intensity().value == 123.0
        assert RegionalPricing("default", None, client(base)).co2_intensity().value == 400
        assert state.requests == []

    def test_unreachable_api(self, caplog: pytest.LogCaptureFixture) -> None:
        from services.up import free_port

        em = client(f"http://127.0.0.1:{free_port()}")
        with caplog.at_level(logging.WARNING):
            assert em.carbon_intensity("IE") is None
        assert TOKEN not in caplog.text
        assert "***" in repr(em) and TOKEN not in repr(em)


#: A run from 09:15:00Z to 11:45:00Z.
WINDOW = (H9 + 900.0, H11 + 2700.0)
PAST_RANGE_REQUEST = (
    "/v3/carbon-intensity/past-range?zone=IE&start=2026-01-10T09%3A00%3A00Z&end=2026-01-10T12%3A00%3A00Z",
    TOKEN,
)


class TestPastRange:
    def test_time_weighted_mean_of_the_runs_hours(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        pricing = RegionalPricing("eu-west-1", electricity_maps=client(base))
        got = pricing.co2_intensity(WINDOW)
        # 09:15-10:00 is 2700 s at 200, 10:00-11:00 3600 s at 300, 11:00-11:45 2700 s at 260:
        # (200 x 2700 + 300 x 3600 + 260 x 2700) / 9000 = (540000 + 1080000 + 702000) / 9000 = 258.0
        # (the plain hourly mean would be 760 / 3 = 253.33).
        assert got.value == pytest.approx(258.0, rel=1e-12) and got.source == "electricity-maps-past"
        assert state.requests == [PAST_RANGE_REQUEST]  # hour-aligned: 09:00 to 12:00, token in the header
        # Another run in the same hours is answered from the cache: 09:30-11:30 weighs 1800, 3600, 1800 s:
        # (200 x 1800 + 300 x 3600 + 260 x 1800) / 7200 = 1908000 / 7200 = 265.0.
        again = pricing.co2_intensity((H9 + 1800.0, H11 + 1800.0))
        assert again.value == pytest.approx(265.0, rel=1e-12) and again.source == "electricity-maps-past"
        assert len(state.requests) == 1
        # Without a window: exactly as before, the latest figure.
        latest = pricing.co2_intensity()
        assert (latest.value, latest.source) == (312.5, "electricity-maps")
        assert state.requests[1] == ("/v3/carbon-intensity/latest?zone=IE", TOKEN)

    def test_a_window_inside_one_hour_and_hours_without_a_figure(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        state.hourly[1]["carbonIntensity"] = None  # the API has no figure for 10:00
        em = client(base)
        # 10:10-10:50 lies in the hour without a figure: no datum overlaps, so no past figure.
        assert em.carbon_intensity_between("IE", H10 + 600.0, H10 + 3000.0) is None
        # 09:15-11:45 without the 10:00 hour: (200 x 2700 + 260 x 2700) / 5400 = 230.0.
        assert em.carbon_intensity_between("IE", *WINDOW) == pytest.approx(230.0, rel=1e-12)
        # 09:20-09:40 only: the 09:00 figure.
        assert em.carbon_intensity_between("IE", H9 + 1200.0, H9 + 2400.0) == 200.0

    @pytest.mark.parametrize("mode", ["slow", "500", "garbage", "empty", "negative"])
    def test_failures_fall_back_to_latest_with_one_warning_and_no_token(
        self, api: tuple[FakeApi, str], mode: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        state, base = api
        state.range_mode = mode if mode in ("slow", "500", "garbage") else "good"
        if mode == "empty":
            state.hourly = []
        if mode == "negative":
            state.hourly[0]["carbonIntensity"] = -5
        pricing = RegionalPricing("eu-west-1", electricity_maps=client(base))
        with caplog.at_level(logging.DEBUG):
            first = pricing.co2_intensity(WINDOW)
            second = pricing.co2_intensity(WINDOW)  # the failure is remembered: past-range is not asked again
        assert (first.value, first.source) == (312.5, "electricity-maps")
        assert (second.value, second.source) == (312.5, "electricity-maps")
        assert [r for r, _ in state.requests].count(PAST_RANGE_REQUEST[0]) == 1
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "past-range" in warnings[0].getMessage()
        assert TOKEN not in caplog.text

    def test_failure_expires_after_the_failure_ttl(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        state.range_mode = "500"
        now = [0.0]
        em = client(base, failure_ttl_s=300, clock=lambda: now[0])
        assert em.carbon_intensity_between("IE", *WINDOW) is None
        state.range_mode = "good"
        now[0] = 299.0
        assert em.carbon_intensity_between("IE", *WINDOW) is None  # still remembered
        now[0] = 301.0
        assert em.carbon_intensity_between("IE", *WINDOW) == pytest.approx(258.0, rel=1e-12)
        assert len(state.requests) == 2

    def test_everything_down_gives_the_table(
        self, api: tuple[FakeApi, str], caplog: pytest.LogCaptureFixture
    ) -> None:
        state, base = api
        state.mode = "500"
        with caplog.at_level(logging.WARNING):
            got = RegionalPricing("eu-west-1", electricity_maps=client(base)).co2_intensity(WINDOW)
        assert (got.value, got.source) == (250, "table")
        assert len(state.requests) == 2  # past-range, then latest
        assert TOKEN not in caplog.text

    def test_no_token_or_config_never_calls(self, api: tuple[FakeApi, str]) -> None:
        state, base = api
        # Without a token there is no client: the window changes nothing.
        untokened = RegionalPricing("eu-west-1").co2_intensity(WINDOW)
        assert (untokened.value, untokened.source) == (250, "table")
        with pytest.raises(ValueError, match="token is required"):
            ElectricityMapsClient("", base_url=base)
        config = PricingConfig(co2_intensity={"eu-west-1": 123.0})
        configured = RegionalPricing("eu-west-1", config, client(base)).co2_intensity(WINDOW)
        assert (configured.value, configured.source) == (123.0, "config")
        assert state.requests == []
