"""Ranking scenarios by an efficiency score, overall and within each output ladder, and the Pareto front.

Pure functions over :class:`Candidate` rows. Higher scores are better; scenarios without a score rank last
(in input order among themselves), and ties keep input order.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Candidate:
    name: str
    score: float | None
    #: Unit of ``score``, e.g. ``Mbps/W`` (from :data:`shared.scoring.UNITS`).
    unit: str
    output_ladder: str = "unknown"
    mean_power_w: float | None = None


@dataclass(frozen=True)
class Ranked:
    rank: int
    candidate: Candidate


def rank(candidates: Sequence[Candidate]) -> list[Ranked]:
    """Descending by score; unscored last. Ranks start at 1; unscored candidates are ranked too."""
    order = sorted(
        range(len(candidates)),
        key=lambda i: (candidates[i].score is None, -(candidates[i].score or 0.0), i),
    )
    return [Ranked(position + 1, candidates[i]) for position, i in enumerate(order)]


def rank_by_ladder(candidates: Sequence[Candidate]) -> dict[str, list[Ranked]]:
    """Ranking within each output ladder (ladders in order of first appearance)."""
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.output_ladder, []).append(candidate)
    return {ladder: rank(group) for ladder, group in groups.items()}


def best_per_ladder(candidates: Sequence[Candidate]) -> dict[str, Candidate]:
    """The top scored candidate of each ladder; ladders with no scored candidate are left out."""
    best = {}
    for ladder, ranked in rank_by_ladder(candidates).items():
        if ranked[0].candidate.score is not None:
            best[ladder] = ranked[0].candidate
    return best


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices (ascending, i.e. input order) of the points no other point dominates, minimising x and
    maximising y (x = a cost such as currency per stream-hour, y = a benefit such as VMAF).

    Point j dominates point i when x_j <= x_i and y_j >= y_i and at least one of the two is strict.

    * Duplicates: identical points do not dominate each other, so every copy of a non-dominated point is on
      the front (the caller decides how to present equals; dropping one would be arbitrary).
    * Equal x: only the points with the highest y at that x can be on the front.
    * A point with a NaN coordinate is never on the front and never dominates (it cannot be compared).
      Infinite values compare as numbers (x = +inf is on the front only with the highest y of all).

    O(n log n): sort by x ascending; a group of equal x is on the front exactly when its best y beats the
    best y of every point with a strictly smaller x.
    """
    finite = [i for i, (x, y) in enumerate(points) if not (math.isnan(x) or math.isnan(y))]
    finite.sort(key=lambda i: points[i][0])
    front: list[int] = []
    best_y_left = -math.inf  # best y among points of strictly smaller x
    position = 0
    while position < len(finite):
        x = points[finite[position]][0]
        group_end = position
        while group_end < len(finite) and points[finite[group_end]][0] == x:
            group_end += 1
        group = finite[position:group_end]
        top_y = max(points[i][1] for i in group)
        # The very first group has no point to its left: its best points are always on the front, even at
        # y = -inf (nothing can beat them on x).
        if top_y > best_y_left or position == 0:
            front.extend(i for i in group if points[i][1] == top_y)
        best_y_left = max(best_y_left, top_y)
        position = group_end
    return sorted(front)
