"""The power model of a machine: features of a scenario, training, model selection, prediction. No I/O.

Features of a scenario (``FEATURES``): stream count, bitrate in Mbps, pixel rate in megapixels per second over
all streams and renditions, and GPU encoding (1) or not (0). Measured CPU % is deliberately not a feature: a
model that needs the measurement to "predict" it cannot answer "what would this configuration draw?".

Selection: every candidate (``linear`` and ``poly2`` in the stream count, ``multivariate`` in all features) is
scored on held-out scenarios (leave-one-out up to 30 points, else 10-fold by index), and the one with the
lowest cross-validated RMSE wins; ties go to the simpler model. The old rule (linear below 6 distinct stream
counts, else poly2) is reported too and can be forced with ``selection="rule"``.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import msgspec
import numpy as np

from shared.modeling import (
    Interval,
    LinearPredictor,
    ModelError,
    MultivariatePredictor,
    PolynomialPredictor,
    _Base,
    from_dict,
)
from shared.parsing import encoder_kind, pixel_rate_per_s, stream_count, try_bitrate_mbps
from shared.schemas import CandidateScore, ModelInfo, Scenario
from shared.scoring import Measured, pixels_per_joule

FEATURES = ["streams", "bitrate_mbps", "pixel_rate_mpx", "encoder_gpu"]
MIN_TRAINING_POINTS = 3
POWER_MODEL_VERSION = 1


class TrainingPoint(msgspec.Struct, kw_only=True, frozen=True):
    """One measured scenario: its features and its mean power (W)."""

    run_id: str
    index: int
    streams: float
    bitrate_mbps: float
    pixel_rate_mpx: float
    encoder_gpu: float
    power_w: float
    #: sha256 of the results file the point came from: the same content under another run id is one run.
    content: str = ""

    def features(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in FEATURES}


def features_of(scenario: Scenario) -> dict[str, float] | None:
    """Model features of a scenario, or None when its bitrate or pixel rate cannot be read.

    The pixel rate is :func:`shared.parsing.pixel_rate_per_s` in megapixels per second: configured renditions
    (resolution x ``fps``, times the stream count) when known, else the distributed runner's
    ``pixels_processed`` / duration, else the resolution at the achieved ``avg_fps``.
    """
    mbps = try_bitrate_mbps(scenario.bitrate)
    rate = pixel_rate_per_s(scenario)
    if mbps is None or rate is None:
        return None
    return {
        "streams": float(stream_count(scenario)),
        "bitrate_mbps": mbps,
        "pixel_rate_mpx": rate / 1e6,
        "encoder_gpu": 1.0 if encoder_kind(scenario) == "gpu" else 0.0,
    }


def hardware_fingerprint(cpu_model: str | None) -> str:
    """sha256 of the CPU model string (``unknown`` when absent): stable across processes (B-M1)."""
    return hashlib.sha256((cpu_model or "unknown").encode()).hexdigest()


class SavedModel(msgspec.Struct, kw_only=True):
    version: int
    info: ModelInfo
    predictor: dict[str, Any]


def _candidate(name: str, confidence_level: float) -> _Base:
    if name == "linear":
        return LinearPredictor(confidence_level=confidence_level)
    if name == "poly2":
        return PolynomialPredictor(confidence_level=confidence_level, degree=2)
    if name == "multivariate":
        return MultivariatePredictor(confidence_level=confidence_level, names=list(FEATURES))
    raise ModelError(f"unknown candidate {name!r}")


def _inputs(name: str, points: Sequence[TrainingPoint]) -> Any:
    if name == "multivariate":
        return np.array([[p.features()[f] for f in FEATURES] for p in points], dtype=np.float64)
    return np.array([p.streams for p in points], dtype=np.float64)


CANDIDATES = ("linear", "poly2", "multivariate")


def _folds(n: int) -> list[np.ndarray]:
    k = n if n <= 30 else 10
    return [np.arange(n)[np.arange(n) % k == i] for i in range(k)]


def _cross_validate(name: str, points: Sequence[TrainingPoint], level: float) -> CandidateScore:
    y = np.array([p.power_w for p in points])
    held = np.full(y.size, np.nan)
    for test_idx in _folds(len(points)):
        train_idx = np.setdiff1d(np.arange(y.size), test_idx)
        if train_idx.size == 0:
            continue
        model = _candidate(name, level)
        train = [points[i] for i in train_idx]
        model.fit(_inputs(name, train), y[train_idx])
        held[test_idx] = model.predict(_inputs(name, [points[i] for i in test_idx]))
    full = _candidate(name, level).fit(_inputs(name, points), y)
    err = held - y
    sst = float(((y - y.mean()) ** 2).sum())
    return CandidateScore(
        name=name,
        n_params=full.ols.state.p,
        r2_train=full.r2,
        r2_cv=1.0 - float((err**2).sum()) / sst if sst > 0 else None,
        rmse_cv=float(math.sqrt(np.mean(err**2))),
        mae_cv=float(np.mean(np.abs(err))),
    )


@dataclass
class PowerModel:
    predictor: _Base
    info: ModelInfo

    def _row(self, features: dict[str, float]) -> Any:
        return self._rows([features])

    def _rows(self, many: Sequence[dict[str, float]]) -> Any:
        if self.info.name == "multivariate":
            return np.array([[features[f] for f in FEATURES] for features in many])
        return [features["streams"] for features in many]

    def predict(self, features: dict[str, float]) -> Interval:
        """Mean power (W) and its 95 % (or configured) prediction interval for one configuration."""
        [interval] = self.predict_many([features])
        return interval

    def predict_many(self, many: Sequence[dict[str, float]]) -> list[Interval]:
        """``predict`` for several configurations in one matrix product (a run's scenarios at once)."""
        if not many:
            return []
        return self.predictor.prediction_intervals(self._rows(many))

    def predict_mean(self, features: dict[str, float]) -> Interval:
        """Mean power (W) and the confidence interval of that mean (the regression line's uncertainty)."""
        [interval] = self.predictor.mean_confidence_intervals(self._row(features))
        return interval

    def to_json(self) -> bytes:
        return msgspec.json.encode(
            SavedModel(version=POWER_MODEL_VERSION, info=self.info, predictor=self.predictor.to_dict())
        )

    @classmethod
    def from_json(cls, data: bytes) -> PowerModel:
        saved = msgspec.json.decode(data, type=SavedModel)
        if saved.version != POWER_MODEL_VERSION:
            raise ModelError(f"unsupported saved power model version {saved.version}")
        return cls(from_dict(saved.predictor), saved.info)


def train(
    points: Sequence[TrainingPoint],
    *,
    selection: str = "cv",
    confidence_level: float = 0.95,
    fingerprint: str = "",
) -> PowerModel | str:
    """A fitted model, or the reason there is none (fewer than MIN_TRAINING_POINTS points)."""
    if len(points) < MIN_TRAINING_POINTS:
        return f"{len(points)} usable scenario(s); at least {MIN_TRAINING_POINTS} are needed to train a model"
    distinct = len({p.streams for p in points})
    rule_choice = "linear" if distinct < 6 else "poly2"
    scores = []
    for name in CANDIDATES:
        try:
            scores.append(_cross_validate(name, points, confidence_level))
        except (ModelError, np.linalg.LinAlgError, ValueError) as exc:
            scores.append(
                CandidateScore(
                    name=name,
                    n_params=0,
                    r2_train=None,
                    r2_cv=None,
                    rmse_cv=None,
                    mae_cv=None,
                    error=str(exc),
                )
            )
    usable = [s for s in scores if s.rmse_cv is not None and math.isfinite(s.rmse_cv)]
    if selection == "rule":
        chosen = rule_choice
    elif selection == "cv":
        if not usable:
            return "no candidate model could be cross-validated"
        # Lowest held-out RMSE; ties (within 1e-9 relative) go to fewer parameters, then CANDIDATES order.
        best = min(usable, key=lambda s: (round(s.rmse_cv or 0.0, 9), s.n_params, CANDIDATES.index(s.name)))
        chosen = best.name
    else:
        raise ValueError(f"unknown selection {selection!r}")
    predictor = _candidate(chosen, confidence_level)
    predictor.fit(_inputs(chosen, points), [p.power_w for p in points])
    ols = predictor.ols
    info = ModelInfo(
        name=chosen,
        selection=selection,
        rule_choice=rule_choice,
        n_train=len(points),
        distinct_streams=distinct,
        r2=ols.r2,
        residual_std_error=ols.residual_std_error,
        confidence_level=confidence_level,
        coefficients=ols.coefficients(),
        coefficient_standard_errors=ols.standard_errors(),
        dropped_features=ols.state.dropped,
        candidates=scores,
        trained_at=time.time(),
        fingerprint=fingerprint,
        feature_ranges={
            name: [min(p.features()[name] for p in points), max(p.features()[name] for p in points)]
            for name in FEATURES
        },
    )
    return PowerModel(predictor, info)


def predicted_figures(
    scenario: Scenario, predicted_power_w: float, duration_s: float
) -> tuple[float, float | None]:
    """What the model predicts for a scenario of ``duration_s`` seconds: energy J = predicted mean power W x
    duration s, and the efficiency score at that energy (shared.scoring.pixels_per_joule, pixels/J)."""
    energy_j = predicted_power_w * duration_s
    efficiency = pixels_per_joule(scenario, Measured(energy_j=energy_j, duration_s=duration_s)).value
    return energy_j, efficiency
