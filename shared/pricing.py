"""Electricity price (currency/kWh) and grid carbon intensity (g CO2/kWh) per region.

Lookup order, electricity price:
  1. the pricing config's ``electricity_prices[region]``, then its ``electricity_prices["default"]``;
  2. the built-in table below for the region, then its ``default``.
  (An explicit ``--energy-cost`` above 0 is applied by the caller, before all of this.)

Lookup order, carbon intensity (:meth:`RegionalPricing.co2_intensity`):
  1. the pricing config's ``co2_intensity[region]``, then its ``co2_intensity["default"]``;
  2. when a token is configured and the caller gives the run's time window: Electricity Maps' hourly history
     for that window (``/v3/carbon-intensity/past-range``), time-weighted (source ``electricity-maps-past``);
  3. when a token is configured: Electricity Maps' latest figure for the zone (source ``electricity-maps``);
  4. the built-in table for the region, then its ``default``.

A configured 0 is a real 0 (the old code fell through to the default: B-P1). Prices in the built-in table are
the old exporter's fallback figures, kept so that a user who configures nothing gets the numbers they got
before. The pricing config is the only file read here, and the Electricity Maps API the only network access.
"""

from __future__ import annotations

import argparse
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
from datetime import UTC, datetime
from pathlib import Path

import msgspec

from shared.config import flag, non_negative_float

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


HOUR_S = 3600

#: One hourly datum of a past-range answer: (unix seconds at the start of the hour, g CO2/kWh).
HourlyIntensity = tuple[float, float]


