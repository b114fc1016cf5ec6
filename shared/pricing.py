"""Electricity price (currency/kWh) and grid carbon intensity (g CO2/kWh) per region.

Lookup order, electricity price:
  1. the pricing config's ``electricity_prices[region]``, then its ``electricity_prices["default"]``;
  2. the built-in table below for the region, then its ``default``.
  (An explicit ``--energy-cost`` above 0 is applied by the caller, before all of this.)

Lookup order, carbon intensity:
  1. the pricing config's ``co2_intensity[region]``, then its ``co2_intensity["default"]``;
  2. live Electricity Maps data for the region's zone, when a token is configured;
  3. the built-in table for the region, then its ``default``.

A configured 0 is a real 0 (the old code fell through to the default: B-P1). Prices in the built-in table are
the old exporter's fallback figures, kept so that a user who configures nothing gets the numbers they got
before. The pricing config is the only file read here, and the Electricity Maps API the only network access.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

log = logging.getLogger(__name__)

#: Built-in electricity prices, USD/kWh (the old system's fallback table).
FALLBACK_ELECTRICITY_PRICE_PER_KWH: dict[str, float] = {
    "us-east-1": 0.12,
    "us-east-2": 0.11,
    "us-west-1": 0.19,
    "us-west-2": 0.10,
    "eu-west-1": 0.22,
    "eu-central-1": 0.28,
    "ap-northeast-1": 0.24,
    "ap-southeast-1": 0.18,
    "ap-southeast-2": 0.21,
    "default": 0.12,
}

#: Built-in grid carbon intensity, g CO2/kWh (the old system's fallback table).
FALLBACK_CO2_G_PER_KWH: dict[str, float] = {
    "us-east-1": 390,
    "us-east-2": 450,
    "us-west-1": 220,
    "us-west-2": 180,
    "eu-west-1": 250,
    "eu-central-1": 380,
    "ap-northeast-1": 480,
    "ap-southeast-1": 520,
    "ap-southeast-2": 650,
    "default": 400,
}

#: Region -> Electricity Maps zone (as the old code mapped them).
REGION_TO_ZONE: dict[str, str] = {
    "us-east-1": "US-VA",
    "us-east-2": "US-MIDW",
    "us-west-1": "US-CAL",
    "us-west-2": "US-NW",
    "eu-west-1": "IE",
    "eu-central-1": "DE",
    "ap-northeast-1": "JP",
    "ap-southeast-1": "SG",
    "ap-southeast-2": "AU-NSW",
}

DEFAULT_ELECTRICITY_MAPS_URL = "https://api.electricitymap.org"


class PricingConfigError(ValueError):
    pass


class PricingConfig(msgspec.Struct, kw_only=True):
    """``{"electricity_prices": {"<region>": price_per_kwh, ...}, "co2_intensity": {"<region>": g_per_kwh}}``"""

    electricity_prices: dict[str, float] = {}
    co2_intensity: dict[str, float] = {}

    @classmethod
    def load(cls, path: Path) -> PricingConfig:
        """Read and validate a pricing config file; errors name the file and the offending entry."""
        try:
            raw = msgspec.json.decode(path.read_bytes())
        except OSError as exc:
            raise PricingConfigError(f"{path}: cannot read pricing config: {exc.strerror}") from None
        except msgspec.DecodeError as exc:
            raise PricingConfigError(f"{path}: pricing config is not valid JSON: {exc}") from None
        if not isinstance(raw, dict):
            raise PricingConfigError(
                f"{path}: expected a JSON object with electricity_prices and co2_intensity"
            )
        sections: dict[str, dict[str, float]] = {}
        for section in ("electricity_prices", "co2_intensity"):
            table = raw.get(section, {})
            if not isinstance(table, dict):
                raise PricingConfigError(f"{path}: {section} must be an object of region -> number")
            for region, value in table.items():
                if (
                    isinstance(value, bool)
                    or not isinstance(value, int | float)
                    or not (math.isfinite(value) and value >= 0)
                ):
                    raise PricingConfigError(
                        f"{path}: {section}.{region} must be a number >= 0, got {value!r}"
                    )
            sections[section] = {region: float(value) for region, value in table.items()}
        return cls(**sections)


def _lookup(table: dict[str, float], region: str) -> float | None:
    if region in table:
        return table[region]
    return table.get("default")


class ElectricityMapsClient:
    """Latest carbon intensity of a zone: ``GET {base}/v3/carbon-intensity/latest?zone=Z`` with header
    ``auth-token``. Answers are cached for ``cache_ttl_s`` (1 h); a failed call is not retried for
    ``failure_ttl_s`` (5 min) so a dead API is not hammered. The token never appears in logs or errors."""

    def __init__(
        self,
        token: str,
        *,
        base_url: str = DEFAULT_ELECTRICITY_MAPS_URL,
        timeout_s: float = 5.0,
        cache_ttl_s: float = 3600.0,
        failure_ttl_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not token:
            raise ValueError("an Electricity Maps token is required")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self.cache_ttl_s = cache_ttl_s
        self.failure_ttl_s = failure_ttl_s
        self._clock = clock
        self._cache: dict[str, tuple[float | None, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ElectricityMapsClient(base_url={self.base_url!r}, token=***)"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")

    def _fetch(self, zone: str) -> float:
        query = urllib.parse.urlencode({"zone": zone})
        request = urllib.request.Request(  # noqa: S310 - the scheme is the configured API base URL
            f"{self.base_url}/v3/carbon-intensity/latest?{query}",
            headers={"auth-token": self._token, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            body = response.read(1_000_000)
        data = json.loads(body)
        value = data.get("carbonIntensity") if isinstance(data, dict) else None
        if (
            isinstance(value, bool)
            or not isinstance(value, int | float)
            or not math.isfinite(value)
            or value < 0
        ):
            raise ValueError(f"response has no usable carbonIntensity (got {value!r})")
        return float(value)

    def carbon_intensity(self, zone: str) -> float | None:
        """g CO2/kWh for the zone, or None (after one warning) when the API cannot answer."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(zone)
            if cached is not None and now < cached[1]:
                return cached[0]
        try:
            value: float | None = self._fetch(zone)
            expires = now + self.cache_ttl_s
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            reason = (
                exc.reason
                if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
                else exc
            )
            log.warning(
                "Electricity Maps unavailable for zone %s (%s); using configured/static intensity",
                zone,
                self._redact(f"{type(exc).__name__}: {reason}"),
            )
            value, expires = None, now + self.failure_ttl_s
        with self._lock:
            self._cache[zone] = (value, expires)
        return value


