"""Write the Grafana dashboards in deploy/grafana/dashboards/ (``python scripts/make_dashboards.py``).

The JSON files are generated so that every panel has a datasource, a unit and a query; tests check that the
committed files are current and evaluate every query against a real Prometheus scraping the gateway.

Importable anywhere: no datasource uid is written. Panels use the dashboard variable ``${datasource}``
(type datasource, any Prometheus-compatible source); its default is the ``__inputs`` entry
``${DS_PROMETHEUS}``, which "Import dashboard" asks for and replaces with the chosen uid. Provisioned (not
imported) dashboards keep the placeholder, which matches no datasource, so Grafana selects the default one:
the provisioned VictoriaMetrics (``isDefault: true``).

``$run`` selects the run shown by results-family panels (the only family with a ``run_id`` label). Its values
are ``label_values(results_scenario_mean_power_watts, run_id)``: the runs that have results series in the
time range (``transcode_gateway_latest_run_info`` would also list a run whose results are not computed yet),
sorted descending, so the default is the greatest run id, the latest run, as the gateway itself defines it.

To add a dashboard, add one entry to ``DASHBOARDS``; a panel whose query contains ``$run`` gets the ``run``
variable on its dashboard automatically.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "deploy" / "grafana" / "dashboards"
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
#: The import-time input; ``${DS_PROMETHEUS}`` in the JSON is replaced by the uid the user picks.
DS_INPUT = "DS_PROMETHEUS"
RUN_QUERY = "label_values(results_scenario_mean_power_watts, run_id)"
RUN = 'run_id="$run"'


def underscored(expr: str, spaces: int = 8) -> str:
    """``expr`` with its ``scenario`` label in the cost/QoE form (spaces as ``_``), for joining results
    series (raw names) with QoE and cost series. label_replace replaces one match per call, so each nested
    call turns the last remaining space into ``_``; a name with more than ``spaces`` spaces keeps some and
    does not join. ``${1}`` rather than ``$1``: Go's template expansion would read ``$1_`` as a group name."""
    for _ in range(spaces):
        expr = f'label_replace({expr}, "scenario", "${{1}}_${{2}}", "scenario", "(.*) (.*)")'
    return expr


# (title, panel type, unit, [(expr, legend)], width[, table columns]). A ``table`` panel runs its queries
# instantly, merges them into one row per series (by labels) and shows the columns of its last element:
# (field, header, unit) for each column kept, in order, with ``Value #<refId>`` naming query <refId>'s value.
Column = tuple[str, str, str]
Panel = (
    tuple[str, str, str, list[tuple[str, str]], int]
    | tuple[str, str, str, list[tuple[str, str]], int, list[Column]]
)

