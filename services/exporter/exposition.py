"""Prometheus text exposition of snapshot families, with labels in their declared order.

prometheus-client's text encoder sorts label names; the old exporters wrote them in a fixed order
(``scenario, currency, streams, bitrate, encoder, service``; ``run_id, scenario, bitrate, ...``) and that order
is part of the contract, so the text format is written here. Content negotiation and the content type stay
prometheus-client's (``choose_encoder``); OpenMetrics requests are served by the client's own encoder.
Every family is one group (HELP, TYPE, then all of its samples: B-X1); label values are escaped as the
format requires (backslash, double quote, newline: B-R5, B-C1).
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import utils

from shared.families import Family


def _number(value: float) -> str:
    """Go-style float text, as prometheus-client writes it (``1.0``, ``2.5e-05``, ``+Inf``)."""
    return str(utils.floatToGoString(value))  # type: ignore[no-untyped-call]


def escape_label_value(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _escape_help(text: str) -> str:
    return text.replace("\\", r"\\").replace("\n", r"\n")


def render_text(families: Iterable[Family]) -> bytes:
    lines: list[str] = []
    for family in families:
        name = family.name + (
            "_total" if family.kind == "counter" and not family.name.endswith("_total") else ""
        )
        lines.append(f"# HELP {name} {_escape_help(family.help)}")
        lines.append(f"# TYPE {name} {family.kind}")
        for labels, value in family.samples:
            if family.labelnames:
                pairs = ",".join(
                    f'{key}="{escape_label_value(val)}"'
                    for key, val in zip(family.labelnames, labels, strict=True)
                )
                lines.append(f"{name}{{{pairs}}} {_number(value)}")
            else:
                lines.append(f"{name} {_number(value)}")
    return ("\n".join(lines) + "\n").encode() if lines else b""
