"""A minimal Prometheus HTTP API client (``/api/v1/query``, ``/api/v1/query_range``), stdlib only.

Works against Prometheus and VictoriaMetrics. Blocking by design: callers run it in a bounded thread pool,
which keeps the dependency list short and is plenty for a few dozen queries per run. Errors say whether a
retry may help (:attr:`PrometheusError.transient`).
"""

from __future__ import annotations

import math
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass

import msgspec

from shared.config import redact_url

MAX_RESPONSE_BYTES = 64 * 1024 * 1024


class PrometheusError(Exception):
    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class _Sample(msgspec.Struct, array_like=True):
    t: float
    v: str


class _Series(msgspec.Struct):
    metric: dict[str, str] = {}
    values: list[_Sample] | None = None
    value: _Sample | None = None


class _Data(msgspec.Struct):
    resultType: str
    result: list[_Series]


class _Response(msgspec.Struct):
    status: str
    data: _Data | None = None
    errorType: str | None = None
    error: str | None = None


_DECODER = msgspec.json.Decoder(_Response)


@dataclass(frozen=True)
class Series:
    labels: dict[str, str]
    timestamps: list[float]
    values: list[float]


def _finite(sample: _Sample) -> tuple[float, float] | None:
    try:
        value = float(sample.v)
    except ValueError:
        return None
    return (sample.t, value) if math.isfinite(value) else None


class PrometheusClient:
    def __init__(self, base_url: str, *, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return f"PrometheusClient({redact_url(self.base_url)!r})"

    def _get(self, path: str, params: dict[str, str]) -> _Data:
        url = f"{self.base_url}{path}?{urllib.parse.urlencode(params)}"
        request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:  # noqa: S310
                body = response.read(MAX_RESPONSE_BYTES)
        except urllib.error.HTTPError as exc:
            # 4xx is a bad query (retrying will not help); 5xx and 429 are the server's trouble.
            transient = exc.code >= 500 or exc.code == 429
            detail = exc.read(2000).decode(errors="replace") if exc.fp else ""
            raise PrometheusError(
                f"HTTP {exc.code} from {path}: {detail.strip()[:300]}", transient=transient
            ) from None
        except (urllib.error.URLError, TimeoutError, ConnectionError, OSError) as exc:
            reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
            raise PrometheusError(
                f"cannot reach {redact_url(self.base_url)}: {reason}", transient=True
            ) from None
        try:
            parsed = _DECODER.decode(body)
        except msgspec.DecodeError as exc:
            raise PrometheusError(f"unexpected response from {path}: {exc}", transient=True) from None
        if parsed.status != "success" or parsed.data is None:
            raise PrometheusError(f"{parsed.errorType or 'error'}: {parsed.error}", transient=False)
        return parsed.data

    def query(self, expr: str, time_s: float) -> list[Series]:
        """Instant query at ``time_s`` (unix seconds, fractions allowed). Non-finite values are dropped."""
        data = self._get("/api/v1/query", {"query": expr, "time": str(time_s)})
        out = []
        for series in data.result:
            sample = _finite(series.value) if series.value is not None else None
            out.append(Series(series.metric, [sample[0]] if sample else [], [sample[1]] if sample else []))
        return out

    def query_range(self, expr: str, start_s: int, end_s: int, step_s: float) -> list[Series]:
        """Range query; each series keeps its sample timestamps. Non-finite values are dropped."""
        step = f"{step_s:g}s"
        data = self._get(
            "/api/v1/query_range", {"query": expr, "start": str(start_s), "end": str(end_s), "step": step}
        )
        out = []
        for series in data.result:
            samples = [s for s in (_finite(x) for x in series.values or []) if s is not None]
            out.append(Series(series.metric, [t for t, _ in samples], [v for _, v in samples]))
        return out
