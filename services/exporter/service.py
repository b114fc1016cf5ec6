"""The gateway: subscribes to every result subject, keeps the latest run's state, serves Prometheus metrics.

Listeners (each also serves ``/health`` and ``/ready``):

* ``--metrics-port`` (9520): every family plus the gateway's own health metrics;
* ``--results-port`` (9502): ``results_*`` and ``results_exporter_up``;
* ``--qoe-port`` (9503): ``qoe_*``;
* ``--cost-port`` (9504): ``cost_*``, ``co2_*`` and ``cost_exporter_alive``.

Which families each legacy listener serves comes from the kinds registry (``Kind.listener``). State is
rebuilt at start-up by replaying the streams (ordered consumers from the first message). ``/ready`` turns
true only once a snapshot built from caught-up streams, with the latest run's scenarios loaded, is the one
being served. Families are built once per change, off the event loop (a custom Collector serves the current
snapshot) and each rendered exposition is cached until the next change, so a scrape never recomputes.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import threading
from collections.abc import Awaitable, Callable, Sequence

import msgspec
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from services.exporter.exposition import render_text
from services.exporter.state import (
    GatewayState,
    Snapshot,
    build_snapshot,
    health_families,
    kind_groups,
    listener_groups,
)
from shared import bus, subjects
from shared.config import flag, port
from shared.families import Family
from shared.httpserver import StatusServer
from shared.kinds import Kind
from shared.runs import PartsMissingError, load_results, load_scenarios, result_payload
from shared.schemas import ErrorEvent, ResultEnvelope, RunDeleted, RunManifest, TelemetryHealth

log = logging.getLogger("exporter")
SERVICE = "exporter"
#: Shortest time between two rebuilds of the served snapshot, seconds.
REBUILD_GAP_S = 0.1
#: Longest time between two consumer-lag polls while nothing arrives, seconds. Lag moves with the messages
#: the gateway sees (a manifest raises it, a result or an error event lowers it), so an idle system is asked
#: rarely; this poll still catches what no message announces, such as a killed worker's run redelivered.
IDLE_LAG_INTERVAL_S = 60.0


def add_listener_arguments(parser: argparse.ArgumentParser) -> None:
    """The gateway's listener ports (also offered by ``transcode-energy up``)."""
    flag(
        parser,
        "--metrics-port",
        env="METRICS_PORT",
        default=9520,
        type=port,
        help="port serving every metric family and the gateway's health metrics",
    )
    flag(
        parser,
        "--results-port",
        env="RESULTS_EXPORTER_PORT",
        default=9502,
        type=port,
        help="legacy results-exporter listener (0: off)",
    )
    flag(
        parser,
        "--qoe-port",
        env="QOE_EXPORTER_PORT",
        default=9503,
        type=port,
        help="legacy QoE-exporter listener (0: off)",
    )
    flag(
        parser,
        "--cost-port",
        env="COST_EXPORTER_PORT",
        default=9504,
        type=port,
        help="legacy cost-exporter listener (0: off)",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_listener_arguments(parser)
    flag(parser, "--bind", env="BIND_ADDRESS", default="127.0.0.1", help="address the listeners bind to")
    flag(
        parser,
        "--lag-interval",
        env="GATEWAY_LAG_INTERVAL",
        default=5.0,
        type=float,
        help=f"seconds between consumer-lag polls while messages arrive (every {IDLE_LAG_INTERVAL_S:g} s when idle)",
    )


def to_metric(family: Family) -> Metric:
    if family.kind == "counter":
        counter = CounterMetricFamily(family.name, family.help, labels=family.labelnames)
        for labels, value in family.samples:
            counter.add_metric(labels, value)
        return counter
    gauge = GaugeMetricFamily(family.name, family.help, labels=family.labelnames)
    for labels, value in family.samples:
        gauge.add_metric(labels, value)
    return gauge


class SnapshotCollector(Collector):
    """Yields fresh metric families from the current snapshot (prometheus-client's custom Collector pattern)."""

    def __init__(self, current: Callable[[], Snapshot], groups: tuple[str, ...]) -> None:
        self.current = current
        self.groups = groups

    def collect(self) -> list[Metric]:
        return [to_metric(f) for f in self.current().families(*self.groups)]


class CachedExposition:
    """Renders a listener once per snapshot version and content type. The text format is written by
    services/exporter/exposition.py (labels in contract order); OpenMetrics by prometheus-client."""

    def __init__(
        self,
        registry: CollectorRegistry,
        snapshot: Callable[[], Snapshot],
        version: Callable[[], int],
        groups: tuple[str, ...],
    ) -> None:
        self.registry = registry
        self.snapshot = snapshot
        self.version = version
        self.groups = groups
        self._cache: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()

    def render(self, accept: str) -> tuple[bytes, str]:
        encoder, content_type = choose_encoder(accept)
        version = self.version()
        with self._lock:
            cached = self._cache.get(content_type)
            if cached is not None and cached[0] == version:
                return cached[1], content_type
        if content_type.startswith("text/plain"):
            body = render_text(self.snapshot().families(*self.groups))
        else:
            body = encoder(self.registry)
        with self._lock:
            self._cache[content_type] = (version, body)
        return body, content_type


class Gateway:
    def __init__(self, nc: NATS, kinds: Sequence[Kind]) -> None:
        self.nc = nc
        self.js: JetStreamContext = nc.jetstream()
        self.kinds = list(kinds)
        self._decoders = {k.name: msgspec.json.Decoder(k.result) for k in self.kinds}
        self.state = GatewayState()
        self.lag: dict[str, tuple[int, int]] = {}
        self._caught_up: dict[str, bool] = {}
        self._dirty = asyncio.Event()
        self._snapshot = build_snapshot(0, [], {})
        self._snapshot_version = 0
        #: Readiness of the snapshot being served (not of the state being built).
        self._served_ready = False
        #: The kinds' families and the state version they were built from.
        self._groups: tuple[int, dict[str, list[Family]]] | None = None
        self._subs: list[bus.OrderedReplay] = []

    # -- readiness ---------------------------------------------------------------------------------------

    def _state_ready(self) -> bool:
        return (
            bool(self._caught_up) and all(self._caught_up.values()) and self.state.needs_scenarios() is None
        )

    @property
    def ready(self) -> bool:
        return self.nc.is_connected and self._served_ready

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def snapshot_version(self) -> int:
        return self._snapshot_version

    async def rebuild(self) -> None:
        ready = self._state_ready()
        health = health_families(self.state, ready=ready, lag=self.lag, kinds=self.kinds)
        if self._groups is None or self._groups[0] != self.state.version:
            # The kinds' families change only with the state; the periodic lag poll rebuilds health alone.
            view = self.state.view()
            version = self.state.version
            built = await asyncio.to_thread(kind_groups, view, self.kinds, self.state.family_errors)
            self._groups = (version, built)
        groups = self._groups[1]
        self._snapshot = build_snapshot(self.state.version, health, groups)
        self._snapshot_version += 1
        self._served_ready = ready

    # -- subscriptions -------------------------------------------------------------------------------------

    def _mark(self, name: str, msg: Msg) -> None:
        with contextlib.suppress(Exception):
            if msg.metadata.num_pending == 0:
                self._caught_up[name] = True
        self._dirty.set()

    async def _on_manifest(self, msg: Msg) -> None:
        try:
            manifest = msgspec.json.decode(msg.data, type=RunManifest)
        except msgspec.DecodeError as exc:
            log.warning("ignoring undecodable manifest on %s: %s", msg.subject, exc)
        else:
            latest = self.state.latest_run_id
            self.state.add_manifest(manifest)
            if self._caught_up.get("manifests") and latest is not None and manifest.run_id < latest:
                log.info(
                    "run %s was published, but run %s stays exported: the latest run is the greatest run id",
                    manifest.run_id,
                    latest,
                )
        self._mark("manifests", msg)

    async def _on_result(self, msg: Msg) -> None:
        kind = subjects.result_kind(msg.subject)
        decoder = self._decoders.get(kind or "")
        if kind is not None and decoder is not None:
            try:
                digest = msg.subject.rsplit(".", 1)[1]
                payload = await result_payload(self.nc, kind, digest, msg.data, msg.headers)
                result: ResultEnvelope = decoder.decode(payload)
                self.state.add_result(kind, result)
            except (msgspec.DecodeError, PartsMissingError) as exc:
                log.warning("ignoring %s result on %s: %s", kind, msg.subject, exc)
        self._mark("results", msg)

    async def _on_event(self, msg: Msg) -> None:
        with contextlib.suppress(msgspec.DecodeError):
            if msg.subject.startswith(subjects.EVENTS_ERROR):
                self.state.add_error(msgspec.json.decode(msg.data, type=ErrorEvent))
            elif msg.subject == subjects.RUN_DELETED:
                deleted = msgspec.json.decode(msg.data, type=RunDeleted)
                if self.state.remove_run(deleted.run_id, deleted.digests):
                    log.info(
                        "run %s was deleted; %s is exported now", deleted.run_id, self.state.latest_run_id
                    )
            elif msg.subject == subjects.TELEMETRY_HEALTH:
                self.state.set_telemetry_health(msgspec.json.decode(msg.data, type=TelemetryHealth))
        self._mark("events", msg)

    async def _replay(self, name: str, subject: str, handler: Callable[[Msg], Awaitable[None]]) -> None:
        # Resubscribes by itself after a reconnect (a restarted server has forgotten ordered consumers).
        replay = bus.OrderedReplay(self.nc, subject, handler, name=f"{name} ({subject})")
        self._subs.append(replay)
        await replay.start()
        info = await bus.retry_not_ready(f"the {name} consumer", replay.consumer_info)
        if info.num_pending == 0 and (info.delivered is None or not info.delivered.consumer_seq):
            self._caught_up[name] = True
        else:
            self._caught_up.setdefault(name, False)

    async def _load_scenarios(self, manifest: RunManifest) -> None:
        scenarios = await load_scenarios(self.nc, manifest)
        self.state.set_scenarios(manifest.run_id, manifest.generation, scenarios)

    async def _reload_results(self, run_id: str) -> None:
        """Read back the newest result of every kind for ``run_id`` (exported again after a deletion)."""
        manifest = self.state.manifests.get(run_id)
        if manifest is not None:
            found = await load_results(self.nc, manifest.digest, self._decoders)
            for kind, result in found.items():
                if result.run_id == run_id:
                    self.state.add_result(kind, result, count=False)
        self.state.reload_results = None
        self.state.version += 1

    async def _poll_lag(self) -> None:
        for kind in self.kinds:
            # A derived kind consumes the results it needs, the others the ingested runs.
            stream = subjects.RESULTS_STREAM if kind.needs else subjects.INGEST_STREAM
            try:
                info = await self.js.consumer_info(stream, kind.name)
            except NotFoundError:
                continue
            self.lag[kind.name] = (int(info.num_pending or 0), int(info.num_ack_pending or 0))

    async def run(self, stop: asyncio.Event, lag_interval: float = 5.0) -> None:
        await bus.ensure_topology(self.js)
        for name in ("manifests", "results", "events"):
            self._caught_up[name] = False
        await self._replay("manifests", f"{subjects.INGEST_RUN}.>", self._on_manifest)
        await self._replay("results", f"{subjects.RESULTS}.>", self._on_result)
        await self._replay("events", f"{subjects.PREFIX}.events.>", self._on_event)
        self._dirty.set()
        loop = asyncio.get_running_loop()
        last_lag = -math.inf
        # Something arrived since the last lag poll: poll again lag_interval after the last one.
        active = True

        def lag_due() -> float:
            return last_lag + (lag_interval if active else max(lag_interval, IDLE_LAG_INTERVAL_S))

        stopping = asyncio.ensure_future(stop.wait())
        while not stop.is_set():
            # Woken by any change or a stop; otherwise only when the consumer lag is due.
            changed = asyncio.ensure_future(self._dirty.wait())
            await asyncio.wait(
                {changed, stopping}, timeout=max(0.05, lag_due() - loop.time()), return_when="FIRST_COMPLETED"
            )
            changed.cancel()
            if stop.is_set():
                break
            active = active or self._dirty.is_set()
            self._dirty.clear()
            try:
                pending = self.state.needs_scenarios()
                if pending is not None:
                    await self._load_scenarios(pending)
                if self.state.reload_results is not None:
                    await self._reload_results(self.state.reload_results)
                if loop.time() >= lag_due():
                    await self._poll_lag()
                    last_lag, active = loop.time(), False
            except Exception as exc:  # a NATS hiccup must not take the metrics down
                if not stop.is_set():
                    log.warning("gateway refresh failed (%s: %s); retrying", type(exc).__name__, exc)
                await asyncio.sleep(0.5)
                self._dirty.set()
            await self.rebuild()
            # During a burst every result would rebuild every family; one rebuild per REBUILD_GAP_S takes in
            # everything that arrived meanwhile, and a lone change is still served at once.
            await asyncio.wait({stopping}, timeout=REBUILD_GAP_S)
        stopping.cancel()
        for replay in self._subs:
            await replay.close()


def start_listeners(gateway: Gateway, args: argparse.Namespace) -> dict[str, StatusServer]:
    ports = {
        "metrics": args.metrics_port,
        "results": args.results_port,
        "qoe": args.qoe_port,
        "cost": args.cost_port,
    }
    servers: dict[str, StatusServer] = {}
    try:
        for name, groups in listener_groups(gateway.kinds).items():
            # The main listener always runs (0 picks a free port); a legacy one with port 0 is off.
            if name != "metrics" and not ports[name]:
                continue
            registry = CollectorRegistry(auto_describe=False)
            registry.register(SnapshotCollector(gateway.snapshot, groups))
            exposition = CachedExposition(registry, gateway.snapshot, gateway.snapshot_version, groups)
            try:
                server = StatusServer(
                    registry,
                    host=args.bind,
                    port=ports[name],
                    ready=lambda: gateway.ready,
                    name=name,
                    render=exposition.render,
                )
            except OSError as exc:
                raise SystemExit(
                    f"exporter: cannot listen on {args.bind}:{ports[name]} ({name} listener): {exc.strerror}"
                ) from None
            servers[name] = server.start()
            # Asked for port 0 (any free one): record the real one, for `up`'s banner.
            setattr(args, f"{name}_port", server.port)
            log.info("%s listener on http://%s:%d/metrics", name, args.bind, server.port)
    except BaseException:
        for server in servers.values():
            server.stop()
        raise
    return servers


async def main(
    args: argparse.Namespace,
    stop: asyncio.Event,
    ready: asyncio.Event | None = None,
    kinds: Sequence[Kind] | None = None,
) -> int:
    if kinds is None:
        from services.kinds import load_kinds

        kinds = load_kinds()
    nc = await bus.connect(bus.nats_config_from_args(args), name=SERVICE)
    gateway = Gateway(nc, kinds)
    try:
        servers = start_listeners(gateway, args)
    except BaseException:
        await bus.drain(nc)
        raise
    watcher = asyncio.get_running_loop().create_task(_signal_ready(gateway, ready)) if ready else None
    announced = await bus.announce(nc, SERVICE)
    try:
        await gateway.run(stop, lag_interval=args.lag_interval)
    finally:
        if watcher is not None:
            watcher.cancel()
        with contextlib.suppress(Exception):
            await announced.stop()
        for server in servers.values():
            server.stop()
        await bus.drain(nc)
    log.info("exporter stopped")
    return 0


async def _signal_ready(gateway: Gateway, ready: asyncio.Event) -> None:
    while not gateway.ready:  # noqa: ASYNC110 - readiness is a property of the served snapshot, polled
        await asyncio.sleep(0.05)
    ready.set()
