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


@pytest.mark.parametrize(
    "service",
    [
        "services.cost.kind",
        "services.qoe.kind",
        "services.modeling.kind",  # imported by the gateway and the CLI: the fitting code stays out
        "services.exporter.service",
        "services.ingest.service",
        "services.catalog",
    ],
)
def test_workers_gateway_and_ingest_import_neither_numpy_nor_scipy(service: str) -> None:
    assert heavy_modules_after_importing([service]) == set()


def test_modeling_worker_imports_no_scipy() -> None:
    assert "scipy" not in heavy_modules_after_importing(["services.modeling.modeler"])


def test_healthcheck_imports_only_the_standard_library() -> None:
    """The container probe runs every few seconds: the CLI must not import a service to answer it."""
    code = (
        "import sys\n"
        "from services import cli\n"
        "code = cli.main(['healthcheck', 'http://127.0.0.1:9/health', '--timeout', '0.2'])\n"
        "ours = {'services', 'shared', '__main__', '_distutils_hack'}\n"
        "loaded = {m.split('.')[0] for m in sys.modules if not m.startswith('__editable__')}\n"
        "third = sorted(loaded - set(sys.stdlib_module_names) - ours)\n"
        "print(code, ' '.join(third))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.split()
    assert out == ["1"], out  # nothing listens on port 9: exit 1, and no third-party module imported
