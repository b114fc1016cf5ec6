"""The one place where scenario metadata is interpreted: bitrate, resolution, stream count, encoder type,
output ladder, duration, total pixels and baseline detection. Pure functions, no I/O.

The old exporters, scoring and modeling code each had their own rule for most of these (a bare bitrate was
kbps in one and Mbps in another; baselines were found by different names), so the same scenario got different
numbers depending on who read it. Each function's docstring states the one rule chosen here and why. Parsers raise only their own :class:`ParseError` subclasses.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from shared.schemas import Output, Scenario


class ParseError(ValueError):
    """A metadata value cannot be interpreted; the message says what was expected."""


class BitrateError(ParseError):
    pass


class ResolutionError(ParseError):
    pass


# ---------------------------------------------------------------------------------------------------------
# Bitrate
# ---------------------------------------------------------------------------------------------------------

_BITRATE_RE = re.compile(
    r"^\s*(?P<num>\d+(?:\.\d*)?|\.\d+)\s*(?P<unit>[kmg]?)(?:bps|b/s)?\s*$", re.IGNORECASE
)
_BITRATE_SCALE_MBPS = {"": None, "k": 1e-3, "m": 1.0, "g": 1e3}


def parse_bitrate_mbps(value: object) -> float:
    """Bitrate to megabits per second (Mbps).

    Accepted: ``2500k``, ``2500K``, ``2500kbps``, ``2500 kb/s``, ``5M``, ``5m``, ``5Mbps``, ``1.5G``,
    ``1000000bps``, ``0k``, and a bare number (string or JSON number).

    **A bare number is kbps**, always. The runner writes ``2500k``; a bare ``2500`` in configs of streaming
    tools means kbps; and the rule is monotonic. The old results exporter used "kbps above 1000, Mbps
    otherwise", under which ``1000`` meant 1000 Mbps but ``1001`` meant 1.001 Mbps (B-R6); scoring/modeling
    already used kbps. A ``bps`` suffix without a prefix means bits per second.

    The distributed runner's Go ResultsWriter writes ``result.Metrics["bitrate"]`` verbatim, defaulting to
    the string ``"0k"``; its workers take the bitrate from the job's ffmpeg ``-b:v`` parameter (``"2000k"``),
    so strings carry their unit and a JSON number there is read, like every bare number, as kbps. (Its
    ``"0k"`` default means "not reported", see :func:`is_baseline`.)

    Raises :class:`BitrateError` for anything else: ``abc``, ``N/A``, ``""``, negatives, NaN, booleans, None.
    """
    if isinstance(value, bool) or value is None:
        raise BitrateError(f"expected a bitrate such as '2500k' or '5M', got {value!r}")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise BitrateError(f"expected a non-negative finite bitrate, got {value!r}")
        return float(value) / 1000.0
    if not isinstance(value, str):
        raise BitrateError(f"expected a bitrate string or number, got {type(value).__name__}")
    match = _BITRATE_RE.match(value)
    if not match:
        raise BitrateError(f"expected a bitrate such as '2500k', '5M' or '2500', got {value!r}")
    number = float(match.group("num"))
    unit = match.group("unit").lower()
    has_bps = value.strip().lower().endswith(("bps", "b/s"))
    if unit == "":
        # "1000000bps" is bits per second; a bare "2500" is kbps.
        return number / 1e6 if has_bps else number / 1000.0
    scale = _BITRATE_SCALE_MBPS[unit]
    assert scale is not None
    return number * scale


def try_bitrate_mbps(value: object) -> float | None:
    """:func:`parse_bitrate_mbps`, or None where the value cannot be read (for optional metrics)."""
    try:
        return parse_bitrate_mbps(value)
    except BitrateError:
        return None


# ---------------------------------------------------------------------------------------------------------
# Resolution
# ---------------------------------------------------------------------------------------------------------

_RES_RE = re.compile(r"^\s*(\d+)\s*[x×]\s*(\d+)\s*$", re.IGNORECASE)


def parse_resolution(value: object) -> tuple[int, int]:
    """``WxH`` to (width, height) in pixels. Case-insensitive, spaces allowed, ``×`` accepted.

    Raises :class:`ResolutionError` for ``1080p``, ``N/A``, ``""``, zero sizes, non-strings.
    """
    if not isinstance(value, str):
        raise ResolutionError(f"expected a resolution such as '1280x720', got {value!r}")
    match = _RES_RE.match(value)
    if not match:
        raise ResolutionError(f"expected a resolution such as '1280x720', got {value!r}")
    width, height = int(match.group(1)), int(match.group(2))
    if width <= 0 or height <= 0:
        raise ResolutionError(f"resolution must be positive, got {value!r}")
    return width, height


def try_resolution(value: object) -> tuple[int, int] | None:
    try:
        return parse_resolution(value)
    except ResolutionError:
        return None


def valid_fps(value: object) -> float | None:
    """A usable frame rate (positive, finite number) or None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value <= 0:
        return None
    return float(value)


