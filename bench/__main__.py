"""``python -m bench [--quick] [NAME...]``: run the benchmarks (all by default) and print one table.

Each row is the median of repeated runs, with its target (an upper bound; ``-`` when none is set), the ratio
median / target and a verdict (``ok`` or ``OVER``). ``NAME`` is a module without its ``bench_`` prefix:

* ``cost``: load-aware cost of one hour of 1 s samples (target 1 ms) and the trapezoid it rests on.
* ``enrich``: telemetry enrichment of the example run against a local VictoriaMetrics, concurrent against
  one query at a time, on loopback and behind 20 ms of latency (skipped without victoria-metrics).
* ``gateway``: building the gateway's snapshot for 100 scenarios and scraping it over HTTP (p50 <= 1 ms).
* ``ingest``: decoding and validating results files, against stdlib ``json``.
* ``modeling``: fitting power models (15 scenarios <= 2 ms) and one prediction with its interval
  (<= 100 µs).
* ``system``: the running system on loopback: RSS of ``up`` (default one-process mode) with its nats-server
  (<= 90 MiB; the old exporters used 384 MiB) and of each standalone service, the ``healthcheck`` probe's
  peak RSS and CPU, ``up``'s idle CPU over 30 s and the latency from a dropped results file to the
  gateway's metrics. ``--quick`` (or ``BENCH_QUICK=1``) starts it once and idles 10 s instead of 30 s.
* ``throughput``: one process per service with one and with two replicas of each worker kind: 100 runs of 15
  scenarios dropped at once until every kind's result of every run (target >= 1,000 scenarios/s, shown as
  <= 1 ms per scenario), one run of 10,000 scenarios (<= 30 s), and a cost worker SIGKILLed while it holds
  a run until a new one's result arrives (<= 30 s). ``--quick``: one round, 20 runs, 2,000 scenarios.

Exit status: 0 when every module ran (a row over its target is reported, not fatal), 1 when one failed,
2 for an unknown name.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import sys
import traceback
from pathlib import Path

from bench.harness import Row, print_table


def main(argv: list[str]) -> int:
    if "--quick" in argv:
        os.environ["BENCH_QUICK"] = "1"
    names = [a for a in argv if a != "--quick"]
    here = Path(__file__).parent
    modules = sorted(m.name for m in pkgutil.iter_modules([str(here)]) if m.name.startswith("bench_"))
    known = [m.removeprefix("bench_") for m in modules]
    unknown = [n for n in names if n not in known]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(known)}", file=sys.stderr)
        return 2
    chosen = [m for m in modules if not names or m.removeprefix("bench_") in names]
    rows: list[Row] = []
    failed = False
    for name in chosen:
        try:
            module = importlib.import_module(f"bench.{name}")
            rows.extend(module.run())
        except Exception as exc:  # one broken module must not hide the others' figures
            traceback.print_exc()
            rows.append(Row(f"{name.removeprefix('bench_')}: FAILED ({type(exc).__name__}: {exc})", 0.0, 0))
            failed = True
    print_table(rows)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
