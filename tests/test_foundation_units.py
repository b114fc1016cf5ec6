"""Pure pieces of the foundation: results-file decoding, configuration, subjects, schema docs."""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import pytest

from services.cli import write_schemas
from services.ingest.publisher import kv_key
from shared import subjects
from shared.config import ConfigError, byte_size, flag, redact_url
from shared.resultsfile import ResultsFileError, TruncatedFileError, decode_results, is_results_file_name
from shared.schemas import PUBLISHED_MESSAGES

REPO = Path(__file__).resolve().parent.parent


class TestDecodeResults:
    def test_error_names_path_and_expectation(self) -> None:
        doc = {"scenarios": [{"name": "a"}, {"name": "b"}, {"name": "c"}, {"name": "d", "fps": "thirty"}]}
        with pytest.raises(ResultsFileError) as err:
            decode_results(json.dumps(doc).encode(), "test_results_x.json")
        assert err.value.reason == "schema"
        assert err.value.json_path == "$.scenarios[3].fps"
        assert err.value.expected == "int | float | null"

    def test_missing_scenarios(self) -> None:
        with pytest.raises(ResultsFileError) as err:
            decode_results(b'{"test_date": "x"}', "test_results_x.json")
        assert (err.value.reason, err.value.json_path) == ("schema", "$")
        assert "scenarios" in err.value.message

    @pytest.mark.parametrize("data", [b"", b"   ", b'{"scenarios": [{"name": "a"', b'{"scenarios": ['])
    def test_truncated_documents_are_retryable(self, data: bytes) -> None:
        with pytest.raises(TruncatedFileError):
            decode_results(data, "test_results_x.json")

    def test_malformed_json_gives_line_and_column(self) -> None:
        with pytest.raises(ResultsFileError) as err:
            decode_results(b'{\n  "scenarios": [\n    {"fps": NaN}\n  ]\n}', "test_results_x.json")
        assert err.value.reason == "invalid_json"
        assert "line 3, column 13" in err.value.message
        assert "NaN" in err.value.message

    def test_run_id_digest_and_extras(self) -> None:
        data = b'{"scenarios": [{"name": "a", "custom": {"k": 1}}]}'
        run = decode_results(data, "/some/dir/test_results_20251228_203216.json")
        assert run.run_id == "test_results_20251228_203216"
        assert run.file_name == "test_results_20251228_203216.json"
        # sha256 of the bytes above, computed with `sha256sum`.
        assert run.sha256 == "e645834c409051aa56001b1c1ecb233fc063f4c214a9aadb370991bb1ea719d4"
        expected = hashlib.sha256(f"test_results_20251228_203216\n{run.sha256}".encode()).hexdigest()[:16]
        assert run.digest == expected
        assert run.extras == [{"custom": {"k": 1}}]

    def test_go_writer_shapes_are_accepted(self) -> None:
        # The Go ResultsWriter writes numeric bitrates, int times and frame counters.
        data = json.dumps(
            {
                "test_date": "2026-01-01T00:00:00Z",
                "test_metadata": {"timestamp": 1, "platform": "linux", "source": "go"},
                "scenarios": [
                    {
                        "name": "job-1",
                        "bitrate": 2500,
                        "start_time": 1700000000,
                        "end_time": 1700000060,
                        "duration": 60.0,
                        "total_frames": 1800,
                        "dropped_frames": 3,
                        "power_watts": [41.5],
                        "step_seconds": 60.0,
                        "encoder_type": "ffmpeg",
                    }
                ],
            }
        ).encode()
        run = decode_results(data, "test_results_go.json")
        scenario = run.results.scenarios[0]
        assert scenario.bitrate == 2500
        assert scenario.total_frames == 1800
        assert run.results.test_metadata == {"timestamp": 1, "platform": "linux", "source": "go"}

    @pytest.mark.parametrize(
        ("name", "ok"),
        [
            ("test_results_20251228_203216.json", True),
            ("test_results_manual.json", True),
            ("test_results_x.json.tmp", False),
            ("results_1.json", False),
            ("test_results_.txt", False),
        ],
    )
    def test_file_name_filter(self, name: str, ok: bool) -> None:
        assert is_results_file_name(name) is ok


