"""Fitting and predicting: targets are a 15-scenario fit under 2 ms and one prediction with its interval
under 100 us (the old code refitted 50 bootstrap models per prediction: seconds; ours is closed form)."""

from __future__ import annotations

from functools import partial

import numpy as np

from bench.harness import Row, measure
from shared.modeling import MultivariatePredictor
from shared.power_model import FEATURES, TrainingPoint, train

FIT_15_S = 2e-3
PREDICT_S = 100e-6


def _points(n: int, seed: int = 1) -> list[TrainingPoint]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        streams = float(rng.choice([1, 2, 4, 8]))
        mbps = float(rng.choice([1.0, 2.5, 5.0]))
        rate = streams * 1280 * 720 * 30 / 1e6
        out.append(
            TrainingPoint(
                run_id="bench",
                index=i,
                streams=streams,
                bitrate_mbps=mbps,
                pixel_rate_mpx=rate,
                encoder_gpu=float(i % 5 == 0),
                power_w=4 + 1.7 * streams + 0.3 * mbps + rng.normal(),
            )
        )
    return out


def run() -> list[Row]:
    rows = []
    for n in (15, 1000):
        pts = _points(n)
        x = np.array([[p.features()[f] for f in FEATURES] for p in pts])
        y = np.array([p.power_w for p in pts])
        t, calls = measure(partial(MultivariatePredictor(names=list(FEATURES)).fit, x, y))
        rows.append(
            Row(f"modeling: multivariate fit, {n} scenarios", t, calls, target=FIT_15_S if n == 15 else None)
        )
        t, calls = measure(partial(train, pts), repeat=3, min_time=0)
        rows.append(Row(f"modeling: train + CV model selection, {n}", t, calls, "3 candidates, LOO/10-fold"))
    pts = _points(15)
    x = np.array([[p.features()[f] for f in FEATURES] for p in pts])
    model = MultivariatePredictor(names=list(FEATURES)).fit(x, [p.power_w for p in pts])
    row = x[:1]
    t, calls = measure(lambda: model.prediction_intervals(row))
    rows.append(
        Row("modeling: one prediction + prediction interval", t, calls, "t-based, closed form", PREDICT_S)
    )
    return rows
