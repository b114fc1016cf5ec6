"""Parsing rules, against hand-written expectations and properties."""

from __future__ import annotations

import contextlib
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.parsing import (
    BitrateError,
    ParseError,
    ResolutionError,
    encoder_kind,
    find_baseline,
    frame_rate,
    is_baseline,
    output_ladder_id,
    parse_bitrate_mbps,
    parse_resolution,
    pixel_rate_per_s,
    renditions,
    scenario_duration_s,
    stream_count,
    stream_count_from_name,
    total_pixels,
)
from shared.schemas import Output, Scenario


@pytest.mark.parametrize(
    ("text", "mbps"),
    [
        ("2500k", 2.5),
        ("2500K", 2.5),
        ("2500kbps", 2.5),
        ("2500 kb/s", 2.5),
        ("5M", 5.0),
        ("5m", 5.0),
        ("5Mbps", 5.0),
        ("1000000bps", 1.0),
        ("0k", 0.0),
        ("2500", 2.5),
        ("1000", 1.0),
        ("1001", 1.001),
        ("5", 0.005),
        (" 2.5M ", 2.5),
        ("1.5G", 1500.0),
        (2500, 2.5),
        (2500.0, 2.5),
        (0, 0.0),
        (4500.5, 4.5005),  # a Go float64 bitrate from the worker's metrics map: kbps like every bare number
    ],
)
def test_bitrate(text: object, mbps: float) -> None:
    assert parse_bitrate_mbps(text) == pytest.approx(mbps, rel=1e-12)


@pytest.mark.parametrize("bad", ["abc", "N/A", "", "-5k", "-1", "5x", "k", None, True, float("nan"), -3, [1]])
def test_bitrate_garbage_is_a_typed_error(bad: object) -> None:
    with pytest.raises(BitrateError):
        parse_bitrate_mbps(bad)


@given(st.one_of(st.text(), st.integers(), st.floats(), st.none(), st.booleans(), st.lists(st.integers())))
def test_bitrate_parser_raises_only_its_own_error(value: object) -> None:
    try:
        result = parse_bitrate_mbps(value)
    except BitrateError:
        return
    assert math.isfinite(result) and result >= 0


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("1920x1080", (1920, 1080)),
        ("1920X1080", (1920, 1080)),
        (" 1280 x 720 ", (1280, 720)),
        ("1920×1080", (1920, 1080)),
    ],
)
def test_resolution(text: str, size: tuple[int, int]) -> None:
    assert parse_resolution(text) == size


@pytest.mark.parametrize("bad", ["1080p", "N/A", "", None, 1920, "1920x1080x2", "0x720", "-1x5", "axb"])
def test_resolution_garbage(bad: object) -> None:
    with pytest.raises(ResolutionError):
        parse_resolution(bad)


@given(st.integers(1, 100_000), st.integers(1, 100_000), st.sampled_from(["x", "X", " x ", "×"]))
def test_resolution_round_trips(width: int, height: int, sep: str) -> None:
    assert parse_resolution(f"{width}{sep}{height}") == (width, height)


@given(st.one_of(st.text(), st.integers(), st.none()))
def test_resolution_raises_only_its_own_error(value: object) -> None:
    with contextlib.suppress(ParseError):
        parse_resolution(value)


@pytest.mark.parametrize(
    ("name", "count"),
    [
        ("4 Streams @ 2500k", 4),
        ("1 Streams @ 1000k", 1),
        ("4streams @ 1k", 4),
        ("2-stream test", 2),
        ("2 - streams", 2),
        ("10 Mbps Stream", None),
        ("2.5 Mbps Stream", None),
        ("1080p @ 2.5Mbps", None),
        ("Baseline (Idle)", None),
        ("Multi-resolution ladder test 1080p+720p+480p @ 2500k", None),
        ("3 x 720p streams", None),
        ("2 livestream", None),
        ("-2 streams", 2),
        ("x264 streams", None),
        ("0 streams", None),
        ("", None),
        (None, None),
    ],
)
def test_stream_count_from_name(name: str | None, count: int | None) -> None:
    assert stream_count_from_name(name) == count


def test_explicit_streams_field_wins() -> None:
    assert stream_count(Scenario(name="4 Streams @ 2500k", streams=6)) == 6
    assert stream_count(Scenario(name="4 Streams @ 2500k")) == 4
    assert stream_count(Scenario(name="10 Mbps Stream")) == 1
    assert stream_count(Scenario(name="x", streams=0)) == 1


