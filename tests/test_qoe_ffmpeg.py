"""The QoE worker computing PSNR and VMAF itself with a real ffmpeg (the imageio-ffmpeg wheel's binary)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from services.qoe.kind import add_arguments, compute_qoe, settings_from_args
from shared.config import parse_flags
from shared.schemas import Scenario
from tests.helpers import run_input

imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
FFMPEG = imageio_ffmpeg.get_ffmpeg_exe()


def encode(media: Path) -> None:
    """A 2 s test pattern, and two encodings of it: a good one and a starved one."""
    run = [FFMPEG, "-hide_banner", "-loglevel", "error", "-y"]
    subprocess.run(
        [
            *run,
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x240:rate=10",
            "-t",
            "2",
            "-c:v",
            "libx264",
            "-crf",
            "0",
            "-pix_fmt",
            "yuv420p",
            str(media / "ref.mp4"),
        ],
        check=True,
        timeout=60,
    )
    for name, bitrate in (("good.mp4", "800k"), ("bad.mp4", "30k")):
        subprocess.run(
            [*run, "-i", str(media / "ref.mp4"), "-c:v", "libx264", "-b:v", bitrate, str(media / name)],
            check=True,
            timeout=60,
        )


def direct(media: Path, output: str, graph: str, pattern: str) -> float:
    """The figure as ffmpeg reports it when the test runs it itself."""
    done = subprocess.run(
        [
            FFMPEG,
            "-hide_banner",
            "-nostats",
            "-i",
            str(media / output),
            "-i",
            str(media / "ref.mp4"),
            "-lavfi",
            graph,
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(pattern, done.stderr)
    assert match, done.stderr[-500:]
    return float(match.group(1))


def test_psnr_and_vmaf_from_videos(tmp_path: Path) -> None:
    encode(tmp_path)
    settings = settings_from_args(
        parse_flags(
            add_arguments, ["--media-root", str(tmp_path), "--ffmpeg", FFMPEG, "--ffmpeg-timeout", "120"]
        )
    )
    good = Scenario(name="good", reference_file="ref.mp4", output_file="good.mp4")
    bad = Scenario(name="bad", reference_file="ref.mp4", output_file="bad.mp4")
    escape = Scenario(name="escape", reference_file="../ref.mp4", output_file="good.mp4")
    g, b, e = compute_qoe(run_input(good, bad, escape), settings).scenarios
    assert g.source == "ffmpeg" and g.rejected == {}
    assert g.psnr_score == pytest.approx(direct(tmp_path, "good.mp4", "[0:v][1:v]psnr", r"average:([0-9.]+)"))
    assert g.vmaf_score == pytest.approx(
        direct(tmp_path, "good.mp4", "[0:v][1:v]libvmaf", r"VMAF score: ([0-9.]+)")
    )
    assert b.psnr_score is not None and g.psnr_score is not None and b.psnr_score < g.psnr_score
    assert b.vmaf_score is not None and g.vmaf_score is not None and b.vmaf_score < g.vmaf_score
    assert 0 <= b.vmaf_score <= 100
    assert g.computation_seconds > 0.01  # ffmpeg's time is counted
    assert e.psnr_score is None and "under" in e.rejected["psnr_score"]


def test_ffmpeg_timeout_is_reported(tmp_path: Path) -> None:
    encode(tmp_path)
    settings = settings_from_args(
        parse_flags(
            add_arguments, ["--media-root", str(tmp_path), "--ffmpeg", FFMPEG, "--ffmpeg-timeout", "0.001"]
        )
    )
    [q] = compute_qoe(
        run_input(Scenario(name="x", reference_file="ref.mp4", output_file="good.mp4")), settings
    ).scenarios
    assert q.psnr_score is None and "longer than" in q.rejected["psnr_score"]
