"""Processes import only what they use: resident memory is a feature.

numpy costs ~20 MiB per process and scipy far more (scipy.stats ~95 MiB), so the cost and QoE workers (and
everything they share) import neither, and the modeling code imports numpy but never scipy. Each check runs
in a fresh interpreter, since this test process has long since imported both.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

NO_NUMERICS = [
    "shared.integration",
    "shared.cost",
    "shared.telemetry",
    "shared.scenario_stats",
    "shared.pricing",
    "shared.parsing",
    "shared.scoring",
    "shared.student_t",
]
NO_SCIPY = ["shared.modeling", "shared.power_model"]


def heavy_modules_after_importing(modules: list[str]) -> set[str]:
    code = (
        "import sys\n"
        f"import {', '.join(modules)}\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules} & {'numpy', 'scipy'})))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return set(out.split())


def test_shared_worker_modules_import_neither_numpy_nor_scipy() -> None:
    assert heavy_modules_after_importing(NO_NUMERICS) == set()


def test_modeling_imports_no_scipy() -> None:
    assert heavy_modules_after_importing(NO_SCIPY) == {"numpy"}


@pytest.mark.parametrize("service", ["services.cost.service", "services.qoe.service"])
def test_cost_and_qoe_workers_import_neither_numpy_nor_scipy(service: str) -> None:
    assert heavy_modules_after_importing([service]) == set()


def test_modeling_worker_imports_no_scipy() -> None:
    assert "scipy" not in heavy_modules_after_importing(["services.modeling.service"])
