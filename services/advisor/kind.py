"""The ``advice`` kind: which configuration to run, computed for every run once its modeling, cost and QoE
results are in (a derived kind: ``needs``).

Every scenario is scored by the four algorithms of shared/scoring.py, ranked overall and within its output
ladder, placed on or off the Pareto front of cost per stream-hour (W per stream without a price) against
quality, and the best few are recommended with a sentence each (shared/advice.py). The same process answers
the advisor's NATS API (services/advisor/api.py: runs, recommend, compare, plan, report, delete).

Its families are ``results_scenario_*`` metrics with the results labels (so they join with every other
results series), on the gateway's :9520 and the legacy results listener :9502.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from typing import TYPE_CHECKING

from shared.advice import SCORE_FIELDS, advise
from shared.config import flag
from shared.families import RESULTS_LABELS, Family, RunView, results_labelsets
from shared.kinds import Computer, Kind
from shared.pricing import RegionalPricing, add_pricing_arguments, pricing_from_args
from shared.runs import RunInput, make_result
from shared.schemas import AdviceResult, CostResult, ModelingResult, QoEResult
from shared.scoring import UNITS

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS


def _vmaf(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 100:
        raise ValueError(f"VMAF is 0..100, got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    flag(
        parser,
        "--min-vmaf",
        env="ADVICE_MIN_VMAF",
        default=None,
        type=_vmaf,
        help="quality floor for the cheapest/most-streams recommendations (VMAF 0..100)",
    )
    # Fleet plans price energy and CO2 like the cost kind (same flags, same environment variables).
    add_pricing_arguments(parser)


@dataclass(frozen=True)
class AdviceSettings:
    min_vmaf: float | None
    pricing: RegionalPricing
    energy_cost_per_kwh: float | None
    cpu_cost_per_hour: float
    currency: str
    #: Namespace of the pricing flags, to price another region on request.
    pricing_args: argparse.Namespace


def settings_from_args(args: argparse.Namespace) -> AdviceSettings:
    return AdviceSettings(
        min_vmaf=args.min_vmaf,
        pricing=pricing_from_args(args),
        energy_cost_per_kwh=args.energy_cost,
        cpu_cost_per_hour=args.cpu_cost,
        currency=args.currency,
        pricing_args=args,
    )


def advice_for(run: RunInput, min_vmaf: float | None) -> AdviceResult:
    """The advice of one run from its scenarios and its modeling, cost and QoE results (pure)."""
    advice = advise(
        [m.scenario for m in run.scenarios],
        run.result("modeling", ModelingResult),
        run.result("cost", CostResult),
        run.result("qoe", QoEResult),
        run_id=run.manifest.run_id,
        digest=run.manifest.digest,
        generation=run.manifest.generation,
        min_vmaf=min_vmaf,
    )
    return make_result(AdviceResult, run, **_content(advice))


def _content(advice: AdviceResult) -> dict[str, object]:
    skip = {"run_id", "digest", "generation", "computed_at", "compute_seconds", "schema_version", "kind"}
    return {f: getattr(advice, f) for f in advice.__struct_fields__ if f not in skip}


def families(view: RunView) -> list[Family]:
    advice = view.result("advice", AdviceResult)
    if advice is None:
        return []
    by_index = {s.index: s for s in advice.scenarios}
    currency = advice.currency or "currency"
    scores = {
        algo: Family(
            f"results_scenario_{field}",
            f"Efficiency score {algo.value} ({UNITS[algo]})",
            RESULTS_LABELS,
        )
        for algo, field in SCORE_FIELDS.items()
    }
    rank = Family(
        "results_scenario_efficiency_rank",
        "Rank of the scenario in its run under each scoring algorithm (1 = best)",
        (*RESULTS_LABELS, "algorithm"),
    )
    ladder_rank = Family(
        "results_scenario_ladder_rank",
        "Rank within its output ladder under the run's primary algorithm (1 = best)",
        RESULTS_LABELS,
    )
    pareto = Family(
        "results_scenario_pareto",
        "1 when the scenario is on the Pareto front of cost per stream-hour (or W per stream) vs quality",
        RESULTS_LABELS,
    )
    recommended = Family(
        "results_scenario_recommended", "1 when a recommendation names the scenario", RESULTS_LABELS
    )
    per_stream_hour = Family(
        "results_scenario_cost_per_stream_hour",
        f"Total cost / (duration h x streams) ({currency}/stream-hour)",
        RESULTS_LABELS,
    )
    watts_per_stream = Family(
        "results_scenario_watts_per_stream", "Mean power / streams (W/stream)", RESULTS_LABELS
    )
    for message, labels in results_labelsets(view):
        s = by_index.get(message.index)
        if s is None:
            continue
        for algo, field in SCORE_FIELDS.items():
            scores[algo].add(labels, getattr(s, field))
        for algorithm, position in sorted(s.ranks.items()):
            rank.add((*labels, algorithm), position)
        ladder_rank.add(labels, s.ladder_rank)
        pareto.add(labels, 1.0 if s.pareto else 0.0)
        recommended.add(labels, 1.0 if s.recommended else 0.0)
        per_stream_hour.add(labels, s.cost_per_stream_hour)
        watts_per_stream.add(labels, s.watts_per_stream)
    primary = Family(
        "results_advice_primary_algorithm_info",
        "The scoring algorithm the latest run is ranked by, and its unit",
        ("run_id", "algorithm", "unit"),
    )
    if advice.primary_algorithm is not None:
        primary.add((advice.run_id, advice.primary_algorithm, advice.primary_unit or ""), 1.0)
    recommendation = Family(
        "results_advice_recommendation_info",
        "The latest run's recommendations, in order (value = position, 1 first)",
        ("run_id", "kind", "scenario", "output_ladder", "justification"),
    )
    for position, r in enumerate(advice.recommendations, start=1):
        recommendation.add(
            (advice.run_id, r.kind, r.name or "", r.output_ladder or "", r.justification), float(position)
        )
    return [
        *scores.values(),
        rank,
        ladder_rank,
        pareto,
        recommended,
        per_stream_hour,
        watts_per_stream,
        primary,
        recommendation,
    ]


async def open_advisor(nc: NATS, settings: AdviceSettings) -> Computer:
    from services.advisor.api import start_advisor

    return await start_advisor(nc, settings)


KIND = Kind(
    name="advice",
    result=AdviceResult,
    add_arguments=add_arguments,
    settings=settings_from_args,
    families=families,
    open=open_advisor,
    listener="results",
    needs=("modeling", "cost", "qoe"),
)
