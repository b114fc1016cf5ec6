"""One run's report as Markdown, CSV or JSON text: per-scenario figures, rankings, the Pareto set, the power
model, recommendations, where every price, intensity and telemetry value came from, and optionally a
comparison with another run. Pure functions: they return strings; writing them is the caller's business.

The CSV starts with the old analysis CSV's columns, in its order (:data:`LEGACY_COLUMNS`), so that
spreadsheets built on it keep working; new columns follow (:data:`EXTRA_COLUMNS`). Rows are in the old
order: by ``efficiency_rank``, then the unranked scenarios (the baseline, unscored ones) in file order.
Meaning of the shared columns:

* ``efficiency_score`` is **throughput per watt**, bitrate Mbps x streams / mean power W, as in the old file
  (8 x 5 / 18.9 = 2.116 for ``8 Streams @ 5000k``), and ``efficiency_rank`` its rank (1 = best). Pixels per
  joule, the modeling result's "efficiency", is the new ``pixels_per_joule`` column.
* ``duration`` is the measured duration s; ``total_energy_wh`` the measured energy; ``net_*`` the deltas
  against the run's baseline; ``container_power_w`` = container CPU % / 100 x mean power W (the old
  column's formula; the modeling result calls it ``docker_overhead_w``).
* ``median_power_w``, ``docker_overhead_w`` and ``docker_overhead_pct`` stay empty: nothing computes them
  any more (the old file had the last two empty too).
* ``total_pixels`` counts every stream (the old file counted one stream's: B-R13).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

import msgspec

from shared.advice import by_index, fmt
from shared.comparison import RunData
from shared.cost import co2_kg_per_hour
from shared.parsing import is_baseline, output_ladder_id, scenario_duration_s, stream_count
from shared.schemas import AdviceResult, AdviceScenario, RunComparison, Scenario

#: The old analysis CSV's header, in its order.
LEGACY_COLUMNS: tuple[str, ...] = (
    "name",
    "bitrate",
    "resolution",
    "fps",
    "duration",
    "mean_power_w",
    "median_power_w",
    "total_energy_wh",
    "predicted_mean_power_w",
    "net_power_w",
    "net_energy_wh",
    "net_container_cpu_pct",
    "docker_overhead_w",
    "docker_overhead_pct",
    "container_cpu_pct",
    "container_power_w",
    "efficiency_score",
    "efficiency_rank",
    "output_ladder",
    "total_pixels",
)

#: Columns after the legacy ones. Units: W, J, pixels/J, VMAF/W, currency of ``currency``, kg CO2/h.
EXTRA_COLUMNS: tuple[str, ...] = (
    "index",
    "is_baseline",
    "streams",
    "energy_j",
    "pixels_per_joule",
    "vmaf",
    "vmaf_source",
    "vmaf_per_watt",
    "quality_weighted_pixels_per_joule",
    "auto_algorithm",
    "rank_pixels_per_joule",
    "rank_quality_per_watt",
    "rank_qoe_efficiency",
    "ladder_rank",
    "pareto",
    "recommended",
    "prediction_interval_low_w",
    "prediction_interval_high_w",
    "energy_cost",
    "compute_cost",
    "total_cost",
    "currency",
    "cost_per_stream_hour",
    "watts_per_stream",
    "co2_kg_per_hour",
    "telemetry_source",
    "energy_price_source",
    "co2_intensity_source",
)

COLUMNS = LEGACY_COLUMNS + EXTRA_COLUMNS

FORMATS = ("md", "csv", "json")

Cell = str | int | float | bool | None


def _telemetry_source(scenario: Scenario, given: str | None) -> str | None:
    """The caller's per-scenario source (e.g. the ScenarioMessage's enriched telemetry), else the file's."""
    if given is not None:
        return given
    if scenario.telemetry is not None and scenario.telemetry.source is not None:
        return scenario.telemetry.source
    return None