# ---------------------------------------------------------------------------------------------------------
# Stream count
# ---------------------------------------------------------------------------------------------------------

# A count is digits standing alone (not inside "x264" or "2.5"), then optional space or hyphen, then the
# word "stream"/"streams" (not "livestream").
_STREAMS_RE = re.compile(r"(?<![\w.])(\d+)\s*-?\s*streams?\b", re.IGNORECASE)


def stream_count_from_name(name: str | None) -> int | None:
    """The stream count a scenario name states, or None when it states none.

    ``4 Streams @ 2500k`` -> 4; ``4streams`` -> 4; ``2-stream test`` -> 2 (a hyphen or no space is still a
    count: the old exporters' ``\\d+\\s+streams?`` missed these). ``10 Mbps Stream`` -> None: the number
    belongs to "Mbps", it is a bitrate, not a count (old modeling read it as 10 streams, B-M3).
    ``3 x 720p streams``, ``2 livestream``, ``Baseline (Idle)`` -> None.
    """
    if not name:
        return None
    match = _STREAMS_RE.search(name)
    if not match:
        return None
    count = int(match.group(1))
    return count if count > 0 else None


def stream_count(scenario: Scenario) -> int:
    """Streams a scenario runs: the explicit ``streams`` field when positive, else the name, else 1."""
    if scenario.streams is not None and scenario.streams > 0:
        return scenario.streams
    return stream_count_from_name(scenario.name) or 1


# ---------------------------------------------------------------------------------------------------------
# Encoder type
# ---------------------------------------------------------------------------------------------------------

#: Substrings that name a hardware encoder or a GPU, in codec names (``h264_nvenc``, ``hevc_qsv``), engine
#: names (``nvenc``) and GStreamer elements (``nvh264enc``, ``nvv4l2h264enc``, ``vaapih264enc``,
#: ``msdkh265enc``, ``qsvh264enc``).
_GPU_HINTS = (
    "nvenc",
    "cuda",
    "qsv",
    "vaapi",
    "amf",
    "videotoolbox",
    "v4l2m2m",
    "gpu",
    "nvh264",
    "nvh265",
    "nvav1",
    "nvv4l2",
    "msdk",
)


def encoder_kind(scenario: Scenario) -> str:
    """``gpu`` or ``cpu``.

    An ``encoder_type`` of exactly ``cpu``/``gpu`` wins. Anything else in ``encoder_type`` is an engine name
    (the distributed runner writes its job's engine there: ``ffmpeg``, ``gstreamer``, ``auto``, or a
    hardware engine such as ``nvenc``), which says nothing about the device by itself; so the engine name, the
    codec (``encoder``, e.g. ``h264_nvenc``) and the scenario name are searched together for hardware-encoder
    hints (nvenc, cuda, qsv, vaapi, amf, videotoolbox, v4l2m2m, gpu, and the GStreamer elements nvh264/nvh265/
    nvav1/nvv4l2/msdk). None found means ``cpu``: ``ffmpeg`` and ``gstreamer`` alone are software encoding.
    The old results exporter looked at the name only.
    """
    declared = (scenario.encoder_type or "").strip().lower()
    if declared in ("cpu", "gpu"):
        return declared
    text = f"{scenario.encoder or ''} {scenario.name or ''} {declared}".lower()
    return "gpu" if any(hint in text for hint in _GPU_HINTS) else "cpu"


