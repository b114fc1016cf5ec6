"""QoE worker: VMAF, PSNR, SSIM, frame-drop rate, quality per watt and QoE efficiency for every ingested run.

Scores come from the results file. When a scenario has none but names a ``reference_file`` and an
``output_file``, and ffmpeg is installed, PSNR is computed with ffmpeg's ``psnr`` filter (and VMAF with
``libvmaf`` when ffmpeg has it), within ``--ffmpeg-timeout``; video paths are resolved under ``--media-root``
and may not leave it. Invalid scores (NaN, out of range) are rejected with a reason, never exported.
Quality per watt and QoE efficiency use the enriched/inline telemetry (the old exporter needed a ``power``
block that nothing wrote: B-Q2), and the time spent is measured (B-Q1).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared import subjects
from shared.config import flag, positive_float
from shared.parsing import measured_duration_s, total_pixels
from shared.schemas import QoEResult, QoEScenario, Scenario
from shared.scoring import ScoreError, validate_psnr, validate_ssim, validate_vmaf
from shared.telemetry import ResolvedTelemetry, resolve
from shared.worker import RunInput, add_worker_arguments, run_worker_service

log = logging.getLogger("qoe")
SERVICE = "qoe"

_PSNR_RE = re.compile(r"PSNR .*?average:(?P<avg>[0-9.]+|inf)")
_VMAF_RE = re.compile(r"VMAF score[:=]\s*(?P<score>[0-9.]+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_worker_arguments(parser)
    flag(
        parser,
        "--media-root",
        env="QOE_MEDIA_ROOT",
        default=".",
        type=Path,
        help="directory that reference_file/output_file paths are resolved under",
    )
    flag(parser, "--ffmpeg", env="FFMPEG", default="ffmpeg", help="ffmpeg executable for computing PSNR/VMAF")
    flag(
        parser,
        "--ffmpeg-timeout",
        env="FFMPEG_TIMEOUT_SECONDS",
        default=600.0,
        type=positive_float,
        help="longest an ffmpeg quality computation may run",
    )


@dataclass(frozen=True)
class QoESettings:
    media_root: Path = Path()
    ffmpeg: str | None = None
    ffmpeg_timeout_s: float = 600.0


def parse_psnr(stderr: str) -> float | None:
    """Average PSNR (dB) from ffmpeg's psnr filter summary line."""
    match = _PSNR_RE.search(stderr)
    if not match or match.group("avg") == "inf":
        return None
    return float(match.group("avg"))


def parse_vmaf(stderr: str) -> float | None:
    match = _VMAF_RE.search(stderr)
    return float(match.group("score")) if match else None


def _inside(root: Path, name: str) -> Path | None:
    path = (root / name).resolve()
    return path if path.is_relative_to(root.resolve()) and path.is_file() else None


def ffmpeg_scores(scenario: Scenario, settings: QoESettings) -> tuple[dict[str, float], dict[str, str]]:
    """PSNR (and VMAF when available) of output_file against reference_file. Blocking."""
    if not (scenario.reference_file and scenario.output_file):
        return {}, {}
    if settings.ffmpeg is None:
        return {}, {"psnr_score": "videos named but ffmpeg is not installed"}
    ref = _inside(settings.media_root, scenario.reference_file)
    out = _inside(settings.media_root, scenario.output_file)
    if ref is None or out is None:
        return {}, {"psnr_score": f"videos must be existing files under {settings.media_root}"}
    scores: dict[str, float] = {}
    problems: dict[str, str] = {}
    for metric, graph, parse in (
        ("psnr_score", "[0:v][1:v]psnr", parse_psnr),
        ("vmaf_score", "[0:v][1:v]libvmaf", parse_vmaf),
    ):
        argv = [
            settings.ffmpeg,
            "-hide_banner",
            "-nostats",
            "-i",
            str(out),
            "-i",
            str(ref),
            "-lavfi",
            graph,
            "-f",
            "null",
            "-",
        ]
        try:
            done = subprocess.run(
                argv, capture_output=True, text=True, timeout=settings.ffmpeg_timeout_s, check=False
            )
        except subprocess.TimeoutExpired:
            problems[metric] = f"ffmpeg took longer than {settings.ffmpeg_timeout_s:g}s"
            continue
        value = parse(done.stderr) if done.returncode == 0 else None
        if value is None:
            problems[metric] = "ffmpeg could not compute it" + (
                " (no libvmaf?)" if metric == "vmaf_score" else ""
            )
        else:
            scores[metric] = value
    return scores, problems


