"""Decoding a results file: bytes in, a validated run or a precise, typed error out. No I/O.

The error always says what was wrong, where (a JSON path such as ``$.scenarios[3].fps``, or a line and
column for malformed JSON) and what was expected, so a person can fix the file from the message alone.

Decoding has two stages. msgspec checks the shape (types, required fields, finite floats). Then one walk over
the decoded run (:func:`validate_run`) checks what the types cannot say but the maths downstream needs:

* every number, wherever it is (typed fields, ``test_metadata``, unknown fields), converts to a finite float:
  msgspec keeps an ``int`` field's 401-digit integer as a Python int, and ``float()`` of it raises
  ``OverflowError`` in every consumer (reason ``out_of_range``);
* counts (``streams``, ``total_frames``, ``dropped_frames``, ``pixels_processed``) are ``>= 0``; times
  (``start_time``, ``end_time``, sample ``timestamps``) are unix seconds with ``|t| < 1e11``, where a float
  still resolves microseconds; ``step_seconds`` is ``> 0`` (``out_of_range``);
* a ``{values, timestamps}`` series has one timestamp per value, strictly increasing (``inconsistent``);
* a run has at least one scenario (``empty_run``): an empty run would become the latest run and empty
  every dashboard;
* nesting is at most :data:`MAX_DEPTH` levels (``too_deep``), so no consumer hits Python's recursion limit.

Values the workers already treat per scenario (a negative ``fps``, a VMAF of 130) are left to them: they
report them in the scenario's notes instead of refusing a whole run.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import msgspec

from shared.schemas import ErrorEvent, Output, ResultsFile, Samples, Scenario, Telemetry

#: The file names the benchmark runner writes; anything else in the directory is ignored.
# DOTALL and fullmatch: a name with a newline in it is still a results file ("$" alone would also accept a
# name that merely ends in ".json\n").
_NAME_RE = re.compile(r"test_results_.*\.json", re.DOTALL)

_DIGEST_HEX = 16


class ResultsFileError(Exception):
    """The file cannot be used as it is. ``reason`` is a stable machine-readable code."""

    def __init__(
        self, reason: str, message: str, *, json_path: str | None = None, expected: str | None = None
    ) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.json_path = json_path
        self.expected = expected

    def describe(self) -> str:
        """One line: ``schema at $.scenarios[3].fps: <message>; expected int | float | null``."""
        where = f" at {self.json_path}" if self.json_path else ""
        expected = f"; expected {self.expected}" if self.expected else ""
        return printable(f"{self.reason}{where}: {self.message}{expected}")

    def to_event(self, service: str, file_name: str) -> ErrorEvent:
        return ErrorEvent(
            service=service,
            reason=self.reason,
            message=printable(self.message),
            at=time.time(),
            file=printable(file_name),
            json_path=self.json_path,
            expected=self.expected,
        )


class TruncatedFileError(ResultsFileError):
    """The JSON ends early: most likely the writer has not finished. Worth retrying."""

    def __init__(self, message: str = "the JSON document ends early (file still being written?)") -> None:
        super().__init__("truncated", message)


@dataclass(frozen=True)
class ParsedRun:
    run_id: str
    file_name: str
    sha256: str
    size: int
    results: ResultsFile
    #: Per scenario, the fields this schema does not know (kept for other tools).
    extras: list[dict[str, Any]]

    @property
    def digest(self) -> str:
        """The subject token of this run's content: the first 16 hex digits of
        ``sha256(run_id + "\\n" + sha256-of-the-bytes)``. Two files with the same bytes under different names
        are different runs, so the run id is part of it."""
        return run_digest(self.run_id, self.sha256)


def run_digest(run_id: str, file_sha256: str) -> str:
    return hashlib.sha256(f"{run_id}\n{file_sha256}".encode()).hexdigest()[:_DIGEST_HEX]


def is_results_file_name(name: str) -> bool:
    return bool(_NAME_RE.fullmatch(name))


def printable(text: str) -> str:
    """``text`` with every non-printable character (newline, control, a lone surrogate from a file name that
    is not UTF-8) written as a Python escape, so a log line stays one line and JSON can encode it."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else ascii(c)[1:-1] for c in text)


