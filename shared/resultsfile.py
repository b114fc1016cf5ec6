"""Decoding a results file: bytes in, a validated run or a precise, typed error out. No I/O.

The error always says what was wrong, where (a JSON path such as ``$.scenarios[3].fps``, or a line and
column for malformed JSON) and what was expected, so a person can fix the file from the message alone.
"""

from __future__ import annotations

import hashlib
import re
import time
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

import msgspec

from shared.schemas import ErrorEvent, ResultsFile, Scenario

#: The file names the benchmark runner writes; anything else in the directory is ignored.
RESULTS_GLOB = "test_results_*.json"
_NAME_RE = re.compile(r"^test_results_.*\.json$")

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
        return f"{self.reason}{where}: {self.message}{expected}"

    def to_event(self, service: str, file_name: str) -> ErrorEvent:
        return ErrorEvent(
            service=service,
            reason=self.reason,
            message=self.message,
            at=time.time(),
            file=file_name,
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
    return bool(_NAME_RE.match(name))


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


def decode_results(data: bytes, file_name: str) -> ParsedRun:
    """Validate ``data`` as a results file named ``file_name``.

    Raises :class:`TruncatedFileError` for a document that ends early (retry later) and
    :class:`ResultsFileError` for anything else that is wrong (reject).
    """
    if not data.strip():
        raise TruncatedFileError("the file is empty (still being written?)")
    try:
        results = _DECODER.decode(data)
    except msgspec.ValidationError as exc:  # subclass of DecodeError: must come first
        match = _VALIDATION_RE.match(str(exc))
        assert match is not None
        expected = _EXPECTED_RE.search(match.group("what"))
        raise ResultsFileError(
            "schema",
            str(exc),
            json_path=match.group("path") or "$",
            expected=expected.group("expected") if expected else None,
        ) from None
    except msgspec.DecodeError as exc:
        if "truncated" in str(exc):
            raise TruncatedFileError() from None
        raise _malformed(data, exc) from None
    view = _EXTRAS_DECODER.decode(data)
    extras = [
        {key: msgspec.json.decode(raw) for key, raw in obj.items() if key not in _KNOWN_FIELDS}
        for obj in view.scenarios
    ]
    return ParsedRun(
        run_id=run_id_for(file_name),
        file_name=PurePath(file_name).name,
        sha256=hashlib.sha256(data).hexdigest(),
        size=len(data),
        results=results,
        extras=extras,
    )
