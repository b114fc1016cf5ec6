"""The result kinds of this system: the one list. Everything else derives from it.

Adding a kind: write ``services/<name>/kind.py`` with ``KIND = shared.kinds.Kind(...)`` and add one line
here. The CLI gains ``transcode-energy <name>``, ``up`` runs it, the gateway decodes its results, exports its
families and watches its consumer, and its results appear on ``te.results.<name>.<digest>``.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the registry itself imports nothing: `transcode-energy --help` stays light
    from shared.kinds import Kind


@dataclass(frozen=True)
class KindRef:
    name: str
    #: Module defining ``KIND``; imported only by the processes that need this kind.
    module: str
    #: One line for ``--help`` and ``up``'s banner.
    description: str


KINDS: tuple[KindRef, ...] = (
    KindRef("modeling", "services.modeling.kind", "per-scenario statistics and power predictions (worker)"),
    KindRef("cost", "services.cost.kind", "energy/compute cost, CO2 and projections (worker)"),
    KindRef("qoe", "services.qoe.kind", "VMAF/PSNR quality and quality per watt (worker)"),
    KindRef("advice", "services.advisor.kind", "rankings and recommendations, and the advisor API (worker)"),
)


def kind_names() -> list[str]:
    return [ref.name for ref in KINDS]


def load_kind(name: str) -> Kind:
    for ref in KINDS:
        if ref.name == name:
            kind: Kind = importlib.import_module(ref.module).KIND
            if kind.name != name:
                raise RuntimeError(f"{ref.module}.KIND is named {kind.name!r}, listed as {name!r}")
            return kind
    raise KeyError(f"unknown kind {name!r}; known: {', '.join(kind_names())}")


def load_kinds() -> list[Kind]:
    return [load_kind(ref.name) for ref in KINDS]
