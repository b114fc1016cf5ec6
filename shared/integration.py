"""Integrating sampled series over time (W -> J, cores -> core-seconds). Pure Python, no I/O.

A :class:`SampledSeries` is either uniform (``step_s`` apart) or carries its real timestamps. With
timestamps, the trapezoid runs over the actual sample times, so a gap in a Prometheus range result is
bridged instead of silently shrinking the integral (the old cost exporter dropped timestamps and assumed a
uniform 5 s step: B-C8).

No numpy on purpose: this module is imported by every worker (cost, QoE, modeling), and numpy alone costs
about 20 MiB of resident memory per process. Sums use :func:`math.fsum` (correctly rounded), so results are
at least as accurate as numpy's pairwise summation was and agree with it to rounding; non-finite samples
still give inf/nan rather than an exception.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise

from shared.schemas import Samples, Series


def _floats(values: Iterable[float]) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


def _sum(values: Iterable[float]) -> float:
    """Correctly rounded sum; with infinities of both signs or an overflow, IEEE addition (inf/nan, as numpy)."""
    terms = values if isinstance(values, tuple) else tuple(values)
    try:
        return math.fsum(terms)
    except (OverflowError, ValueError):
        return float(sum(terms))


@dataclass(frozen=True)
class SampledSeries:
    values: tuple[float, ...]
    #: Seconds between samples; used for uniform series and for a single sample (``v * step``).
    step_s: float | None = None
    #: Unix seconds of each sample, when known.
    timestamps_s: tuple[float, ...] | None = None

    @classmethod
    def uniform(cls, values: Sequence[float], step_s: float | None) -> SampledSeries:
        return cls(_floats(values), step_s, None)

    @classmethod
    def timed(
        cls, timestamps_s: Sequence[float], values: Sequence[float], step_s: float | None = None
    ) -> SampledSeries:
        t = _floats(timestamps_s)
        v = _floats(values)
        if len(t) != len(v):
            raise ValueError(f"{len(t)} timestamps for {len(v)} values")
        if any(b - a <= 0 for a, b in pairwise(t)):
            raise ValueError("timestamps must be strictly increasing")
        return cls(v, step_s, t)

    @classmethod
    def from_field(cls, series: Series | None, step_s: float | None) -> SampledSeries | None:
        """From a schema field (a plain list or a ``Samples`` object); None for a missing or empty one."""
        if series is None:
            return None
        if isinstance(series, Samples):
            if not series.values:
                return None
            if series.timestamps is not None:
                return cls.timed(series.timestamps, series.values, step_s)
            return cls.uniform(series.values, step_s)
        if not series:
            return None
        return cls.uniform(series, step_s)

    def __len__(self) -> int:
        return len(self.values)


def trapezoid_uniform(values: Sequence[float], step_s: float) -> float | None:
    """Integral of samples ``step_s`` apart, trapezoidal rule: ``h/2 * (v0 + 2*v1 + ... + 2*v[n-2] + v[n-1])``.

    One sample integrates to ``v * step_s`` (a rectangle, as the old system did). No samples: None (no
    value), never 0.
    """
    v = values if isinstance(values, tuple) else _floats(values)
    if not v:
        return None
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step must be a positive number of seconds, got {step_s!r}")
    if len(v) == 1:
        return float(v[0] * step_s)
    return float(step_s * (_sum(v) - 0.5 * (v[0] + v[-1])))


def trapezoid_timed(
    timestamps_s: Sequence[float], values: Sequence[float], single_step_s: float | None
) -> float | None:
    """Trapezoid over the real sample times: ``sum((t[i+1]-t[i]) * (v[i]+v[i+1]) / 2)``."""
    if len(values) == 0:
        return None
    if len(values) == 1:
        return None if single_step_s is None else float(values[0] * single_step_s)
    if len(timestamps_s) != len(values):
        raise ValueError(f"{len(timestamps_s)} timestamps for {len(values)} values")
    return _sum(
        (t1 - t0) * ((v0 + v1) * 0.5)
        for (t0, t1), (v0, v1) in zip(pairwise(timestamps_s), pairwise(values), strict=True)
    )


def integrate(series: SampledSeries | None) -> float | None:
    """Integral over time in value-seconds (W -> J, cores -> core-seconds); None without samples or step."""
    if series is None or len(series) == 0:
        return None
    if series.timestamps_s is not None:
        return trapezoid_timed(series.timestamps_s, series.values, series.step_s)
    if series.step_s is None or not series.step_s > 0:
        return None
    return trapezoid_uniform(series.values, series.step_s)


def mean(series: SampledSeries | None) -> float | None:
    """Arithmetic mean of the samples (the old exporters' "mean power"); None without samples."""
    if series is None or len(series) == 0:
        return None
    return _sum(series.values) / len(series)


def sample_stdev(series: SampledSeries | None) -> float | None:
    """Sample standard deviation (n-1, as ``statistics.stdev``); 0 for a single sample, None for none."""
    if series is None or len(series) == 0:
        return None
    n = len(series)
    if n == 1:
        return 0.0
    m = _sum(series.values) / n
    return math.sqrt(_sum((v - m) * (v - m) for v in series.values) / (n - 1))
