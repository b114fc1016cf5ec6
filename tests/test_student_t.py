"""shared.student_t against scipy.stats.t, against values written out by hand, and against the closed-form
finite series of the Student t CDF (A&S 26.7.3/26.7.4), which the module does not use."""

from __future__ import annotations

import math
from itertools import pairwise

import pytest
from scipy import stats

from shared.student_t import t_cdf, t_quantile, t_sf

DOFS = [1, 2, 3, 5, 10, 30, 100, 1000, 20000]
PS = [0.5, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9995]


@pytest.mark.parametrize("dof", DOFS)
@pytest.mark.parametrize("p", PS)
def test_quantile_matches_scipy(p: float, dof: int) -> None:
    ours = t_quantile(p, dof)
    ref = float(stats.t.ppf(p, dof))
    if p == 0.5:
        assert ours == ref == 0.0
    else:
        assert ours == pytest.approx(ref, rel=1e-10, abs=0.0)


@pytest.mark.parametrize("dof", [4, 7, 50, 333, 5000, 100_000])
def test_quantile_matches_scipy_between_the_grid_points(dof: int) -> None:
    for i in range(1, 100):
        p = 0.5 + 0.4999 * i / 100
        assert t_quantile(p, dof) == pytest.approx(float(stats.t.ppf(p, dof)), rel=1e-10, abs=0.0), p


@pytest.mark.parametrize(
    ("p", "dof", "expected"),
    [
        # Printed t tables give these to 3 decimals (12.706, 2.228, 6.314, 2.015, 1.812, 2.042, 2.750,
        # 12.924, 1.980); the digits are 30-digit evaluations (mpmath) of the same quantiles.
        (0.975, 1, 12.706204736174693),
        (0.975, 10, 2.2281388519862742),
        (0.95, 1, 6.3137515146750374),
        (0.95, 5, 2.0150483733330235),
        (0.95, 10, 1.8124611228116759),
        (0.975, 30, 2.0422724563012379),
        (0.995, 30, 2.7499956535672250),
        (0.9995, 3, 12.923978636687964),
        (0.975, 120, 1.9799304050824405),
    ],
)
def test_textbook_values(p: float, dof: int, expected: float) -> None:
    assert t_quantile(p, dof) == pytest.approx(expected, rel=1e-13)


@pytest.mark.parametrize("p", [0.5000001, 0.51, 0.6, 0.75, 0.9, 0.975, 0.99, 0.9995, 0.9999, 1 - 1e-9])
def test_closed_forms_for_one_and_two_degrees_of_freedom(p: float) -> None:
    # dof = 1 is the Cauchy distribution: t = tan(pi (p - 1/2)) = 1 / tan(pi (1 - p)), each form used where it
    # is well conditioned (the first near the centre, the second next to the pole); dof = 2:
    # t = (2p - 1) / sqrt(2 p (1 - p)).
    cauchy = math.tan(math.pi * (p - 0.5)) if p < 0.75 else 1 / math.tan(math.pi * (1 - p))
    assert t_quantile(p, 1) == pytest.approx(cauchy, rel=1e-12)
    assert t_quantile(p, 2) == pytest.approx((2 * p - 1) / math.sqrt(2 * p * (1 - p)), rel=1e-12)


def as_series_cdf(t: float, dof: int) -> float:
    """P(T <= t) from the finite series A&S 26.7.3 (odd dof) / 26.7.4 (even dof) in theta = atan(t/sqrt(dof))."""
    theta = math.atan(abs(t) / math.sqrt(dof))
    s, c = math.sin(theta), math.cos(theta)
    if dof % 2:
        terms, term = [], c
        for k in range(1, (dof - 1) // 2 + 1):  # c + (2/3) c^3 + (2*4)/(3*5) c^5 + ... up to c^(dof-2)
            terms.append(term)
            term *= (2 * k) / (2 * k + 1) * c * c
        central = 2 / math.pi * (theta + s * math.fsum(terms)) if dof > 1 else 2 * theta / math.pi
    else:
        terms, term = [], 1.0
        for k in range(1, dof // 2 + 1):  # 1 + (1/2) c^2 + (1*3)/(2*4) c^4 + ... up to c^(dof-2)
            terms.append(term)
            term *= (2 * k - 1) / (2 * k) * c * c
        central = s * math.fsum(terms)
    return 0.5 * (1 + central) if t >= 0 else 0.5 * (1 - central)


@pytest.mark.parametrize("dof", [1, 2, 3, 4, 5, 6, 9, 10, 17, 30, 31])
def test_cdf_matches_the_closed_form_series(dof: int) -> None:
    for t in [-8.0, -2.0, -0.7, -0.01, 0.0, 1e-9, 0.3, 1.0, 1.7320508, 2.5, 4.0, 12.0, 60.0]:
        assert t_cdf(t, dof) == pytest.approx(as_series_cdf(t, dof), rel=1e-13, abs=1e-16), t
    for p in [0.51, 0.6, 0.9, 0.975, 0.995, 0.9999]:
        assert as_series_cdf(t_quantile(p, dof), dof) == pytest.approx(p, rel=1e-13)


@pytest.mark.parametrize("dof", [1, 3, 8, 40, 1000, 50_000])
def test_cdf_and_sf_match_scipy(dof: int) -> None:
    for t in [-30.0, -3.0, -1.0, 0.0, 0.5, 1.8, 2.6, 5.0, 40.0]:
        assert t_cdf(t, dof) == pytest.approx(float(stats.t.cdf(t, dof)), rel=1e-10)
        assert t_sf(t, dof) == pytest.approx(float(stats.t.sf(t, dof)), rel=1e-10)
        assert t_sf(t, dof) + t_cdf(t, dof) == pytest.approx(1.0, rel=1e-15)


def test_symmetry_limits_and_monotonicity() -> None:
    for dof in (1, 4, 25, 10_000):
        assert t_quantile(0.5, dof) == 0.0
        assert t_quantile(0.0, dof) == -math.inf and t_quantile(1.0, dof) == math.inf
        for p in (0.6, 0.9, 0.999):
            assert t_quantile(1 - p, dof) == pytest.approx(-t_quantile(p, dof), rel=1e-14)
        qs = [t_quantile(0.5 + i / 2000, dof) for i in range(1, 1000)]
        assert all(a < b for a, b in pairwise(qs))
    # Heavier tails with fewer degrees of freedom.
    tails = [t_quantile(0.975, dof) for dof in (1, 2, 3, 5, 10, 30, 100, 1000, 100_000)]
    assert all(a > b for a, b in pairwise(tails))
    assert tails[-1] == pytest.approx(1.959963984540054, rel=1e-4)  # the normal quantile is the limit


@pytest.mark.parametrize(("p", "dof"), [(1.5, 3), (-0.1, 3), (math.nan, 3), (0.9, 0), (0.9, -2)])
def test_invalid_arguments(p: float, dof: int) -> None:
    with pytest.raises(ValueError):
        t_quantile(p, dof)


def test_non_integer_dof_is_refused() -> None:
    with pytest.raises(TypeError):
        t_quantile(0.9, 2.5)


def test_cached() -> None:
    t_quantile.cache_clear()
    first = t_quantile(0.975, 17)
    assert t_quantile(0.975, 17) == first
    assert t_quantile.cache_info().hits == 1
