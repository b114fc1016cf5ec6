"""``transcode-energy status``: is the system healthy? Services seen, consumer backlog, the latest run and its
age, and the errors reported in the last 24 hours.

Services are found by NATS service discovery (``$SRV.PING``): every service announces itself as a
nats.micro service (shared.bus.announce), whichever process or machine runs it.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import time
from collections import Counter
from typing import Any

import msgspec

from shared import subjects

WINDOW_S = 24 * 3600.0
#: ErrorEvent reasons that are not a rejected file.
ENRICHMENT_FAILED = "enrichment_failed"


class ServiceSeen(msgspec.Struct, kw_only=True):
    service: str
    instances: int
    versions: list[str]


class Backlog(msgspec.Struct, kw_only=True):
    consumer: str
    #: Messages (runs or results) not yet delivered to the kind's workers.
    pending: int
    #: Delivered, being computed, not yet acknowledged.
    ack_pending: int
    #: Pull requests waiting: how many worker replicas are idle right now.
    waiting: int


class StatusReport(msgspec.Struct, kw_only=True):
    ok: bool
    problems: list[str]
    services: list[ServiceSeen]
    missing_services: list[str]
    backlog: list[Backlog]
    latest_run: str | None
    latest_run_age_s: float | None
    runs: int
    rejected_files_24h: int
    enrichment_failures_24h: int
    errors_24h: dict[str, int]
    #: The NATS this report was read from (no credentials), and how the command found it.
    nats_url: str = ""
    nats_found_by: str = ""


async def discover(nc: Any, wait_s: float = 0.5) -> list[ServiceSeen]:
    """Every service that answers ``$SRV.PING`` within ``wait_s``, grouped by service name."""
    inbox = nc.new_inbox()
    replies: list[dict[str, Any]] = []

    async def collect(msg: Any) -> None:
        with contextlib.suppress(ValueError):
            replies.append(json.loads(msg.data))

    sub = await nc.subscribe(inbox, cb=collect)
    await nc.publish("$SRV.PING", b"", reply=inbox)
    await asyncio.sleep(wait_s)
    await sub.unsubscribe()
    grouped: dict[str, list[str]] = {}
    for reply in replies:
        name = str(reply.get("name", ""))
        if not name.startswith(subjects.MICRO_SERVICE_PREFIX):
            continue
        service = (reply.get("metadata") or {}).get("service") or name.removeprefix(
            subjects.MICRO_SERVICE_PREFIX
        )
        grouped.setdefault(service, []).append(str(reply.get("version", "")))
    return [
        ServiceSeen(service=k, instances=len(v), versions=sorted(set(v))) for k, v in sorted(grouped.items())
    ]


async def backlog(js: Any, consumers: list[str]) -> list[Backlog]:
    from nats.js.errors import NotFoundError

    out = []
    for name in consumers:
        for stream in (subjects.INGEST_STREAM, subjects.RESULTS_STREAM):
            with contextlib.suppress(NotFoundError):
                info = await js.consumer_info(stream, name)
                out.append(
                    Backlog(
                        consumer=name,
                        pending=int(info.num_pending or 0),
                        ack_pending=int(info.num_ack_pending or 0),
                        waiting=int(info.num_waiting or 0),
                    )
                )
                break
    return out


async def recent_errors(js: Any, window_s: float = WINDOW_S, wait_s: float = 1.0) -> Counter[tuple[str, str]]:
    """(service, reason) -> count of error events in the last ``window_s`` seconds."""
    from nats.js import api as js_api
    from nats.js.errors import NotFoundError

    from shared.schemas import ErrorEvent

    counts: Counter[tuple[str, str]] = Counter()
    start = datetime.datetime.fromtimestamp(time.time() - window_s, tz=datetime.UTC)
    config = js_api.ConsumerConfig(
        deliver_policy=js_api.DeliverPolicy.BY_START_TIME,
        opt_start_time=start,
        ack_policy=js_api.AckPolicy.NONE,
        inactive_threshold=30.0,
    )
    try:
        sub = await js.pull_subscribe(
            f"{subjects.EVENTS_ERROR}.>", stream=subjects.EVENTS_STREAM, config=config
        )
    except NotFoundError:
        return counts
    import nats.errors

    deadline = time.monotonic() + wait_s * 5
    try:
        while time.monotonic() < deadline:
            try:
                batch = await sub.fetch(512, timeout=min(wait_s, 0.3))
            except (nats.errors.TimeoutError, TimeoutError):
                break
            for msg in batch:
                with contextlib.suppress(msgspec.DecodeError):
                    event = msgspec.json.decode(msg.data, type=ErrorEvent)
                    counts[(event.service, event.reason)] += 1
    finally:
        with contextlib.suppress(Exception):
            await sub.unsubscribe()
    return counts


async def gather_status(nc: Any, wait_s: float = 2.0) -> StatusReport:
    from services.catalog import service_names
    from services.kinds import kind_names
    from shared.schemas import RunsRequest, RunsResponse

    js = nc.jetstream()
    seen = await discover(nc)
    expected = service_names()
    missing = [name for name in expected if name not in {s.service for s in seen}]
    lag = await backlog(js, kind_names())
    runs: RunsResponse | None = None
    with contextlib.suppress(Exception):
        reply = await nc.request(subjects.ADVISOR_RUNS, msgspec.json.encode(RunsRequest()), timeout=wait_s)
        if "Nats-Service-Error-Code" not in (reply.headers or {}):
            runs = msgspec.json.decode(reply.data, type=RunsResponse)
    errors = await recent_errors(js, wait_s=wait_s)
    latest = next((r for r in (runs.runs if runs else []) if r.latest), None)
    rejected = sum(
        n for (service, reason), n in errors.items() if service == "ingest" and reason != ENRICHMENT_FAILED
    )
    enrichment = sum(n for (_, reason), n in errors.items() if reason == ENRICHMENT_FAILED)
    problems = [f"service {name} not seen (no answer to $SRV.PING)" for name in missing]
    if rejected:
        problems.append(f"{rejected} file(s) rejected in the last 24 h (see <results-dir>/rejected/)")
    if enrichment:
        problems.append(f"{enrichment} run(s) published with telemetry missing in the last 24 h")
    others = {k: n for k, n in errors.items() if k[0] != "ingest"}
    for (service, reason), n in sorted(others.items()):
        problems.append(f"{service}: {n} x {reason} in the last 24 h")
    return StatusReport(
        ok=not problems,
        problems=problems,
        services=seen,
        missing_services=missing,
        backlog=lag,
        latest_run=latest.run_id if latest else None,
        latest_run_age_s=time.time() - latest.ingested_at if latest else None,
        runs=len(runs.runs) if runs else 0,
        rejected_files_24h=rejected,
        enrichment_failures_24h=enrichment,
        errors_24h={f"{s}/{r}": n for (s, r), n in sorted(errors.items())},
    )


def render_status(report: StatusReport) -> str:
    lines = [f"system: {report.nats_url} (from {report.nats_found_by})"] if report.nats_url else []
    lines.append("services:")
    for s in report.services:
        lines.append(f"  {s.service:<10} {s.instances} instance(s)  {', '.join(s.versions)}")
    for name in report.missing_services:
        lines.append(f"  {name:<10} NOT SEEN")
    lines.append("backlog (pending / being computed / idle workers):")
    for b in report.backlog:
        lines.append(f"  {b.consumer:<10} {b.pending} / {b.ack_pending} / {b.waiting}")
    if report.latest_run is not None and report.latest_run_age_s is not None:
        lines.append(f"latest run: {report.latest_run}, ingested {report.latest_run_age_s / 60:.0f} min ago")
    else:
        lines.append("latest run: none")
    lines.append(
        f"last 24 h: {report.rejected_files_24h} rejected file(s), "
        f"{report.enrichment_failures_24h} enrichment failure(s)"
    )
    lines.append("status: OK" if report.ok else "status: PROBLEMS")
    lines += [f"  - {p}" for p in report.problems]
    return "\n".join(lines)
