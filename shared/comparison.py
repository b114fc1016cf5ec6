"""Run B against run A, configuration by configuration. Pure functions, no I/O.

Scenarios are matched by **configuration**, not by name: (stream count, bitrate Mbps, output ladder id,
encoder kind, codec, preset), each read through :mod:`shared.parsing`; a codec or preset the file does not
name reads as the gateway labels it (``h264``, ``veryfast``). When a configuration occurs several times in a
run, the n-th occurrence in A is matched with the n-th in B (order of appearance); the rest are unmatched.

Per match, A and B side by side for mean power W, energy J, efficiency (pixels/J), total cost and VMAF, with
``delta`` = B - A and ``pct`` = (B - A) / A x 100 (None when A is 0 or a side is missing).

``regression`` is set when B's measured mean power lies outside A's prediction interval for the
configuration (A's ``prediction_interval_low_w``..``high_w``, bounds inclusive), above or below: either way B
no longer behaves as A's model predicts. ``regression_reason`` says which, or why it could not be judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from shared.advice import by_index, resolve_vmaf
from shared.parsing import encoder_kind, output_ladder_id, stream_count, try_bitrate_mbps
from shared.schemas import (
    CostResult,
    ModelingResult,
    QoEResult,
    RunComparison,
    Scenario,
    ScenarioDelta,
    UnmatchedScenario,
)

#: What the gateway labels a scenario that names no codec / preset (docs/compatibility.md G16).
DEFAULT_CODEC = "h264"
DEFAULT_PRESET = "veryfast"


@dataclass(frozen=True)
class RunData:
    """Everything known about one run: its scenarios in file order and the worker results (any may be None)."""

    scenarios: Sequence[Scenario]
    modeling: ModelingResult | None = None
    cost: CostResult | None = None
    qoe: QoEResult | None = None
    run_id: str | None = None

    @property
    def id(self) -> str | None:
        """The run id given, else the one in any worker result."""
        if self.run_id is not None:
            return self.run_id
        for result in (self.modeling, self.cost, self.qoe):
            if result is not None:
                return result.run_id
        return None


@dataclass(frozen=True)
class ConfigKey:
    """The configuration a scenario runs; two scenarios with equal keys are the same experiment."""

    streams: int
    #: Rounded to the nanobit so that 1.001 Mbps read two ways is one key.
    bitrate_mbps: float | None
    output_ladder: str
    encoder_kind: str
    codec: str
    preset: str

    def __str__(self) -> str:
        bitrate = "unknown bitrate" if self.bitrate_mbps is None else f"{self.bitrate_mbps:g} Mbps"
        return (
            f"{self.streams} streams, {bitrate}, {self.output_ladder}, {self.encoder_kind}, "
            f"{self.codec}, {self.preset}"
        )


def config_key(scenario: Scenario) -> ConfigKey:
    mbps = try_bitrate_mbps(scenario.bitrate)
    return ConfigKey(
        streams=stream_count(scenario),
        bitrate_mbps=None if mbps is None else round(mbps, 9),
        output_ladder=output_ladder_id(scenario),
        encoder_kind=encoder_kind(scenario),
        codec=(scenario.encoder or DEFAULT_CODEC).strip().lower(),
        preset=(scenario.preset or DEFAULT_PRESET).strip().lower(),
    )


def delta(a: float | None, b: float | None) -> float | None:
    """B - A, None when either is missing."""
    return None if a is None or b is None else b - a


def pct_change(a: float | None, b: float | None) -> float | None:
    """(B - A) / A x 100, %; None when either is missing or A is 0."""
    if a is None or b is None or a == 0:
        return None
    return (b - a) / a * 100.0


def _judge(b_power: float | None, low: float | None, high: float | None) -> tuple[bool, str | None]:
    if low is None or high is None:
        return False, "not judged: A has no prediction interval for this configuration"
    if b_power is None:
        return False, "not judged: B has no measured mean power"
    if b_power > high:
        return (
            True,
            f"B's mean power {b_power:.4g} W is above A's prediction interval {low:.4g}..{high:.4g} W",
        )
    if b_power < low:
        return (
            True,
            f"B's mean power {b_power:.4g} W is below A's prediction interval {low:.4g}..{high:.4g} W",
        )
    return False, None


def compare_runs(a: RunData, b: RunData) -> RunComparison:
    """B against A (see the module docstring). Deltas are listed in A's scenario order; unmatched scenarios
    of A first, then of B, each in its run's order."""
    notes: list[str] = []
    currency = None
    if a.cost is not None and b.cost is not None:
        if a.cost.currency == b.cost.currency:
            currency = a.cost.currency
        else:
            notes.append(
                f"costs are in different currencies ({a.cost.currency} and {b.cost.currency}): not compared"
            )
    elif a.cost is not None or b.cost is not None:
        notes.append("only one run has a cost result: costs not compared")

    b_queue: dict[ConfigKey, list[int]] = {}
    for index, scenario in enumerate(b.scenarios):
        b_queue.setdefault(config_key(scenario), []).append(index)

    a_model, b_model = (
        by_index(a.modeling.scenarios if a.modeling else None),
        by_index(b.modeling.scenarios if b.modeling else None),
    )
    a_cost, b_cost = (
        by_index(a.cost.scenarios if a.cost else None),
        by_index(b.cost.scenarios if b.cost else None),
    )
    a_qoe, b_qoe = by_index(a.qoe.scenarios if a.qoe else None), by_index(b.qoe.scenarios if b.qoe else None)

    deltas: list[ScenarioDelta] = []
    unmatched: list[UnmatchedScenario] = []
    matched_b: set[int] = set()
    for ai, scenario in enumerate(a.scenarios):
        key = config_key(scenario)
        queue = b_queue.get(key)
        if not queue:
            unmatched.append(UnmatchedScenario(run="a", index=ai, name=scenario.name, configuration=str(key)))
            continue
        bi = queue.pop(0)
        matched_b.add(bi)
        am, bm = a_model.get(ai), b_model.get(bi)
        ac, bc = a_cost.get(ai), b_cost.get(bi)
        a_power, b_power = (am.mean_power_w if am else None), (bm.mean_power_w if bm else None)
        a_energy, b_energy = (am.energy_j if am else None), (bm.energy_j if bm else None)
        a_eff, b_eff = (am.efficiency_score if am else None), (bm.efficiency_score if bm else None)
        a_total = ac.total_cost if ac and currency else None
        b_total = bc.total_cost if bc and currency else None
        a_vmaf = resolve_vmaf(scenario, a_qoe.get(ai))[0]
        b_vmaf = resolve_vmaf(b.scenarios[bi], b_qoe.get(bi))[0]
        low = am.prediction_interval_low_w if am else None
        high = am.prediction_interval_high_w if am else None
        regression, reason = _judge(b_power, low, high)
        # (field stem, A's figure, B's figure, the stem of its % field) -> a_*, b_*, delta_*, pct_*
        figures = (
            ("mean_power_w", a_power, b_power, "mean_power"),
            ("energy_j", a_energy, b_energy, "energy"),
            ("pixels_per_joule", a_eff, b_eff, "pixels_per_joule"),
            ("total_cost", a_total, b_total, "total_cost"),
            ("vmaf", a_vmaf, b_vmaf, "vmaf"),
        )
        side_by_side: dict[str, float | None] = {}
        for stem, va, vb, pct in figures:
            side_by_side |= {
                f"a_{stem}": va,
                f"b_{stem}": vb,
                f"delta_{stem}": delta(va, vb),
                f"pct_{pct}": pct_change(va, vb),
            }
        deltas.append(
            ScenarioDelta(
                configuration=str(key),
                a_index=ai,
                b_index=bi,
                a_name=scenario.name,
                b_name=b.scenarios[bi].name,
                a_prediction_interval_low_w=low,
                a_prediction_interval_high_w=high,
                regression=regression,
                regression_reason=reason,
                **side_by_side,
            )
        )
    for bi, scenario in enumerate(b.scenarios):
        if bi not in matched_b:
            unmatched.append(
                UnmatchedScenario(
                    run="b", index=bi, name=scenario.name, configuration=str(config_key(scenario))
                )
            )
    return RunComparison(
        a_run_id=a.id,
        b_run_id=b.id,
        currency=currency,
        deltas=deltas,
        unmatched=unmatched,
        regressions=sum(d.regression for d in deltas),
        notes=notes,
    )
