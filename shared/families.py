"""Metric families and the labels they carry: what every result kind contributes to the gateway.

A kind module (services/<kind>/kind.py) turns a :class:`RunView` (the latest run's scenarios plus every
kind's result) into :class:`Family` objects; the gateway renders them. Pure: no I/O, no maths beyond picking
values. Label names and their order are the old exporters' contract; a value that is absent, not finite or
beyond float range produces no sample, and a family without samples is not exposed at all.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec

from shared.parsing import encoder_kind, format_number, output_ladder_id, stream_count
from shared.schemas import RunManifest, Scenario, ScenarioMessage

R = TypeVar("R", bound=msgspec.Struct)

RESULTS_LABELS = (
    "run_id",
    "scenario",
    "bitrate",
    "resolution",
    "fps",
    "streams",
    "output_ladder",
    "encoder_type",
    "encoder",
    "preset",
)
COST_LABELS = ("scenario", "currency", "streams", "bitrate", "encoder", "service")
QOE_LABELS = ("scenario",)


@dataclass
class Family:
    name: str
    help: str
    labelnames: tuple[str, ...] = ()
    kind: str = "gauge"  # or "counter"
    samples: list[tuple[tuple[str, ...], float]] = field(default_factory=list)

    def add(self, labels: tuple[str, ...], value: float | None) -> None:
        if value is None:
            return
        try:
            number = float(value)
        except (OverflowError, TypeError, ValueError):
            return  # an integer beyond float range is no sample, never a crashed scrape
        if math.isfinite(number):
            self.samples.append((labels, number))


@dataclass(frozen=True)
class RunView:
    """One run as the gateway sees it: its manifest, its scenarios and the result of every kind so far."""

    manifest: RunManifest
    scenarios: Sequence[ScenarioMessage]
    results: Mapping[str, msgspec.Struct] = field(default_factory=dict)

    def result(self, kind: str, cls: type[R]) -> R | None:
        found = self.results.get(kind)
        return found if isinstance(found, cls) else None


def legacy_scenario_label(name: str | None) -> str:
    """The cost/QoE exporters' form: spaces to underscores, double quotes removed (kept so series continue)."""
    return (name if name is not None else "unknown").replace(" ", "_").replace('"', "")


def label_text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float | int) and not isinstance(value, bool):
        return format_number(value)
    return str(value)


def results_labels(run_id: str, s: Scenario) -> tuple[str, ...]:
    return (
        run_id,
        s.name or "",
        label_text(s.bitrate),
        s.resolution or "",
        label_text(s.fps),
        str(stream_count(s)),
        output_ladder_id(s),
        s.encoder_type or encoder_kind(s),
        s.encoder or "h264",
        s.preset or "veryfast",
    )


def cost_labels(s: Scenario, currency: str) -> tuple[str, ...]:
    return (
        legacy_scenario_label(s.name),
        currency,
        str(stream_count(s)),
        label_text(s.bitrate),
        s.encoder_type or "unknown",
        "cost-analysis",
    )


def unique(labelsets: Sequence[tuple[str, ...]], position: int) -> list[tuple[str, ...]]:
    """Make every label set distinct by suffixing the label at ``position`` with `` #2``, `` #3``, ... on
    repeats: two scenarios with one name must not become one series with two values (B-R9: the old results
    exporter wrote both; B-C1: the cost exporter's sanitised names collided the same way)."""
    seen: dict[tuple[str, ...], int] = {}
    out = []
    for labels in labelsets:
        count = seen.get(labels, 0) + 1
        seen[labels] = count
        if count > 1:
            labels = (*labels[:position], f"{labels[position]} #{count}", *labels[position + 1 :])
        out.append(labels)
    return out


def results_labelsets(view: RunView) -> list[tuple[ScenarioMessage, tuple[str, ...]]]:
    """The results family's scenarios and their label sets: those with start and end times, each label set
    made unique. Every ``results_scenario_*`` family uses these, so their series join one to one."""
    included = [
        m for m in view.scenarios if m.scenario.start_time is not None and m.scenario.end_time is not None
    ]
    labelsets = unique([results_labels(view.manifest.run_id, m.scenario) for m in included], position=1)
    return list(zip(included, labelsets, strict=True))


#: (metric name, help, value getter on one scenario's figures)
Spec = tuple[str, str, Callable[[Any], float | None]]


def per_scenario(
    specs: Sequence[Spec],
    labelnames: tuple[str, ...],
    scenarios: Sequence[ScenarioMessage],
    labelsets: Sequence[tuple[str, ...]],
    figures_by_index: Mapping[int, object],
) -> list[Family]:
    """One family per spec, one sample per scenario that has figures."""
    families = [Family(name, help_, labelnames) for name, help_, _ in specs]
    for message, labels in zip(scenarios, labelsets, strict=True):
        figures = figures_by_index.get(message.index)
        if figures is None:
            continue
        for family, (_, _, getter) in zip(families, specs, strict=True):
            family.add(labels, getter(figures))
    return families


def non_empty(families: Iterable[Family]) -> list[Family]:
    return [f for f in families if f.samples]


def up_family(name: str, help_: str) -> Family:
    family = Family(name, help_)
    family.add((), 1.0)
    return family