def run_id_for(file_name: str) -> str:
    """The run id is the file stem, as in the old exporters (``test_results_20251228_203216``)."""
    return PurePath(file_name).stem


_DECODER = msgspec.json.Decoder(ResultsFile)


class _ExtrasView(msgspec.Struct):
    scenarios: list[dict[str, msgspec.Raw]]


_EXTRAS_DECODER = msgspec.json.Decoder(_ExtrasView)
_KNOWN_FIELDS = frozenset(Scenario.__struct_fields__)
_VALIDATION_RE = re.compile(r"^(?P<what>.*?)(?: - at `(?P<path>[^`]*)`)?$", re.DOTALL)
_EXPECTED_RE = re.compile(r"Expected `(?P<expected>[^`]+)`")
_BYTE_RE = re.compile(r"\(byte (?P<byte>\d+)\)")
#: msgspec's words for a number no float (or int64) can hold; reported like the walk's ``out_of_range``.
_OUT_OF_RANGE = frozenset({"Number out of range", "Integer value out of range"})


def _line_col(data: bytes, offset: int) -> tuple[int, int]:
    before = data[:offset]
    line = before.count(b"\n") + 1
    col = offset - (before.rfind(b"\n") + 1) + 1
    return line, col


def _malformed(data: bytes, exc: msgspec.DecodeError) -> ResultsFileError:
    text = str(exc)
    match = _BYTE_RE.search(text)
    if not match:
        return ResultsFileError("invalid_json", f"not valid JSON: {text}")
    offset = int(match.group("byte"))
    line, col = _line_col(data, offset)
    token = data[offset : offset + 9]
    hint = ""
    if token.startswith((b"NaN", b"Infinity", b"-Infinity")):
        hint = "; NaN and Infinity are not JSON numbers (write null for a missing value)"
    return ResultsFileError(
        "invalid_json", f"not valid JSON at line {line}, column {col}: {text}{hint}", expected="valid JSON"
    )


def _invalid(exc: msgspec.ValidationError, root: str = "$") -> ResultsFileError:
    """A msgspec validation error as ours; ``root`` is the JSON path of what was decoded."""
    match = _VALIDATION_RE.match(str(exc))
    assert match is not None
    what = match.group("what")
    path = root + (match.group("path") or "$")[1:]
    message = str(exc) if root == "$" else f"{what} - at `{path}`"
    if what in _OUT_OF_RANGE:  # 1e400 in a float field, a 5,000-digit integer anywhere
        return ResultsFileError("out_of_range", message, json_path=path, expected="a finite number")
    expected = _EXPECTED_RE.search(what)
    return ResultsFileError(
        "schema", message, json_path=path, expected=expected.group("expected") if expected else None
    )


def _decode_extras(view: _ExtrasView) -> list[dict[str, Any]]:
    """Per scenario, the fields the schema does not know, decoded, errors located in the whole document."""
    extras = []
    for index, obj in enumerate(view.scenarios):
        extra: dict[str, Any] = {}
        for key, raw in obj.items():
            if key in _KNOWN_FIELDS:
                continue
            try:
                extra[key] = msgspec.json.decode(raw)
            except msgspec.ValidationError as exc:
                raise _invalid(exc, _key_path(f"$.scenarios[{index}]", key)) from None
        extras.append(extra)
    return extras