def _mean_power_w(scenario: Scenario, tel: ResolvedTelemetry) -> float | None:
    """Mean power for quality per watt: measured energy / duration, else the sample or summary mean; plus the
    GPU's mean power when the file gives one (as the old scorer)."""
    d = measured_duration_s(scenario)
    energy = tel.energy_or_integral_j()
    cpu = energy / d if energy is not None and d else tel.mean_power_w()
    if cpu is None:
        return None
    return cpu + (tel.gpu_mean_power_w or 0.0)


def qoe_of(index: int, scenario: Scenario, tel: ResolvedTelemetry, settings: QoESettings) -> QoEScenario:
    started = time.perf_counter()
    rejected: dict[str, str] = {}
    raw: dict[str, float | None] = {
        "vmaf_score": scenario.vmaf_score,
        "psnr_score": scenario.psnr_score,
        "ssim_score": scenario.ssim_score,
    }
    source = "file" if any(v is not None for v in raw.values()) else None
    if raw["vmaf_score"] is None and raw["psnr_score"] is None:
        computed, problems = ffmpeg_scores(scenario, settings)
        rejected.update(problems)
        if computed:
            raw.update(computed)
            source = "ffmpeg"
    valid: dict[str, float] = {}
    for metric, check in (
        ("vmaf_score", validate_vmaf),
        ("psnr_score", validate_psnr),
        ("ssim_score", validate_ssim),
    ):
        if raw[metric] is None:
            continue
        try:
            valid[metric] = check(raw[metric])
        except ScoreError as exc:
            rejected[metric] = str(exc)
    drop_rate = None
    if scenario.total_frames is not None and scenario.dropped_frames is not None:
        if scenario.total_frames > 0 and 0 <= scenario.dropped_frames <= scenario.total_frames:
            drop_rate = scenario.dropped_frames / scenario.total_frames
        else:
            rejected["drop_rate"] = (
                f"dropped_frames {scenario.dropped_frames} of total_frames "
                f"{scenario.total_frames} is not a rate"
            )
    vmaf = valid.get("vmaf_score")
    power = _mean_power_w(scenario, tel)
    energy = tel.energy_or_integral_j()
    pixels = total_pixels(scenario, measured_duration_s(scenario))
    return QoEScenario(
        index=index,
        vmaf_score=vmaf,
        psnr_score=valid.get("psnr_score"),
        ssim_score=valid.get("ssim_score"),
        drop_rate=drop_rate,
        quality_per_watt=vmaf / power if vmaf is not None and power and power > 0 else None,
        qoe_efficiency_score=(
            pixels * vmaf / 100.0 / energy if vmaf is not None and pixels and energy and energy > 0 else None
        ),
        source=source,
        computation_seconds=time.perf_counter() - started,
        rejected=rejected,
    )


def compute_qoe(run: RunInput, settings: QoESettings) -> QoEResult:
    started = time.perf_counter()
    scenarios = [
        qoe_of(i, m.scenario, resolve(m.scenario, m.enriched), settings) for i, m in enumerate(run.scenarios)
    ]
    for s in scenarios:
        for metric, reason in s.rejected.items():
            log.warning("%s scenario %d: %s rejected: %s", run.manifest.run_id, s.index, metric, reason)
    m = run.manifest
    return QoEResult(
        run_id=m.run_id,
        digest=m.digest,
        generation=m.generation,
        scenarios=scenarios,
        computed_at=time.time(),
        compute_seconds=time.perf_counter() - started,
    )


async def main(args: argparse.Namespace, stop: asyncio.Event) -> int:
    settings = QoESettings(
        media_root=args.media_root, ffmpeg=shutil.which(args.ffmpeg), ffmpeg_timeout_s=args.ffmpeg_timeout
    )

    async def compute(run: RunInput) -> QoEResult:
        return await asyncio.to_thread(compute_qoe, run, settings)

    return await run_worker_service(args, stop, kind=SERVICE, durable=subjects.CONSUMER_QOE, compute=compute)
