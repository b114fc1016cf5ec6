"""Results files written by the distributed runner's Go ResultsWriter (ffmpeg-rtmp
``shared/pkg/api/results_writer.go``): float64 counts, ``avg_fps`` instead of ``fps``, engine names in
``encoder_type``, repeated scenario names, one synthetic power sample spanning each job.

The expected figures are computed by hand from the numbers written in
``tests/data/test_results_20260110_101500.json``; the comments show the arithmetic.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from shared.parsing import encoder_kind, find_baseline, frame_rate, total_pixels
from shared.power_model import PowerModel, TrainingPoint, features_of, train
from shared.resultsfile import ResultsFileError, decode_results
from shared.scenario_stats import run_stats
from shared.schemas import Scenario
from shared.telemetry import resolve
from tests.conftest import DATA, EXAMPLES

NAME = "test_results_20260110_101500.json"


def scenarios() -> list[Scenario]:
    return decode_results((DATA / NAME).read_bytes(), NAME).results.scenarios


def test_the_example_and_its_test_copy_are_the_same_file() -> None:
    assert (EXAMPLES / "distributed-runner" / NAME).read_bytes() == (DATA / NAME).read_bytes()


def test_go_shaped_file_decodes() -> None:
    run = decode_results((DATA / NAME).read_bytes(), NAME)
    assert run.extras == [{}] * 8  # every field the Go writer emits is known to the schema
    found = run.results.scenarios
    assert len(found) == 8
    assert [s.name for s in found].count("1 Streams @ 2500k") == 2  # one entry per job, names repeat
    assert found[0].pixels_processed == 7483099106.304001  # a float64 with a fraction, kept as written
    assert found[4].pixels_processed == 19908882432
    assert run.results.test_metadata == {
        "platform": "distributed",
        "source": "scheduler",
        "timestamp": "2026-01-10T10:35:49+01:00",
    }


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("pixels_processed", 1.5e9),
        ("pixels_processed", 8294400000.5),
        ("total_frames", 3609.0),
        ("dropped_frames", 2.5),
        ("avg_fps", 30),
    ],
)
def test_float64_counts_are_accepted(field: str, value: float) -> None:
    # The reported rejection: "Expected `int | null`, got `float` - at `$.scenarios[0].pixels_processed`".
    doc = {"scenarios": [{"name": "job", field: value}]}
    [scenario] = decode_results(json.dumps(doc).encode(), NAME).results.scenarios
    assert getattr(scenario, field) == value


def test_counts_still_reject_non_numbers() -> None:
    doc = {"scenarios": [{"name": "job", "pixels_processed": "many"}]}
    with pytest.raises(ResultsFileError) as caught:
        decode_results(json.dumps(doc).encode(), NAME)
    assert caught.value.json_path == "$.scenarios[0].pixels_processed"


def test_engines_map_to_devices() -> None:
    kinds = [(s.encoder_type, encoder_kind(s)) for s in scenarios()]
    assert kinds == [
        ("ffmpeg", "cpu"),
        ("ffmpeg", "cpu"),
        ("ffmpeg", "cpu"),
        ("ffmpeg", "cpu"),
        ("nvenc", "gpu"),
        ("gstreamer", "cpu"),
        ("gstreamer", "cpu"),
        ("nvenc", "gpu"),
    ]


def test_no_job_is_taken_for_the_baseline() -> None:
    # The last job carries the writer's default bitrate "0k" (its worker reported none) but processed
    # 44.8 Gpx: a zero bitrate with work done is "unknown", not idle.
    found = scenarios()
    assert found[7].bitrate == "0k"
    assert find_baseline(found) is None


def test_pixels_frame_rate_and_features_by_hand() -> None:
    one, two = scenarios()[0], scenarios()[2]
    # No configured fps: pixels come from pixels_processed, the frame rate from avg_fps.
    assert total_pixels(one) == 7483099106.304001
    assert total_pixels(two) == 14764731757.056  # already both streams: not multiplied by 2 again
    assert frame_rate(one) == 29.97 and frame_rate(two) == 29.41
    # Features. Duration D = end_time - start_time: 1768036635 - 1768036512 = 123 s for the first job,
    # 1768036892 - 1768036768 = 124 s for the third. Pixel rate = pixels / D / 1e6 Mpx/s:
    # 7483099106.304001 / 123 / 1e6 = 60.83820411629...; 14764731757.056 / 124 / 1e6 = 119.0704173956...
    f1, f2 = features_of(one), features_of(two)
    assert f1 is not None and f2 is not None
    assert f1 == {
        "streams": 1.0,
        "bitrate_mbps": 2.5,  # "2500k"
        "pixel_rate_mpx": pytest.approx(60.838204116, rel=1e-9),
        "encoder_gpu": 0.0,
    }
    assert f2 == {
        "streams": 2.0,  # from the name "2 Streams @ 2500k"
        "bitrate_mbps": 2.5,  # the JSON number 2500 is kbps
        "pixel_rate_mpx": pytest.approx(119.070417396, rel=1e-9),
        "encoder_gpu": 0.0,
    }


def test_efficiency_and_energy_per_frame_by_hand() -> None:
    found = scenarios()
    stats, baseline = run_stats(found, [resolve(s) for s in found])
    assert baseline is None
    first, third = stats[0], stats[2]
    # First job: E = energy_joules = 4647.903 J over D = 123 s.
    assert first.energy_j == 4647.903
    assert first.mean_power_w == pytest.approx(37.787829268, rel=1e-9)  # 4647.903 / 123
    assert first.total_pixels == 7483099106.304001
    assert first.efficiency_score == pytest.approx(1609994.6807, rel=1e-9)  # 7483099106.304001 / 4647.903
    # per frame: E / (avg_fps x D) x 1000 = 4647.903 / (29.97 x 123) x 1000 = 4647.903 / 3686.31 x 1000
    assert first.energy_mj_per_frame == pytest.approx(1260.855164107, rel=1e-9)
    # Third job: E = 7420.549 J over D = 124 s, two streams at 29.41 fps (per stream).
    assert third.mean_power_w == pytest.approx(59.843137097, rel=1e-9)  # 7420.549 / 124
    assert third.efficiency_score == pytest.approx(1989708.8149, rel=1e-9)  # 14764731757.056 / 7420.549
    # 7420.549 / (29.41 x 124) x 1000 = 7420.549 / 3646.84 x 1000
    assert third.energy_mj_per_frame == pytest.approx(2034.788748615, rel=1e-9)
    assert all(s.efficiency_score is not None and not s.notes for s in stats)


def test_a_power_model_trains_on_the_file() -> None:
    found = scenarios()
    stats, _ = run_stats(found, [resolve(s) for s in found])
    points = []
    for st, scenario in zip(stats, found, strict=True):
        features = features_of(scenario)
        assert features is not None and st.mean_power_w is not None
        points.append(
            TrainingPoint(run_id="go", index=st.index, content="", power_w=st.mean_power_w, **features)
        )
    model = train(points)
    assert isinstance(model, PowerModel), model  # not "0 usable scenario(s)"
    assert model.info.n_train == 8
    assert model.info.distinct_streams == 4  # 1, 2, 4 and 8 streams
    # With fewer than 6 distinct stream counts the rule picks the straight line in the stream count; its
    # prediction must equal an independent least-squares fit of mean power on streams.
    ruled = train(points, selection="rule")
    assert isinstance(ruled, PowerModel) and ruled.info.name == "linear"
    slope, intercept = np.polyfit([p.streams for p in points], [p.power_w for p in points], 1)
    for streams in (1.0, 4.0):
        predicted = ruled.predict({**points[0].features(), "streams": streams}).mean
        assert predicted == pytest.approx(intercept + slope * streams, rel=1e-9)