DASHBOARDS: dict[str, tuple[str, list[Panel]]] = {
    "cost-co2": (
        "transcode-energy: cost and CO2",
        [
            (
                "Total cost by scenario (load-aware)",
                "timeseries",
                "currencyUSD",
                [("cost_total_load_aware", "{{scenario}}")],
                12,
            ),
            (
                "Energy vs compute cost",
                "timeseries",
                "currencyUSD",
                [
                    ("cost_energy_load_aware", "energy {{scenario}}"),
                    ("cost_compute_load_aware", "compute {{scenario}}"),
                ],
                12,
            ),
            (
                "Cost per pixel delivered",
                "timeseries",
                "currencyUSD",
                [("cost_per_pixel", "{{scenario}}")],
                8,
            ),
            (
                "Cost per viewer watch hour",
                "timeseries",
                "currencyUSD",
                [("cost_per_watch_hour", "{{scenario}}")],
                8,
            ),
            (
                "Energy cost per hour at mean power",
                "timeseries",
                "currencyUSD",
                [("cost_usd_per_hour", "{{scenario}}")],
                8,
            ),
            (
                "Monthly projection (720 h)",
                "bargauge",
                "currencyUSD",
                [("cost_monthly_projection", "{{scenario}}")],
                12,
            ),
            (
                "Monthly savings vs idle baseline (negative = costs more)",
                "bargauge",
                "currencyUSD",
                [("cost_monthly_savings", "{{scenario}}")],
                12,
            ),
            ("CO2 per hour", "timeseries", "masskg", [("co2_emissions_kg_per_hour", "{{scenario}}")], 8),
            ("CO2 per month (720 h)", "bargauge", "masskg", [("co2_monthly_projection", "{{scenario}}")], 8),
            (
                "CO2 avoided vs idle baseline per month",
                "bargauge",
                "masskg",
                [("co2_monthly_avoided", "{{scenario}}")],
                8,
            ),
        ],
    ),
    "qoe": (
        "transcode-energy: quality of experience",
        [
            ("VMAF", "timeseries", "none", [("qoe_vmaf_score", "{{scenario}}")], 12),
            ("PSNR", "timeseries", "dB", [("qoe_psnr_score", "{{scenario}}")], 12),
            (
                "Quality per watt (VMAF/W)",
                "timeseries",
                "none",
                [("qoe_quality_per_watt", "{{scenario}}")],
                12,
            ),
            (
                "QoE efficiency (quality-weighted pixels/J)",
                "timeseries",
                "short",
                [("qoe_efficiency_score", "{{scenario}}")],
                12,
            ),
            ("SSIM", "timeseries", "percentunit", [("qoe_ssim_score", "{{scenario}}")], 8),
            ("Frame drop rate", "timeseries", "percentunit", [("qoe_drop_rate", "{{scenario}}")], 8),
            (
                "Time spent computing QoE",
                "timeseries",
                "s",
                [("qoe_computation_duration_seconds", "{{scenario}}")],
                8,
            ),
            (
                # A join across families: results carry the raw scenario name, QoE the underscored one.
                "Energy per VMAF point (results joined with QoE)",
                "bargauge",
                "watth",
                [
                    (
                        underscored(f"results_scenario_total_energy_wh{{{RUN}}}")
                        + " / on(scenario) group_left() qoe_vmaf_score",
                        "{{scenario}}",
                    )
                ],
                12,
            ),
            (
                # QoE and cost share the underscored name: no relabelling needed.
                "Monthly cost per VMAF point (cost joined with QoE)",
                "bargauge",
                "currencyUSD",
                [("cost_monthly_projection / on(scenario) group_left() qoe_vmaf_score", "{{scenario}}")],
                12,
            ),
        ],
    ),
    "results-overview": (
        "transcode-energy: results overview",
        [
            ("Scenarios in the latest run", "stat", "none", [("results_scenarios_total", "scenarios")], 6),
            (
                "Mean power by scenario",
                "bargauge",
                "watt",
                [(f"results_scenario_mean_power_watts{{{RUN}}}", "{{scenario}}")],
                18,
            ),
            (
                "Energy by scenario",
                "bargauge",
                "joule",
                [(f"results_scenario_total_energy_joules{{{RUN}}}", "{{scenario}}")],
                12,
            ),
            (
                "Power above idle baseline",
                "bargauge",
                "watt",
                [(f"results_scenario_delta_power_watts{{{RUN}}}", "{{scenario}}")],
                12,
            ),
            (
                "Efficiency by output ladder (best scenario, pixels/J)",
                "bargauge",
                "short",
                [
                    (
                        f"max by (output_ladder) (results_scenario_efficiency_score{{{RUN}}})",
                        "{{output_ladder}}",
                    )
                ],
                12,
            ),
            (
                "Energy per frame",
                "bargauge",
                "short",
                [(f"results_scenario_energy_mj_per_frame{{{RUN}}}", "{{scenario}} (mJ)")],
                12,
            ),
            (
                "Predicted power with 95 % prediction interval",
                "timeseries",
                "watt",
                [
                    (f"results_scenario_predicted_power_watts{{{RUN}}}", "predicted {{scenario}}"),
                    (f"results_scenario_prediction_interval_low_watts{{{RUN}}}", "low {{scenario}}"),
                    (f"results_scenario_prediction_interval_high_watts{{{RUN}}}", "high {{scenario}}"),
                    (f"results_scenario_mean_power_watts{{{RUN}}}", "measured {{scenario}}"),
                ],
                24,
            ),
            (
                "Measured power spread (mean +- 2 sigma)",
                "timeseries",
                "watt",
                [
                    (f"results_scenario_prediction_confidence_low{{{RUN}}}", "low {{scenario}}"),
                    (f"results_scenario_prediction_confidence_high{{{RUN}}}", "high {{scenario}}"),
                ],
                12,
            ),
            (
                "Container CPU",
                "timeseries",
                "percent",
                [(f"results_scenario_container_cpu_percent{{{RUN}}}", "{{scenario}}")],
                12,
            ),
            (
                "Scenario duration",
                "timeseries",
                "s",
                [(f"results_scenario_duration_seconds{{{RUN}}}", "{{scenario}}")],
                12,
            ),
            (
                "Average power by streams and encoder type",
                "timeseries",
                "watt",
                [
                    (
                        f"avg by (streams, encoder_type) (results_scenario_mean_power_watts{{{RUN}}})",
                        "{{streams}} streams {{encoder_type}}",
                    ),
                ],
                12,
            ),
        ],
    ),
    "recommendations": (
        "transcode-energy: recommendations",
        [
            (
                # The advice kind ranks within each output ladder under the run's primary algorithm.
                "Best configuration per output ladder",
                "table",
                "none",
                [
                    (f"results_scenario_ladder_rank{{{RUN}}} == 1", "ladder rank"),
                    (
                        f"results_scenario_throughput_mbps_per_watt{{{RUN}}}"
                        f" and on(scenario) (results_scenario_ladder_rank{{{RUN}}} == 1)",
                        "Mbps/W",
                    ),
                    (
                        f"results_scenario_pixels_per_joule{{{RUN}}}"
                        f" and on(scenario) (results_scenario_ladder_rank{{{RUN}}} == 1)",
                        "pixels/J",
                    ),
                    (
                        f"results_scenario_cost_per_stream_hour{{{RUN}}}"
                        f" and on(scenario) (results_scenario_ladder_rank{{{RUN}}} == 1)",
                        "cost/stream-h",
                    ),
                ],
                24,
                [
                    ("output_ladder", "output ladder", "none"),
                    ("scenario", "best scenario", "none"),
                    ("Value #B", "throughput per watt", "suffix: Mbps/W"),
                    ("Value #C", "pixels per joule", "suffix: pixels/J"),
                    ("Value #D", "cost per stream-hour", "currencyUSD"),
                ],
            ),
            (
                "Ranked by throughput per watt (bitrate x streams / W), best first",
                "bargauge",
                "suffix: Mbps/W",
                [(f"sort_desc(results_scenario_throughput_mbps_per_watt{{{RUN}}})", "{{scenario}}")],
                12,
            ),
            (
                "Ranked by pixels per joule, best first",
                "bargauge",
                "suffix: pixels/J",
                [(f"sort_desc(results_scenario_pixels_per_joule{{{RUN}}})", "{{scenario}}")],
                12,
            ),
            (
                # One row per scenario: the two axes of the advice's Pareto front, side by side.
                "Quality vs cost (Pareto front = 1)",
                "table",
                "none",
                [
                    (f"results_scenario_cost_per_stream_hour{{{RUN}}}", "cost/stream-h"),
                    (f"results_scenario_pixels_per_joule{{{RUN}}}", "pixels/J"),
                    (f"results_scenario_vmaf_score{{{RUN}}}", "VMAF"),
                    (f"results_scenario_pareto{{{RUN}}}", "Pareto"),
                ],
                24,
                [
                    ("scenario", "scenario", "none"),
                    ("output_ladder", "output ladder", "none"),
                    ("Value #A", "cost per stream-hour", "currencyUSD"),
                    ("Value #B", "pixels per joule", "suffix: pixels/J"),
                    ("Value #C", "VMAF", "none"),
                    ("Value #D", "on the Pareto front", "bool"),
                ],
            ),
            (
                "Recommendations (in order)",
                "table",
                "none",
                # Filtered on $run through a results series of the run (the run_id filter the tests count).
                [
                    (
                        "results_advice_recommendation_info"
                        f" and on(run_id) results_scenario_recommended{{{RUN}}}",
                        "position",
                    )
                ],
                24,
                [
                    ("Value", "#", "none"),
                    ("kind", "kind", "none"),
                    ("scenario", "scenario", "none"),
                    ("justification", "why", "none"),
                ],
            ),
        ],
    ),
    "pipeline-health": (
        "transcode-energy: pipeline health",
        [
            ("Gateway ready", "stat", "bool", [("transcode_gateway_ready", "ready")], 6),
            ("Runs known", "stat", "none", [("transcode_gateway_runs", "runs")], 6),
            ("Latest run age", "stat", "s", [("transcode_latest_run_age_seconds", "age")], 6),
            (
                "Results received",
                "stat",
                "none",
                [("sum(transcode_gateway_results_received_total)", "results")],
                6,
            ),
            (
                "Runs waiting per worker type (consumer lag)",
                "timeseries",
                "none",
                [
                    ("transcode_consumer_pending_messages", "waiting {{consumer}}"),
                    ("transcode_consumer_ack_pending_messages", "in progress {{consumer}}"),
                ],
                12,
            ),
            (
                "Processing latency, ingest to result",
                "timeseries",
                "s",
                [("transcode_pipeline_latency_seconds", "{{kind}}")],
                12,
            ),
            (
                "Rejected files (last hour)",
                "timeseries",
                "none",
                [("increase(transcode_ingest_rejected_files_total[1h])", "{{reason}}")],
                8,
            ),
            (
                "Enrichment failures (last hour)",
                "timeseries",
                "none",
                [("increase(transcode_enrichment_failures_total[1h])", "runs")],
                8,
            ),
            (
                "Errors by service (last hour)",
                "timeseries",
                "none",
                [("increase(transcode_service_errors_total[1h])", "{{service}} {{reason}}")],
                8,
            ),
            (
                "Telemetry sources: up, has data (gpu without data is normal without GPUs)",
                "timeseries",
                "bool",
                [
                    ("transcode_telemetry_source_up", "up {{source}}"),
                    ("transcode_telemetry_source_has_data", "has data {{source}}"),
                ],
                12,
            ),
            (
                "Telemetry sources: age of the newest sample",
                "timeseries",
                "s",
                [("transcode_telemetry_source_age_seconds", "{{source}}")],
                12,
            ),
        ],
    ),
}


