"""Regional pricing: tables, config precedence, and the Electricity Maps client against a real local HTTP
server on loopback that answers the way the API does (good, slow, 500, garbage)."""

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


class FakeApi:
    """What the fake API answers next, and what it saw."""

    def __init__(self) -> None:
        self.mode = "good"
        self.intensity: object = 312.5
        self.requests: list[tuple[str, str | None]] = []


@pytest.fixture
def api() -> Iterator[tuple[FakeApi, str]]:
    state = FakeApi()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            state.requests.append((self.path, self.headers.get("auth-token")))
            if state.mode == "slow":
                time.sleep(1.0)
            if state.mode == "500":
                body, code = b'{"error": "internal"}', 500
            elif state.mode == "garbage":
                body, code = b"<html>not json", 200
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

    def test_co2_emissions(self) -> None:
        # 2 kWh at 390 g/kWh = 780 g = 0.78 kg.
        assert RegionalPricing("us-east-1").compute_co2_emissions(2.0) == pytest.approx(0.78, rel=1e-12)


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