def report_rows(
    run: RunData, advice: AdviceResult, sources: Sequence[str | None] | None = None
) -> list[dict[str, Cell]]:
    """One dict per scenario with every column of :data:`COLUMNS` (None where unknown), in report order."""
    if sources is not None and len(sources) != len(run.scenarios):
        raise ValueError(f"sources has {len(sources)} entries for {len(run.scenarios)} scenarios")
    modeling = by_index(run.modeling.scenarios if run.modeling else None)
    costs = by_index(run.cost.scenarios if run.cost else None)
    advised: dict[int, AdviceScenario] = {a.index: a for a in advice.scenarios}
    rows: list[dict[str, Cell]] = []
    for index, scenario in enumerate(run.scenarios):
        m, c, a = modeling.get(index), costs.get(index), advised.get(index)
        co2 = None
        if run.cost is not None and m is not None and m.mean_power_w is not None:
            co2 = co2_kg_per_hour(m.mean_power_w, run.cost.co2_intensity_g_per_kwh)
        ranks = a.ranks if a else {}
        rows.append(
            {
                "name": scenario.name,
                "bitrate": None if scenario.bitrate is None else str(scenario.bitrate),
                "resolution": scenario.resolution,
                "fps": scenario.fps,
                "duration": m.duration_s if m and m.duration_s is not None else scenario_duration_s(scenario),
                "mean_power_w": m.mean_power_w if m else None,
                "median_power_w": None,
                "total_energy_wh": m.energy_wh if m else None,
                "predicted_mean_power_w": m.predicted_power_w if m else None,
                "net_power_w": m.delta_power_w if m else None,
                "net_energy_wh": m.delta_energy_wh if m else None,
                "net_container_cpu_pct": m.delta_container_cpu_percent if m else None,
                "docker_overhead_w": None,
                "docker_overhead_pct": None,
                "container_cpu_pct": m.container_cpu_percent if m else None,
                "container_power_w": m.docker_overhead_w if m else None,
                "efficiency_score": a.throughput_mbps_per_watt if a else None,
                "efficiency_rank": ranks.get("throughput_per_watt"),
                "output_ladder": output_ladder_id(scenario),
                "total_pixels": m.total_pixels if m else None,
                "index": index,
                "is_baseline": is_baseline(scenario),
                "streams": stream_count(scenario),
                "energy_j": m.energy_j if m else None,
                "pixels_per_joule": a.pixels_per_joule if a else None,
                "vmaf": a.vmaf if a else None,
                "vmaf_source": a.vmaf_source if a else None,
                "vmaf_per_watt": a.vmaf_per_watt if a else None,
                "quality_weighted_pixels_per_joule": a.quality_weighted_pixels_per_joule if a else None,
                "auto_algorithm": a.auto_algorithm if a else None,
                "rank_pixels_per_joule": ranks.get("pixels_per_joule"),
                "rank_quality_per_watt": ranks.get("quality_per_watt"),
                "rank_qoe_efficiency": ranks.get("qoe_efficiency"),
                "ladder_rank": a.ladder_rank if a else None,
                "pareto": a.pareto if a else False,
                "recommended": a.recommended if a else False,
                "prediction_interval_low_w": m.prediction_interval_low_w if m else None,
                "prediction_interval_high_w": m.prediction_interval_high_w if m else None,
                "energy_cost": c.energy_cost if c else None,
                "compute_cost": c.compute_cost if c else None,
                "total_cost": c.total_cost if c else None,
                "currency": run.cost.currency if run.cost else None,
                "cost_per_stream_hour": a.cost_per_stream_hour if a else None,
                "watts_per_stream": a.watts_per_stream if a else None,
                "co2_kg_per_hour": co2,
                "telemetry_source": _telemetry_source(scenario, sources[index] if sources else None),
                "energy_price_source": run.cost.energy_price_source if run.cost else None,
                "co2_intensity_source": run.cost.co2_intensity_source if run.cost else None,
            }
        )

    # The old order: ranked by efficiency first, then the rest in file order (sort is stable).
    def order(row: dict[str, Cell]) -> tuple[bool, int]:
        rank = row["efficiency_rank"]
        return (not isinstance(rank, int), rank if isinstance(rank, int) else 0)

    return sorted(rows, key=order)


def _csv_cell(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)  # repr-precision floats, as the old file wrote them