@pytest.mark.parametrize(
    ("scenario", "kind"),
    [
        (Scenario(name="a", encoder_type="gpu"), "gpu"),
        (Scenario(name="NVENC test", encoder_type="cpu"), "cpu"),
        (Scenario(name="4 Streams GPU"), "gpu"),
        (Scenario(name="x", encoder="h264_nvenc"), "gpu"),
        (Scenario(name="x", encoder="hevc_qsv"), "gpu"),
        (Scenario(name="x", encoder="libx264"), "cpu"),
        (Scenario(name="job", encoder_type="ffmpeg"), "cpu"),
        (Scenario(name="vaapi run", encoder_type="auto"), "gpu"),
        # Engine names written by the distributed runner.
        (Scenario(name="4 Streams @ 5000k", encoder_type="gstreamer"), "cpu"),
        (Scenario(name="4 Streams @ 5000k", encoder_type="GStreamer "), "cpu"),
        (Scenario(name="4 Streams @ 5000k", encoder_type="nvenc"), "gpu"),
        (Scenario(name="4 Streams @ 5000k", encoder_type="auto"), "cpu"),
        (Scenario(name="job", encoder_type="ffmpeg", encoder="h264_nvenc"), "gpu"),
        (Scenario(name="job", encoder_type="gstreamer", encoder="nvh264enc"), "gpu"),
        (Scenario(name="job", encoder_type="gstreamer", encoder="nvv4l2h265enc"), "gpu"),
        (Scenario(name="job", encoder_type="gstreamer", encoder="msdkh265enc"), "gpu"),
        (Scenario(name="job", encoder_type="gstreamer", encoder="x264enc"), "cpu"),
    ],
)
def test_encoder_kind(scenario: Scenario, kind: str) -> None:
    assert encoder_kind(scenario) == kind


LADDER = [
    Output(resolution="854x480", fps=30),
    Output(resolution="1920x1080", fps=30),
    Output(resolution="1280x720", fps=30),
]


@pytest.mark.parametrize(
    ("scenario", "ladder"),
    [
        (Scenario(resolution="1920x1080", fps=30, outputs=LADDER), "1920x1080@30,1280x720@30,854x480@30"),
        (Scenario(resolution="1280x720", fps=30), "1280x720@30"),
        (Scenario(resolution="1280x720", fps=29.97), "1280x720@29.97"),
        (Scenario(resolution="1280x720", fps=30.0), "1280x720@30.0"),
        (Scenario(fps=30), "unknown"),
        (Scenario(resolution="1280x720"), "unknown"),
        (Scenario(resolution="1280x720", fps=-1), "unknown"),
        (Scenario(resolution="1280x720", fps=30, outputs=[Output(resolution="bad", fps=30)]), "1280x720@30"),
        (
            Scenario(outputs=[Output(resolution="640x360", fps=25), Output(resolution="640x480", fps=25)]),
            "640x480@25,640x360@25",
        ),
    ],
)
def test_output_ladder_id(scenario: Scenario, ladder: str) -> None:
    assert output_ladder_id(scenario) == ladder


def test_total_pixels_worked_examples() -> None:
    # 1280 x 720 x 30 fps x 100 s = 2,764,800,000 pixels (one stream).
    assert total_pixels(Scenario(resolution="1280x720", fps=30, duration=100)) == 2_764_800_000
    # The stream count multiplies: 4 streams deliver 4 x 2,764,800,000.
    assert (
        total_pixels(Scenario(name="4 Streams @ 1000k", resolution="1280x720", fps=30, duration=100))
        == 11_059_200_000
    )
    # A ladder sums its outputs: 1920*1080 + 1280*720 + 854*480 = 2,073,600 + 921,600 + 409,920
    # = 3,405,120 pixels per frame set; x 30 fps x 120 s = 12,258,432,000.
    ladder = Scenario(resolution="1920x1080", fps=30, duration=120, outputs=LADDER)
    assert total_pixels(ladder) == 12_258_432_000
    # Measured wall-clock time wins over the configured duration.
    timed = Scenario(resolution="1280x720", fps=30, duration=100, start_time=1000.0, end_time=1050.0)
    assert scenario_duration_s(timed) == 50.0
    assert total_pixels(timed) == 1_382_400_000
    assert total_pixels(Scenario(resolution="1280x720", fps=30)) is None
    assert total_pixels(Scenario(resolution="1080p", fps=30, duration=10)) is None
    assert total_pixels(Scenario(resolution="1280x720", fps=30, duration=10), duration_s=2.0) == 55_296_000


