"""Integrating sampled series over time (W -> J, cores -> core-seconds). Pure numpy, no I/O.

A :class:`SampledSeries` is either uniform (``step_s`` apart) or carries its real timestamps. With
timestamps, the trapezoid runs over the actual sample times, so a gap in a Prometheus range result is
bridged instead of silently shrinking the integral (the old cost exporter dropped timestamps and assumed a
uniform 5 s step: B-C8).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from shared.schemas import Samples, Series

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class SampledSeries:
    values: FloatArray
    #: Seconds between samples; used for uniform series and for a single sample (``v * step``).
    step_s: float | None = None
    #: Unix seconds of each sample, when known.
    timestamps_s: FloatArray | None = None

    @classmethod
    def uniform(cls, values: Sequence[float], step_s: float | None) -> SampledSeries:
        return cls(np.asarray(values, dtype=np.float64), step_s, None)

    @classmethod
    def timed(
        cls, timestamps_s: Sequence[float], values: Sequence[float], step_s: float | None = None
    ) -> SampledSeries:
        t = np.asarray(timestamps_s, dtype=np.float64)
        v = np.asarray(values, dtype=np.float64)
        if t.shape != v.shape:
            raise ValueError(f"{t.size} timestamps for {v.size} values")
        if t.size > 1 and np.any(np.diff(t) <= 0):
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
        return int(self.values.size)


def trapezoid_uniform(values: Sequence[float] | FloatArray, step_s: float) -> float | None:
    """Integral of samples ``step_s`` apart, trapezoidal rule: ``h/2 * (v0 + 2*v1 + ... + 2*v[n-2] + v[n-1])``.

    One sample integrates to ``v * step_s`` (a rectangle, as the old system did). No samples: None (no
    value), never 0.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return None
    if not (math.isfinite(step_s) and step_s > 0):
        raise ValueError(f"step must be a positive number of seconds, got {step_s!r}")
    if v.size == 1:
        return float(v[0] * step_s)
    return float(step_s * (v.sum() - 0.5 * (v[0] + v[-1])))


def trapezoid_timed(
    timestamps_s: FloatArray, values: FloatArray, single_step_s: float | None
) -> float | None:
    """Trapezoid over the real sample times: ``sum((t[i+1]-t[i]) * (v[i]+v[i+1]) / 2)``."""
    if values.size == 0:
        return None
    if values.size == 1:
        return None if single_step_s is None else float(values[0] * single_step_s)
    dt = np.diff(timestamps_s)
    return float(np.dot(dt, (values[:-1] + values[1:]) * 0.5))


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
    return float(series.values.mean())


def sample_stdev(series: SampledSeries | None) -> float | None:
    """Sample standard deviation (n-1, as ``statistics.stdev``); 0 for a single sample, None for none."""
    if series is None or len(series) == 0:
        return None
    if len(series) == 1:
        return 0.0
    return float(series.values.std(ddof=1))


def largest_gap_s(series: SampledSeries) -> float | None:
    """Longest interval between consecutive timestamps (for reporting gaps); None for uniform series."""
    if series.timestamps_s is None or series.timestamps_s.size < 2:
        return None
    return float(np.diff(series.timestamps_s).max())
