"""Power-prediction models in numpy: ordinary least squares with honest intervals. No I/O.

One OLS engine (:class:`OLSFit`) serves three predictors:

* :class:`LinearPredictor` - ``y = b0 + b1 x`` (x: stream count, by default);
* :class:`PolynomialPredictor` - ``y = b0 + b1 x + ... + bd x^d``;
* :class:`MultivariatePredictor` - ``y = b0 + sum(bj fj)`` over named features.

The design is centred and scaled and solved by QR (never the normal equations). Constant feature columns are
dropped (the intercept carries them) and collinear ones are found by column-pivoted QR and dropped; both are
listed in the model info. Two intervals exist and are named apart:

* **prediction interval** - where a *new observation* at x is expected to fall:
  ``yhat +- t(1-a/2, n-p) * s * sqrt(1 + x (X'X)^-1 x')``;
* **confidence interval of the mean** - where the *regression line* at x lies:
  ``yhat +- t(1-a/2, n-p) * s * sqrt(x (X'X)^-1 x')``.

No scipy at run time (``scipy.linalg`` costs ~30 MiB and ``scipy.stats`` ~95 MiB of resident memory): the
column-pivoted QR is :func:`pivoted_qr` below (LAPACK ``dgeqp3``'s pivoting rule), triangular solves are
:func:`back_substitute`, and the t quantile is :func:`shared.student_t.t_quantile`. The tests compare all
of it with statsmodels and scipy.

(The old code computed a bootstrap interval of the mean, called it a confidence interval and discarded it, and
exported measured mean +- 2 sigma under "prediction_confidence": B-R14; its bootstrap was unseeded: B-M2.)
Everything is deterministic: closed-form t intervals, and no salted ``hash()`` (B-M1). Persistence is JSON
through msgspec (``to_dict``/``from_dict``), never pickle (B-M6).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Self

import msgspec
import numpy as np
import numpy.typing as npt

from shared.student_t import t_quantile

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]

MODEL_FORMAT_VERSION = 1


class ModelError(ValueError):
    """The data cannot support the requested model (e.g. no samples)."""


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float | None
    high: float | None
    #: ``prediction`` (a new observation) or ``mean`` (the regression line).
    kind: str
    confidence_level: float


# ---------------------------------------------------------------------------------------------------------
# Linear algebra (numpy only)
# ---------------------------------------------------------------------------------------------------------

#: ``dlaqp2``'s threshold for recomputing a downdated column norm: sqrt of LAPACK's ``dlamch('E')`` (eps/2).
_NORM_RECOMPUTE = math.sqrt(np.finfo(np.float64).eps / 2.0)


def pivoted_qr(a: FloatArray) -> tuple[FloatArray, IntArray]:
    """R and the column permutation of a Householder QR with column pivoting: ``A[:, piv] = Q R``.

    The counterpart of ``scipy.linalg.qr(a, mode="r", pivoting=True)`` with economic R (``min(m, n)`` rows,
    upper trapezoidal), following LAPACK ``dgeqp3``/``dlaqp2``: at step i the pivot is the remaining column
    whose norm over rows i.. is largest (the first one on a tie); those partial norms are downdated after each
    reflection and recomputed when the downdate has lost too much (``dlaqp2``'s ``tol3z`` test). ``|R[i, i]|``
    is then non-increasing, which is what rank detection relies on. Q is not formed (not needed). The
    reflector is ``dlarfg``'s: ``beta = -sign(alpha) * ||x||`` (so diagonal entries may be negative).
    Column norms are rounded differently from LAPACK's ``dnrm2``, so columns whose norms tie to rounding (the
    standardised design's all have norm sqrt(n)) may be taken in another order than scipy's; either order is
    a valid pivoted QR, and for exactly collinear columns it only decides which of them is dropped.
    """
    r = np.array(a, dtype=np.float64, copy=True)
    m, n = r.shape
    piv = np.arange(n)
    norms = np.linalg.norm(r, axis=0) if m else np.zeros(n)
    ref_norms = norms.copy()
    for i in range(min(m, n)):
        j = i + int(np.argmax(norms[i:]))
        if j != i:
            r[:, [i, j]] = r[:, [j, i]]
            piv[[i, j]] = piv[[j, i]]
            norms[j], ref_norms[j] = norms[i], ref_norms[i]
        # Householder reflector H = I - tau v v' with H r[i:, i] = (beta, 0, ..., 0).
        alpha = r[i, i]
        tail_norm = float(np.linalg.norm(r[i + 1 :, i]))
        if tail_norm != 0.0:
            beta = -math.copysign(math.hypot(alpha, tail_norm), alpha)
            tau = (beta - alpha) / beta
            v = r[i:, i] / (alpha - beta)
            v[0] = 1.0
            r[i, i] = beta
            r[i + 1 :, i] = 0.0
            if i + 1 < n:
                block = r[i:, i + 1 :]
                block -= tau * np.outer(v, v @ block)
        # Downdate the partial norms of the remaining columns (dlaqp2).
        for k in range(i + 1, n):
            if norms[k] == 0.0:
                continue
            temp = max(1.0 - (abs(r[i, k]) / norms[k]) ** 2, 0.0)
            if temp * (norms[k] / ref_norms[k]) ** 2 <= _NORM_RECOMPUTE:
                norms[k] = float(np.linalg.norm(r[i + 1 :, k])) if i + 1 < m else 0.0
                ref_norms[k] = norms[k]
            else:
                norms[k] *= math.sqrt(temp)
    return np.triu(r[: min(m, n)]), piv


def back_substitute(r: FloatArray, b: FloatArray) -> FloatArray:
    """Solve ``R x = b`` for upper-triangular R (b a vector or a matrix of right-hand sides).

    Plain back substitution, row by row from the bottom: ``x[i] = (b[i] - R[i, i+1:] @ x[i+1:]) / R[i, i]``,
    the counterpart of ``scipy.linalg.solve_triangular(r, b)`` (LAPACK ``dtrtrs``), including its refusal of
    a singular R (a zero on the diagonal).
    """
    p = r.shape[0]
    diag = np.diag(r)
    if np.any(diag == 0.0):
        raise np.linalg.LinAlgError(
            f"singular matrix: zero diagonal entry in R at {int(np.argmin(np.abs(diag)))}"
        )
    x = np.array(b, dtype=np.float64, copy=True)
    for i in range(p - 1, -1, -1):
        x[i] = (x[i] - r[i, i + 1 :] @ x[i + 1 :]) / r[i, i]
    return x


def upper_triangular_inverse(r: FloatArray) -> FloatArray:
    """``R^-1`` of an upper-triangular R, by back substitution on the identity; exactly upper triangular."""
    return np.triu(back_substitute(r, np.eye(r.shape[0])))


class OLSState(msgspec.Struct, kw_only=True):
    """Everything needed to predict and to compute intervals; serialisable."""

    feature_names: list[str]
    kept: list[str]
    dropped: dict[str, str]
    centre: list[float]
    scale: list[float]
    #: Coefficients on the standardised design: intercept first, then one per kept feature.
    beta_std: list[float]
    #: Inverse of R from the QR of the standardised design, row-major (p x p).
    r_inv: list[list[float]]
    n: int
    p: int
    sse: float
    sst: float
    confidence_level: float


class OLSFit:
    """Ordinary least squares on a centred and scaled design, solved by QR."""

    def __init__(self, state: OLSState) -> None:
        self.state = state
        self._centre = np.asarray(state.centre, dtype=np.float64)
        self._scale = np.asarray(state.scale, dtype=np.float64)
        self._beta = np.asarray(state.beta_std, dtype=np.float64)
        self._r_inv = np.asarray(state.r_inv, dtype=np.float64).reshape(state.p, state.p)
        self._kept_idx = [state.feature_names.index(k) for k in state.kept]

    @classmethod
    def fit(
        cls, x: FloatArray, y: FloatArray, feature_names: Sequence[str], confidence_level: float = 0.95
    ) -> OLSFit:
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        if x.ndim == 1:
            x = x[:, None]
        n = y.size
        if n == 0:
            raise ModelError("no samples to fit")
        if x.shape != (n, len(feature_names)):
            raise ModelError(f"design is {x.shape}, expected ({n}, {len(feature_names)})")
        if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
            raise ModelError("non-finite values in the data")
        dropped: dict[str, str] = {}
        centre = x.mean(axis=0)
        scale = x.std(axis=0)
        candidates = []
        for j, name in enumerate(feature_names):
            if scale[j] <= 1e-12 * max(1.0, abs(centre[j])):
                dropped[name] = "constant"
            else:
                candidates.append(j)
        z = (x[:, candidates] - centre[candidates]) / scale[candidates] if candidates else np.empty((n, 0))
        if candidates:
            r, piv = pivoted_qr(z)
            diag = np.abs(np.diag(r))
            tol = max(z.shape) * np.finfo(np.float64).eps * (diag[0] if diag.size else 0.0) * 1e3
            numerical_rank = int(np.sum(diag > tol))
            # p = 1 + kept must not exceed n, or nothing can be estimated.
            rank = min(numerical_rank, max(n - 1, 0))
            # n centred rows span at most n - 1 dimensions: past that, "collinear" means "too few samples".
            reason = "too few samples" if len(candidates) > n - 1 else "collinear"
            for col in piv[rank:]:
                dropped[feature_names[candidates[col]]] = reason
            keep_cols = sorted(piv[:rank].tolist())
            kept_idx = [candidates[c] for c in keep_cols]
            z = z[:, keep_cols]
        else:
            kept_idx = []
        design = np.hstack([np.ones((n, 1)), z])
        q, r_full = np.linalg.qr(design)
        beta = back_substitute(r_full, q.T @ y)
        residuals = y - design @ beta
        sse = float(residuals @ residuals)
        sst = float(((y - y.mean()) ** 2).sum())
        r_inv = upper_triangular_inverse(r_full)
        full_centre = [float(c) for c in centre]
        full_scale = [float(s) if s > 0 else 1.0 for s in scale]
        state = OLSState(
            feature_names=list(feature_names),
            kept=[feature_names[j] for j in kept_idx],
            dropped={k: dropped[k] for k in feature_names if k in dropped},
            centre=full_centre,
            scale=full_scale,
            beta_std=[float(b) for b in beta],
            r_inv=[[float(v) for v in row] for row in r_inv],
            n=n,
            p=design.shape[1],
            sse=sse,
            sst=sst,
            confidence_level=confidence_level,
        )
        return cls(state)

    # -- derived quantities ----------------------------------------------------------------------------

    @property
    def dof(self) -> int:
        """Residual degrees of freedom, n - p."""
        return self.state.n - self.state.p

    @property
    def residual_std_error(self) -> float | None:
        """s = sqrt(SSE / (n - p)); None when n <= p."""
        return math.sqrt(self.state.sse / self.dof) if self.dof > 0 else None

    @property
    def r2(self) -> float | None:
        """1 - SSE/SST; None for a constant target (SST = 0)."""
        if self.state.sst <= 0:
            return None
        return 1.0 - self.state.sse / self.state.sst

    def _design_rows(self, x: FloatArray) -> FloatArray:
        x = np.atleast_2d(np.asarray(x, dtype=np.float64))
        z = (x[:, self._kept_idx] - self._centre[self._kept_idx]) / self._scale[self._kept_idx]
        return np.hstack([np.ones((x.shape[0], 1)), z])

    def coefficients(self) -> dict[str, float]:
        """Coefficients in the original units: ``intercept`` and one per kept feature."""
        beta = self._beta
        slopes = beta[1:] / self._scale[self._kept_idx]
        intercept = beta[0] - float(np.dot(slopes, self._centre[self._kept_idx]))
        out = {"intercept": float(intercept)}
        out.update({name: float(b) for name, b in zip(self.state.kept, slopes, strict=True)})
        return out

    def standard_errors(self) -> dict[str, float] | None:
        """Standard errors of the original-unit coefficients (as statsmodels' ``bse``); None when n <= p."""
        s = self.residual_std_error
        if s is None:
            return None
        # Cov(beta_std) = s^2 (R^-1 R^-T). Original units: slopes_j = b_j / scale_j and
        # intercept = b0 - sum(slopes_j * centre_j), a linear map T of beta_std.
        p = self.state.p
        transform = np.zeros((p, p))
        inv_scale = 1.0 / self._scale[self._kept_idx]
        transform[0, 0] = 1.0
        transform[0, 1:] = -inv_scale * self._centre[self._kept_idx]
        transform[1:, 1:] = np.diag(inv_scale)
        cov_std = s**2 * (self._r_inv @ self._r_inv.T)
        cov = transform @ cov_std @ transform.T
        se = np.sqrt(np.diag(cov))
        names = ["intercept", *self.state.kept]
        return {name: float(v) for name, v in zip(names, se, strict=True)}

    def predict(self, x: FloatArray) -> FloatArray:
        out: FloatArray = self._design_rows(x) @ self._beta
        return out

    def _leverage(self, rows: FloatArray) -> FloatArray:
        v = rows @ self._r_inv
        out: FloatArray = np.einsum("ij,ij->i", v, v)
        return out

    def intervals(self, x: FloatArray, *, kind: str, confidence_level: float | None = None) -> list[Interval]:
        """``kind`` = ``prediction`` (new observation) or ``mean`` (regression line)."""
        level = self.state.confidence_level if confidence_level is None else confidence_level
        rows = self._design_rows(x)
        mean = rows @ self._beta
        s = self.residual_std_error
        if s is None:
            return [Interval(float(m), None, None, kind, level) for m in mean]
        t = t_quantile(0.5 + level / 2.0, self.dof)
        lev = self._leverage(rows)
        extra = 1.0 if kind == "prediction" else 0.0
        if kind not in ("prediction", "mean"):
            raise ValueError(f"unknown interval kind {kind!r}")
        half = t * s * np.sqrt(extra + lev)
        return [
            Interval(float(m), float(m - h), float(m + h), kind, level)
            for m, h in zip(mean, half, strict=True)
        ]


# ---------------------------------------------------------------------------------------------------------
# Predictors
# ---------------------------------------------------------------------------------------------------------


class PredictorState(msgspec.Struct, kw_only=True):
    """Serialised predictor (``to_dict``/``from_dict``)."""

    format_version: int
    kind: str
    degree: int | None = None
    feature_names: list[str]
    ols: OLSState
    clamp_at_zero: bool = True


@dataclass
class _Base:
    confidence_level: float = 0.95
    clamp_at_zero: bool = True
    _fit: OLSFit | None = field(default=None, init=False, repr=False)

    kind = "base"

    # Subclasses map their raw inputs to the design features.
    def _features(self, x: Any) -> FloatArray:
        raise NotImplementedError

    def feature_names(self) -> list[str]:
        raise NotImplementedError

    def fit(self, x: Any, y: Sequence[float] | FloatArray) -> Self:
        features = self._features(x)
        y_arr = np.asarray(y, dtype=np.float64)
        self._fit = OLSFit.fit(features, y_arr, self.feature_names(), self.confidence_level)
        return self

    @property
    def ols(self) -> OLSFit:
        if self._fit is None:
            raise ModelError("the model is not fitted")
        return self._fit

    @property
    def r2(self) -> float | None:
        return self.ols.r2

    @property
    def residual_std_error(self) -> float | None:
        return self.ols.residual_std_error

    def coefficients(self) -> dict[str, float]:
        return self.ols.coefficients()

    def _clamp(self, value: float | None) -> float | None:
        if value is None:
            return None
        return max(0.0, value) if self.clamp_at_zero else value

    def predict(self, x: Any) -> FloatArray:
        """Point predictions (W), clamped at 0."""
        raw = self.ols.predict(self._features(x))
        return np.maximum(raw, 0.0) if self.clamp_at_zero else raw

    def _intervals(self, x: Any, kind: str) -> list[Interval]:
        out = []
        for iv in self.ols.intervals(self._features(x), kind=kind):
            mean = self._clamp(iv.mean)
            assert mean is not None
            out.append(
                Interval(mean, self._clamp(iv.low), self._clamp(iv.high), iv.kind, iv.confidence_level)
            )
        return out

    def prediction_intervals(self, x: Any) -> list[Interval]:
        """Where new observations at x are expected to fall (t interval, residual variance included)."""
        return self._intervals(x, "prediction")

    def mean_confidence_intervals(self, x: Any) -> list[Interval]:
        """Where the regression line (the expected value) at x lies."""
        return self._intervals(x, "mean")

    def to_dict(self) -> dict[str, Any]:
        state = PredictorState(
            format_version=MODEL_FORMAT_VERSION,
            kind=self.kind,
            degree=getattr(self, "degree", None),
            feature_names=self.feature_names(),
            ols=self.ols.state,
            clamp_at_zero=self.clamp_at_zero,
        )
        return msgspec.to_builtins(state)  # type: ignore[no-any-return]


class LinearPredictor(_Base):
    """``y = b0 + b1 x`` for one variable."""

    kind = "linear"

    def _features(self, x: Any) -> FloatArray:
        return np.asarray(x, dtype=np.float64).reshape(-1, 1)

    def feature_names(self) -> list[str]:
        return ["x"]


@dataclass
class PolynomialPredictor(_Base):
    """``y = b0 + b1 x + ... + bd x^d`` for one variable; powers of the centred, scaled x keep it stable."""

    degree: int = 2
    kind = "poly"

    def _features(self, x: Any) -> FloatArray:
        v = np.asarray(x, dtype=np.float64).reshape(-1)
        return np.column_stack([v**k for k in range(1, self.degree + 1)])

    def feature_names(self) -> list[str]:
        return ["x"] + [f"x^{k}" for k in range(2, self.degree + 1)]


@dataclass
class MultivariatePredictor(_Base):
    """OLS on named features; rows are mappings ``{feature: value}`` or arrays in ``names`` order."""

    names: list[str] = field(default_factory=list)
    kind = "multivariate"

    def _features(self, x: Any) -> FloatArray:
        if isinstance(x, dict):
            x = [x]
        if isinstance(x, list) and x and isinstance(x[0], dict):
            return np.array([[float(row[name]) for name in self.names] for row in x], dtype=np.float64)
        return np.asarray(x, dtype=np.float64).reshape(-1, len(self.names))

    def feature_names(self) -> list[str]:
        return list(self.names)


def from_dict(data: dict[str, Any]) -> _Base:
    """Rebuild a predictor saved with ``to_dict`` (any known format version)."""
    state = msgspec.convert(data, PredictorState)
    if state.format_version != MODEL_FORMAT_VERSION:
        raise ModelError(f"unsupported model format version {state.format_version}")
    predictor: _Base
    if state.kind == "linear":
        predictor = LinearPredictor(confidence_level=state.ols.confidence_level)
    elif state.kind == "poly":
        predictor = PolynomialPredictor(confidence_level=state.ols.confidence_level, degree=state.degree or 2)
    elif state.kind == "multivariate":
        predictor = MultivariatePredictor(
            confidence_level=state.ols.confidence_level, names=state.feature_names
        )
    else:
        raise ModelError(f"unknown model kind {state.kind!r}")
    predictor.clamp_at_zero = state.clamp_at_zero
    predictor._fit = OLSFit(state.ols)
    return predictor