@dataclass(frozen=True)
class Sourced:
    value: float
    #: ``config``, ``electricity-maps``, ``table`` or ``flag``.
    source: str


@dataclass
class RegionalPricing:
    region: str = "default"
    config: PricingConfig | None = None
    electricity_maps: ElectricityMapsClient | None = None
    _zone: str | None = field(init=False, default=None)

    def __post_init__(self) -> None:
        self._zone = REGION_TO_ZONE.get(self.region)

    def electricity_price(self) -> Sourced:
        """currency/kWh for the region."""
        if self.config is not None:
            configured = _lookup(self.config.electricity_prices, self.region)
            if configured is not None:
                return Sourced(configured, "config")
        table = _lookup(FALLBACK_ELECTRICITY_PRICE_PER_KWH, self.region)
        assert table is not None
        return Sourced(table, "table")

    def co2_intensity(self) -> Sourced:
        """g CO2/kWh for the region."""
        if self.config is not None:
            configured = _lookup(self.config.co2_intensity, self.region)
            if configured is not None:
                return Sourced(configured, "config")
        if self.electricity_maps is not None and self._zone is not None:
            live = self.electricity_maps.carbon_intensity(self._zone)
            if live is not None:
                return Sourced(live, "electricity-maps")
        table = _lookup(FALLBACK_CO2_G_PER_KWH, self.region)
        assert table is not None
        return Sourced(table, "table")

    def compute_co2_emissions(self, energy_kwh: float) -> float:
        """kg CO2 = intensity g/kWh x energy kWh / 1000."""
        return self.co2_intensity().value * energy_kwh / 1000.0


def effective_energy_price(explicit_per_kwh: float | None, pricing: RegionalPricing) -> Sourced:
    """``--energy-cost`` when given and above 0, else the region's price (absent or 0 means "regional", as in
    the old cost exporter; to price energy at 0, configure 0 in the pricing config)."""
    if explicit_per_kwh is not None and explicit_per_kwh > 0:
        return Sourced(explicit_per_kwh, "flag")
    return pricing.electricity_price()
