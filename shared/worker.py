"""The loop every worker runs: take run manifests from a durable pull consumer, compute, publish, ack.

* All replicas of one kind bind to the same durable consumer (named after the kind), so they split the runs
  between them; starting another process is all it takes to scale out.
* A result is published with ``Nats-Msg-Id = <digest>:<generation>:<kind>[:<settings>][:<inputs>]`` and acked only
  after JetStream acknowledged the result: a crash before the ack redelivers the run, and the redelivered
  result replaces the first (one message per subject), so nothing is lost or counted twice.
* While a run is being computed the worker tells JetStream it is still working on it (``in_progress``) every
  few seconds, so the ack wait can be short: a killed worker's run is redelivered within ``ACK_WAIT_S``.
* A manifest superseded by a newer generation of the same content is acked without work.
* Undecodable manifests and results too large to publish are terminated (never redelivered) and reported;
  failures while computing are retried with a delay up to ``max_deliver`` times and reported each time.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping

import msgspec
import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector

from shared import bus, subjects
from shared.config import flag, port
from shared.httpserver import StatusServer
from shared.kinds import Computer, InputsIndex, Kind, open_computer
from shared.runs import (
    RunInput,
    ScenariosMissingError,
    SupersededError,
    latest_manifest,
    load_results,
    load_scenarios,
    publish_result,
)
from shared.schemas import SCHEMA_VERSION, ErrorEvent, ResultEnvelope, RunManifest

log = logging.getLogger(__name__)

_TRANSIENT = bus.TRANSIENT_ERRORS
#: Reading a run again later succeeds: NATS trouble, or scenarios being replaced by a newer publication.
_RETRY_READ: tuple[type[BaseException], ...] = (*_TRANSIENT, ScenariosMissingError)
_MANIFEST = msgspec.json.Decoder(RunManifest)
#: Only the envelope of this kind's own earlier result is needed (its generation).
_ENVELOPE = msgspec.json.Decoder(ResultEnvelope)
#: How long JetStream waits for an ack (or a progress signal) before redelivering a run.
ACK_WAIT_S = 20.0
#: How often a busy worker says it is still working on a run (well inside ACK_WAIT_S).
PROGRESS_EVERY_S = 5.0
MAX_DELIVER = 5
#: How long one pull request stays open (an idle worker sends one per this many seconds).
PULL_EXPIRES_S = 60.0
#: Beyond PULL_EXPIRES_S, how long a worker waits for the end of its pull request before asking again.
PULL_GRACE_S = 5.0
#: How long a worker waits before creating its durable consumer again when the server says it is gone.
MISSING_CONSUMER_PAUSE_S = 1.0
#: Runs one worker process handles at once. While one run waits on NATS (its scenarios, its result's ack)
#: the next is read; with one at a time, a burst of small runs was paced by round trips, not by the CPU.
CONCURRENCY = 4


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags every worker has: its own status listener."""
    flag(
        parser,
        "--status-port",
        env="STATUS_PORT",
        default=0,
        type=port,
        help="serve this worker's /metrics, /health and /ready on this port (0: off)",
    )
    flag(parser, "--bind", env="BIND_ADDRESS", default="127.0.0.1", help="address for --status-port")


