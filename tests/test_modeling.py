"""The OLS engine against statsmodels (an independent implementation), plus coverage and degenerate cases."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from collections.abc import Callable

import msgspec
import numpy as np
import pytest
import scipy.linalg
import statsmodels.api as sm

from shared.modeling import (
    LinearPredictor,
    ModelError,
    MultivariatePredictor,
    OLSFit,
    PolynomialPredictor,
    back_substitute,
    pivoted_qr,
    upper_triangular_inverse,
)
from shared.parsing import stream_count_from_name
from shared.power_model import features_of
from shared.schemas import Scenario
from tests.conftest import DATA

REL = 1e-9


def analysis_rows() -> list[dict[str, str]]:
    rows = []
    for name in ("test_results_20251228_203216_analysis.csv", "test_results_20251229_092224_analysis.csv"):
        with (DATA / name).open() as fh:
            rows += list(csv.DictReader(fh))
    return rows


def measured_streams_vs_power() -> tuple[np.ndarray, np.ndarray]:
    """Mean power measured on the real machine against the stream count named in the scenario."""
    xs, ys = [], []
    for row in analysis_rows():
        streams = stream_count_from_name(row["name"])
        if streams is not None:
            xs.append(float(streams))
            ys.append(float(row["mean_power_w"]))
    return np.array(xs), np.array(ys)


def measured_multivariate() -> tuple[np.ndarray, np.ndarray]:
    x, y = [], []
    for row in analysis_rows():
        scenario = Scenario(
            name=row["name"], bitrate=row["bitrate"], resolution=row["resolution"], fps=float(row["fps"])
        )
        if "aseline" in row["name"]:
            continue
        f = features_of(scenario)
        assert f is not None
        x.append([f["streams"], f["bitrate_mbps"], f["pixel_rate_mpx"]])
        y.append(float(row["mean_power_w"]))
    return np.array(x), np.array(y)


def synthetic(seed: int, n: int = 40, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, k)) * [1.0, 10.0, 1000.0][:k] + [5.0, 100.0, 1e4][:k]
    y = 3.0 + x @ np.array([2.0, -0.3, 0.001][:k]) + rng.normal(scale=2.0, size=n)
    return x, y


DATASETS: dict[str, Callable[[], tuple[np.ndarray, np.ndarray]]] = {
    "measured-streams": lambda: (measured_streams_vs_power()[0][:, None], measured_streams_vs_power()[1]),
    "measured-multivariate": measured_multivariate,
    "synthetic-1": lambda: synthetic(1),
    "synthetic-2": lambda: synthetic(2, n=12, k=2),
    "synthetic-3": lambda: synthetic(3, n=200, k=3),
}


@pytest.mark.parametrize("name", list(DATASETS))
def test_ols_agrees_with_statsmodels(name: str) -> None:
    x, y = DATASETS[name]()
    names = [f"f{j}" for j in range(x.shape[1])]
    ours = OLSFit.fit(x, y, names)
    ref = sm.OLS(y, sm.add_constant(x, has_constant="add")).fit()
    coef = ours.coefficients()
    assert [coef["intercept"], *(coef[n] for n in names)] == pytest.approx(list(ref.params), rel=REL)
    se = ours.standard_errors()
    assert se is not None
    assert [se["intercept"], *(se[n] for n in names)] == pytest.approx(list(ref.bse), rel=REL)
    assert ours.r2 == pytest.approx(ref.rsquared, rel=REL)
    assert ours.residual_std_error == pytest.approx(np.sqrt(ref.scale), rel=REL)

    x_new = x[:5] * 1.1 + 0.5
    frame = ref.get_prediction(sm.add_constant(x_new, has_constant="add")).summary_frame(alpha=0.05)
    pred = ours.intervals(x_new, kind="prediction")
    mean = ours.intervals(x_new, kind="mean")
    assert [i.mean for i in pred] == pytest.approx(list(frame["mean"]), rel=REL)
    assert [i.low for i in pred] == pytest.approx(list(frame["obs_ci_lower"]), rel=REL)
    assert [i.high for i in pred] == pytest.approx(list(frame["obs_ci_upper"]), rel=REL)
    assert [i.low for i in mean] == pytest.approx(list(frame["mean_ci_lower"]), rel=REL)
    assert [i.high for i in mean] == pytest.approx(list(frame["mean_ci_upper"]), rel=REL)


def test_polynomial_agrees_with_statsmodels() -> None:
    x, y = measured_streams_vs_power()
    poly = PolynomialPredictor(degree=2, clamp_at_zero=False).fit(x, y)
    ref = sm.OLS(y, np.column_stack([np.ones_like(x), x, x**2])).fit()
    coef = poly.coefficients()
    assert [coef["intercept"], coef["x"], coef["x^2"]] == pytest.approx(list(ref.params), rel=REL)
    frame = ref.get_prediction(np.array([[1.0, 3.0, 9.0]])).summary_frame(alpha=0.05)
    [iv] = poly.prediction_intervals([3.0])
    assert (iv.mean, iv.low, iv.high) == pytest.approx(
        (frame["mean"][0], frame["obs_ci_lower"][0], frame["obs_ci_upper"][0]), rel=REL
    )


def test_multivariate_prediction_and_mean_intervals_match_statsmodels() -> None:
    x, y = measured_multivariate()
    model = MultivariatePredictor(names=["streams", "bitrate_mbps", "pixel_rate_mpx"]).fit(x, y)
    ref = sm.OLS(y, sm.add_constant(x)).fit()
    row = {"streams": 4.0, "bitrate_mbps": 2.5, "pixel_rate_mpx": 110.592}
    [iv] = model.prediction_intervals(row)
    frame = ref.get_prediction(np.array([[1.0, 4.0, 2.5, 110.592]])).summary_frame(alpha=0.05)
    assert (iv.mean, iv.low, iv.high) == pytest.approx(
        (frame["mean"][0], frame["obs_ci_lower"][0], frame["obs_ci_upper"][0]), rel=REL
    )
    [mean_ci] = model.mean_confidence_intervals(row)
    assert (mean_ci.low, mean_ci.high) == pytest.approx(
        (frame["mean_ci_lower"][0], frame["mean_ci_upper"][0]), rel=REL
    )
    assert mean_ci.kind == "mean" and mean_ci.low is not None and iv.low is not None
    assert mean_ci.low > iv.low  # the interval of the mean is narrower than that of a new observation


def test_prediction_interval_coverage() -> None:
    """95 % prediction intervals cover 95 +- 2 % of 20,000 new observations (2,000 fits x 10 draws)."""
    rng = np.random.default_rng(20261123)
    covered = total = 0
    for _ in range(2000):
        x = rng.uniform(0, 10, size=12)
        y = 4.0 + 1.5 * x + rng.normal(scale=2.0, size=12)
        model = LinearPredictor(clamp_at_zero=False).fit(x, y)
        x_new = rng.uniform(0, 10, size=10)
        y_new = 4.0 + 1.5 * x_new + rng.normal(scale=2.0, size=10)
        for iv, actual in zip(model.prediction_intervals(x_new), y_new, strict=True):
            assert iv.low is not None and iv.high is not None
            covered += iv.low <= actual <= iv.high
            total += 1
    assert total == 20_000
    assert 0.93 <= covered / total <= 0.97


class TestDegenerate:
    def test_duplicate_column_is_dropped_as_collinear(self) -> None:
        x, y = synthetic(5, n=20, k=2)
        doubled = np.column_stack([x, 2 * x[:, 0]])
        fit = OLSFit.fit(doubled, y, ["a", "b", "a2"])
        assert fit.state.dropped == {"a2": "collinear"} or fit.state.dropped == {"a": "collinear"}
        plain = OLSFit.fit(x, y, ["a", "b"])
        assert fit.predict(doubled[:3]) == pytest.approx(plain.predict(x[:3]), rel=1e-9)

    def test_constant_column_is_dropped(self) -> None:
        x, y = synthetic(6, n=20, k=1)
        fit = OLSFit.fit(np.column_stack([x, np.full(20, 7.0)]), y, ["a", "seven"])
        assert fit.state.dropped == {"seven": "constant"}
        assert fit.state.kept == ["a"]

    def test_constant_target(self) -> None:
        model = LinearPredictor().fit([1.0, 2.0, 3.0, 4.0], [5.0, 5.0, 5.0, 5.0])
        assert model.r2 is None  # undefined, not a crash and not a made-up number
        assert model.residual_std_error == 0.0
        [iv] = model.prediction_intervals([2.5])
        assert (iv.mean, iv.low, iv.high) == pytest.approx((5.0, 5.0, 5.0))

    def test_two_points(self) -> None:
        model = LinearPredictor().fit([1.0, 3.0], [10.0, 14.0])
        assert model.coefficients() == pytest.approx({"intercept": 8.0, "x": 2.0})
        assert model.residual_std_error is None  # n - p = 0
        [iv] = model.prediction_intervals([2.0])
        assert iv.mean == pytest.approx(12.0) and iv.low is None and iv.high is None
        assert model.r2 == pytest.approx(1.0)

    def test_one_point(self) -> None:
        model = LinearPredictor().fit([4.0], [9.0])
        assert model.ols.state.dropped == {"x": "constant"}
        assert model.predict([100.0])[0] == 9.0
        [iv] = model.prediction_intervals([1.0])
        assert iv.low is None and model.r2 is None

    def test_more_features_than_points(self) -> None:
        x, y = synthetic(7, n=3, k=3)
        fit = OLSFit.fit(x, y, ["a", "b", "c"])
        assert fit.state.p == 3 and list(fit.state.dropped.values()) == ["too few samples"]

    def test_empty_and_nonfinite(self) -> None:
        with pytest.raises(ModelError):
            LinearPredictor().fit([], [])
        with pytest.raises(ModelError):
            LinearPredictor().fit([1.0, np.nan], [1.0, 2.0])

    def test_negative_predictions_are_clamped(self) -> None:
        model = LinearPredictor().fit([1.0, 2.0, 3.0, 4.0], [3.0, 2.0, 1.1, 0.0])
        assert model.predict([10.0])[0] == 0.0
        [iv] = model.prediction_intervals([10.0])
        assert iv.mean == 0.0 and iv.low == 0.0


def ols_rank(r: np.ndarray, shape: tuple[int, ...]) -> int:
    """OLSFit's rank rule on the diagonal of a pivoted R."""
    diag = np.abs(np.diag(r))
    return int(np.sum(diag > max(shape) * np.finfo(np.float64).eps * diag[0] * 1e3))