def render_csv(rows: Sequence[dict[str, Cell]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for row in rows:
        writer.writerow([_csv_cell(row[c]) for c in COLUMNS])
    return out.getvalue()


def _md(value: Cell) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else ""
    if isinstance(value, float):
        return fmt(value)
    return str(value).replace("|", "\\|")


_MD_TABLE = (
    ("efficiency_rank", "Mbps/W rank"),
    ("name", "scenario"),
    ("streams", "streams"),
    ("bitrate", "bitrate"),
    ("output_ladder", "ladder"),
    ("mean_power_w", "mean W"),
    ("efficiency_score", "Mbps/W"),
    ("pixels_per_joule", "pixels/J"),
    ("vmaf", "VMAF"),
    ("quality_weighted_pixels_per_joule", "q-pixels/J"),
    ("cost_per_stream_hour", "cost/stream-h"),
    ("watts_per_stream", "W/stream"),
    ("pareto", "Pareto"),
    ("recommended", "recommended"),
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join("---" for _ in headers) + " |"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def render_markdown(
    run: RunData,
    advice: AdviceResult,
    rows: Sequence[dict[str, Cell]],
    comparison: RunComparison | None = None,
) -> str:
    names = {r["index"]: r["name"] for r in rows}
    lines = [f"# Run {advice.run_id}", ""]
    lines += ["## Recommendations", ""]
    lines += [f"- **{r.kind}**: {r.justification}" for r in advice.recommendations] or ["- none"]
    lines += ["", "## Scenarios", ""]
    if advice.currency:
        lines += [f"Costs in {advice.currency}.", ""]
    lines += _table([h for _, h in _MD_TABLE], [[_md(row[c]) for c, _ in _MD_TABLE] for row in rows])
    lines += ["", "## Rankings", ""]
    lines.append(
        f"Primary algorithm: {advice.primary_algorithm or 'none'}"
        + (f" ({advice.primary_unit}), {advice.primary_reason}." if advice.primary_algorithm else ".")
    )
    lines.append("")
    for ladder, index in advice.best_per_ladder.items():
        lines.append(f"- best of ladder {ladder}: '{names.get(index)}'")
    lines += ["", "## Pareto set", ""]
    if advice.pareto_x_metric:
        lines.append(f"Minimising {advice.pareto_x_metric}, maximising {advice.pareto_y_metric}:")
        lines.append("")
        lines += [f"- '{names.get(i)}'" for i in advice.pareto_indices]
    else:
        lines.append("No Pareto set (no scenario has the figures).")
    lines += ["", "## Power model", ""]
    model = run.modeling.model if run.modeling else None
    if model is not None:
        lines += [
            f"- model: {model.name} (selection: {model.selection}, rule would choose {model.rule_choice})",
            f"- trained on {model.n_train} scenarios, {model.distinct_streams} distinct stream counts, "
            f"runs: {', '.join(model.runs) or 'this run'}",
            f"- R²: {'' if model.r2 is None else fmt(model.r2)}, residual standard error: "
            f"{'' if model.residual_std_error is None else fmt(model.residual_std_error)} W, "
            f"confidence level {model.confidence_level:g}",
            "- coefficients: " + ", ".join(f"{k} = {v:.6g}" for k, v in model.coefficients.items()),
        ]
    else:
        reason = run.modeling.model_reason if run.modeling else "no modeling result"
        lines.append(f"No power model: {reason or 'not given'}.")
    lines += ["", "## Sources", ""]
    if run.cost is not None:
        cost = run.cost
        lines += [
            f"- energy price: {cost.energy_price_per_kwh:g} {cost.currency}/kWh ({cost.energy_price_source}, "
            f"region {cost.region})",
            f"- CO2 intensity: {cost.co2_intensity_g_per_kwh:g} g/kWh ({cost.co2_intensity_source})",
            f"- CPU price: {cost.cpu_cost_per_hour:g} {cost.currency}/core-hour, "
            f"GPU price: {cost.gpu_cost_per_hour:g} {cost.currency}/GPU-hour",
        ]
    else:
        lines.append("- no cost result: no prices or CO2 intensity")
    telemetry = {str(r["name"]): r["telemetry_source"] for r in rows if r["telemetry_source"]}
    if telemetry:
        lines += [f"- telemetry of '{name}': {source}" for name, source in telemetry.items()]
    else:
        lines.append("- telemetry source: not recorded")
    if advice.notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in advice.notes]
    if comparison is not None:
        lines += ["", f"## Comparison: {comparison.b_run_id} against {comparison.a_run_id}", ""]
        lines.append(f"{comparison.regressions} regression(s).")
        lines.append("")
        lines += _table(
            ["configuration", "A W", "B W", "B - A W", "%", "regression"],
            [
                [
                    d.configuration,
                    _md(d.a_mean_power_w),
                    _md(d.b_mean_power_w),
                    _md(d.delta_mean_power_w),
                    _md(d.pct_mean_power),
                    d.regression_reason or "" if d.regression else "",
                ]
                for d in comparison.deltas
            ],
        )
        if comparison.unmatched:
            lines += ["", "Unmatched:", ""]
            lines += [f"- run {u.run}: '{u.name}' ({u.configuration})" for u in comparison.unmatched]
        lines += [f"- {n}" for n in comparison.notes]
    return "\n".join(lines) + "\n"


def render_json(
    run: RunData,
    advice: AdviceResult,
    rows: Sequence[dict[str, Cell]],
    comparison: RunComparison | None = None,
) -> str:
    document: dict[str, Any] = {
        "run_id": advice.run_id,
        "columns": list(COLUMNS),
        "rows": list(rows),
        "advice": advice,
        "model": run.modeling.model if run.modeling else None,
        "model_reason": run.modeling.model_reason if run.modeling else "no modeling result",
        "sources": None
        if run.cost is None
        else {
            "energy_price_per_kwh": run.cost.energy_price_per_kwh,
            "energy_price_source": run.cost.energy_price_source,
            "co2_intensity_g_per_kwh": run.cost.co2_intensity_g_per_kwh,
            "co2_intensity_source": run.cost.co2_intensity_source,
            "currency": run.cost.currency,
            "region": run.cost.region,
        },
        "comparison": comparison,
    }
    return msgspec.json.format(msgspec.json.encode(document)).decode() + "\n"


def render_report(
    run: RunData,
    advice: AdviceResult,
    output_format: str = "md",
    *,
    sources: Sequence[str | None] | None = None,
    comparison: RunComparison | None = None,
) -> str:
    """The report in ``output_format`` (``md``, ``csv`` or ``json``). ``sources``: one telemetry source per scenario
    (e.g. ``prometheus`` from the ScenarioMessage's enriched telemetry), else the file's inline telemetry
    ``source`` is used. The CSV has no room for a comparison and ignores it."""
    if output_format not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {output_format!r}")
    rows = report_rows(run, advice, sources)
    if output_format == "csv":
        return render_csv(rows)
    if output_format == "json":
        return render_json(run, advice, rows, comparison)
    return render_markdown(run, advice, rows, comparison)