# ---------------------------------------------------------------------------------------------------------
# Ladder, duration, pixels
# ---------------------------------------------------------------------------------------------------------


def format_number(value: float) -> str:
    """How a JSON number reads in a label: ``30`` for 30, ``29.97`` for 29.97, ``30.0`` for 30.0."""
    return str(value)


@dataclass(frozen=True)
class Rendition:
    resolution: str
    width: int
    height: int
    fps: float
    fps_text: str


def _rendition(resolution: str | None, fps: float | int | None) -> Rendition | None:
    size = try_resolution(resolution)
    rate = valid_fps(fps)
    if size is None or rate is None or resolution is None or fps is None:
        return None
    return Rendition(resolution.strip(), size[0], size[1], rate, format_number(fps))


def configured_renditions(scenario: Scenario) -> list[Rendition]:
    """The outputs a scenario was configured to produce: its valid ladder outputs, else its own resolution
    and configured ``fps``. Never uses the achieved ``avg_fps``."""
    outputs: Sequence[Output] = scenario.outputs or ()
    found = [r for r in (_rendition(o.resolution, o.fps) for o in outputs) if r is not None]
    if found:
        return found
    own = _rendition(scenario.resolution, scenario.fps)
    return [own] if own is not None else []


def renditions(scenario: Scenario) -> list[Rendition]:
    """The outputs a scenario produces: :func:`configured_renditions` when there are any, else its resolution
    at the achieved frame rate ``avg_fps`` (the distributed runner's files carry no configured ``fps``)."""
    found = configured_renditions(scenario)
    if found:
        return found
    achieved = _rendition(scenario.resolution, scenario.avg_fps)
    return [achieved] if achieved is not None else []


def frame_rate(scenario: Scenario) -> float | None:
    """Frames per second of the scenario: the configured ``fps`` when usable, else the achieved ``avg_fps``,
    else None."""
    configured = valid_fps(scenario.fps)
    return configured if configured is not None else valid_fps(scenario.avg_fps)


def output_ladder_id(scenario: Scenario) -> str:
    """``1920x1080@30,1280x720@30,854x480@30``: renditions sorted by (width, height) descending.

    A single-resolution scenario gives ``1280x720@30``; a scenario without a usable resolution or fps gives
    ``unknown`` (the old code could produce ``None@30`` or ``@30``, B-R18).
    """
    found = sorted(renditions(scenario), key=lambda r: (r.width, r.height), reverse=True)
    if not found:
        return "unknown"
    return ",".join(f"{r.resolution}@{r.fps_text}" for r in found)


def measured_duration_s(scenario: Scenario) -> float | None:
    """Wall-clock ``end_time - start_time`` in seconds, or None without both (or when not positive)."""
    start, end = scenario.start_time, scenario.end_time
    if start is None or end is None:
        return None
    span = float(end) - float(start)
    return span if math.isfinite(span) and span > 0 else None


def scenario_duration_s(scenario: Scenario) -> float | None:
    """The duration every formula uses: measured wall-clock time when known, else the configured
    ``duration``. One source for all of them (the old modules used three, B-X4)."""
    measured = measured_duration_s(scenario)
    if measured is not None:
        return measured
    configured = scenario.duration
    if configured is None or isinstance(configured, bool):
        return None
    value = float(configured)
    return value if math.isfinite(value) and value > 0 else None