class TestPivotedQR:
    """shared.modeling.pivoted_qr replaces scipy.linalg.qr(..., pivoting=True) (LAPACK dgeqp3)."""

    @pytest.mark.parametrize("seed", range(8))
    def test_matches_lapack_on_full_rank_designs(self, seed: int) -> None:
        rng = np.random.default_rng(seed)
        n, k = int(rng.integers(5, 60)), int(rng.integers(1, 7))
        # Distinct column scales: no ties in the pivot choice, so the permutation is well defined.
        a = rng.normal(size=(n, k)) * np.geomspace(1.0, 50.0, k)[rng.permutation(k)]
        r, piv = pivoted_qr(a)
        _, r_ref, piv_ref = scipy.linalg.qr(a, mode="economic", pivoting=True)
        assert piv.tolist() == piv_ref.tolist()
        assert np.abs(r) == pytest.approx(np.abs(r_ref), rel=1e-10, abs=1e-12 * np.abs(r_ref).max())
        # Independently of LAPACK: R'R = A_p' A_p (Q orthonormal), and |R[i, i]| does not increase.
        assert r.T @ r == pytest.approx(a[:, piv].T @ a[:, piv], rel=1e-10, abs=1e-10 * np.abs(r).max() ** 2)
        assert np.all(np.diff(np.abs(np.diag(r))) <= 1e-12 * abs(r[0, 0]))

    def test_rank_deficient_design(self) -> None:
        rng = np.random.default_rng(4)
        u, v, w = rng.normal(size=(3, 25)) * np.array([[1.0], [3.0], [0.2]])
        a = np.column_stack([u, v, 2 * u + v, w])  # column 2 is exactly (to rounding) 2 u + v
        r, piv = pivoted_qr(a)
        _, r_ref, piv_ref = scipy.linalg.qr(a, mode="economic", pivoting=True)
        assert ols_rank(r, a.shape) == ols_rank(r_ref, a.shape) == 3
        assert piv[:3].tolist() == piv_ref[:3].tolist() and piv[0] == 2  # largest norm first
        assert piv[3] in (0, 1)  # the dropped column belongs to the dependent triple
        assert abs(r[3, 3]) < 1e-12 * abs(r[0, 0])

    def test_wide_and_single_row(self) -> None:
        a = np.array([[1.0, 3.0, -2.0]])
        r, piv = pivoted_qr(a)
        assert r.shape == (1, 3) and piv[0] == 1 and abs(r[0, 0]) == 3.0

    def test_collinear_and_constant_columns_in_a_fit(self) -> None:
        x, y = synthetic(11, n=30, k=3)
        combo = 3 * x[:, 0] - 0.5 * x[:, 1]
        design = np.column_stack([x, combo, np.full(30, 7.0)])
        names = ["a", "b", "c", "combo", "seven"]
        fit = OLSFit.fit(design, y, names)
        assert fit.state.dropped.pop("seven") == "constant"
        [(collinear, reason)] = fit.state.dropped.items()
        assert reason == "collinear" and collinear in ("a", "b", "combo")
        assert fit.state.p == 4 and fit.state.kept == [n for n in names[:4] if n != collinear]
        # On the kept columns the fit is plain OLS: statsmodels agrees on everything.
        kept = [names.index(n) for n in fit.state.kept]
        ref = sm.OLS(y, sm.add_constant(design[:, kept])).fit()
        coef, se = fit.coefficients(), fit.standard_errors()
        assert se is not None
        assert [coef["intercept"], *(coef[n] for n in fit.state.kept)] == pytest.approx(
            list(ref.params), rel=REL
        )
        assert [se["intercept"], *(se[n] for n in fit.state.kept)] == pytest.approx(list(ref.bse), rel=REL)
        x_new = design[:4] * 1.05
        x_new[:, 3] = 3 * x_new[:, 0] - 0.5 * x_new[:, 1]  # stay in the design's column space
        frame = ref.get_prediction(sm.add_constant(x_new[:, kept], has_constant="add")).summary_frame(
            alpha=0.05
        )
        pred = fit.intervals(x_new, kind="prediction")
        mean = fit.intervals(x_new, kind="mean")
        assert [i.mean for i in pred] == pytest.approx(list(frame["mean"]), rel=REL)
        assert [i.low for i in pred] == pytest.approx(list(frame["obs_ci_lower"]), rel=REL)
        assert [i.high for i in pred] == pytest.approx(list(frame["obs_ci_upper"]), rel=REL)
        assert [i.low for i in mean] == pytest.approx(list(frame["mean_ci_lower"]), rel=REL)
        assert [i.high for i in mean] == pytest.approx(list(frame["mean_ci_upper"]), rel=REL)

    def test_back_substitution(self) -> None:
        rng = np.random.default_rng(9)
        r = np.triu(rng.normal(size=(5, 5))) + np.diag([3.0, -2.0, 4.0, -5.0, 2.5])
        b, many = rng.normal(size=5), rng.normal(size=(5, 3))
        assert back_substitute(r, b) == pytest.approx(np.linalg.solve(r, b), rel=1e-12)
        assert back_substitute(r, many) == pytest.approx(np.linalg.solve(r, many), rel=1e-12)
        inv = upper_triangular_inverse(r)
        assert inv @ r == pytest.approx(np.eye(5), abs=1e-14)
        assert np.all(inv[np.tril_indices(5, -1)] == 0.0) and not np.any(
            np.signbit(inv[np.tril_indices(5, -1)])
        )
        with pytest.raises(np.linalg.LinAlgError):
            back_substitute(np.array([[1.0, 2.0], [0.0, 0.0]]), np.ones(2))


def test_models_are_identical_across_processes() -> None:
    """No salted hash anywhere: two interpreters with different hash seeds produce the same bytes."""
    code = (
        "import msgspec, numpy as np\n"
        "from shared.power_model import hardware_fingerprint\n"
        "from shared.modeling import LinearPredictor\n"
        "m = LinearPredictor().fit([1, 2, 4, 8, 3], [5.0, 7.1, 11.2, 18.9, 9.0])\n"
        "print(hardware_fingerprint('AMD EPYC 7B13'))\n"
        "print(msgspec.json.encode(m.to_dict()).decode())\n"
        "print(m.prediction_intervals([5.0]))\n"
    )
    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        outputs.append(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
            ).stdout
        )
    assert outputs[0] == outputs[1]
    # sha256 of "AMD EPYC 7B13", computed with `printf 'AMD EPYC 7B13' | sha256sum`.
    assert outputs[0].splitlines()[0] == "0d32a54a5019e02755f18081e238c91bda3172b6379fec3fc8001b42ca373c69"
    assert msgspec.json.decode(outputs[0].splitlines()[1])["kind"] == "linear"