def table_fields(columns: list[Column]) -> dict[str, Any]:
    """A table panel's transformations and columns: each query's frame cut to the listed fields (which drops
    ``Time``, ``__name__`` and other labels), the frames merged into one row per label set, the columns in
    order, sorted by the first; headers and units per column."""
    keep = [name for name, _, _ in columns]
    return {
        "transformations": [
            {"id": "filterFieldsByName", "options": {"include": {"names": keep}}},
            {"id": "merge", "options": {}},
            {"id": "organize", "options": {"indexByName": {name: i for i, name in enumerate(keep)}}},
            {"id": "sortBy", "options": {"sort": [{"field": keep[0]}]}},
        ],
        "overrides": [
            {
                "matcher": {"id": "byName", "options": name},
                "properties": [{"id": "displayName", "value": header}, {"id": "unit", "value": unit}],
            }
            for name, header, unit in columns
        ],
    }


def panel(index: int, spec: Panel, x: int, y: int) -> dict[str, Any]:
    title, kind, unit, targets, width = spec[:5]
    columns = spec[5] if len(spec) == 6 else []
    table = table_fields(columns) if kind == "table" else {"transformations": [], "overrides": []}
    instant = kind == "table" or any(expr.startswith(("sort(", "sort_desc(")) for expr, _ in targets)
    out: dict[str, Any] = {
        "id": index + 1,
        "title": title,
        "type": kind,
        "datasource": DATASOURCE,
        "gridPos": {"h": 8, "w": width, "x": x, "y": y},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": table["overrides"]},
        "options": {"legend": {"displayMode": "table", "placement": "right"}} if kind == "timeseries" else {},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DATASOURCE, "expr": expr, "legendFormat": legend}
            | ({"instant": True, "range": False} if instant else {})
            | ({"format": "table"} if kind == "table" else {})
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    if table["transformations"]:
        out["transformations"] = table["transformations"]
    return out


