"""Student's t distribution for integer degrees of freedom: CDF, survival function and quantile. ``math`` only.

Why not scipy: ``scipy.stats`` alone costs ~95 MiB of resident memory, and a prediction interval needs one
number, ``t(1 - a/2, n - p)``.

Accuracy (checked against 40-digit mpmath evaluations while writing this, and against ``scipy.stats`` in
tests/test_student_t.py): the quantile is within ~2e-14 relative of the exact value for ``dof`` 1..1e8 and
``p`` in 0.5..1-1e-12 (what is required: 1e-10 against scipy for ``dof`` <= 100,000, ``p`` <= 0.9999); the
survival function to ~1e-14 relative for small ``dof`` and up to ~``dof * eps / t^2`` relative in the tail for
large ``dof`` (~1e-11 at ``dof`` = 100,000), see below.

Method
------
For ``t >= 0`` with ``x = dof / (dof + t^2)``, A&S 26.7.1 and the symmetry A&S 26.5.2 give the tail and the
central probability as regularized incomplete beta functions:

* ``Q(t) = P(T > t)    = I_x(dof/2, 1/2) / 2``
* ``A(t) = P(|T| <= t) = I_{1-x}(1/2, dof/2) = 1 - 2 Q(t)``

``I_y(a, b) = y^a (1-y)^b / (a B(a, b)) * CF`` with ``CF`` the continued fraction A&S 26.5.8, evaluated by
the modified Lentz method (as Numerical Recipes' ``betacf``). Which of the two is evaluated directly follows
the convergence rule of that continued fraction (``y < (a+1)/(a+b+2)``); here that is
``t^2 (dof + 2) > 3 dof``. So ``Q`` is computed directly in the tail and ``A`` near the centre, and neither is
ever formed as a cancelling ``1 - (something close to 1)`` where it is small. The continued fraction needs
at most O(sqrt(dof)) terms (10 to 50 in practice). Its one weakness: with ``dof`` large and ``t`` moderate,
``x`` is within ``t^2/dof`` of 1 and its rounding costs ``~dof * eps / t^2`` relative in ``Q``; hence the
expansion below for the quantile.

The prefactor needs ``log B(dof/2, 1/2) = log sqrt(pi) - log R(dof/2)`` with ``R(a) = Gamma(a+1/2)/Gamma(a)``.
``math.lgamma`` is not good enough for large ``dof`` (two numbers of size ~dof log dof cancel), so ``log R``
comes from the exact recurrence ``R(a+1) = R(a) (a+1/2)/a`` from ``R(1/2) = 1/sqrt(pi)`` or
``R(1) = sqrt(pi)/2`` for ``a < 15``, and for ``a >= 15`` from its asymptotic series (Bernoulli
polynomials): ``log R(a) = log(a)/2 - 1/(8a) + 1/(192a^3) - 1/(640a^5) + 17/(14336a^7) - 31/(18432a^9)
+ 691/(180224a^11)``, whose first omitted term is below 1e-17 there.

Quantile: ``1 - p`` and ``2p - 1`` are exact in floating point for ``p >= 1/2``, so nothing is lost before
the iteration starts, and ``t(p) = -t(1 - p)`` gives ``p < 1/2``. With the tail probability ``q = 1 - p``:

* for ``dof >= 1000`` and ``q < 1/4``, when the last term of the Cornish-Fisher expansion A&S 26.7.5
  (``t = z + g1/dof + ... + g4/dof^4``, ``z`` the normal quantile, which is itself A&S 26.2.23 polished by
  Newton steps on ``math.erfc``) is below 1e-13 relative, that expansion is the answer: its truncation
  error is then below ~1e-16 (measured: the omitted terms shrink by ~z^2/dof each);
* otherwise a safeguarded Newton iteration inverts the CDF: near the centre (``q >= 1/4``) on
  ``A(t) = 1 - 2q`` in ``t``, in the tail on ``log Q(t) = log q`` in ``log t`` (nearly linear there, so few
  steps from any start). Both functions are monotone and concave in the iterated variable. Every evaluation
  narrows a bracket ``[lo, hi]`` around the root, a step leaving it is replaced by bisection, so the
  iteration cannot diverge; it stops when the step is below 4 ulp or stops shrinking at the CDF's rounding
  level. Starting points: the exact closed forms for ``dof`` 1 (``tan``) and 2, the Cornish-Fisher
  expansion on A&S 26.2.23 otherwise.
"""

from __future__ import annotations

import functools
import math
import operator
import sys

_EPS = sys.float_info.epsilon
_LOG_SQRT_PI = 0.5 * math.log(math.pi)
_TINY = 1e-300
_SQRT2 = math.sqrt(2.0)
_LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)
#: From here on the tail quantile may come from the Cornish-Fisher expansion (when its last term is tiny).
_ASYMPTOTIC_MIN_DOF = 1000
#: Beyond this |t|, t*t overflows; logs are taken in pieces instead.
_BIG_T = 1e150


