"""Client commands: ask the running system questions from a terminal or a script.

``runs``, ``recommend``, ``compare``, ``predict``, ``plan``, ``report`` and ``status`` talk to the advisor and
modeling services over NATS (the same API other tools use: services/advisor/api.py). They find the embedded
``transcode-energy up`` without flags (shared/discovery.py); ``--nats-url`` overrides. Every command has a
bounded connect and request time, says which URL it tried, and honours Ctrl-C and SIGTERM. Output is a
readable table, or JSON with ``--format json``.

Exit codes: 0 ok; 1 the answer says something is wrong (a regression in ``compare``, a problem in
``status``); 2 the question could not be answered (NATS unreachable, no such run, bad arguments).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import msgspec

from shared import subjects
from shared.config import flag, positive_float
from shared.discovery import find_nats_url

T = TypeVar("T")

COMMANDS: dict[str, str] = {
    "runs": "list ingested runs (or 'runs delete RUN' to remove one)",
    "recommend": "rank a run's configurations and say which to run",
    "compare": "compare two runs scenario by scenario; exit 1 on a power regression",
    "predict": "mean power (with its 95 %% interval) of a configuration you have not benchmarked",
    "plan": "power, energy, cost and CO2 per month of a fleet of streams",
    "report": "a run's report as Markdown, CSV or JSON",
    "status": "services seen, consumer backlog, latest run, recent errors; exit 1 when something is wrong",
}


class ClientError(Exception):
    """The question could not be answered; the message says why (exit code 2)."""


# ---------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------


def _connection_flags(parser: argparse.ArgumentParser) -> None:
    from shared import bus

    bus.add_nats_flags(parser)  # the services' own connection flags: URL list, credentials, TLS
    flag(
        parser,
        "--timeout",
        env="CLIENT_TIMEOUT",
        default=10.0,
        type=positive_float,
        help="seconds to wait for NATS and for each answer",
    )


def _output_flag(parser: argparse.ArgumentParser, choices: Sequence[str] = ("table", "json")) -> None:
    parser.add_argument("--format", choices=list(choices), default=choices[0], help="output format")


def _configuration_flags(parser: argparse.ArgumentParser, *, streams_required: bool) -> None:
    parser.add_argument("--streams", type=int, required=streams_required, default=1, help="stream count")
    parser.add_argument("--resolution", help="e.g. 1920x1080")
    parser.add_argument("--fps", type=float, help="frames per second")
    parser.add_argument("--bitrate", required=True, help="per-stream bitrate, e.g. 6M or 2500k")
    parser.add_argument("--encoder", default="cpu", help="cpu, gpu or a codec such as libx264, h264_nvenc")
    parser.add_argument(
        "--ladder", help="output ladder instead of one resolution, e.g. 1920x1080@30,1280x720@30"
    )
    parser.add_argument("--machine", help="CPU model whose power model to use (default: files naming none)")


def add_arguments(name: str, parser: argparse.ArgumentParser) -> None:
    if name == "runs":
        parser.add_argument("action", nargs="?", choices=["list", "delete"], default="list")
        parser.add_argument("run", nargs="?", help="run id (for delete)")
        _output_flag(parser)
    elif name == "recommend":
        parser.add_argument("run", nargs="?", help="run id (default: the latest run)")
        parser.add_argument(
            "--algorithm",
            default="auto",
            choices=["auto", "throughput_per_watt", "pixels_per_joule", "quality_per_watt", "qoe_efficiency"],
        )
        parser.add_argument("--ladder", help="only this output ladder, e.g. 1280x720@30")
        parser.add_argument("--top", type=int, default=10)
        parser.add_argument("--min-vmaf", type=float, help="quality floor (VMAF 0..100)")
        _output_flag(parser)
    elif name == "compare":
        parser.add_argument("run_a", help="the earlier run (its prediction intervals judge regressions)")
        parser.add_argument("run_b", help="the newer run")
        _output_flag(parser)
    elif name == "predict":
        _configuration_flags(parser, streams_required=True)
        _output_flag(parser)
    elif name == "plan":
        _configuration_flags(parser, streams_required=True)
        parser.add_argument("--streams-per-host", type=int, help="default: the densest benchmarked host")
        parser.add_argument("--region", help="pricing/CO2 region (default: the system's --region)")
        parser.add_argument("--hours-per-day", type=float, default=24.0)
        parser.add_argument("--cores-per-host", type=float, help="CPU cores per host, for compute cost")
        _output_flag(parser)
    elif name == "report":
        parser.add_argument("run", nargs="?", help="run id (default: the latest run)")
        parser.add_argument("--compare", metavar="RUN2", help="an earlier run to compare with")
        parser.add_argument("--format", choices=["md", "csv", "json"], default="md")
        parser.add_argument("--out", type=Path, help="write here instead of standard output")
    elif name == "status":
        _output_flag(parser)
    _connection_flags(parser)


# ---------------------------------------------------------------------------------------------------------
# Talking to the system
# ---------------------------------------------------------------------------------------------------------


class Session:
    def __init__(self, nc: Any, timeout: float) -> None:
        self.nc = nc
        self.timeout = timeout

    async def call(self, subject: str, request: msgspec.Struct, response_type: type[T]) -> T:
        import nats.errors

        try:
            reply = await self.nc.request(subject, msgspec.json.encode(request), timeout=self.timeout)
        except nats.errors.NoRespondersError:
            raise ClientError(f"no service answers {subject}: is the system running?") from None
        except nats.errors.TimeoutError:
            raise ClientError(f"no answer on {subject} within {self.timeout:g}s") from None
        headers = reply.headers or {}
        if "Nats-Service-Error-Code" in headers:
            code = headers["Nats-Service-Error-Code"]
            raise ClientError(f"{headers.get('Nats-Service-Error', 'error')} (code {code})")
        return msgspec.json.decode(reply.data, type=response_type)


async def connect(args: argparse.Namespace) -> Session:
    """Connect once (no reconnects: a command either gets its answer or says why), within ``--timeout``."""
    from shared import bus

    config = bus.nats_config_from_args(args)
    _, origin = find_nats_url(args.nats_url)
    # nats-py keeps retrying a refused first connection until our timeout; a plain TCP probe of the
    # servers says "nothing listens there" at once.
    if not await _any_listening(config.servers, min(args.timeout, 2.0)):
        raise ClientError(f"cannot reach NATS at {config.display()} (from {origin}): connection refused")
    try:
        nc = await asyncio.wait_for(
            bus.connect(config, name="transcode-energy-cli", max_reconnect_attempts=0, quiet=True),
            timeout=args.timeout,
        )
    except Exception as exc:  # whatever the client raises, the answer is the same: not reachable
        raise ClientError(
            f"cannot reach NATS at {config.display()} (from {origin}): {type(exc).__name__}"
        ) from None
    return Session(nc, args.timeout)


async def _any_listening(servers: Sequence[str], wait_s: float) -> bool:
    from urllib.parse import urlsplit

    for server in servers:
        parts = urlsplit(server if "://" in server else f"nats://{server}")
        try:
            _, writer = await asyncio.wait_for(
                asyncio.open_connection(parts.hostname or "127.0.0.1", parts.port or 4222), wait_s
            )
        except (OSError, TimeoutError):
            continue
        writer.close()
        return True
    return False


async def _progress(label: str) -> None:
    """Dots on a terminal while a long answer is on its way."""
    await asyncio.sleep(0.5)
    sys.stderr.write(f"{label} ")
    while True:
        sys.stderr.write(".")
        sys.stderr.flush()
        await asyncio.sleep(0.5)


# ---------------------------------------------------------------------------------------------------------
# Tables
# ---------------------------------------------------------------------------------------------------------


def num(value: float | None, digits: int = 4) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def _json(value: msgspec.Struct | list[Any] | dict[str, Any]) -> str:
    return msgspec.json.format(msgspec.json.encode(value)).decode()


# ---------------------------------------------------------------------------------------------------------
# Commands
# ---------------------------------------------------------------------------------------------------------


def scenario_of(args: argparse.Namespace) -> Any:
    """The configuration flags as a results-file scenario."""
    from shared.schemas import Output, Scenario

    outputs = None
    if args.ladder:
        outputs = []
        for part in args.ladder.split(","):
            resolution, _, fps = part.strip().partition("@")
            if not fps:
                raise ClientError(f"--ladder entries look like 1280x720@30, got {part!r}")
            outputs.append(Output(resolution=resolution, fps=float(fps)))
    elif not (args.resolution and args.fps):
        raise ClientError("give --resolution and --fps, or --ladder")
    encoder = args.encoder.strip()
    is_kind = encoder.lower() in ("cpu", "gpu")
    return Scenario(
        name=f"{args.streams} Streams @ {args.bitrate}",
        streams=args.streams,
        bitrate=args.bitrate,
        resolution=args.resolution,
        fps=args.fps,
        outputs=outputs,
        encoder_type=encoder.lower() if is_kind else None,
        encoder=None if is_kind else encoder,
    )


async def cmd_runs(s: Session, args: argparse.Namespace) -> int:
    from shared.schemas import DeleteRunRequest, DeleteRunResponse, RunsRequest, RunsResponse

    if args.action == "delete":
        if not args.run:
            raise ClientError("say which run: transcode-energy runs delete RUN")
        deleted = await s.call(
            subjects.ADVISOR_DELETE_RUN, DeleteRunRequest(run_id=args.run), DeleteRunResponse
        )
        print(
            _json(deleted)
            if args.format == "json"
            else f"deleted {deleted.run_id} ({deleted.removed_messages} messages)"
        )
        return 0
    answer = await s.call(subjects.ADVISOR_RUNS, RunsRequest(), RunsResponse)
    if args.format == "json":
        print(_json(answer))
        return 0
    now = time.time()
    rows = [
        [
            ("* " if r.latest else "  ") + r.run_id,
            str(r.scenarios),
            str(r.generation),
            f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(r.ingested_at))} ({_age(now - r.ingested_at)} ago)",
            ",".join(r.kinds_done) if len(r.kinds_done) < len(answer.kinds) else "all",
        ]
        for r in answer.runs
    ]
    print(table(["run (* exported)", "scenarios", "gen", "ingested", "kinds done"], rows))
    return 0


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f} {unit}"
    return f"{seconds:.0f} s"


async def cmd_recommend(s: Session, args: argparse.Namespace) -> int:
    from shared.schemas import RecommendRequest, RecommendResponse

    query = RecommendRequest(
        run_id=args.run, algorithm=args.algorithm, ladder=args.ladder, top=args.top, min_vmaf=args.min_vmaf
    )
    answer = await s.call(subjects.ADVISOR_RECOMMEND, query, RecommendResponse)
    if args.format == "json":
        print(_json(answer))
        return 0
    cost_unit = f"{answer.currency}/stream-h" if answer.currency else "cost/stream-h"
    rows = [
        [
            str(r.rank),
            r.name,
            r.output_ladder,
            num(r.score),
            num(r.mean_power_w),
            num(r.vmaf),
            num(r.cost_per_stream_hour, 3),
            ("P" if r.pareto else "") + ("R" if r.recommended else ""),
        ]
        for r in answer.rows
    ]
    print(f"run {answer.run_id}: ranked by {answer.algorithm} ({answer.unit}), best first")
    print(table(["#", "scenario", "ladder", answer.unit, "W", "VMAF", cost_unit, "P/R"], rows))
    print("P = on the cost/quality Pareto front, R = recommended")
    if answer.recommendations:
        print("\nRecommendations:")
        for r in answer.recommendations:
            print(f"  - {r.justification}")
    for note in answer.notes:
        print(f"note: {note}")
    return 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}%"


async def cmd_compare(s: Session, args: argparse.Namespace) -> int:
    from shared.schemas import CompareRequest, RunComparison

    answer = await s.call(
        subjects.ADVISOR_COMPARE, CompareRequest(run_a=args.run_a, run_b=args.run_b), RunComparison
    )
    if args.format == "json":
        print(_json(answer))
    else:
        rows = [
            [
                d.b_name or d.a_name or "?",
                f"{num(d.a_mean_power_w)} -> {num(d.b_mean_power_w)}",
                _pct(d.pct_mean_power),
                f"{num(d.a_energy_j)} -> {num(d.b_energy_j)}",
                _pct(d.pct_energy),
                _pct(d.pct_pixels_per_joule),
                _pct(d.pct_total_cost),
                f"{num(d.a_vmaf)} -> {num(d.b_vmaf)}",
                "REGRESSION" if d.regression else "",
            ]
            for d in answer.deltas
        ]
        print(f"{answer.a_run_id} -> {answer.b_run_id}")
        print(table(["scenario", "W", "dW", "J", "dJ", "d px/J", "d cost", "VMAF", ""], rows))
        for d in answer.deltas:
            if d.regression:
                print(f"regression: {d.b_name}: {d.regression_reason}")
        for u in answer.unmatched:
            print(f"only in {u.run}: {u.name}")
        for note in answer.notes:
            print(f"note: {note}")
    return 1 if answer.regressions else 0


async def cmd_predict(s: Session, args: argparse.Namespace) -> int:
    from shared.schemas import PredictRequest, PredictResponse

    query = PredictRequest(scenario=scenario_of(args), cpu_model=args.machine)
    answer = await s.call(subjects.PREDICT_POWER, query, PredictResponse)
    if args.format == "json":
        print(_json(answer))
        return 0
    level = f"{answer.confidence_level * 100:g} %"
    interval = (
        f"[{num(answer.prediction_interval_low_w)}, {num(answer.prediction_interval_high_w)}] W ({level} prediction interval)"
        if answer.prediction_interval_low_w is not None
        else "(no interval: too few training points)"
    )
    print(f"mean power   {num(answer.mean_power_w)} W  {interval}")
    print(
        f"energy/hour  {num(answer.energy_wh_per_hour)} Wh"
        + (
            f"  [{num(answer.energy_wh_per_hour_low)}, {num(answer.energy_wh_per_hour_high)}]"
            if answer.energy_wh_per_hour_low is not None
            else ""
        )
    )
    print(
        f"model        {answer.model.name}, trained on {answer.model.n_train} scenarios (R² {num(answer.model.r2, 3)})"
    )
    for warning in answer.warnings:
        print(f"warning: {warning}: this is an extrapolation", file=sys.stderr)
    return 0


async def cmd_plan(s: Session, args: argparse.Namespace) -> int:
    from shared.schemas import FleetPlan, PlanRequest

    query = PlanRequest(
        streams=args.streams,
        scenario=scenario_of(args),
        streams_per_host=args.streams_per_host,
        region=args.region,
        hours_per_day=args.hours_per_day,
        cpu_model=args.machine,
        cores_per_host=args.cores_per_host,
    )
    plan = await s.call(subjects.ADVISOR_PLAN, query, FleetPlan)
    if args.format == "json":
        print(_json(plan))
        return 0

    def span(mid: float | None, low: float | None, high: float | None, unit: str) -> str:
        tail = f"  [{num(low)} .. {num(high)}]" if low is not None and high is not None else ""
        return f"{num(mid)} {unit}{tail}"

    cur = plan.currency
    print(
        f"{plan.streams} streams on {plan.hosts} host(s) of {plan.streams_per_host} streams, "
        f"{num(plan.monthly_hours)} h/month"
    )
    print(
        f"  power        {span(plan.fleet_mean_power_w, plan.fleet_power_low_w, plan.fleet_power_high_w, 'W')}"
    )
    print(
        f"  energy       {span(plan.energy_kwh_per_month, plan.energy_kwh_per_month_low, plan.energy_kwh_per_month_high, 'kWh/month')}"
    )
    print(
        f"  energy cost  {span(plan.energy_cost_per_month, plan.energy_cost_per_month_low, plan.energy_cost_per_month_high, cur + '/month')}"
    )
    print(f"  compute cost {num(plan.compute_cost_per_month)} {cur}/month")
    print(
        f"  CO2          {span(plan.co2_kg_per_month, plan.co2_kg_per_month_low, plan.co2_kg_per_month_high, 'kg/month')}"
    )
    print(
        f"  at {num(plan.energy_price_per_kwh)} {cur}/kWh and {num(plan.co2_intensity_g_per_kwh)} g CO2/kWh"
    )
    for note in plan.notes:
        print(f"note: {note}")
    for warning in plan.warnings:
        print(f"warning: {warning}: this is an extrapolation", file=sys.stderr)
    return 0


async def cmd_report(s: Session, args: argparse.Namespace) -> int:
    from shared.schemas import ReportRequest, ReportResponse

    query = ReportRequest(run_id=args.run, compare=args.compare, format=args.format)
    progress = asyncio.ensure_future(_progress("building the report")) if sys.stderr.isatty() else None
    try:
        answer = await s.call(subjects.ADVISOR_REPORT, query, ReportResponse)
    finally:
        if progress is not None:
            progress.cancel()
            sys.stderr.write("\n")
    if args.out:
        args.out.write_text(answer.text)
        print(f"wrote {args.out} ({answer.format}, run {answer.run_id})", file=sys.stderr)
    else:
        sys.stdout.write(answer.text if answer.text.endswith("\n") else answer.text + "\n")
    return 0


async def cmd_status(s: Session, args: argparse.Namespace) -> int:
    from services.status import gather_status, render_status
    from shared import bus

    report = await gather_status(s.nc, wait_s=min(s.timeout, 2.0))
    report.nats_url = bus.nats_config_from_args(args).display()
    report.nats_found_by = find_nats_url(args.nats_url)[1]
    print(_json(report) if args.format == "json" else render_status(report))
    return 0 if report.ok else 1


HANDLERS = {
    "runs": cmd_runs,
    "recommend": cmd_recommend,
    "compare": cmd_compare,
    "predict": cmd_predict,
    "plan": cmd_plan,
    "report": cmd_report,
    "status": cmd_status,
}


def run(args: argparse.Namespace) -> int:
    async def main() -> int:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, task.cancel)
        session = await connect(args)
        try:
            return await HANDLERS[args.command](session, args)
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.nc.close(), 2)

    try:
        return asyncio.run(main())
    except ClientError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return 2
    except asyncio.CancelledError:
        print(f"{args.command}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`... | head`): not an error of ours; silence the interpreter's flush too.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
