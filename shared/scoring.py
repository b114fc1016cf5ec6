"""Energy-efficiency scores of a scenario, each with its unit. Pure functions, no I/O.

| algorithm            | formula                                   | unit                      |
| -------------------- | ----------------------------------------- | ------------------------- |
| throughput_per_watt  | bitrate Mbps x streams / mean power W     | Mbps/W                    |
| pixels_per_joule     | total pixels / energy J                   | pixels/J                  |
| quality_per_watt     | VMAF / mean power W                       | VMAF/W                    |
| qoe_efficiency       | total pixels x VMAF/100 / energy J        | quality-weighted pixels/J |

VMAF comes from ``Measured.vmaf`` when given (e.g. the QoE worker's validated score), else the file's
``vmaf_score``. ``auto`` picks ``qoe_efficiency`` when a VMAF score is present, ``pixels_per_joule`` for a ladder of more than
one output, and ``throughput_per_watt`` otherwise. A score that cannot be computed is None, with a reason.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum

from shared.parsing import renditions, stream_count, total_pixels, try_bitrate_mbps
from shared.schemas import Scenario


class Algorithm(StrEnum):
    THROUGHPUT_PER_WATT = "throughput_per_watt"
    PIXELS_PER_JOULE = "pixels_per_joule"
    QUALITY_PER_WATT = "quality_per_watt"
    QOE_EFFICIENCY = "qoe_efficiency"
    AUTO = "auto"


UNITS: dict[Algorithm, str] = {
    Algorithm.THROUGHPUT_PER_WATT: "Mbps/W",
    Algorithm.PIXELS_PER_JOULE: "pixels/J",
    Algorithm.QUALITY_PER_WATT: "VMAF/W",
    Algorithm.QOE_EFFICIENCY: "quality-weighted pixels/J",
}


class ScoreError(ValueError):
    """A quality score is unusable; the message says why."""


def validate_vmaf(value: float | None) -> float:
    """VMAF must be a finite number in 0..100."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ScoreError(f"VMAF must be a number in 0..100, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 100:
        raise ScoreError(f"VMAF must be in 0..100, got {value!r}")
    return float(value)


def validate_psnr(value: float | None) -> float:
    """PSNR in dB must be a finite number >= 0 (identical videos give infinity, which is not exportable)."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ScoreError(f"PSNR must be a number of dB, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ScoreError(f"PSNR must be a finite number >= 0 dB, got {value!r}")
    return float(value)


def validate_ssim(value: float | None) -> float:
    """SSIM must be a finite number in 0..1."""
    if value is None or isinstance(value, bool) or not isinstance(value, int | float):
        raise ScoreError(f"SSIM must be a number in 0..1, got {value!r}")
    if not math.isfinite(value) or not 0 <= value <= 1:
        raise ScoreError(f"SSIM must be in 0..1, got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Measured:
    """What was measured for one scenario."""

    mean_power_w: float | None = None
    energy_j: float | None = None
    duration_s: float | None = None
    #: VMAF (0..100) measured for this scenario, e.g. by the QoE worker. When given it wins over the file's
    #: ``scenario.vmaf_score``; when None the file's score is used, as before.
    vmaf: float | None = None


def vmaf_of(scenario: Scenario, measured: Measured | None = None) -> float | None:
    """The VMAF a score uses: ``measured.vmaf`` when present, else the file's ``vmaf_score`` (unvalidated)."""
    if measured is not None and measured.vmaf is not None:
        return measured.vmaf
    return scenario.vmaf_score


@dataclass(frozen=True)
class Score:
    algorithm: Algorithm
    value: float | None
    #: Why there is no value (when ``value`` is None).
    reason: str | None = None

    @property
    def unit(self) -> str:
        return UNITS[self.algorithm]


def _positive(value: float | None) -> bool:
    return value is not None and math.isfinite(value) and value > 0