def _dof(dof: int) -> int:
    nu = operator.index(dof)
    if nu < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {dof!r}")
    return nu


def _log_gamma_ratio(a: float) -> float:
    """``log(Gamma(a + 1/2) / Gamma(a))`` for ``a = dof/2`` (a positive multiple of 1/2)."""
    if a >= 15.0:
        inv = 1.0 / a
        inv2 = inv * inv
        poly = -1 / 8 + inv2 * (
            1 / 192 + inv2 * (-1 / 640 + inv2 * (17 / 14336 + inv2 * (-31 / 18432 + inv2 * (691 / 180224))))
        )
        return 0.5 * math.log(a) + inv * poly
    if a == int(a):
        ratio, b = 0.5 * math.sqrt(math.pi), 1.0  # R(1) = Gamma(3/2) / Gamma(1)
    else:
        ratio, b = 1.0 / math.sqrt(math.pi), 0.5  # R(1/2) = Gamma(1) / Gamma(1/2)
    while b < a:
        ratio *= (b + 0.5) / b
        b += 1.0
    return math.log(ratio)


def _beta_cf(a: float, b: float, y: float) -> float:
    """Continued fraction of ``I_y(a, b)`` (A&S 26.5.8), modified Lentz; converges for ``y < (a+1)/(a+b+2)``."""
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c = 1.0
    d = 1.0 - qab * y / qap
    d = 1.0 / (d if abs(d) > _TINY else _TINY)
    h = d
    max_terms = 1000 + 10 * math.isqrt(int(max(a, b)) + 1)
    for m in range(1, max_terms):
        m2 = 2 * m
        for coeff in (
            m * (b - m) * y / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * y / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + coeff * d
            d = 1.0 / (d if abs(d) > _TINY else _TINY)
            c = 1.0 + coeff / c
            c = c if abs(c) > _TINY else _TINY
            delta = c * d
            h *= delta
        if abs(delta - 1.0) <= _EPS:
            return h
    raise ArithmeticError(f"incomplete beta continued fraction did not converge (a={a}, b={b}, y={y})")


def _log1p_t2(t: float, nu: int) -> float:
    """``log(1 + t^2/dof)`` for ``t >= 0`` without overflowing."""
    if t < _BIG_T:
        return math.log1p(t * t / nu)
    return 2.0 * math.log(t) - math.log(nu)


def _log_pdf(t: float, nu: int) -> float:
    """``log f(t) = log R(dof/2) - log sqrt(dof pi) - (dof+1)/2 log(1 + t^2/dof)``."""
    return (
        _log_gamma_ratio(0.5 * nu)
        - _LOG_SQRT_PI
        - 0.5 * math.log(nu)
        - 0.5 * (nu + 1) * _log1p_t2(abs(t), nu)
    )


def _tail_central(t: float, nu: int) -> tuple[float, float, float]:
    """``(log Q(t), Q(t), A(t))`` for ``t > 0`` (see the module docstring)."""
    if math.isinf(t):
        return -math.inf, 0.0, 1.0
    # log of x^(dof/2) (1-x)^(1/2) / B(dof/2, 1/2), x = dof/(dof + t^2), 1 - x = t^2/(dof + t^2).
    log_x = -_log1p_t2(t, nu)
    t2 = t * t if t < _BIG_T else math.inf
    log_1mx = -math.log1p(nu / t2) if t2 >= nu else 2.0 * math.log(t) - math.log(nu + t2)
    log_front = 0.5 * nu * log_x + 0.5 * log_1mx + _log_gamma_ratio(0.5 * nu) - _LOG_SQRT_PI
    if t2 * (nu + 2) > 3 * nu:
        # Tail: Q = I_x(dof/2, 1/2) / 2 = front * CF / dof.
        y = nu / (nu + t2)
        log_q = log_front + math.log(_beta_cf(0.5 * nu, 0.5, y) / nu)
        q = math.exp(log_q)
        return log_q, q, 1.0 - 2.0 * q
    # Centre: A = I_{1-x}(1/2, dof/2) = front * CF / (1/2).
    central = 2.0 * math.exp(log_front) * _beta_cf(0.5, 0.5 * nu, t2 / (nu + t2))
    q = 0.5 * (1.0 - central)
    return math.log(q), q, central


def t_sf(t: float, dof: int) -> float:
    """``P(T > t)`` for Student's t with ``dof`` degrees of freedom."""
    nu = _dof(dof)
    t = float(t)
    if math.isnan(t):
        return math.nan
    if t == 0.0:
        return 0.5
    _, q, central = _tail_central(abs(t), nu)
    return q if t > 0 else 0.5 * (1.0 + central)


def t_cdf(t: float, dof: int) -> float:
    """``P(T <= t)`` for Student's t with ``dof`` degrees of freedom."""
    return t_sf(-float(t), dof)


def _normal_upper_quantile_approx(q: float) -> float:
    """z with ``P(Z > z) ~= q`` for ``0 < q <= 1/2``, A&S 26.2.23 (|error| < 4.5e-4): a starting point only."""
    w = math.sqrt(-2.0 * math.log(q))
    return w - (2.515517 + w * (0.802853 + w * 0.010328)) / (
        1.0 + w * (1.432788 + w * (0.189269 + w * 0.001308))
    )


def _normal_upper_quantile(q: float) -> float:
    """z with ``P(Z > z) = erfc(z/sqrt 2)/2 = q`` for ``0 < q < 1/4``: A&S 26.2.23 polished by Newton."""
    z = _normal_upper_quantile_approx(q)
    for _ in range(20):
        step = (0.5 * math.erfc(z / _SQRT2) - q) / math.exp(-0.5 * z * z - _LOG_SQRT_2PI)
        z += step
        if abs(step) <= 2.0 * _EPS * z:
            break
    return z


def _cornish_fisher(z: float) -> tuple[float, float, float, float]:
    """``g1..g4`` of A&S 26.7.5: ``t = z + g1/dof + g2/dof^2 + g3/dof^3 + g4/dof^4 + ...``."""
    z2 = z * z
    g1 = (z2 + 1.0) * z / 4.0
    g2 = ((5.0 * z2 + 16.0) * z2 + 3.0) * z / 96.0
    g3 = (((3.0 * z2 + 19.0) * z2 + 17.0) * z2 - 15.0) * z / 384.0
    g4 = ((((79.0 * z2 + 776.0) * z2 + 1482.0) * z2 - 1920.0) * z2 - 945.0) * z / 92160.0
    return g1, g2, g3, g4


def _expand(z: float, nu: int) -> float:
    g1, g2, g3, g4 = _cornish_fisher(z)
    return z + (g1 + (g2 + (g3 + g4 / nu) / nu) / nu) / nu


def _initial(q: float, nu: int) -> float:
    if nu == 1:
        # t = tan(pi (1/2 - q)), written so that neither form loses q near 0 or near 1/2.
        return math.tan(math.pi * (0.5 - q)) if q >= 0.25 else 1.0 / math.tan(math.pi * q)
    if nu == 2:
        return (1.0 - 2.0 * q) / math.sqrt(2.0 * q * (1.0 - q))
    z = _normal_upper_quantile_approx(q)
    t = _expand(z, nu)
    return t if math.isfinite(t) and t > 0.0 else max(z, 1e-3)


def _upper_quantile(q: float, nu: int) -> float:
    """The ``t > 0`` with ``Q(t) = q``, ``0 < q < 1/2``."""
    central = q >= 0.25
    if not central and nu >= _ASYMPTOTIC_MIN_DOF:
        z = _normal_upper_quantile(q)
        if abs(_cornish_fisher(z)[3]) <= 1e-13 * z * float(nu) ** 4:
            return _expand(z, nu)
    target = 1.0 - 2.0 * q if central else math.log(q)  # 1 - 2q is exact for q >= 1/4
    lo, hi = 0.0, math.inf
    t = _initial(q, nu)
    last_step = math.inf
    for _ in range(200):
        log_q, _, a = _tail_central(t, nu)
        # resid(t) increases with t and is 0 at the root.
        resid = a - target if central else target - log_q
        if resid == 0.0:
            return t
        if resid < 0.0:
            lo = t
        else:
            hi = t
        pdf = math.exp(_log_pdf(t, nu))
        if central:
            new = t - resid / (2.0 * pdf)  # dA/dt = 2 f
        else:
            # Newton in u = log t: d(-log Q)/du = t f / Q.
            slope = t * pdf / math.exp(log_q) if pdf > 0.0 else 0.0
            new = t * math.exp(-resid / slope) if slope > 0.0 else math.nan
        if not (lo < new < hi):  # also catches nan
            new = 0.5 * (lo + hi) if math.isfinite(hi) else 2.0 * t
        step = abs(new - t)
        if step <= 4.0 * _EPS * new or hi - lo <= 4.0 * _EPS * lo:
            return new
        if step >= 0.5 * last_step and step <= 1e-12 * new:
            return new  # rounding noise of the CDF: steps stopped shrinking
        last_step = step
        t = new
    return t


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, dof: int) -> float:
    """The ``p`` quantile of Student's t with ``dof`` degrees of freedom (as ``scipy.stats.t.ppf``).

    ``p`` in [0, 1] (0 and 1 give -inf and inf); ``dof`` an integer >= 1. Cached: it is called per
    prediction with the same few arguments.
    """
    nu = _dof(dof)
    p = float(p)
    if not 0.0 <= p <= 1.0:
        raise ValueError(f"probability must be in [0, 1], got {p!r}")
    if p == 0.5:
        return 0.0
    if p == 1.0:
        return math.inf
    if p == 0.0:
        return -math.inf
    # The tail probability min(p, 1-p) is exact in floating point.
    return _upper_quantile(1.0 - p, nu) if p > 0.5 else -_upper_quantile(p, nu)