def _check_utf8(data: bytes) -> None:
    """Reject bytes that are not UTF-8 before any JSON decoder sees them. The reason is ours to decide: a
    decoder's error for bad bytes differs between releases (msgspec 0.23 calls it malformed JSON)."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as exc:
        if exc.end == len(data) and exc.reason == "unexpected end of data":
            raise TruncatedFileError(
                "the file ends inside a UTF-8 character (still being written?)"
            ) from None
        line, col = _line_col(data, exc.start)
        bad = data[exc.start : exc.start + 1].hex()
        raise ResultsFileError(
            "invalid_utf8",
            f"not valid UTF-8 at line {line}, column {col} (byte 0x{bad})",
            expected="JSON encoded as UTF-8",
        ) from None


def decode_results(data: bytes, file_name: str) -> ParsedRun:
    """Validate ``data`` as a results file named ``file_name``.

    Raises :class:`TruncatedFileError` for a document that ends early (retry later) and
    :class:`ResultsFileError` for anything else that is wrong (reject).
    """
    name = PurePath(file_name).name
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        # The run id is the name: it travels in JSON and KV keys, which cannot carry undecodable bytes.
        raise ResultsFileError(
            "bad_name", "the file name is not valid UTF-8", expected="a UTF-8 file name"
        ) from None
    if not data.strip():
        raise TruncatedFileError("the file is empty (still being written?)")
    _check_utf8(data)
    try:
        results = _DECODER.decode(data)
        extras = _decode_extras(_EXTRAS_DECODER.decode(data))
    except msgspec.ValidationError as exc:  # subclass of DecodeError: must come first
        raise _invalid(exc) from None
    except msgspec.DecodeError as exc:
        if "truncated" in str(exc):
            raise TruncatedFileError() from None
        raise _malformed(data, exc) from None
    except RecursionError:  # msgspec refuses nesting near Python's recursion limit (about 1,000 levels)
        raise _too_deep("$", None) from None
    validate_run(results, extras)
    return ParsedRun(
        run_id=run_id_for(file_name),
        file_name=name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        results=results,
        extras=extras,
    )


# ---------------------------------------------------------------------------------------------------------
# What the maths can hold (one walk over the decoded run)
# ---------------------------------------------------------------------------------------------------------

#: Deepest nesting accepted anywhere, counted in containers from the document (the schema itself needs 6).
MAX_DEPTH = 64
#: Unix seconds beyond this are not times of a benchmark; below it a float still resolves microseconds.
MAX_ABS_UNIX_TIME = 1e11

#: A rule gets a number that is already known to be a finite float and returns what was expected, or None.
_Rule = Callable[[float], "str | None"]


def _non_negative(x: float) -> str | None:
    return None if x >= 0 else ">= 0"


def _positive(x: float) -> str | None:
    return None if x > 0 else "> 0"


def _unix_time(x: float) -> str | None:
    return None if abs(x) < MAX_ABS_UNIX_TIME else f"unix seconds with |t| < {MAX_ABS_UNIX_TIME:.0e}"


_RULES: dict[type[msgspec.Struct], dict[str, _Rule]] = {
    Scenario: {
        "streams": _non_negative,
        "total_frames": _non_negative,
        "dropped_frames": _non_negative,
        "pixels_processed": _non_negative,
        "start_time": _unix_time,
        "end_time": _unix_time,
        "step_seconds": _positive,
    },
    Telemetry: {"step_seconds": _positive},
    Output: {},
}


def _key_path(path: str, key: str) -> str:
    """``$.a.b`` for plain keys, ``$.a["odd key"]`` (JSON-quoted, so one line) for the rest."""
    if key.isidentifier() and key.isascii():
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"


def _too_deep(path: str, depth: int | None) -> ResultsFileError:
    where = f"{depth} levels deep" if depth is not None else "too deeply for the decoder"
    return ResultsFileError(
        "too_deep",
        f"the document nests {where}",
        json_path=path,
        expected=f"at most {MAX_DEPTH} levels of nesting",
    )


def _as_float(value: int | float, path: str) -> float:
    """``value`` as a finite float, or the error that says why it is not one."""
    try:
        number = float(value)
    except OverflowError:  # only an int gets here; str() of it may itself be refused (over 4,300 digits)
        digits = int(abs(int(value)).bit_length() * math.log10(2)) + 1
        number = math.inf
        shown = f"an integer of about {digits} digits"
    else:
        shown = repr(value)
    if not math.isfinite(number):
        raise ResultsFileError(
            "out_of_range",
            f"{shown} does not fit a float (largest about 1.8e308)",
            json_path=path,
            expected="a finite number",
        )
    return number


def _check_any(value: Any, path: str, depth: int) -> None:
    """Unknown fields and ``test_metadata``: any JSON, but every number finite and the nesting bounded.
    Iterative, so the walk itself cannot hit the recursion limit."""
    stack = [(value, path, depth)]
    while stack:
        item, where, level = stack.pop()
        if isinstance(item, bool) or item is None or isinstance(item, str):
            continue
        if isinstance(item, int | float):
            _as_float(item, where)
            continue
        if level >= MAX_DEPTH:
            raise _too_deep(where, level + 1)
        if isinstance(item, list):
            if _all_finite(item):
                continue
            stack.extend((v, f"{where}[{i}]", level + 1) for i, v in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            stack.extend((v, _key_path(where, k), level + 1) for k, v in reversed(list(item.items())))


def _all_finite(values: list[Any]) -> bool:
    """Fast path for long numeric lists (telemetry); False sends the caller element by element."""
    try:
        return all(map(math.isfinite, values))
    except (TypeError, OverflowError):
        return False


def _check_samples(samples: Samples, path: str) -> None:
    if samples.timestamps is None:
        return
    stamps, where = samples.timestamps, f"{path}.timestamps"
    if len(stamps) != len(samples.values):
        raise ResultsFileError(
            "inconsistent",
            f"{len(stamps)} timestamps for {len(samples.values)} values",
            json_path=where,
            expected="one timestamp per value",
        )
    for i, t in enumerate(stamps):
        problem = _unix_time(t)
        if problem is not None:
            raise ResultsFileError(
                "out_of_range",
                f"timestamp {t!r} is out of range",
                json_path=f"{where}[{i}]",
                expected=problem,
            )
    for i in range(1, len(stamps)):
        if not stamps[i] > stamps[i - 1]:
            raise ResultsFileError(
                "inconsistent",
                f"timestamp {stamps[i]!r} does not follow {stamps[i - 1]!r}",
                json_path=f"{where}[{i}]",
                expected="strictly increasing timestamps",
            )


def _check_struct(struct: msgspec.Struct, path: str) -> None:
    """A schema struct: every field by its type, and the field rules of this struct type."""
    rules = _RULES.get(type(struct), {})
    for name in struct.__struct_fields__:
        value = getattr(struct, name)
        where = f"{path}.{name}"
        if value is None or isinstance(value, bool | str):
            continue
        if isinstance(value, int | float):
            number = _as_float(value, where)
            rule = rules.get(name)
            expected = rule(number) if rule is not None else None
            if expected is not None:
                raise ResultsFileError(
                    "out_of_range", f"{name} is {value!r}", json_path=where, expected=expected
                )
        elif isinstance(value, msgspec.Struct):
            _check_struct(value, where)
            if isinstance(value, Samples):
                _check_samples(value, where)
        elif isinstance(value, list):
            if _all_finite(value):
                continue
            for i, item in enumerate(value):
                if isinstance(item, msgspec.Struct):
                    _check_struct(item, f"{where}[{i}]")
                else:
                    _check_any(item, f"{where}[{i}]", 3)
        else:
            _check_any(value, where, 3)  # dict[str, Any]: the same walk as unknown fields


def validate_run(results: ResultsFile, extras: list[dict[str, Any]]) -> None:
    """Raise :class:`ResultsFileError` for the first value the maths downstream cannot hold (see the module
    docstring); return for a run every consumer can compute with."""
    if not results.scenarios:
        raise ResultsFileError(
            "empty_run",
            "the run has no scenarios; publishing it would make an empty run the latest one on every dashboard",
            json_path="$.scenarios",
            expected="at least one scenario",
        )
    if results.test_metadata is not None:
        _check_any(results.test_metadata, "$.test_metadata", 1)
    for index, scenario in enumerate(results.scenarios):
        path = f"$.scenarios[{index}]"
        _check_struct(scenario, path)
        for key, value in extras[index].items():
            _check_any(value, _key_path(path, key), 3)