def _iso_utc(unix_s: int) -> str:
    """``2026-01-10T09:00:00Z``: the ISO 8601 form the API takes for ``start``/``end``."""
    return datetime.fromtimestamp(unix_s, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _intensity(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise ValueError(f"response has no usable carbonIntensity (got {value!r})")
    return float(value)


def hour_aligned(start_s: float, end_s: float) -> tuple[int, int]:
    """The whole hours covering ``[start_s, end_s]``: start rounded down, end rounded up to the hour (at
    least one hour). This is the range asked of the API and the cache key."""
    start_h = math.floor(start_s / HOUR_S) * HOUR_S
    end_h = max(math.ceil(end_s / HOUR_S) * HOUR_S, start_h + HOUR_S)
    return start_h, end_h


def time_weighted_mean(hours: list[HourlyIntensity], start_s: float, end_s: float) -> float:
    """Mean intensity over ``[start_s, end_s]``, each hourly datum weighted by the seconds of its hour
    ``[t, t + 3600)`` inside the window. A window of zero length takes the hour containing it.

    Raises ValueError when no datum overlaps the window.
    """
    if end_s <= start_s:
        covering = [v for t, v in hours if t <= start_s < t + HOUR_S]
        if not covering:
            raise ValueError("no hourly carbon intensity covers the window")
        return covering[0]
    total = weight_sum = 0.0
    for t, value in hours:
        weight = max(0.0, min(end_s, t + HOUR_S) - max(start_s, t))
        total += weight * value
        weight_sum += weight
    if weight_sum <= 0:
        raise ValueError("no hourly carbon intensity covers the window")
    return total / weight_sum


class ElectricityMapsClient:
    """Carbon intensity of a zone from the Electricity Maps v3 API, header ``auth-token``:

    * :meth:`carbon_intensity`: the latest figure, ``GET {base}/v3/carbon-intensity/latest?zone=Z``;
    * :meth:`carbon_intensity_between`: the time-weighted mean over a past window, from
      ``GET {base}/v3/carbon-intensity/past-range?zone=Z&start=ISO&end=ISO`` (hourly data,
      ``{"zone": ..., "data": [{"datetime": ..., "carbonIntensity": ...}, ...]}``).

    Answers are cached for ``cache_ttl_s`` (1 h; past-range answers per zone and hour-aligned window); a failed
    call is not retried for ``failure_ttl_s`` (5 min) so a dead API is not hammered. The token never appears in
    logs or errors."""

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
        self._range_cache: dict[tuple[str, int, int], tuple[list[HourlyIntensity] | None, float]] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"ElectricityMapsClient(base_url={self.base_url!r}, token=***)"

    def _redact(self, text: str) -> str:
        return text.replace(self._token, "***")

    def _get_json(self, path: str, params: dict[str, str]) -> object:
        query = urllib.parse.urlencode(params)
        request = urllib.request.Request(  # noqa: S310 - the scheme is the configured API base URL
            f"{self.base_url}{path}?{query}",
            headers={"auth-token": self._token, "Accept": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
            body = response.read(1_000_000)
        return json.loads(body)

    def _fetch(self, zone: str) -> float:
        data = self._get_json("/v3/carbon-intensity/latest", {"zone": zone})
        return _intensity(data.get("carbonIntensity") if isinstance(data, dict) else None)

    def _fetch_range(self, zone: str, start_h: int, end_h: int) -> list[HourlyIntensity]:
        data = self._get_json(
            "/v3/carbon-intensity/past-range",
            {"zone": zone, "start": _iso_utc(start_h), "end": _iso_utc(end_h)},
        )
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise ValueError("response has no data list")
        hours = []
        for item in items:
            if not isinstance(item, dict) or not isinstance(item.get("datetime"), str):
                raise ValueError(f"unexpected datum {item!r:.100}")
            if item.get("carbonIntensity") is None:
                continue  # an hour the API has no figure for: the others carry the mean
            at = datetime.fromisoformat(item["datetime"].replace("Z", "+00:00"))
            if at.tzinfo is None:
                at = at.replace(tzinfo=UTC)
            hours.append((at.timestamp(), _intensity(item["carbonIntensity"])))
        if not hours:
            raise ValueError("no hourly carbon intensity in the answer")
        return hours

    def _warn(self, what: str, zone: str, exc: Exception) -> None:
        reason = (
            exc.reason
            if isinstance(exc, urllib.error.URLError) and not isinstance(exc, urllib.error.HTTPError)
            else exc
        )
        log.warning(
            "Electricity Maps %s unavailable for zone %s (%s); using the next source",
            what,
            zone,
            self._redact(f"{type(exc).__name__}: {reason}"),
        )

    def carbon_intensity(self, zone: str) -> float | None:
        """Latest g CO2/kWh for the zone, or None (after one warning) when the API cannot answer."""
        now = self._clock()
        with self._lock:
            cached = self._cache.get(zone)
            if cached is not None and now < cached[1]:
                return cached[0]
        try:
            value: float | None = self._fetch(zone)
            expires = now + self.cache_ttl_s
        except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
            self._warn("latest intensity", zone, exc)
            value, expires = None, now + self.failure_ttl_s
        with self._lock:
            self._cache[zone] = (value, expires)
        return value

    def carbon_intensity_between(self, zone: str, start_s: float, end_s: float) -> float | None:
        """g CO2/kWh over ``[start_s, end_s]`` (unix seconds): the **time-weighted** mean of the hourly data,
        each hour weighted by the seconds of the window it covers (:func:`time_weighted_mean`), so a run from
        09:50 to 10:20 counts 10 minutes of the 09:00 figure and 20 of the 10:00 one. Hours without a figure
        are left out. None (after one warning) when the API cannot answer or has no data for the window.

        The hourly data of the hour-aligned window (:func:`hour_aligned`) is cached, so runs within the same
        hours share one request.
        """
        if not (math.isfinite(start_s) and math.isfinite(end_s)):
            return None
        start_h, end_h = hour_aligned(start_s, end_s)
        key = (zone, start_h, end_h)
        now = self._clock()
        with self._lock:
            cached = self._range_cache.get(key)
        if cached is not None and now < cached[1]:
            hours = cached[0]
        else:
            try:
                hours = self._fetch_range(zone, start_h, end_h)
                time_weighted_mean(hours, start_s, end_s)  # an answer that misses the window is a failure
                expires = now + self.cache_ttl_s
            except (urllib.error.URLError, TimeoutError, OSError, ValueError) as exc:
                self._warn("past-range intensity", zone, exc)
                hours, expires = None, now + self.failure_ttl_s
            with self._lock:
                self._range_cache[key] = (hours, expires)
        if hours is None:
            return None
        try:
            return time_weighted_mean(hours, start_s, end_s)
        except ValueError:
            return None


@dataclass(frozen=True)
class Sourced:
    value: float
    #: ``config``, ``electricity-maps-past`` (the run's own window), ``electricity-maps`` (latest), ``table``
    #: or ``flag``.
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

    def co2_intensity(self, window: tuple[float, float] | None = None) -> Sourced:
        """g CO2/kWh for the region. ``window`` = (start, end) in unix seconds: the run's own time, for which
        Electricity Maps' hourly history is asked before its latest figure. A configured value always wins."""
        if self.config is not None:
            configured = _lookup(self.config.co2_intensity, self.region)
            if configured is not None:
                return Sourced(configured, "config")
        if self.electricity_maps is not None and self._zone is not None:
            if window is not None:
                past = self.electricity_maps.carbon_intensity_between(self._zone, window[0], window[1])
                if past is not None:
                    return Sourced(past, "electricity-maps-past")
            live = self.electricity_maps.carbon_intensity(self._zone)
            if live is not None:
                return Sourced(live, "electricity-maps")
        table = _lookup(FALLBACK_CO2_G_PER_KWH, self.region)
        assert table is not None
        return Sourced(table, "table")


def effective_energy_price(explicit_per_kwh: float | None, pricing: RegionalPricing) -> Sourced:
    """``--energy-cost`` when given and above 0, else the region's price (absent or 0 means "regional", as in
    the old cost exporter; to price energy at 0, configure 0 in the pricing config)."""
    if explicit_per_kwh is not None and explicit_per_kwh > 0:
        return Sourced(explicit_per_kwh, "flag")
    return pricing.electricity_price()


def add_pricing_arguments(parser: argparse.ArgumentParser) -> None:
    """The old cost exporter's pricing flags and defaults (also offered by ``transcode-energy up``)."""
    flag(parser, "--region", env="REGION", default="default", help="pricing/CO2 region (e.g. us-east-1)")
    flag(
        parser,
        "--energy-cost",
        env="ENERGY_COST_PER_KWH",
        default=None,
        type=non_negative_float,
        help="electricity price per kWh; absent or 0 means the region's price",
    )
    flag(
        parser,
        "--cpu-cost",
        env="CPU_COST_PER_HOUR",
        default=0.0,
        type=non_negative_float,
        help="price of one CPU core for one hour",
    )
    flag(
        parser,
        "--gpu-cost",
        env="GPU_COST_PER_HOUR",
        default=0.0,
        type=non_negative_float,
        help="price of one GPU for one hour",
    )
    flag(parser, "--currency", env="CURRENCY", default="USD", help="currency of every price and cost")
    flag(
        parser,
        "--pricing-config",
        env="PRICING_CONFIG",
        default=None,
        type=Path,
        help="JSON file: {electricity_prices: {region: price}, co2_intensity: {region: g_per_kwh}}",
    )
    flag(
        parser,
        "--electricity-maps-token",
        env="ELECTRICITY_MAPS_TOKEN",
        default=None,
        secret=True,
        help="Electricity Maps API token for live carbon intensity",
    )
    flag(
        parser,
        "--electricity-maps-url",
        env="ELECTRICITY_MAPS_URL",
        default=DEFAULT_ELECTRICITY_MAPS_URL,
        help="Electricity Maps API base URL",
    )


def pricing_from_args(args: argparse.Namespace) -> RegionalPricing:
    """The region's pricing as the flags of :func:`add_pricing_arguments` configure it."""
    config = PricingConfig.load(args.pricing_config) if args.pricing_config else None
    live = None
    if args.electricity_maps_token:
        live = ElectricityMapsClient(args.electricity_maps_token, base_url=args.electricity_maps_url)
    return RegionalPricing(args.region, config, live)
