"""The advisor's NATS API (nats.micro service ``transcode-energy-advisor``, discoverable with ``$SRV.INFO``)
and the advice kind's running state.

Endpoints (subjects in shared/subjects.py, request/response Structs in shared/schemas.py): list runs,
recommend, compare, plan a fleet, report, delete a run. Power predictions are the modeling service's
``te.predict.power``. Errors come back as service errors: code ``400`` (the request is wrong: the message says
what to fix), ``404`` (no such run, no model yet), ``503`` (a service the answer needs did not answer),
``500`` (a bug; logged). The CLI (services/client.py) is a thin client of this API, so other tools get the
same answers.

The advisor keeps an index of runs (newest generation per run id) and of which kinds have published a
result for each, fed by ordered consumers on the ingest and results streams.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Collection
from typing import Any, TypeVar

import msgspec
import nats.errors
import nats.micro
from msgspec.structs import replace
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.micro.request import Request
from nats.micro.service import Service

from services.advisor.kind import AdviceSettings, advice_for
from shared import bus, directget, subjects
from shared.advice import recommend
from shared.comparison import RunData, compare_runs
from shared.kinds import Kind, run_maths
from shared.planning import HostPower, extrapolation_warnings, plan_fleet
from shared.pricing import effective_energy_price, pricing_from_args
from shared.report import render_report
from shared.runs import RunInput, load_results, load_scenarios
from shared.schemas import (
    AdviceResult,
    CompareRequest,
    CostResult,
    DeleteRunRequest,
    DeleteRunResponse,
    FleetPlan,
    ModelingResult,
    PlanRequest,
    PredictRequest,
    PredictResponse,
    QoEResult,
    RecommendRequest,
    ReportRequest,
    ReportResponse,
    ResultEnvelope,
    RunDeleted,
    RunManifest,
    RunsRequest,
    RunsResponse,
    RunSummary,
    ScenarioMessage,
)
from shared.version import version

log = logging.getLogger("advisor")

#: Runs whose scenarios and results the advisor keeps in memory (the ones being asked about).
BUNDLES_KEPT = 4
#: How long a check of the advice kind's inputs waits for the index to take in the result that woke it.
INDEX_WAIT_S = 1.0
#: How long the advisor waits for the modeling service's prediction.
PREDICT_TIMEOUT_S = 5.0

Q = TypeVar("Q", bound=msgspec.Struct)
R = TypeVar("R", bound=ResultEnvelope)


class ApiError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Bundle:
    """One run generation with its scenarios and every result published for it."""

    def __init__(
        self, manifest: RunManifest, scenarios: list[ScenarioMessage], results: dict[str, ResultEnvelope]
    ) -> None:
        self.manifest = manifest
        self.scenarios = scenarios
        self.results = results

    def result(self, kind: str, cls: type[R]) -> R | None:
        found = self.results.get(kind)
        return found if isinstance(found, cls) else None

    def run_data(self) -> RunData:
        return RunData(
            scenarios=[m.scenario for m in self.scenarios],
            modeling=self.result("modeling", ModelingResult),
            cost=self.result("cost", CostResult),
            qoe=self.result("qoe", QoEResult),
            run_id=self.manifest.run_id,
        )


class Advisor:
    def __init__(self, nc: NATS, settings: AdviceSettings, kinds: list[Kind]) -> None:
        self.nc = nc
        self.js = nc.jetstream()
        self.settings = settings
        self.kinds = kinds
        self._decoders = {k.name: msgspec.json.Decoder(k.result) for k in kinds}
        self._envelope = msgspec.json.Decoder(ResultEnvelope)
        #: run id -> newest manifest; (kind, digest) -> (generation, stream sequence) of the stored result (the
        #: last one published on its subject, which the stream keeps).
        self.manifests: dict[str, RunManifest] = {}
        self.stored: dict[tuple[str, str], tuple[int, int]] = {}
        #: Stream sequence of the last result taken into ``generations``, and whether the index has caught up
        #: with the stream once (before that it cannot vouch for anything).
        self._results_seq = 0
        self._results_live = False
        self._results_seen = asyncio.Condition()
        self.service: Service | None = None
        self._subs: list[bus.OrderedReplay] = []
        #: (digest, generation) -> bundle, least recently used first.
        self._bundles: OrderedDict[tuple[str, int], Bundle] = OrderedDict()

    # -- the advice kind ---------------------------------------------------------------------------------

    async def compute(self, run: RunInput) -> AdviceResult:
        return await run_maths(len(run.scenarios), advice_for, run, self.settings.min_vmaf)

    async def close(self) -> None:
        if self.service is not None:
            with contextlib.suppress(Exception):
                await self.service.stop()
        for replay in self._subs:
            await replay.close()

    # -- the index of runs -------------------------------------------------------------------------------

    async def _on_manifest(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            manifest = msgspec.json.decode(msg.data, type=RunManifest)
            current = self.manifests.get(manifest.run_id)
            if current is None or current.generation <= manifest.generation:
                self.manifests[manifest.run_id] = manifest

    async def _on_result(self, msg: Msg) -> None:
        kind = subjects.result_kind(msg.subject)
        if kind is not None:
            with contextlib.suppress(msgspec.DecodeError):
                envelope = self._envelope.decode(msg.data)
                seq = msg.metadata.sequence.stream if msg.metadata is not None else 0
                self.stored[(kind, envelope.digest)] = (envelope.generation, seq)
                # A new or recomputed result: the run's kept bundle is stale.
                for cached in [k for k in self._bundles if k[0] == envelope.digest]:
                    del self._bundles[cached]
        if msg.metadata is not None:
            async with self._results_seen:
                self._results_seq = max(self._results_seq, msg.metadata.sequence.stream)
                self._results_live = self._results_live or not msg.metadata.num_pending
                self._results_seen.notify_all()

    async def inputs_incomplete(self, digest: str, seq: int, needs: Collection[str]) -> bool:
        """True when this index shows that the result stored at sequence ``seq`` is not the one that completes
        ``needs`` for ``digest``: one is missing or the generations differ (a later result will complete the
        set), or one of them was stored after ``seq`` (it wakes the advice kind in its turn, so this wake-up
        can be skipped). False when in doubt (the index has not reached ``seq`` within ``INDEX_WAIT_S``): the
        worker then reads the stream itself."""
        if not self._results_live:
            return False
        try:
            async with asyncio.timeout(INDEX_WAIT_S), self._results_seen:
                await self._results_seen.wait_for(lambda: self._results_seq >= seq)
        except TimeoutError:
            return False
        stored = [self.stored[(kind, digest)] for kind in needs if (kind, digest) in self.stored]
        if len(stored) < len(needs) or len({generation for generation, _ in stored}) > 1:
            return True
        return any(stored_seq > seq for _, stored_seq in stored)

    async def _on_deleted(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            event = msgspec.json.decode(msg.data, type=RunDeleted)
            current = self.manifests.get(event.run_id)
            if current is not None and current.digest in event.digests:
                del self.manifests[current.run_id]

    async def start(self) -> None:
        for subject, handler in (
            (f"{subjects.INGEST_RUN}.>", self._on_manifest),
            (f"{subjects.RESULTS}.>", self._on_result),
            (subjects.RUN_DELETED, self._on_deleted),
        ):
            # Resubscribes by itself after a reconnect (a restarted server forgot its ordered consumers).
            replay = bus.OrderedReplay(self.nc, subject, handler)
            self._subs.append(replay)
            await replay.start()
        self.service = await nats.micro.add_service(
            self.nc,
            name=subjects.MICRO_ADVISOR_SERVICE,
            version=version(),
            description="Which transcoding configuration to run: rankings, comparisons, fleet plans, reports",
            metadata={"service": "advice"},
        )
        for name, subject, endpoint in (
            ("runs", subjects.ADVISOR_RUNS, self._endpoint(RunsRequest, self.runs)),
            ("recommend", subjects.ADVISOR_RECOMMEND, self._endpoint(RecommendRequest, self.recommend)),
            ("compare", subjects.ADVISOR_COMPARE, self._endpoint(CompareRequest, self.compare)),
            ("plan", subjects.ADVISOR_PLAN, self._endpoint(PlanRequest, self.plan)),
            ("report", subjects.ADVISOR_REPORT, self._endpoint(ReportRequest, self.report)),
            ("delete-run", subjects.ADVISOR_DELETE_RUN, self._endpoint(DeleteRunRequest, self.delete_run)),
        ):
            await self.service.add_endpoint(name=name, subject=subject, handler=endpoint)

    def _endpoint(
        self, request_type: type[Q], answer: Callable[[Q], Awaitable[msgspec.Struct]]
    ) -> Callable[[Request], Awaitable[None]]:
        decoder = msgspec.json.Decoder(request_type)

        async def handle(request: Request) -> None:
            try:
                query = decoder.decode(request.data or b"{}")
                response = await answer(query)
            except msgspec.DecodeError as exc:
                await request.respond_error("400", f"bad request: {exc}")
                return
            except ApiError as exc:
                await request.respond_error(exc.code, exc.message)
                return
            except ValueError as exc:
                await request.respond_error("400", str(exc))
                return
            except Exception as exc:
                log.exception("advisor %s failed", request_type.__name__)
                await request.respond_error("500", f"internal error: {type(exc).__name__}: {exc}")
                return
            await request.respond(msgspec.json.encode(response))

        return handle

    def _latest_id(self) -> str:
        if not self.manifests:
            raise ApiError("404", "no run has been ingested yet")
        return max(self.manifests)

    def _manifest(self, run_id: str | None) -> RunManifest:
        run_id = run_id or self._latest_id()
        manifest = self.manifests.get(run_id)
        if manifest is None:
            known = ", ".join(sorted(self.manifests)[-5:]) or "none"
            raise ApiError("404", f"no run {run_id!r} (latest runs: {known}; list them with 'runs')")
        return manifest

    async def bundle(self, run_id: str | None) -> Bundle:
        """The run with its scenarios and results. Read once per run generation and kept (a few runs): the
        scenarios of a generation never change, and a newly published result drops its run's entry."""
        manifest = self._manifest(run_id)
        key = (manifest.digest, manifest.generation)
        cached = self._bundles.get(key)
        if cached is not None:
            self._bundles.move_to_end(key)
            return cached
        scenarios = await load_scenarios(self.nc, manifest)
        found = await load_results(self.nc, manifest.digest, self._decoders)
        results = {name: r for name, r in found.items() if r.generation == manifest.generation}
        bundle = Bundle(manifest, scenarios, results)
        self._bundles[key] = bundle
        while len(self._bundles) > BUNDLES_KEPT:
            self._bundles.popitem(last=False)
        return bundle

    def _advice(self, bundle: Bundle, min_vmaf: float | None) -> AdviceResult:
        stored = bundle.result("advice", AdviceResult)
        if stored is not None and (min_vmaf is None or min_vmaf == stored.min_vmaf):
            return stored
        run = RunInput(bundle.manifest, bundle.scenarios, bundle.results)
        return advice_for(run, self.settings.min_vmaf if min_vmaf is None else min_vmaf)

    # -- endpoints -----------------------------------------------------------------------------------------

    async def runs(self, _: RunsRequest) -> RunsResponse:
        latest = max(self.manifests) if self.manifests else None
        summaries = [
            RunSummary(
                run_id=m.run_id,
                digest=m.digest,
                generation=m.generation,
                file_name=m.file_name,
                scenarios=m.scenario_count,
                ingested_at=m.ingested_at,
                kinds_done=[
                    k.name
                    for k in self.kinds
                    if self.stored.get((k.name, m.digest), (0, 0))[0] >= m.generation
                ],
                latest=m.run_id == latest,
            )
            for m in sorted(self.manifests.values(), key=lambda m: m.run_id)
        ]
        return RunsResponse(runs=summaries, kinds=[k.name for k in self.kinds])

    async def recommend(self, query: RecommendRequest) -> msgspec.Struct:
        bundle = await self.bundle(query.run_id)
        if bundle.result("modeling", ModelingResult) is None:
            raise ApiError(
                "404", f"run {bundle.manifest.run_id} has no modeling result yet; try again shortly"
            )
        advice = await asyncio.to_thread(self._advice, bundle, query.min_vmaf)
        return recommend(advice, algorithm=query.algorithm, ladder=query.ladder, top=query.top)

    async def compare(self, query: CompareRequest) -> msgspec.Struct:
        a, b = await self.bundle(query.run_a), await self.bundle(query.run_b)
        return await asyncio.to_thread(compare_runs, a.run_data(), b.run_data())

    async def _predict(self, query: PredictRequest) -> PredictResponse:
        try:
            reply = await self.nc.request(
                subjects.PREDICT_POWER, msgspec.json.encode(query), timeout=PREDICT_TIMEOUT_S
            )
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
            raise ApiError("503", f"the modeling service did not answer ({type(exc).__name__})") from None
        headers = reply.headers or {}
        if "Nats-Service-Error-Code" in headers:
            raise ApiError(headers["Nats-Service-Error-Code"], headers.get("Nats-Service-Error", "error"))
        return msgspec.json.decode(reply.data, type=PredictResponse)

    async def plan(self, query: PlanRequest) -> FleetPlan:
        if query.streams < 1:
            raise ValueError(f"streams must be >= 1, got {query.streams}")
        per_host = query.streams_per_host
        first = await self._predict(
            PredictRequest(
                scenario=replace(query.scenario, streams=per_host or query.streams), cpu_model=query.cpu_model
            )
        )
        if per_host is None:
            trained = first.model.feature_ranges.get("streams")
            per_host = max(1, int(trained[1])) if trained else query.streams
            per_host = min(per_host, query.streams)
        host = first
        if host.features.get("streams") != float(per_host):
            host = await self._predict(
                PredictRequest(scenario=replace(query.scenario, streams=per_host), cpu_model=query.cpu_model)
            )
        remainder_streams = query.streams % per_host
        remainder = None
        if remainder_streams:
            remainder = await self._predict(
                PredictRequest(
                    scenario=replace(query.scenario, streams=remainder_streams), cpu_model=query.cpu_model
                )
            )
        args = self.settings.pricing_args
        if query.region is not None:
            args = replace_namespace(args, region=query.region)
        pricing = pricing_from_args(args)
        price = effective_energy_price(self.settings.energy_cost_per_kwh, pricing)
        intensity = pricing.co2_intensity()
        ranges = {n: (b[0], b[1]) for n, b in host.model.feature_ranges.items()}
        warnings = extrapolation_warnings(host.features, ranges)
        return plan_fleet(
            streams=query.streams,
            streams_per_host=per_host,
            host_power=HostPower(
                host.mean_power_w, host.prediction_interval_low_w, host.prediction_interval_high_w
            ),
            remainder_power=(
                HostPower(
                    remainder.mean_power_w,
                    remainder.prediction_interval_low_w,
                    remainder.prediction_interval_high_w,
                )
                if remainder is not None
                else None
            ),
            energy_price_per_kwh=price.value,
            co2_intensity_g_per_kwh=intensity.value,
            hours_per_day=query.hours_per_day,
            cpu_price_per_core_hour=self.settings.cpu_cost_per_hour,
            cores_per_host=query.cores_per_host,
            currency=self.settings.currency,
            warnings=warnings,
        )

    async def report(self, query: ReportRequest) -> ReportResponse:
        bundle = await self.bundle(query.run_id)
        earlier = await self.bundle(query.compare) if query.compare else None

        def render() -> str:
            advice = self._advice(bundle, None)
            comparison = compare_runs(earlier.run_data(), bundle.run_data()) if earlier is not None else None
            sources = [m.enriched.source if m.enriched is not None else None for m in bundle.scenarios]
            return render_report(
                bundle.run_data(), advice, query.format, sources=sources, comparison=comparison
            )

        text = await asyncio.to_thread(render)
        return ReportResponse(run_id=bundle.manifest.run_id, format=query.format, text=text)

    async def delete_run(self, query: DeleteRunRequest) -> DeleteRunResponse:
        manifest = self._manifest(query.run_id)
        digests = await self._digests_of(manifest.run_id)
        removed = 0
        for digest in digests:
            for stream, subject in (
                (subjects.INGEST_STREAM, subjects.scenario_wildcard(digest)),
                (subjects.INGEST_STREAM, subjects.bundle_subject(digest)),
                (subjects.INGEST_STREAM, subjects.run_subject(digest)),
                (subjects.RESULTS_STREAM, f"{subjects.RESULTS}.*.{digest}"),
                (subjects.RESULTS_STREAM, f"{subjects.PARTS}.*.{digest}.*"),
            ):
                removed += await self._purge(stream, subject)
        event = RunDeleted(run_id=manifest.run_id, digests=sorted(digests), at=time.time())
        await self.js.publish(subjects.RUN_DELETED, msgspec.json.encode(event), stream=subjects.EVENTS_STREAM)
        self.manifests.pop(manifest.run_id, None)
        log.info("deleted run %s (%d messages)", manifest.run_id, removed)
        return DeleteRunResponse(run_id=manifest.run_id, removed_messages=removed)

    async def _digests_of(self, run_id: str) -> set[str]:
        """Every content (digest) ever published for ``run_id`` that is still in the ingest stream."""
        found = set()
        for stored in await directget.every_match(
            self.nc, subjects.INGEST_STREAM, f"{subjects.INGEST_RUN}.>"
        ):
            with contextlib.suppress(msgspec.DecodeError):
                if msgspec.json.decode(stored.data, type=RunManifest).run_id == run_id:
                    found.add(stored.subject.rsplit(".", 1)[1])
        return found

    async def _purge(self, stream: str, subject: str) -> int:
        before = await self.js.stream_info(stream)
        await self.js.purge_stream(stream, subject=subject)
        after = await self.js.stream_info(stream)
        return max(0, int(before.state.messages) - int(after.state.messages))


def replace_namespace(args: Any, **changes: Any) -> Any:
    import argparse

    return argparse.Namespace(**{**vars(args), **changes})


async def start_advisor(nc: NATS, settings: AdviceSettings) -> Advisor:
    from services.kinds import load_kinds

    advisor = Advisor(nc, settings, load_kinds())
    await advisor.start()
    return advisor