class RunWorker:
    def __init__(
        self,
        nc: NATS,
        *,
        kind: str,
        compute: Computer,
        max_deliver: int = MAX_DELIVER,
        replicas: int = 1,
        needs: Mapping[str, type[ResultEnvelope]] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.nc = nc
        self.fingerprint = fingerprint
        #: For a derived kind: the kinds it is computed from, with their result types.
        self.needs = {name: msgspec.json.Decoder(cls) for name, cls in (needs or {}).items()}
        self.js = nc.jetstream()
        self.kind = kind
        self.computer = compute
        #: The computer's own view of the results stream, when it keeps one (see ``InputsIndex``).
        self.index = compute if self.needs and isinstance(compute, InputsIndex) else None
        self.max_deliver = max_deliver
        self.replicas = replicas
        self.processed = 0
        self.failed = 0
        self.ready = asyncio.Event()

    async def _report(self, reason: str, message: str, manifest: RunManifest | None) -> None:
        event = ErrorEvent(
            service=self.kind,
            reason=reason,
            message=message,
            at=time.time(),
            run_id=manifest.run_id if manifest else None,
            file=manifest.file_name if manifest else None,
        )
        with contextlib.suppress(*_TRANSIENT):
            await self.js.publish(
                subjects.error_subject(self.kind), msgspec.json.encode(event), stream=subjects.EVENTS_STREAM
            )

    async def _compute_with_progress(self, msg: Msg, run: RunInput) -> ResultEnvelope:
        task = asyncio.ensure_future(self.computer.compute(run))
        while True:
            done, _ = await asyncio.wait({task}, timeout=PROGRESS_EVERY_S)
            if done:
                return task.result()
            with contextlib.suppress(*_TRANSIENT):
                await msg.in_progress()

    async def _derived_run(self, msg: Msg) -> tuple[RunManifest, RunInput] | None:
        """For a derived kind, the run a result message completes: None when the message is not one this
        kind needs, when a needed result of the newest generation is still missing (a later result will
        complete it), or when this kind's result for that generation exists already."""
        kind = subjects.result_kind(msg.subject)
        if kind not in self.needs:
            return None
        digest = msg.subject.rsplit(".", 1)[1]
        seq = msg.metadata.sequence.stream if msg.metadata is not None else None
        if (
            self.index is not None
            and seq is not None
            and await self.index.inputs_incomplete(digest, seq, self.needs)
        ):
            return None
        # Otherwise the inputs first, in one request: while one is missing nothing else is read.
        found = await load_results(self.nc, digest, {**self.needs, self.kind: _ENVELOPE})
        own = found.pop(self.kind, None)
        if any(name not in found for name in self.needs):
            return None
        manifest = await latest_manifest(self.nc, digest)
        if manifest is None or any(r.generation != manifest.generation for r in found.values()):
            return None
        newest_input = max(r.computed_at for r in found.values())
        if own is not None and own.generation == manifest.generation and own.computed_at >= newest_input:
            return None  # already computed from these very inputs
        return manifest, RunInput(manifest, await load_scenarios(self.nc, manifest), found)

    async def handle(self, msg: Msg) -> None:
        if self.needs:
            try:
                derived = await self._derived_run(msg)
            except _RETRY_READ as exc:
                log.warning(
                    "%s: cannot read the inputs yet (%s: %s); will retry", self.kind, type(exc).__name__, exc
                )
                with contextlib.suppress(*_TRANSIENT):
                    await msg.nak(delay=2)
                return
            except msgspec.DecodeError as exc:
                log.error("%s: undecodable input for %s: %s", self.kind, msg.subject, exc)
                await self._report("bad_message", f"{msg.subject}: {exc}", None)
                await msg.term()
                return
            except Exception as exc:
                log.exception("%s: reading the inputs of %s failed", self.kind, msg.subject)
                await self._report("compute_failed", f"{type(exc).__name__}: {exc}", None)
                await msg.term()
                return
            if derived is None:
                await msg.ack()
                return
            await self._compute_and_publish(msg, *derived)
            return
        try:
            manifest = _MANIFEST.decode(msg.data)
        except msgspec.DecodeError as exc:
            log.error("undecodable manifest on %s: %s", msg.subject, exc)
            await self._report("bad_message", f"{msg.subject}: {exc}", None)
            await msg.term()
            return
        if manifest.schema_version > SCHEMA_VERSION:
            await self._report(
                "schema_version", f"manifest schema {manifest.schema_version} is newer", manifest
            )
            await msg.term()
            return
        try:
            # SupersededError when the content was published again after this manifest.
            seq = msg.metadata.sequence.stream if msg.metadata else None
            run = RunInput(manifest, await load_scenarios(self.nc, manifest, manifest_seq=seq))
            if msg.metadata is not None and msg.metadata.num_pending:
                run = dataclasses.replace(run, backlog=int(msg.metadata.num_pending))
        except SupersededError as exc:
            log.info("%s: skipping %s: %s", self.kind, manifest.run_id, exc)
            await msg.ack()
            return
        except _RETRY_READ as exc:
            log.warning(
                "%s: %s: cannot read the run yet (%s: %s); will retry",
                self.kind,
                manifest.run_id,
                type(exc).__name__,
                exc,
            )
            with contextlib.suppress(*_TRANSIENT):
                await msg.nak(delay=2)
            return
        await self._compute_and_publish(msg, manifest, run)

    async def _compute_and_publish(self, msg: Msg, manifest: RunManifest, run: RunInput) -> None:
        try:
            result = await self._compute_with_progress(msg, run)
            parts = await publish_result(
                self.js, self.kind, result, self._message_id(manifest, run), self.nc.max_payload
            )
            if parts:
                log.info("%s: result of %s travels in %d parts", self.kind, manifest.run_id, parts)
            await msg.ack()
            self.processed += 1
            log.info(
                "%s: %s generation %d done (%d scenarios, %.1f ms)",
                self.kind,
                manifest.run_id,
                manifest.generation,
                len(run.scenarios),
                (time.perf_counter() - run.started) * 1000,
            )
        except nats.errors.MaxPayloadError as exc:
            # Retrying cannot make the result smaller: a permanent, reported error, never a silent drop.
            self.failed += 1
            log.error("%s: result of %s cannot be published: %s", self.kind, manifest.run_id, exc)
            await self._report("result_too_large", f"{type(exc).__name__}: {exc}", manifest)
            with contextlib.suppress(*_TRANSIENT):
                await msg.term()
        except _TRANSIENT as exc:
            log.warning(
                "%s: %s: NATS trouble (%s); will retry", self.kind, manifest.run_id, type(exc).__name__
            )
            with contextlib.suppress(*_TRANSIENT):
                await msg.nak(delay=2)
        except Exception as exc:
            self.failed += 1
            deliveries = msg.metadata.num_delivered if msg.metadata else 1
            log.exception(
                "%s: computing %s failed (delivery %d of %d)",
                self.kind,
                manifest.run_id,
                deliveries,
                self.max_deliver,
            )
            await self._report("compute_failed", f"{type(exc).__name__}: {exc}", manifest)
            with contextlib.suppress(*_TRANSIENT):
                if deliveries >= self.max_deliver:
                    await msg.term()
                else:
                    await msg.nak(delay=5)

    def _message_id(self, manifest: RunManifest, run: RunInput) -> str:
        """Dedupe key of a result: the same run generation computed from the same inputs with the same
        settings is one message, however often a crash redelivers it; recomputing after new settings (or
        newer inputs, for a derived kind) is a new message that replaces the old one on its subject."""
        key = f"{manifest.digest}:{manifest.generation}:{self.kind}"
        if self.fingerprint is not None:
            key += f":{self.fingerprint[:16]}"
        if run.results:
            key += f":{max(r.computed_at for r in run.results.values())!r}"
        return key

    async def _replay_if_settings_changed(self, stream: str) -> bool:
        """Recompute every stored run when the settings that shape this kind's results changed (a new
        price or region for cost): the durable consumer is recreated, so it delivers every run again.
        The settings record is swapped with compare-and-set, so of several replicas one resets."""
        from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError, NotFoundError

        assert self.fingerprint is not None
        kv = await bus.ensure_kv(self.js, subjects.KV_KIND_SETTINGS, replicas=self.replicas)
        try:
            entry = await kv.get(self.kind)
            stored, revision = (entry.value or b"").decode(), entry.revision or 0
        except KeyNotFoundError:
            stored, revision = None, 0
        if stored == self.fingerprint:
            return False
        try:
            if revision:
                await kv.update(self.kind, self.fingerprint.encode(), last=revision)
            else:
                await kv.create(self.kind, self.fingerprint.encode())
        except KeyWrongLastSequenceError:
            return False  # another replica is resetting
        if stored is None:
            return False  # first start: the new consumer delivers every run anyway
        with contextlib.suppress(NotFoundError):
            await self.js.delete_consumer(stream, self.kind)
        return True

    def status_server(self, host: str, port_number: int) -> StatusServer:
        """/health, /ready (consuming and connected) and this worker's counters."""
        registry = CollectorRegistry(auto_describe=False)
        worker = self

        class _Counts(Collector):
            def collect(self) -> list[Metric]:
                done = CounterMetricFamily(
                    "transcode_worker_runs_processed", "Runs computed and published", labels=["kind"]
                )
                done.add_metric([worker.kind], worker.processed)
                failed = CounterMetricFamily(
                    "transcode_worker_runs_failed", "Runs whose computation failed", labels=["kind"]
                )
                failed.add_metric([worker.kind], worker.failed)
                return [done, failed]

        registry.register(_Counts())
        return StatusServer(
            registry,
            host=host,
            port=port_number,
            name=self.kind,
            ready=lambda: self.ready.is_set() and self.nc.is_connected,
        )

    async def serve(self, stop: asyncio.Event, host: str, port_number: int) -> None:
        """Run the worker, with its status listener when ``port_number`` is not 0."""
        server = self.status_server(host, port_number).start() if port_number else None
        try:
            await self.run(stop)
        finally:
            if server is not None:
                server.stop()

    async def run(self, stop: asyncio.Event) -> None:
        await bus.ensure_topology(self.js, replicas=self.replicas)
        # A kind computed from runs consumes run manifests; a derived kind consumes the results it needs
        # (only those: not its own, nor other kinds').
        stream, source = (
            (subjects.RESULTS_STREAM, [f"{subjects.RESULTS}.{name}.>" for name in self.needs])
            if self.needs
            else (subjects.INGEST_STREAM, [f"{subjects.INGEST_RUN}.>"])
        )
        replaying = self.fingerprint is not None and await self._replay_if_settings_changed(stream)

        async def ensure_consumer() -> None:
            await bus.ensure_pull_consumer(
                self.js, stream, self.kind, source, ack_wait=ACK_WAIT_S, max_deliver=self.max_deliver
            )

        await ensure_consumer()
        if replaying:
            pending = (await self.js.consumer_info(stream, self.kind)).num_pending
            log.info(
                "%s: settings changed since the stored results were computed (now %s); recomputing every "
                "stored run (%s)",
                self.kind,
                (self.fingerprint or "")[:12],
                pending,
            )
        self.ready.set()
        log.info("%s worker consuming %s as durable %r", self.kind, ", ".join(source), self.kind)
        await self._consume(stream, stop, ensure_consumer)

    async def _consume(
        self, stream: str, stop: asyncio.Event, ensure_consumer: Callable[[], Awaitable[None]]
    ) -> None:
        """Take runs from the durable consumer until ``stop``, ``CONCURRENCY`` at most in hand.

        Pulled continuously: a pull request asks for as many runs as there are free slots (so a run taken
        is a run started, its ack wait not spent queueing) and stays open for ``PULL_EXPIRES_S``; the next is
        sent once half the slots are free and not asked for. A burst thus costs a pull request per two runs,
        an idle worker one per ``PULL_EXPIRES_S``. What a restarted server forgot is asked for again on the
        reconnect; what it never answers is given up after ``PULL_EXPIRES_S`` and a grace period. A consumer
        that is gone (deleted by hand, or by a replica applying new settings) is created again after
        ``MISSING_CONSUMER_PAUSE_S``."""
        loop = asyncio.get_running_loop()
        in_flight: set[asyncio.Task[None]] = set()
        inbox = self.nc.new_inbox()
        pulls = bus.PullRequests(self.nc, stream, self.kind, inbox, PULL_EXPIRES_S)
        #: Anything heard from the server, a slot freed, a reconnect, the stop: time to look again.
        changed = asyncio.Event()
        #: Set when the server says the consumer is gone.
        missing = False

        def finished(task: asyncio.Task[None]) -> None:
            in_flight.discard(task)
            changed.set()

        async def on_delivery(msg: Msg) -> None:
            nonlocal missing
            changed.set()
            taken = pulls.take(msg)
            if taken != bus.PullRequests.DELIVERY:
                missing = missing or taken == bus.PullRequests.GONE
                return
            if stop.is_set():
                # Taken after the stop: handed back at once, to another replica or the next start.
                with contextlib.suppress(*_TRANSIENT):
                    await msg.nak()
                return
            task = loop.create_task(self._handle_one(msg))
            in_flight.add(task)
            task.add_done_callback(finished)

        def reconnected() -> None:
            pulls.forget()  # a restarted server has forgotten the pull requests in flight
            changed.set()

        sub = await self.nc.subscribe(inbox, cb=on_delivery)
        remove_hook = bus.on_reconnect(self.nc, reconnected)
        stopping = loop.create_task(stop.wait())
        stopping.add_done_callback(lambda _: changed.set())
        try:
            while not stop.is_set():
                if missing:
                    # Not at once: whoever deleted it may be creating it again (with new settings).
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=MISSING_CONSUMER_PAUSE_S)
                    if stop.is_set():
                        break
                    try:
                        await ensure_consumer()
                    except Exception as exc:
                        log.warning("%s: cannot create its consumer (%s); retrying", self.kind, exc)
                        continue
                    log.info("%s: its consumer was gone; consuming again", self.kind)
                    missing = False
                changed.clear()
                free = CONCURRENCY - len(in_flight) - pulls.owed
                if free > 0 and (pulls.owed == 0 or free >= CONCURRENCY // 2):
                    try:
                        await pulls.ask(free)
                    except _TRANSIENT as exc:
                        log.warning("%s: cannot ask for runs (%s); retrying", self.kind, type(exc).__name__)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(stop.wait(), timeout=1.0)
                        continue
                try:
                    await asyncio.wait_for(changed.wait(), timeout=PULL_EXPIRES_S + PULL_GRACE_S)
                except TimeoutError:
                    pulls.forget()  # nothing heard for longer than a request lives: none of ours is open
        finally:
            remove_hook()
            stopping.cancel()
            with contextlib.suppress(Exception):
                await sub.unsubscribe()
            # A stop lets the runs in hand finish (each ends acked, nak'ed or terminated).
            if in_flight:
                await asyncio.gather(*in_flight, return_exceptions=True)

    async def _handle_one(self, msg: Msg) -> None:
        try:
            await self.handle(msg)
        except Exception:
            # handle() reports every failure it expects; anything else must not vanish with its task.
            log.exception("%s: handling %s failed unexpectedly", self.kind, msg.subject)


async def run_worker_service(
    args: argparse.Namespace,
    stop: asyncio.Event,
    kind: Kind,
    ready: asyncio.Event | None = None,
    needs: Mapping[str, type[ResultEnvelope]] | None = None,
) -> int:
    """The whole life of a worker of ``kind``: connect, start the kind, consume until ``stop``, drain.
    ``needs`` gives the result types of the kinds a derived kind is computed from."""
    settings = kind.settings(args)
    nc = await bus.connect(bus.nats_config_from_args(args), name=kind.name)
    try:
        await bus.ensure_topology(nc.jetstream(), replicas=args.js_replicas)
        computer = await open_computer(kind, nc, settings)
        # Stateful kinds announce themselves with their own request/reply service.
        announced = await bus.announce(nc, kind.name) if kind.open is None else None
        try:
            worker = RunWorker(
                nc,
                kind=kind.name,
                compute=computer,
                replicas=args.js_replicas,
                needs=needs,
                # Every way a worker starts (`up`, `up --processes`, a service alone) comes through here,
                # so this is the one place the settings fingerprint (re-pricing) is wired.
                fingerprint=kind.fingerprint(settings) if kind.fingerprint is not None else None,
            )
            if ready is not None:
                asyncio.get_running_loop().create_task(_forward(worker.ready, ready))
            await worker.serve(stop, args.bind, args.status_port)
        finally:
            await computer.close()
            if announced is not None:
                with contextlib.suppress(Exception):
                    await announced.stop()
    finally:
        await bus.drain(nc)
    log.info("%s stopped", kind.name)
    return 0


async def _forward(source: asyncio.Event, target: asyncio.Event) -> None:
    await source.wait()
    target.set()