@pytest.mark.parametrize(
    ("scenario", "expected"),
    [
        (Scenario(name="Baseline (Idle)", bitrate="0k"), True),
        (Scenario(name="baseline"), True),
        (Scenario(name="IDLE machine"), True),
        (Scenario(name="quiet", bitrate="0k"), True),
        (Scenario(name="quiet", bitrate=0), True),
        (Scenario(name="1 Streams @ 1000k", bitrate="1000k"), False),
        (Scenario(name="x"), False),
        (Scenario(), False),
        # The Go writer's default bitrate "0k" on a job that did work means "not reported", not idle.
        (Scenario(name="job", bitrate="0k", pixels_processed=1.5e9), False),
        (Scenario(name="job", bitrate="0k", total_frames=3600), False),
        (Scenario(name="job", bitrate="0k", avg_fps=29.97), False),
        (Scenario(name="job", bitrate="0k", avg_fps=0, total_frames=0), True),
        (Scenario(name="Baseline", bitrate="0k", pixels_processed=1.5e9), True),  # the name still wins
    ],
)
def test_is_baseline(scenario: Scenario, expected: bool) -> None:
    assert is_baseline(scenario) is expected


def test_find_baseline_takes_the_first() -> None:
    scenarios = [
        Scenario(name="1 Streams @ 1000k", bitrate="1000k"),
        Scenario(name="Idle"),
        Scenario(name="Baseline"),
    ]
    assert find_baseline(scenarios) == 1
    assert find_baseline(scenarios[:1]) is None


def test_frame_rate_from_avg_fps_where_fps_is_absent() -> None:
    assert frame_rate(Scenario(fps=30, avg_fps=29.5)) == 30.0
    assert frame_rate(Scenario(avg_fps=29.5)) == 29.5
    assert frame_rate(Scenario(fps=-1, avg_fps=29.5)) == 29.5
    assert frame_rate(Scenario(avg_fps=0)) is None
    [r] = renditions(Scenario(resolution="1280x720", avg_fps=29.5))
    assert (r.width, r.height, r.fps) == (1280, 720, 29.5)
    assert output_ladder_id(Scenario(resolution="1280x720", avg_fps=29.5)) == "1280x720@29.5"
    # A configured fps wins over the achieved one.
    [r] = renditions(Scenario(resolution="1280x720", fps=30, avg_fps=29.5))
    assert r.fps == 30.0


def test_total_pixels_precedence_configured_then_pixels_processed_then_avg_fps() -> None:
    # 1. Configured renditions x duration win over pixels_processed: 1280 x 720 x 30 x 100 = 2,764,800,000.
    configured = Scenario(resolution="1280x720", fps=30, duration=100, pixels_processed=1.0e9, avg_fps=25)
    assert total_pixels(configured) == 2_764_800_000
    # 2. No configured fps: the file's pixels_processed as written, fraction and all, not times the streams.
    measured = Scenario(
        name="2 Streams @ 1000k",
        resolution="1280x720",
        avg_fps=25,
        duration=100,
        pixels_processed=8294400000.5,
    )
    assert total_pixels(measured) == 8294400000.5
    assert total_pixels(measured, duration_s=1.0) == 8294400000.5  # a measured count has no duration
    # 3. Neither: resolution at avg_fps x duration x streams = 2 x 1280 x 720 x 25 x 100 = 4,608,000,000.
    achieved = Scenario(name="2 Streams @ 1000k", resolution="1280x720", avg_fps=25, duration=100)
    assert total_pixels(achieved) == 4_608_000_000
    # Unusable pixels_processed values are ignored.
    assert total_pixels(Scenario(pixels_processed=0, duration=10)) is None
    assert total_pixels(Scenario(pixels_processed=-5.0, duration=10)) is None


def test_pixel_rate_precedence() -> None:
    # Configured: 2 streams x 1280 x 720 x 30 = 55,296,000 px/s; no duration needed.
    assert pixel_rate_per_s(Scenario(name="2 streams", resolution="1280x720", fps=30)) == 55_296_000
    # pixels_processed / measured duration: 8,294,400,000 / (1100 - 1000) s = 82,944,000 px/s.
    measured = Scenario(pixels_processed=8_294_400_000.0, start_time=1000, end_time=1100, duration=97.5)
    assert pixel_rate_per_s(measured) == 82_944_000
    # pixels_processed without any duration and without a resolution: no rate.
    assert pixel_rate_per_s(Scenario(pixels_processed=8_294_400_000.0)) is None
    # Resolution at avg_fps: 1920 x 1080 x 59.94 = 124,291,584 px/s.
    assert pixel_rate_per_s(Scenario(resolution="1920x1080", avg_fps=59.94)) == pytest.approx(
        124_291_584, rel=1e-12
    )
