"""The advisor: which configuration of a run to use, and why. Pure functions, no I/O.

:func:`advise` scores every non-baseline scenario of a run with the four algorithms of
:mod:`shared.scoring`, using the **measured** figures of the modeling result (mean power W, energy J, duration
s) and the QoE result's VMAF when it has one (else the file's). It then ranks them (overall per algorithm,
within each output ladder under the run's primary algorithm), finds the Pareto front of cost against quality
and writes at most :data:`MAX_RECOMMENDATIONS` recommendations, each with one sentence in the right units.

Definitions (units in the names):

* ``cost_per_stream_hour`` = total cost / (duration s / 3600 x streams): currency per stream-hour;
* ``watts_per_stream`` = measured mean power W / streams (gross: idle power included, as a host draws it);
* streams per watt = streams / mean power W (the ``most_streams_per_watt`` recommendation).

Pareto front (:func:`shared.recommender.pareto_front`): x is ``cost_per_stream_hour`` when every candidate has
one, else ``watts_per_stream``; y is VMAF when every candidate has one, else pixels per joule. One metric per
axis for the whole run, so a run never mixes units on an axis. Candidates are the non-baseline scenarios with
a value on the chosen axes.

Recommendations, in this order, at most five, none repeated for the same scenario and kind:

1. ``best_overall``: rank 1 under the primary algorithm, against rank 2;
2. ``cheapest_per_stream_hour`` (when costs exist): lowest currency per stream-hour, against the next lowest;
3. ``most_streams_per_watt``: highest streams per watt, against the next highest;
4. ``best_in_ladder``: the best of each other output ladder (ladders in order of first appearance), against
   the ladder's second best, while there is room.

``min_vmaf`` restricts 2 and 3 (the recommendations that trade quality for cost) to scenarios whose VMAF is
at least ``min_vmaf``; scenarios without a VMAF are then not eligible. Scores and ranks are not filtered.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from shared.parsing import is_baseline, output_ladder_id, stream_count
from shared.recommender import Candidate, best_per_ladder, pareto_front, rank, rank_by_ladder
from shared.schemas import (
    AdviceResult,
    AdviceScenario,
    CostResult,
    CostScenario,
    ModelingResult,
    ModelingScenario,
    QoEResult,
    QoEScenario,
    RankedScenario,
    Recommendation,
    RecommendResponse,
    Scenario,
)
from shared.scoring import (
    UNITS,
    Algorithm,
    Measured,
    Score,
    ScoreError,
    choose_algorithm_with_reason,
    score,
    validate_vmaf,
    vmaf_of,
)
from shared.units import SECONDS_PER_HOUR

MAX_RECOMMENDATIONS = 5

#: The scoring algorithms, in the order ``auto`` prefers them (most information first). The primary
#: algorithm's tie-break follows this order.
ALGORITHMS: tuple[Algorithm, ...] = (
    Algorithm.QOE_EFFICIENCY,
    Algorithm.PIXELS_PER_JOULE,
    Algorithm.THROUGHPUT_PER_WATT,
    Algorithm.QUALITY_PER_WATT,
)

_QUALITY_ALGORITHMS = (Algorithm.QUALITY_PER_WATT, Algorithm.QOE_EFFICIENCY)

#: AdviceScenario field holding each algorithm's score (the unit is in the field name).
SCORE_FIELDS: dict[Algorithm, str] = {
    Algorithm.THROUGHPUT_PER_WATT: "throughput_mbps_per_watt",
    Algorithm.PIXELS_PER_JOULE: "pixels_per_joule",
    Algorithm.QUALITY_PER_WATT: "vmaf_per_watt",
    Algorithm.QOE_EFFICIENCY: "quality_weighted_pixels_per_joule",
}


def fmt(value: float) -> str:
    """Four significant digits; thousands separators from 10,000 up (``140,400,000`` rather than 1.404e+08)."""
    if not math.isfinite(value):
        return str(value)
    if abs(value) >= 1e4:
        rounded = float(f"{value:.4g}")
        return f"{rounded:,.0f}"
    return f"{value:.4g}"


_Indexed = TypeVar("_Indexed", ModelingScenario, CostScenario, QoEScenario)


def by_index(rows: Sequence[_Indexed] | None) -> dict[int, _Indexed]:
    """Worker result rows keyed by scenario index (the first row wins if a worker repeated one)."""
    out: dict[int, _Indexed] = {}
    for row in rows or ():
        out.setdefault(row.index, row)
    return out


def resolve_vmaf(scenario: Scenario, qoe: QoEScenario | None) -> tuple[float | None, str | None]:
    """(validated VMAF, source): the QoE result's score when it has one, else the file's; (None, None) when
    neither is a valid VMAF."""
    for value, source in ((qoe.vmaf_score if qoe else None, "qoe"), (scenario.vmaf_score, "file")):
        if value is None:
            continue
        try:
            return validate_vmaf(value), source
        except ScoreError:
            continue
    return None, None


def cost_per_stream_hour(total_cost: float | None, duration_s: float | None, streams: int) -> float | None:
    """total cost / (duration s / 3600 x streams): currency per stream-hour. None without a cost or a
    positive duration."""
    if total_cost is None or duration_s is None or duration_s <= 0 or streams <= 0:
        return None
    return total_cost / (duration_s / SECONDS_PER_HOUR * streams)


def watts_per_stream(mean_power_w: float | None, streams: int) -> float | None:
    """mean power W / streams. None without a positive power."""
    if mean_power_w is None or not mean_power_w > 0 or streams <= 0:
        return None
    return mean_power_w / streams


def primary_algorithm(choices: Sequence[Algorithm]) -> Algorithm | None:
    """The ``auto`` choice shared by most scenarios; ties go to the earlier algorithm of :data:`ALGORITHMS`
    (qoe_efficiency, then pixels_per_joule, then throughput_per_watt). None without any choice."""
    if not choices:
        return None
    counts = Counter(choices)
    return max(ALGORITHMS, key=lambda a: (counts[a], -ALGORITHMS.index(a)))


@dataclass(frozen=True)
class _Row:
    index: int
    scenario: Scenario
    advice: AdviceScenario
    scores: dict[Algorithm, Score]
    auto: Algorithm


def _row(
    index: int,
    scenario: Scenario,
    modeling: ModelingScenario | None,
    cost: CostScenario | None,
    qoe: QoEScenario | None,
    min_vmaf: float | None,
) -> _Row:
    vmaf, vmaf_source = resolve_vmaf(scenario, qoe)
    measured = Measured(
        mean_power_w=modeling.mean_power_w if modeling else None,
        energy_j=modeling.energy_j if modeling else None,
        duration_s=modeling.duration_s if modeling else None,
        vmaf=vmaf,
    )
    scores = {algo: score(scenario, measured, algo) for algo in ALGORITHMS}
    missing = {}
    for algo, s in scores.items():
        if s.value is None:
            if modeling is None:
                missing[algo.value] = "no modeling result for this scenario"
            elif vmaf_of(scenario, measured) is None and algo in _QUALITY_ALGORITHMS:
                missing[algo.value] = "no VMAF in the QoE result or the file"
            else:
                missing[algo.value] = s.reason or "not computable"
    auto, auto_reason = choose_algorithm_with_reason(scenario, measured)
    streams = stream_count(scenario)
    advice = AdviceScenario(
        index=index,
        name=scenario.name,
        output_ladder=output_ladder_id(scenario),
        streams=streams,
        mean_power_w=measured.mean_power_w,
        energy_j=measured.energy_j,
        duration_s=measured.duration_s,
        vmaf=vmaf,
        vmaf_source=vmaf_source,
        missing_reasons=missing,
        auto_algorithm=auto.value,
        auto_reason=auto_reason,
        cost_per_stream_hour=cost_per_stream_hour(
            cost.total_cost if cost else None, measured.duration_s, streams
        ),
        watts_per_stream=watts_per_stream(measured.mean_power_w, streams),
        meets_min_vmaf=None if min_vmaf is None or vmaf is None else vmaf >= min_vmaf,
        throughput_mbps_per_watt=scores[Algorithm.THROUGHPUT_PER_WATT].value,
        pixels_per_joule=scores[Algorithm.PIXELS_PER_JOULE].value,
        vmaf_per_watt=scores[Algorithm.QUALITY_PER_WATT].value,
        quality_weighted_pixels_per_joule=scores[Algorithm.QOE_EFFICIENCY].value,
    )
    return _Row(index, scenario, advice, scores, auto)


def _candidates(rows: Sequence[_Row], algo: Algorithm) -> list[Candidate]:
    return [
        Candidate(
            name=r.scenario.name or f"scenario {r.index}",
            score=r.scores[algo].value,
            unit=UNITS[algo],
            output_ladder=r.advice.output_ladder,
            mean_power_w=r.advice.mean_power_w,
        )
        for r in rows
    ]


def _label(row: _Row) -> str:
    return f"'{row.scenario.name or f'scenario {row.index}'}'"


def _versus(
    kind: str,
    ordered: Sequence[tuple[_Row, float]],
    unit: str,
    verb: str,
    next_word: str,
    algorithm: Algorithm | None = None,
    qualifier: str = "",
) -> Recommendation | None:
    """A recommendation for ``ordered[0]`` against ``ordered[1]`` (best first, each with its figure)."""
    if not ordered:
        return None
    best, value = ordered[0]
    sentence = f"{_label(best)} {verb} {fmt(value)} {unit}{qualifier}"
    runner_up = ordered[1] if len(ordered) > 1 else None
    ratio = None
    if runner_up is not None:
        other, other_value = runner_up
        if other_value != 0:
            ratio = value / other_value
            sentence += f", {ratio:.2f}x the {next_word} {_label(other)} ({fmt(other_value)} {unit})"
        else:
            sentence += f"; the {next_word} {_label(other)} has {fmt(other_value)} {unit}"
    else:
        sentence += ", the only scenario with this figure to compare"
    return Recommendation(
        kind=kind,
        index=best.index,
        name=best.scenario.name,
        justification=sentence,
        value=value,
        unit=unit,
        algorithm=algorithm.value if algorithm else None,
        output_ladder=best.advice.output_ladder,
        runner_up_index=runner_up[0].index if runner_up else None,
        runner_up_name=runner_up[0].scenario.name if runner_up else None,
        runner_up_value=runner_up[1] if runner_up else None,
        ratio=ratio,
    )


def _ordered(
    rows: Sequence[_Row], figure: Callable[[_Row], float | None], *, descending: bool
) -> list[tuple[_Row, float]]:
    """Rows with a figure, best first; ties keep run order."""
    have = [(r, v) for r in rows if (v := figure(r)) is not None and math.isfinite(v)]
    return sorted(have, key=lambda rv: -rv[1] if descending else rv[1])


def _pareto(rows: Sequence[_Row]) -> tuple[str | None, str | None, list[int]]:
    """(x metric, y metric, scenario indices on the front); see the module docstring for the choice."""
    powered = [r for r in rows if r.advice.watts_per_stream is not None]
    if powered and all(r.advice.cost_per_stream_hour is not None for r in powered):
        x_metric = "cost_per_stream_hour"
    else:
        x_metric = "watts_per_stream"
    y_metric = "vmaf" if powered and all(r.advice.vmaf is not None for r in powered) else "pixels_per_joule"
    points: list[tuple[float, float]] = []
    members: list[int] = []
    for r in rows:
        x = getattr(r.advice, x_metric)
        y = getattr(r.advice, y_metric)
        if x is not None and y is not None:
            points.append((x, y))
            members.append(r.index)
    if not points:
        return None, None, []
    return x_metric, y_metric, [members[i] for i in pareto_front(points)]


def advise(
    scenarios: Sequence[Scenario],
    modeling: ModelingResult | None,
    cost: CostResult | None,
    qoe: QoEResult | None,
    *,
    run_id: str,
    digest: str,
    generation: int,
    min_vmaf: float | None = None,
    computed_at: float = 0.0,
    compute_seconds: float = 0.0,
) -> AdviceResult:
    """Advice for one run (see the module docstring). ``scenarios`` are the run's scenarios in file order;
    the worker results are matched to them by ``index``. Any result may be None: what depends on it is then
    missing, with a reason in ``missing_reasons`` or ``notes``.

    Raises :class:`shared.scoring.ScoreError` (a ValueError) when ``min_vmaf`` is not a VMAF in 0..100."""
    if min_vmaf is not None:
        validate_vmaf(min_vmaf)
    notes: list[str] = []
    if modeling is None:
        notes.append("no modeling result: no measured power or energy, so no scores")
    modeling_rows, cost_rows, qoe_rows = (
        by_index(modeling.scenarios if modeling else None),
        by_index(cost.scenarios if cost else None),
        by_index(qoe.scenarios if qoe else None),
    )
    baseline_index = None
    rows: list[_Row] = []
    for index, scenario in enumerate(scenarios):
        if is_baseline(scenario):
            baseline_index = index if baseline_index is None else baseline_index
            continue
        rows.append(
            _row(
                index, scenario, modeling_rows.get(index), cost_rows.get(index), qoe_rows.get(index), min_vmaf
            )
        )

    # Overall ranks, per algorithm; only scored scenarios get one.
    for algo in ALGORITHMS:
        candidates = _candidates(rows, algo)
        row_of = {id(c): r for c, r in zip(candidates, rows, strict=True)}
        for ranked in rank(candidates):
            if ranked.candidate.score is not None:
                row_of[id(ranked.candidate)].advice.ranks[algo.value] = ranked.rank

    primary = primary_algorithm([r.auto for r in rows])
    counts = Counter(r.auto for r in rows)
    primary_reason = (
        "no non-baseline scenario"
        if primary is None
        else f"the auto choice of {counts[primary]} of {len(rows)} scenarios"
    )
    best_ladder: dict[str, int] = {}
    recommendations: list[Recommendation] = []
    if primary is not None:
        candidates = _candidates(rows, primary)
        row_of = {id(c): r for c, r in zip(candidates, rows, strict=True)}
        ladder_orders: dict[str, list[tuple[_Row, float]]] = {}
        for ladder, ranked_list in rank_by_ladder(candidates).items():
            for ranked in ranked_list:
                if ranked.candidate.score is not None:
                    row = row_of[id(ranked.candidate)]
                    row.advice.ladder_rank = ranked.rank
                    ladder_orders.setdefault(ladder, []).append((row, ranked.candidate.score))
        best_ladder = {ladder: row_of[id(c)].index for ladder, c in best_per_ladder(candidates).items()}
        unit = UNITS[primary]
        overall = [
            (row_of[id(r.candidate)], r.candidate.score)
            for r in rank(candidates)
            if r.candidate.score is not None
        ]
        first = _versus("best_overall", overall, unit, "delivers", "next best", primary)
        if first is None:
            notes.append(f"no scenario could be scored by {primary.value}")
        else:
            recommendations.append(first)

        eligible = rows
        qualifier = ""
        if min_vmaf is not None:
            eligible = [r for r in rows if r.advice.meets_min_vmaf]
            qualifier = f" at VMAF >= {fmt(min_vmaf)}"
            if not eligible:
                notes.append(f"no scenario has a VMAF of at least {fmt(min_vmaf)}")
        currency = cost.currency if cost else ""
        cheapest = _versus(
            "cheapest_per_stream_hour",
            _ordered(eligible, lambda r: r.advice.cost_per_stream_hour, descending=False),
            f"{currency}/stream-hour",
            "costs",
            "next cheapest",
            qualifier=qualifier,
        )
        densest = _versus(
            "most_streams_per_watt",
            _ordered(
                eligible,
                lambda r: 1.0 / r.advice.watts_per_stream if r.advice.watts_per_stream else None,
                descending=True,
            ),
            "streams/W",
            "serves",
            "next best",
            qualifier=qualifier,
        )
        recommendations.extend(r for r in (cheapest, densest) if r is not None)
        for ladder, order in ladder_orders.items():
            if first is not None and ladder == first.output_ladder:
                continue  # its best is the overall best, already recommended
            in_ladder = _versus(
                "best_in_ladder",
                order,
                unit,
                "is the best of ladder " + ladder + " at",
                "ladder's next best",
                primary,
            )
            if in_ladder is not None:
                recommendations.append(in_ladder)
        recommendations = recommendations[:MAX_RECOMMENDATIONS]

    x_metric, y_metric, front = _pareto(rows)
    if x_metric is None:
        notes.append(
            "no Pareto front: no scenario has both a cost (or power) and a VMAF (or pixels per joule)"
        )
    on_front = set(front)
    recommended = {r.index for r in recommendations}
    for row in rows:
        row.advice.pareto = row.index in on_front
        row.advice.recommended = row.index in recommended
    return AdviceResult(
        run_id=run_id,
        digest=digest,
        generation=generation,
        primary_algorithm=primary.value if primary else None,
        primary_unit=UNITS[primary] if primary else None,
        primary_reason=primary_reason,
        currency=cost.currency if cost else None,
        min_vmaf=min_vmaf,
        baseline_index=baseline_index,
        scenarios=[r.advice for r in rows],
        best_per_ladder=best_ladder,
        pareto_x_metric=x_metric,
        pareto_y_metric=y_metric,
        pareto_indices=front,
        recommendations=recommendations,
        notes=notes,
        computed_at=computed_at,
        compute_seconds=compute_seconds,
    )


def recommend(
    advice: AdviceResult, *, algorithm: str = "auto", ladder: str | None = None, top: int = 10
) -> RecommendResponse:
    """The ranked answer to "which configuration should I run?": the run's scenarios scored under
    ``algorithm`` (``auto``: the run's primary algorithm), best first, optionally only one output ladder and
    only those meeting the advice's ``min_vmaf``, cut to ``top``. Ranks are recomputed within the selection
    (1 = best; equal scores keep file order). Raises ValueError for an unknown algorithm or ``top`` < 1."""
    if top < 1:
        raise ValueError(f"top must be >= 1, got {top}")
    if algorithm == "auto":
        if advice.primary_algorithm is None:
            return RecommendResponse(
                run_id=advice.run_id,
                algorithm="auto",
                unit="",
                currency=advice.currency,
                rows=[],
                recommendations=advice.recommendations,
                filtered_out=len(advice.scenarios),
                notes=[*advice.notes, "no scenario could be scored"],
            )
        algorithm = advice.primary_algorithm
    try:
        algo = Algorithm(algorithm)
    except ValueError:
        names = ", ".join(a.value for a in Algorithm)
        raise ValueError(f"unknown algorithm {algorithm!r}; expected one of {names}") from None
    if algo is Algorithm.AUTO:
        raise ValueError("auto resolves to the run's primary algorithm; it has no score of its own")
    field = SCORE_FIELDS[algo]
    chosen = [
        s
        for s in advice.scenarios
        if getattr(s, field) is not None
        and (ladder is None or s.output_ladder == ladder)
        and s.meets_min_vmaf is not False
    ]
    ordered = sorted(chosen, key=lambda s: (-float(getattr(s, field)), s.index))
    rows = [
        RankedScenario(
            rank=position,
            index=s.index,
            name=s.name or "",
            output_ladder=s.output_ladder,
            score=float(getattr(s, field)),
            unit=UNITS[algo],
            mean_power_w=s.mean_power_w,
            vmaf=s.vmaf,
            cost_per_stream_hour=s.cost_per_stream_hour,
            watts_per_stream=s.watts_per_stream,
            pareto=s.pareto,
            recommended=s.recommended,
        )
        for position, s in enumerate(ordered[:top], start=1)
    ]
    notes = list(advice.notes)
    if ladder is not None and not any(s.output_ladder == ladder for s in advice.scenarios):
        ladders = sorted({s.output_ladder for s in advice.scenarios})
        notes.append(f"no scenario has output ladder {ladder!r}; the run has {', '.join(ladders) or 'none'}")
    return RecommendResponse(
        run_id=advice.run_id,
        algorithm=algo.value,
        unit=UNITS[algo],
        currency=advice.currency,
        rows=rows,
        recommendations=advice.recommendations,
        filtered_out=len(advice.scenarios) - len(rows),
        notes=notes,
    )
