"""Decoding results files: the validating msgspec decoder against stdlib json (which validates nothing)."""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path

from bench.harness import Row, measure
from shared.resultsfile import decode_results

REPO = Path(__file__).resolve().parent.parent


def big_run(scenarios: int = 100, samples: int = 3600) -> bytes:
    """100 scenarios with one hour of 1 s samples in four series (about 11 MB)."""
    telemetry = {
        "step_seconds": 1,
        "power_watts": [10 + (i % 17) * 0.123456 for i in range(samples)],
        "cpu_usage_cores": [2 + (i % 13) * 0.0123456 for i in range(samples)],
        "container_cpu_percent": [40 + (i % 11) * 0.123456 for i in range(samples)],
        "gpu_usage_cores": [(i % 7) * 0.0123456 for i in range(samples)],
    }
    scenario = {
        "name": "4 Streams @ 2500k",
        "bitrate": "2500k",
        "resolution": "1280x720",
        "fps": 30,
        "start_time": 1.0,
        "end_time": 3601.0,
        "telemetry": telemetry,
    }
    return json.dumps({"scenarios": [scenario] * scenarios}).encode()


def run() -> list[Row]:
    rows = []
    for label, data in (
        ("15-scenario example", (REPO / "tests/data/test_results_20251228_203216.json").read_bytes()),
        ("100 x 1 h telemetry", big_run()),
    ):
        fast, n_fast = measure(partial(decode_results, data, "test_results_x.json"), repeat=5)
        slow, n_slow = measure(partial(json.loads, data), repeat=5)
        size = f"{len(data) / 1e6:.2f} MB"
        rows.append(
            Row(
                f"ingest: decode+validate {label}", fast, n_fast, f"{size}, {len(data) / fast / 1e6:.0f} MB/s"
            )
        )
        rows.append(
            Row(f"ingest: stdlib json.loads {label}", slow, n_slow, f"ratio msgspec/json {fast / slow:.2f}")
        )
    return rows