def variables(panels: list[Panel]) -> list[dict[str, Any]]:
    """``datasource`` always; ``run`` when a panel filters on it."""
    out: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {"text": f"${{{DS_INPUT}}}", "value": f"${{{DS_INPUT}}}"},
            "hide": 0,
            "refresh": 1,
            "regex": "",
            "options": [],
        }
    ]
    if any("$run" in expr for spec in panels for expr, _ in spec[3]):
        out.append(
            {
                "name": "run",
                "label": "Run",
                "type": "query",
                "datasource": DATASOURCE,
                "definition": RUN_QUERY,
                "query": {"query": RUN_QUERY, "refId": "run"},
                "refresh": 2,  # on time-range change: a new run appears without reloading the dashboard
                "sort": 2,  # alphabetical, descending: the first (default) value is the latest run
                "current": {},
                "hide": 0,
                "includeAll": False,
                "multi": False,
                "options": [],
                "regex": "",
            }
        )
    return out


def dashboard(uid: str, title: str, panels: list[Panel]) -> dict[str, Any]:
    laid_out = []
    x = y = 0
    for i, spec in enumerate(panels):
        width = spec[4]
        if x + width > 24:
            x, y = 0, y + 8
        laid_out.append(panel(i, spec, x, y))
        x += width
    return {
        "__inputs": [
            {
                "name": DS_INPUT,
                "label": "Prometheus or VictoriaMetrics",
                "description": "where the transcode-energy gateway (:9520) is scraped",
                "type": "datasource",
                "pluginId": "prometheus",
                "pluginName": "Prometheus",
            }
        ],
        "__requires": [{"type": "datasource", "id": "prometheus", "name": "Prometheus", "version": "1.0.0"}],
        "uid": f"te-{uid}",
        "title": title,
        "tags": ["transcode-energy"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-6h", "to": "now"},
        "templating": {"list": variables(panels)},
        "panels": laid_out,
    }


def render() -> dict[str, str]:
    return {
        f"{uid}.json": json.dumps(dashboard(uid, title, panels), indent=2) + "\n"
        for uid, (title, panels) in DASHBOARDS.items()
    }


if __name__ == "__main__":
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in render().items():
        (OUT / name).write_text(text)
        print(OUT / name)