def test_sha256_matches_an_independent_computation() -> None:
    import hashlib

    data = (REPO / "tests/data/test_results_20251229_172550.json").read_bytes()
    run = decode_results(data, "test_results_20251229_172550.json")
    assert run.sha256 == hashlib.sha256(data).hexdigest()


class TestConfig:
    def _parser(self) -> argparse.ArgumentParser:
        parser = argparse.ArgumentParser()
        flag(parser, "--port", env="TE_TEST_PORT", default=9520, type=int, help="p")
        flag(parser, "--poll", env="TE_TEST_POLL", default=False, type=bool, help="b")
        flag(parser, "--token", env="TE_TEST_TOKEN", default="s3cret", help="t", secret=True)
        return parser

    def test_env_supplies_default_and_flag_wins(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TE_TEST_PORT", "9999")
        monkeypatch.setenv("TE_TEST_POLL", "yes")
        parser = self._parser()
        assert parser.parse_args([]).port == 9999
        assert parser.parse_args([]).poll is True
        assert parser.parse_args(["--port", "1"]).port == 1
        assert parser.parse_args(["--no-poll"]).poll is False

    def test_malformed_env_is_a_config_error(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("TE_TEST_PORT", "ninety")
        with pytest.raises(ConfigError, match="TE_TEST_PORT"):
            self._parser()

    def test_help_shows_env_and_hides_secret_defaults(self) -> None:
        text = self._parser().format_help()
        assert "env TE_TEST_PORT; default 9520" in text
        assert "s3cret" not in text

    @pytest.mark.parametrize(
        ("text", "value"),
        [
            ("16MiB", 16 * 1024 * 1024),
            ("500k", 500_000),
            ("1048576", 1048576),
            ("2GiB", 2 * 1024**3),
        ],
    )
    def test_byte_size(self, text: str, value: int) -> None:
        assert byte_size(text) == value

    def test_redact_url(self) -> None:
        assert redact_url("nats://alice:pw@10.0.0.1:4222") == "nats://***@10.0.0.1:4222"
        assert redact_url("nats://tok@host:4222") == "nats://***@host:4222"
        assert redact_url("nats://127.0.0.1:4222") == "nats://127.0.0.1:4222"


class TestSubjects:
    def test_subjects(self) -> None:
        assert subjects.scenario_subject("0123456789abcdef", 3) == "te.ingest.scenario.0123456789abcdef.3"
        assert subjects.run_subject("0123456789abcdef") == "te.ingest.run.0123456789abcdef"
        assert subjects.result_subject("cost", "0123456789abcdef") == "te.results.cost.0123456789abcdef"
        assert subjects.error_subject("ingest") == "te.events.error.ingest"

    @pytest.mark.parametrize("digest", ["", "x.y", "0123456789ABCDEF", "0123456789abcde*", "*", ">"])
    def test_bad_tokens_are_refused(self, digest: str) -> None:
        with pytest.raises(ValueError):
            subjects.run_subject(digest)

    def test_kv_key(self) -> None:
        assert kv_key("test_results_20251228_203216") == "test_results_20251228_203216"
        assert kv_key("test_results_a b.c") == "b64.dGVzdF9yZXN1bHRzX2EgYi5j"


def test_committed_json_schemas_are_current(tmp_path: Path) -> None:
    """docs/schemas is generated from the Structs; a schema change must regenerate it (make schemas)."""
    written = write_schemas(tmp_path)
    assert {p.name for p in written} == {f"{name}.schema.json" for name in PUBLISHED_MESSAGES}
    for path in written:
        committed = REPO / "docs" / "schemas" / path.name
        assert committed.exists(), f"run `make schemas`: {committed} is missing"
        assert committed.read_bytes() == path.read_bytes(), f"run `make schemas`: {committed} is stale"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("gzip", True),
        ("gzip, deflate, br", True),  # what Prometheus and browsers send
        ("deflate, GZIP;q=0.5", True),
        ("*", True),
        ("gzip;q=0", False),
        ("gzip;q=0.0, identity", False),
        ("*;q=0, gzip", True),  # named beats the wildcard, whatever the order
        ("gzip;q=0, *", False),
        ("br, *;q=0.1", True),
        ("identity", False),
        ("", False),
    ],
)
def test_accepts_gzip(header: str, expected: bool) -> None:
    from shared.httpserver import accepts_gzip

    assert accepts_gzip(header) is expected