def pixels_processed(scenario: Scenario) -> float | None:
    """The file's ``pixels_processed`` (the distributed runner's measured pixel count of the job) when it is
    a positive finite number, else None. A Go float64: it may have a fractional part, kept as it is."""
    value = scenario.pixels_processed
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) and number > 0 else None


def total_pixels(scenario: Scenario, duration_s: float | None = None) -> float | None:
    """Pixels delivered, with this precedence:

    1. **configured renditions x duration** (:func:`configured_renditions`: the ladder, or the scenario's
       resolution and ``fps``): ``streams * sum(width * height * fps * duration_s)``. The stream count
       multiplies: eight streams deliver eight times the pixels of one (the old code counted one stream's,
       B-R13);
    2. else the file's **pixels_processed** (the distributed runner's measured total of the job, already over
       every stream: not multiplied, and independent of ``duration_s``);
    3. else the resolution at the achieved ``avg_fps`` x duration, times the stream count.

    ``duration_s`` defaults to :func:`scenario_duration_s`. None when none of these can be computed.
    """
    duration = scenario_duration_s(scenario) if duration_s is None else duration_s
    has_duration = duration is not None and duration > 0
    configured = configured_renditions(scenario)
    if configured and has_duration:
        assert duration is not None
        return stream_count(scenario) * sum(r.width * r.height * r.fps * duration for r in configured)
    measured = pixels_processed(scenario)
    if measured is not None:
        return measured
    found = renditions(scenario)
    if not found or not has_duration:
        return None
    assert duration is not None
    return stream_count(scenario) * sum(r.width * r.height * r.fps * duration for r in found)


def pixel_rate_per_s(scenario: Scenario) -> float | None:
    """Pixels per second over every stream and rendition, with :func:`total_pixels`' precedence:
    configured renditions (``streams * sum(width * height * fps)``, no duration needed), else
    ``pixels_processed / duration`` (:func:`scenario_duration_s`), else the resolution at ``avg_fps`` times
    the stream count. None when none applies."""
    configured = configured_renditions(scenario)
    if configured:
        return stream_count(scenario) * sum(r.width * r.height * r.fps for r in configured)
    measured = pixels_processed(scenario)
    duration = scenario_duration_s(scenario)
    if measured is not None and duration is not None:
        return measured / duration
    found = renditions(scenario)
    if not found:
        return None
    return stream_count(scenario) * sum(r.width * r.height * r.fps for r in found)


# ---------------------------------------------------------------------------------------------------------
# Baseline
# ---------------------------------------------------------------------------------------------------------


def _did_work(scenario: Scenario) -> bool:
    """The file says the scenario transcoded something: positive pixels_processed, total_frames or avg_fps."""
    counts = (scenario.pixels_processed, scenario.total_frames, scenario.avg_fps)
    return any(v is not None and not isinstance(v, bool) and math.isfinite(v) and v > 0 for v in counts)


def is_baseline(scenario: Scenario) -> bool:
    """The idle reference run: the name contains ``baseline`` or ``idle`` (any case), or the bitrate is 0
    and the scenario transcoded nothing.

    One rule for every service (the results exporter matched 'baseline' only, the cost exporter also
    'idle', scoring used a zero bitrate: B-R8). The distributed runner writes ``bitrate: "0k"`` for every job
    whose worker reported no bitrate, so a zero bitrate alongside positive ``pixels_processed``,
    ``total_frames`` or ``avg_fps`` is "bitrate unknown", not idle.
    """
    name = (scenario.name or "").lower()
    if "baseline" in name or "idle" in name:
        return True
    return try_bitrate_mbps(scenario.bitrate) == 0.0 and not _did_work(scenario)


def find_baseline(scenarios: Sequence[Scenario]) -> int | None:
    """Index of the run's baseline: the first scenario :func:`is_baseline` accepts, or None."""
    for index, scenario in enumerate(scenarios):
        if is_baseline(scenario):
            return index
    return None
