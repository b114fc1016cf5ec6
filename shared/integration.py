"""Sampled series over time: their time-weighted mean and what they integrate to (W -> J, cores ->
core-seconds). Pure Python, no I/O.

A :class:`SampledSeries` is either uniform (``step_s`` apart) or carries its real timestamps. With
timestamps, the trapezoid runs over the actual sample times, so a gap in a Prometheus range result is
bridged instead of silently shrinking the integral (the old cost exporter dropped timestamps and assumed a
uniform 5 s step: B-C8).

**The sampling convention** (docs/telemetry.md, "Sampling convention"), used wherever a series becomes a
mean power or an energy (:func:`time_weighted_mean`, :func:`series_energy`):

* a **timed** series is a set of instants, linear in between: it covers ``t[0]..t[-1]`` and its mean is
  the trapezoid over that span divided by the span;
* a **uniform** series of N samples ``h`` apart is read one of two ways, whichever span is nearer the
  scenario's duration D: *inclusive* (a sample at both ends, covering (N-1) h: what a Prometheus range query
  returns and what the benchmark's own files hold, 25 samples for 120 s at 5 s), mean = trapezoid /
  ((N-1) h); or *one sample per step*, each standing for the step around it (covering N h: 12 samples for
  60 s at 5 s), mean = the arithmetic mean (the midpoint rule). Without a duration, inclusive (the span the
  samples themselves mark, as the old trapezoid);
* one sample is its own mean;
* energy over the scenario = mean x D, whether the series covers all of D or only part of it (then the rest
  is assumed to draw alike; :func:`covered_s` says how much it covers).

So a constant series gives that constant, whatever N, step or jitter, and a linear ramp gives its value at the
middle of what it covers. :func:`integrate` is the old cost exporter's trapezoid over the samples' own span,
kept for the cost family's load-aware figures (B-C8 aside): for a constant series of N samples, one per step,
it is (N-1)/N of mean x D.

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
    """Trapezoid over the samples' own span, in value-seconds (W -> J, cores -> core-seconds); None without
    samples or step. The old cost exporter's integral, kept for the cost family's load-aware figures; every
    other energy is :func:`series_energy` (mean x duration)."""
    if series is None or len(series) == 0:
        return None
    if series.timestamps_s is not None:
        return trapezoid_timed(series.timestamps_s, series.values, series.step_s)
    if series.step_s is None or not series.step_s > 0:
        return None
    return trapezoid_uniform(series.values, series.step_s)


def mean(series: SampledSeries | None) -> float | None:
    """Arithmetic mean of the samples, equal weights whatever their times; None without samples. The old cost
    exporter's mean power (kept for the cost family's hourly figures) and the old mean of container CPU %."""
    if series is None or len(series) == 0:
        return None
    return _sum(series.values) / len(series)


def inclusive(series: SampledSeries, duration_s: float | None) -> bool:
    """Whether a uniform series reads as inclusive (a sample at both ends: N samples cover (N-1) x step s)
    rather than one sample per step (N x step s): the reading whose span is nearer ``duration_s``, i.e.
    inclusive when N x step >= duration + step/2; inclusive without a duration (the span the samples mark
    themselves). Timed series, single samples and series without a step are neither (False): without a step
    nothing tells where the samples sit, so they weigh alike."""
    n, h = len(series), series.step_s
    if series.timestamps_s is not None or n < 2 or h is None or not h > 0:
        return False
    if duration_s is None or not duration_s > 0:
        return True
    return n * h >= duration_s + 0.5 * h


def covered_s(series: SampledSeries | None, duration_s: float | None = None) -> float | None:
    """Seconds the series stands for under the sampling convention: ``t[-1] - t[0]`` for a timed series,
    (N-1) x step (inclusive) or N x step (one sample per step) for a uniform one, the step for a single
    sample. None when unknown (no step)."""
    if series is None or len(series) == 0:
        return None
    t = series.timestamps_s
    if t is not None and len(t) >= 2:
        return t[-1] - t[0]
    h = series.step_s
    if h is None or not h > 0:
        return None
    if len(series) == 1:
        return h
    return h * (len(series) - 1 if inclusive(series, duration_s) else len(series))


def time_weighted_mean(series: SampledSeries | None, duration_s: float | None = None) -> float | None:
    """Mean of the series over the time it covers (module docstring): trapezoid / span for a timed or an
    inclusive uniform series, the arithmetic mean for one sample per step (each standing for the step
    around it) or without a step; the sample itself for one sample. Same unit as the samples (W for power);
    None without samples. ``duration_s`` (the scenario's, s) only decides how a uniform series reads."""
    if series is None or len(series) == 0:
        return None
    v = series.values
    if len(v) == 1:
        return v[0]
    t = series.timestamps_s
    if t is not None:
        span = t[-1] - t[0]
        area = trapezoid_timed(t, v, series.step_s)
        return None if area is None else area / span
    if inclusive(series, duration_s):
        # trapezoid / ((N-1) h), with h cancelled so a constant comes back exactly
        return (_sum(v) - 0.5 * (v[0] + v[-1])) / (len(v) - 1)
    return _sum(v) / len(v)


def series_energy(series: SampledSeries | None, duration_s: float | None) -> float | None:
    """What the series integrates to over the scenario, value-seconds (W -> J): its time-weighted mean x the
    scenario's duration s, whether it covers all of it or part (the rest assumed alike); without a duration,
    over the span it covers itself (:func:`covered_s`). None without samples, or without any span."""
    m = time_weighted_mean(series, duration_s)
    if m is None:
        return None
    if duration_s is not None and duration_s > 0:
        return m * duration_s
    span = covered_s(series, None)
    return None if span is None else m * span


def sample_stdev(series: SampledSeries | None) -> float | None:
    """Sample standard deviation (n-1, as ``statistics.stdev``); 0 for a single sample, None for none."""
    if series is None or len(series) == 0:
        return None
    n = len(series)
    if n == 1:
        return 0.0
    m = _sum(series.values) / n
    return math.sqrt(_sum((v - m) * (v - m) for v in series.values) / (n - 1))
