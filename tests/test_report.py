"""Reports (shared/report.py): the CSV keeps the old analysis CSV's columns, order and meaning."""

from __future__ import annotations

import csv
import io
import json

import pytest

from shared.advice import advise
from shared.comparison import RunData, compare_runs
from shared.report import COLUMNS, LEGACY_COLUMNS, render_report
from shared.schemas import AdviceResult, CostResult, ModelInfo
from tests.test_advice import ANALYSIS, example_run, small_run


def example() -> tuple[RunData, AdviceResult]:
    scenarios, modeling, _ = example_run()
    advice = advise(scenarios, modeling, None, None, run_id="r", digest="0123456789abcdef", generation=1)
    return RunData(scenarios, modeling), advice


def old_csv() -> tuple[list[str], list[dict[str, str]]]:
    with ANALYSIS.open(newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def new_csv(text: str) -> tuple[list[str], list[dict[str, str]]]:
    reader = csv.DictReader(io.StringIO(text))
    return list(reader.fieldnames or []), list(reader)


def test_csv_starts_with_the_old_columns_in_order() -> None:
    header, _ = new_csv(render_report(*example(), "csv"))
    old_header, _ = old_csv()
    assert tuple(old_header) == LEGACY_COLUMNS
    assert header[: len(old_header)] == old_header
    assert tuple(header) == COLUMNS and len(set(header)) == len(header)


def test_csv_rows_reproduce_the_old_ranking() -> None:
    _, rows = new_csv(render_report(*example(), "csv"))
    _, old_rows = old_csv()
    # Same row order: by efficiency rank, baseline last.
    assert [r["name"] for r in rows] == [r["name"] for r in old_rows]
    for new, old in zip(rows, old_rows, strict=True):
        assert new["efficiency_rank"] == old["efficiency_rank"]
        assert new["mean_power_w"] == old["mean_power_w"]
        assert new["bitrate"] == old["bitrate"] and new["resolution"] == old["resolution"]
        if old["efficiency_score"]:
            # Throughput per watt, e.g. 8 x 5 Mbps / 18.9 W = 2.1164.
            assert float(new["efficiency_score"]) == pytest.approx(float(old["efficiency_score"]), rel=1e-12)
        else:
            assert new["efficiency_score"] == ""
        assert float(new["duration"]) == pytest.approx(float(old["duration"]), rel=1e-12)
    assert rows[0]["efficiency_score"].startswith("2.1164021164")
    baseline = rows[-1]
    assert (baseline["name"], baseline["is_baseline"], baseline["efficiency_rank"]) == (
        "Baseline (Idle)",
        "true",
        "",
    )
    # New columns: pixels per joule of 8 Streams @ 5000k = 8 x 27,648,000 px/s / 18.9 W = 11,702,857 pixels/J.
    assert float(rows[0]["pixels_per_joule"]) == pytest.approx(8 * 27_648_000 / 18.9)
    assert rows[0]["recommended"] == "true" and rows[0]["output_ladder"] == "1280x720@30"


def small() -> tuple[RunData, AdviceResult, CostResult]:
    scenarios, modeling, cost, qoe = small_run()
    modeling.model = ModelInfo(
        name="linear",
        selection="cv",
        rule_choice="linear",
        n_train=4,
        distinct_streams=3,
        r2=0.97,
        residual_std_error=0.8,
        confidence_level=0.95,
        coefficients={"intercept": 5.0, "streams": 1.5},
        dropped_features={},
        candidates=[],
        trained_at=0.0,
    )
    advice = advise(scenarios, modeling, cost, qoe, run_id="r", digest="0123456789abcdef", generation=1)
    return RunData(scenarios, modeling, cost, qoe), advice, cost


def test_sources_in_every_format() -> None:
    run, advice, _ = small()
    sources = [None, "prometheus", "file", None, "prometheus"]
    _, rows = new_csv(render_report(run, advice, "csv", sources=sources))
    by_name = {r["name"]: r for r in rows}
    assert by_name["1 Streams @ 2500k"]["telemetry_source"] == "prometheus"
    assert by_name["4 Streams @ 1000k"]["telemetry_source"] == ""
    assert {r["energy_price_source"] for r in rows} == {"table"} and {r["currency"] for r in rows} == {"EUR"}
    # CO2 per hour at 10 W and 250 g/kWh: 0.01 kW x 250 g/kWh = 2.5 g = 0.0025 kg.
    assert float(by_name["1 Streams @ 2500k"]["co2_kg_per_hour"]) == pytest.approx(0.0025)
    md = render_report(run, advice, "md", sources=sources)
    assert "- energy price: 0.22 EUR/kWh (table, region eu-west-1)" in md
    assert "- CO2 intensity: 250 g/kWh (table)" in md
    assert "- telemetry of '1 Streams @ 2500k': prometheus" in md
    assert "- model: linear (selection: cv" in md and "streams = 1.5" in md
    assert advice.recommendations[0].justification in md
    document = json.loads(render_report(run, advice, "json", sources=sources))
    assert document["sources"]["co2_intensity_source"] == "table"
    assert document["model"]["name"] == "linear"
    assert document["advice"]["pareto_indices"] == [1, 2, 3]
    # Throughput per watt: 1: 2.5/10 = 0.25; 2: 2 x 2.5/12 = 0.417; 3: 4 x 1/20 = 0.2; 4: 2 x 5/15 = 0.667;
    # then the baseline.
    assert [r["index"] for r in document["rows"]] == [4, 2, 1, 3, 0]


def test_markdown_with_a_comparison() -> None:
    run, advice, _ = small()
    comparison = compare_runs(run, run)
    md = render_report(run, advice, "md", comparison=comparison)
    assert "## Comparison" in md and "0 regression(s)." in md


def test_bad_inputs() -> None:
    run, advice, _ = small()
    with pytest.raises(ValueError, match="format"):
        render_report(run, advice, "xlsx")
    with pytest.raises(ValueError, match="sources"):
        render_report(run, advice, "csv", sources=["file"])
