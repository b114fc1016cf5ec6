"""The ``qoe`` kind: VMAF, PSNR, SSIM, frame-drop rate, quality per watt and QoE efficiency of every run.

Scores come from the results file. When a scenario has none but names a ``reference_file`` and an
``output_file``, and ffmpeg is installed, PSNR is computed with ffmpeg's ``psnr`` filter (and VMAF with
``libvmaf`` when ffmpeg has it), within ``--ffmpeg-timeout``; video paths are resolved under ``--media-root``
and may not leave it. Invalid scores (NaN, out of range) are rejected with a reason, never exported.
Quality per watt and QoE efficiency are shared.scoring's formulas over the one mean-power definition
(shared.telemetry.scenario_mean_power_w, with the GPU's stated mean as the old exporter added it); the old
exporter needed a ``power`` block that nothing wrote (B-Q2), and reported 0 s for the time it spent (B-Q1).
Its families appear on the legacy QoE listener (:9503).
"""

from __future__ import annotations

import argparse
import logging
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from shared.config import flag, positive_float
from shared.families import QOE_LABELS, Family, RunView, Spec, legacy_scenario_label, per_scenario, unique
from shared.kinds import Kind
from shared.parsing import scenario_duration_s
from shared.runs import RunInput, make_result
from shared.schemas import QoEResult, QoEScenario, Scenario
from shared.scoring import (
    Measured,
    ScoreError,
    qoe_efficiency,
    quality_per_watt,
    validate_psnr,
    validate_ssim,
    validate_vmaf,
)
from shared.telemetry import ResolvedTelemetry, resolve, scenario_mean_power_w, total_energy_j

log = logging.getLogger("qoe")

_PSNR_RE = re.compile(r"PSNR .*?average:(?P<avg>[0-9.]+|inf)")
_VMAF_RE = re.compile(r"VMAF score[:=]\s*(?P<score>[0-9.]+)")


def add_arguments(parser: argparse.ArgumentParser) -> None:
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
    media_root: Path
    #: Resolved path of ffmpeg, None when it is not installed.
    ffmpeg: str | None
    ffmpeg_timeout_s: float


def settings_from_args(args: argparse.Namespace) -> QoESettings:
    return QoESettings(
        media_root=Path(args.media_root),
        ffmpeg=shutil.which(args.ffmpeg),
        ffmpeg_timeout_s=args.ffmpeg_timeout,
    )


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
    # The duration the pixels are counted over, and that the energy of a power series spans (P6).
    duration = scenario_duration_s(scenario)
    measured = Measured(
        mean_power_w=scenario_mean_power_w(tel, duration, include_gpu=True),
        energy_j=total_energy_j(tel),
        duration_s=duration,
        vmaf=vmaf,
    )
    return QoEScenario(
        index=index,
        vmaf_score=vmaf,
        psnr_score=valid.get("psnr_score"),
        ssim_score=valid.get("ssim_score"),
        drop_rate=drop_rate,
        quality_per_watt=quality_per_watt(scenario, measured).value if vmaf is not None else None,
        qoe_efficiency_score=qoe_efficiency(scenario, measured).value if vmaf is not None else None,
        source=source,
        computation_seconds=time.perf_counter() - started,
        rejected=rejected,
    )


def compute_qoe(run: RunInput, settings: QoESettings) -> QoEResult:
    scenarios = [
        qoe_of(i, m.scenario, resolve(m.scenario, m.enriched), settings) for i, m in enumerate(run.scenarios)
    ]
    for s in scenarios:
        for metric, reason in s.rejected.items():
            log.warning("%s scenario %d: %s rejected: %s", run.manifest.run_id, s.index, metric, reason)
    return make_result(QoEResult, run, scenarios=scenarios)


def families(view: RunView) -> list[Family]:
    qoe = view.result("qoe", QoEResult)
    if qoe is None:
        return []
    specs: list[Spec] = [
        ("qoe_vmaf_score", "VMAF quality score (0-100)", lambda q: q.vmaf_score),
        ("qoe_psnr_score", "PSNR (dB)", lambda q: q.psnr_score),
        ("qoe_quality_per_watt", "VMAF per watt of mean power (VMAF/W)", lambda q: q.quality_per_watt),
        (
            "qoe_efficiency_score",
            "Quality-weighted pixels per joule: pixels x VMAF/100 / J",
            lambda q: q.qoe_efficiency_score,
        ),
        (
            "qoe_computation_duration_seconds",
            "Time spent computing the quality figures (seconds)",
            lambda q: q.computation_seconds,
        ),
        ("qoe_ssim_score", "SSIM (0-1)", lambda q: q.ssim_score),
        ("qoe_drop_rate", "Dropped frames / total frames (ratio)", lambda q: q.drop_rate),
    ]
    labelsets = unique([(legacy_scenario_label(m.scenario.name),) for m in view.scenarios], position=0)
    return per_scenario(specs, QOE_LABELS, view.scenarios, labelsets, {q.index: q for q in qoe.scenarios})


KIND = Kind(
    name="qoe",
    result=QoEResult,
    add_arguments=add_arguments,
    settings=settings_from_args,
    families=families,
    compute=compute_qoe,
    listener="qoe",
)