def throughput_per_watt(scenario: Scenario, measured: Measured) -> Score:
    """bitrate Mbps x streams / mean power W. None for a zero bitrate (the idle baseline) or no power."""
    algo = Algorithm.THROUGHPUT_PER_WATT
    mbps = try_bitrate_mbps(scenario.bitrate)
    if mbps is None:
        return Score(algo, None, "bitrate missing or unreadable")
    if mbps <= 0:
        return Score(algo, None, "zero throughput (baseline)")
    if not _positive(measured.mean_power_w):
        return Score(algo, None, "no mean power")
    assert measured.mean_power_w is not None
    return Score(algo, mbps * stream_count(scenario) / measured.mean_power_w)


def pixels_per_joule(scenario: Scenario, measured: Measured) -> Score:
    """total pixels / energy J."""
    algo = Algorithm.PIXELS_PER_JOULE
    pixels = total_pixels(scenario, measured.duration_s)
    if pixels is None:
        return Score(algo, None, "no usable resolution, fps or duration")
    if not _positive(measured.energy_j):
        return Score(algo, None, "no energy")
    assert measured.energy_j is not None
    return Score(algo, pixels / measured.energy_j)


def quality_per_watt(scenario: Scenario, measured: Measured) -> Score:
    """VMAF / mean power W (the old exporter added GPU power to the mean when the file had it)."""
    algo = Algorithm.QUALITY_PER_WATT
    try:
        vmaf = validate_vmaf(vmaf_of(scenario, measured))
    except ScoreError as exc:
        return Score(algo, None, str(exc))
    if not _positive(measured.mean_power_w):
        return Score(algo, None, "no mean power")
    assert measured.mean_power_w is not None
    return Score(algo, vmaf / measured.mean_power_w)


def qoe_efficiency(scenario: Scenario, measured: Measured) -> Score:
    """total pixels x VMAF/100 / energy J."""
    algo = Algorithm.QOE_EFFICIENCY
    try:
        vmaf = validate_vmaf(vmaf_of(scenario, measured))
    except ScoreError as exc:
        return Score(algo, None, str(exc))
    pixels = total_pixels(scenario, measured.duration_s)
    if pixels is None:
        return Score(algo, None, "no usable resolution, fps or duration")
    if not _positive(measured.energy_j):
        return Score(algo, None, "no energy")
    assert measured.energy_j is not None
    return Score(algo, pixels * (vmaf / 100.0) / measured.energy_j)


def choose_algorithm(scenario: Scenario, measured: Measured | None = None) -> Algorithm:
    """``auto``: VMAF present -> qoe_efficiency; a ladder of more than one output -> pixels_per_joule;
    otherwise throughput_per_watt. (The old ``auto`` used outputs only when there were several while its pixel
    count used them when there was one: B-S4. Both follow :func:`shared.parsing.renditions` here.)

    "VMAF present" means :func:`vmaf_of` is not None: a measured VMAF counts as well as the file's."""
    return choose_algorithm_with_reason(scenario, measured)[0]


def choose_algorithm_with_reason(
    scenario: Scenario, measured: Measured | None = None
) -> tuple[Algorithm, str]:
    """:func:`choose_algorithm` and one sentence saying why (for reports and advice)."""
    if vmaf_of(scenario, measured) is not None:
        return Algorithm.QOE_EFFICIENCY, "a VMAF score is present, so quality-weighted pixels per joule"
    outputs = len(renditions(scenario))
    if outputs > 1:
        return Algorithm.PIXELS_PER_JOULE, f"a ladder of {outputs} outputs and no VMAF, so pixels per joule"
    return Algorithm.THROUGHPUT_PER_WATT, "a single output and no VMAF, so throughput per watt"


_FUNCTIONS = {
    Algorithm.THROUGHPUT_PER_WATT: throughput_per_watt,
    Algorithm.PIXELS_PER_JOULE: pixels_per_joule,
    Algorithm.QUALITY_PER_WATT: quality_per_watt,
    Algorithm.QOE_EFFICIENCY: qoe_efficiency,
}


def score(scenario: Scenario, measured: Measured, algorithm: Algorithm | str = Algorithm.AUTO) -> Score:
    algo = Algorithm(algorithm)
    if algo is Algorithm.AUTO:
        algo = choose_algorithm(scenario, measured)
    return _FUNCTIONS[algo](scenario, measured)
