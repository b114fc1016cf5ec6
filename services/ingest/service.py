"""The ingest service: results files in, scenario and run messages out.

* Watches ``--results-dir`` (not recursively) for ``test_results_*.json`` and scans it at start-up, because
  events that happen while the watcher is down are lost.
* A truncated file (the writer has not finished) is retried with backoff until it parses or the settle
  deadline passes; a new event for the file wakes the retry at once.
* A file that cannot be used is moved to ``<results-dir>/rejected/`` with ``<name>.error.json`` beside it,
  an ``ErrorEvent`` is published, one log line is written, and the service goes on with the next file.
* A NATS outage never rejects a file: publishing is retried until NATS is back.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec
from nats.aio.client import Client as NATS
from nats.js import JetStreamContext
from nats.js.errors import KeyNotFoundError
from prometheus_client import CollectorRegistry, Counter, Gauge

from services.ingest.enrich import Enricher, EnrichSettings, TelemetryQueries
from services.ingest.publisher import (
    ClaimLostError,
    RunPublisher,
    kv_key,
    publish_error,
)
from shared import bus, subjects
from shared.config import byte_size, flag, non_negative_float, port, positive_float
from shared.httpserver import StatusServer
from shared.resultsfile import (
    ParsedRun,
    ResultsFileError,
    TruncatedFileError,
    decode_results,
    is_results_file_name,
    run_digest,
)
from shared.runs import latest_manifest, load_scenarios
from shared.schemas import ErrorEvent, IngestRecord, ResultsFile, Telemetry

log = logging.getLogger("ingest")

SERVICE = "ingest"
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
REJECTED_DIR = "rejected"
_TRANSIENT = bus.TRANSIENT_ERRORS
#: Publishing failures worth waiting out: NATS trouble, or another replica claimed the run first.
_RETRY_PUBLISH: tuple[type[BaseException], ...] = (ClaimLostError, *_TRANSIENT)


def add_source_arguments(parser: argparse.ArgumentParser) -> None:
    """Where runs and their telemetry come from (also offered by ``transcode-energy up``)."""
    flag(
        parser,
        "--results-dir",
        env="RESULTS_DIR",
        default="./test_results",
        help="directory the benchmark runner drops test_results_*.json into",
    )
    flag(
        parser,
        "--prometheus-url",
        env="PROMETHEUS_URL",
        default=None,
        help="Prometheus/VictoriaMetrics base URL for telemetry enrichment",
    )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_source_arguments(parser)
    flag(
        parser,
        "--max-file-bytes",
        env="INGEST_MAX_FILE_BYTES",
        default=DEFAULT_MAX_FILE_BYTES,
        type=byte_size,
        help="larger files are rejected without being read (accepts 16MiB, 500k, ...)",
    )
    flag(
        parser,
        "--settle-seconds",
        env="INGEST_SETTLE_SECONDS",
        default=30.0,
        type=positive_float,
        help="how long a truncated (still being written) file is retried before it is rejected",
    )
    flag(
        parser,
        "--debounce-ms",
        env="INGEST_DEBOUNCE_MS",
        default=300,
        type=int,
        help="file-system events closer than this are handled as one batch",
    )
    flag(
        parser,
        "--poll",
        env="INGEST_FORCE_POLLING",
        default=False,
        type=bool,
        help="poll the directory instead of using inotify (needed on some Docker/WSL bind mounts)",
    )
    flag(
        parser,
        "--status-port",
        env="INGEST_STATUS_PORT",
        default=0,
        type=port,
        help="serve /metrics, /health and /ready on this port (0: off)",
    )
    flag(parser, "--bind", env="BIND_ADDRESS", default="127.0.0.1", help="address for --status-port")
    flag(
        parser,
        "--telemetry-queries",
        env="TELEMETRY_QUERIES",
        default=None,
        type=Path,
        help="JSON file overriding the PromQL of each telemetry query (see docs/telemetry.md)",
    )
    flag(
        parser,
        "--enrich-timeout",
        env="ENRICH_TIMEOUT_SECONDS",
        default=10.0,
        type=positive_float,
        help="timeout of one Prometheus query, seconds",
    )
    flag(
        parser,
        "--enrich-retry-seconds",
        env="ENRICH_RETRY_SECONDS",
        default=60.0,
        type=non_negative_float,
        help="how long a run retries an unreachable Prometheus before it is published with telemetry missing",
    )
    flag(
        parser,
        "--enrich-concurrency",
        env="ENRICH_CONCURRENCY",
        default=16,
        type=int,
        help="Prometheus queries in flight at once",
    )
    parser.add_argument(
        "--reenrich",
        metavar="RUN_ID",
        default=None,
        help="fetch telemetry again for an ingested run and publish it as a new generation",
    )
    flag(
        parser,
        "--publish-retry-max-seconds",
        env="INGEST_PUBLISH_RETRY_MAX",
        default=10.0,
        type=non_negative_float,
        help="longest pause between attempts to publish while NATS is unavailable",
    )
    parser.add_argument(
        "files",
        nargs="*",
        type=Path,
        help="one-shot mode: publish these files and exit (non-zero on bad input)",
    )


@dataclass(frozen=True)
class IngestSettings:
    results_dir: Path
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES
    settle_seconds: float = 30.0
    debounce_ms: int = 300
    force_polling: bool = False
    publish_retry_max: float = 10.0


class IngestMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.files = Counter(
            "transcode_ingest_files_total",
            "Results files handled, by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "transcode_ingest_rejected_files_total",
            "Results files moved to rejected/, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.scenarios = Counter(
            "transcode_ingest_scenarios_published_total",
            "Scenario messages published",
            registry=self.registry,
        )
        self.publish_retries = Counter(
            "transcode_ingest_publish_retries_total",
            "Publish attempts retried because NATS was unavailable",
            registry=self.registry,
        )
        self.enrichment_failures = Counter(
            "transcode_ingest_enrichment_failures_total",
            "Scenarios published with telemetry missing because Prometheus could not answer",
            registry=self.registry,
        )
        self.ready = Gauge(
            "transcode_ingest_ready", "1 once the start-up scan is done", registry=self.registry
        )


class Rejection(Exception):
    def __init__(self, error: ResultsFileError) -> None:
        super().__init__(error.message)
        self.error = error


def read_results_file(path: Path, limit: int) -> bytes:
    """The file's bytes, refusing (without reading them whole) files over ``limit`` bytes.

    Raises ResultsFileError (``too_large``, ``unreadable``) and FileNotFoundError (gone: nothing to do).
    """
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise ResultsFileError("unreadable", f"cannot stat file: {exc.strerror}") from None
    if size > limit:
        raise ResultsFileError(
            "too_large",
            f"file is {size} bytes, over the {limit}-byte limit; it was not read",
            expected=f"<= {limit} bytes",
        )
    try:
        with path.open("rb") as fh:
            data = fh.read(limit + 1)
    except PermissionError as exc:
        raise ResultsFileError("unreadable", f"cannot read file: {exc.strerror}") from None
    if len(data) > limit:
        raise ResultsFileError(
            "too_large",
            f"file grew past the {limit}-byte limit while being read",
            expected=f"<= {limit} bytes",
        )
    return data


class IngestService:
    def __init__(
        self,
        settings: IngestSettings,
        publisher: RunPublisher,
        js: JetStreamContext,
        metrics: IngestMetrics,
        enricher: Enricher | None = None,
    ) -> None:
        self.enricher = enricher
        self.settings = settings
        self.root = settings.results_dir
        self.publisher = publisher
        self.js = js
        self.metrics = metrics
        self.scan_done = asyncio.Event()
        self._tasks: dict[Path, asyncio.Task[None]] = {}
        self._wake: dict[Path, asyncio.Event] = {}
        self._stop = asyncio.Event()

    # -- file checks -----------------------------------------------------------------------------------------

    def _check_and_read(self, path: Path) -> bytes:
        """Everything that can be said about a file before parsing it. Runs in a thread."""
        root = self.root.resolve()
        if path.is_symlink():
            target = path.resolve()
            if not target.is_relative_to(root):
                raise ResultsFileError(
                    "outside_directory",
                    "symbolic link points outside the results directory; it is not read",
                    expected=f"a file inside {root}",
                )
        return read_results_file(path, self.settings.max_file_bytes)

    # -- rejection ---------------------------------------------------------------------------------------------

    def _move_aside(self, path: Path, event: ErrorEvent) -> Path:
        target_dir = self.root / REJECTED_DIR
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        if target.exists() or target.is_symlink():
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            target = target_dir / f"{path.stem}.{stamp}.{time.time_ns() % 1_000_000}{path.suffix}"
        path.replace(target)
        sidecar = target.with_name(target.name + ".error.json")
        sidecar.write_bytes(
            msgspec.json.format(msgspec.json.encode(msgspec.structs.replace(event, moved_to=str(target))))
        )
        return target

    async def _reject(self, path: Path, error: ResultsFileError) -> None:
        event = error.to_event(SERVICE, path.name)
        moved: Path | None = None
        try:
            moved = await asyncio.to_thread(self._move_aside, path, event)
        except FileNotFoundError:
            pass  # gone already: nothing to move
        except OSError as exc:
            log.error("could not move %s aside: %s", path.name, exc)
        log.error("rejected %s: %s -> %s", path.name, error.describe(), moved if moved else "left in place")
        self.metrics.files.labels("rejected").inc()
        self.metrics.rejected.labels(error.reason).inc()
        event = msgspec.structs.replace(event, moved_to=str(moved) if moved else None)
        await self._publish_event(event)

    async def _publish_event(self, event: ErrorEvent) -> None:
        # The file is already safe in rejected/ with its sidecar; the event is best effort but retried a while.
        for delay in (0.5, 1, 2, 4, 8):
            try:
                await publish_error(self.js, event)
                return
            except _TRANSIENT as exc:
                log.warning("could not publish error event (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
        log.error("gave up publishing error event for %s; see its .error.json sidecar", event.file)

    # -- processing ---------------------------------------------------------------------------------------------

    async def _enrich(self, run: ParsedRun) -> list[Telemetry | None] | None:
        if self.enricher is None or await self.publisher.is_published(run):
            return None
        enriched = await self.enricher.enrich_run(run.results.scenarios)
        await report_enrichment_failures(self.js, self.metrics, run.run_id, run.file_name, enriched)
        return enriched

    async def _publish_with_retry(self, run: ParsedRun) -> None:
        delay = 0.5
        enriched: list[Telemetry | None] | None = None
        enriched_done = False
        while True:
            try:
                if not enriched_done:
                    enriched = await self._enrich(run)
                    enriched_done = True
                outcome = await self.publisher.publish(run, enriched)
            except _RETRY_PUBLISH as exc:
                if self._stop.is_set():
                    raise
                self.metrics.publish_retries.inc()
                log.warning(
                    "publishing %s failed (%s); retrying in %.1fs", run.file_name, type(exc).__name__, delay
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.settings.publish_retry_max)
                continue
            break
        if outcome.duplicate:
            self.metrics.files.labels("duplicate").inc()
            log.info(
                "%s: content already published (generation %d); nothing new",
                run.file_name,
                outcome.generation,
            )
        else:
            self.metrics.files.labels("published").inc()
            self.metrics.scenarios.inc(len(run.results.scenarios))
            log.info(
                "published %s: %d scenarios, digest %s, generation %d",
                run.run_id,
                len(run.results.scenarios),
                run.digest,
                outcome.generation,
            )

    async def process(self, path: Path) -> None:
        """Handle one file to completion: published, found duplicate, rejected, or gone."""
        wake = self._wake.setdefault(path, asyncio.Event())
        deadline = time.monotonic() + self.settings.settle_seconds
        delay = 0.1
        while True:
            wake.clear()
            try:
                data = await asyncio.to_thread(self._check_and_read, path)
                run = decode_results(data, path.name)
                self.publisher.encode_scenarios(run)  # refuse oversize scenarios before claiming anything
            except FileNotFoundError:
                return
            except TruncatedFileError as exc:
                if time.monotonic() >= deadline:
                    await self._reject(
                        path,
                        ResultsFileError(
                            "truncated",
                            f"{exc.message}; still incomplete after {self.settings.settle_seconds:g}s",
                            expected="a complete JSON document",
                        ),
                    )
                    return
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(wake.wait(), timeout=delay)
                delay = min(delay * 2, 5.0)
                continue
            except ResultsFileError as exc:
                await self._reject(path, exc)
                return
            await self._publish_with_retry(run)
            if not wake.is_set():
                return
            # Changed again while we were publishing: read it once more.

    def schedule(self, path: Path) -> None:
        if not is_results_file_name(path.name) or path.parent.resolve() != self.root.resolve():
            return
        task = self._tasks.get(path)
        if task is not None and not task.done():
            self._wake.setdefault(path, asyncio.Event()).set()
            return
        task = asyncio.create_task(self._guarded(path), name=f"ingest:{path.name}")
        self._tasks[path] = task

    async def _guarded(self, path: Path) -> None:
        try:
            await self.process(path)
        except asyncio.CancelledError:
            raise
        except Exception:
            # A bug must not take the watcher down with it; the file stays where it is for the next scan.
            log.exception("unexpected error while ingesting %s", path.name)
        finally:
            self._tasks.pop(path, None)
            self._wake.pop(path, None)

    async def scan(self) -> None:
        for path in sorted(self.root.glob("test_results_*.json")):
            self.schedule(path)
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def run(self, stop: asyncio.Event) -> None:
        from watchfiles import Change, awatch

        self._stop = stop
        self.root.mkdir(parents=True, exist_ok=True)
        watcher = awatch(
            self.root,
            stop_event=stop,
            debounce=self.settings.debounce_ms,
            step=50,
            recursive=False,
            force_polling=self.settings.force_polling or None,
        )
        # Start watching before scanning, so a file dropped during the scan is not missed.
        iterator = watcher.__aiter__()
        first = asyncio.ensure_future(iterator.__anext__())
        await self.scan()
        self.scan_done.set()
        self.metrics.ready.set(1)
        log.info("watching %s for test_results_*.json", self.root)
        try:
            while True:
                try:
                    changes = await first
                except StopAsyncIteration:
                    break
                for change, raw in changes:
                    if change in (Change.added, Change.modified):
                        self.schedule(Path(raw))
                first = asyncio.ensure_future(iterator.__anext__())
        finally:
            first.cancel()
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


async def report_enrichment_failures(
    js: JetStreamContext,
    metrics: IngestMetrics | None,
    run_id: str,
    file_name: str,
    enriched: list[Telemetry | None],
) -> None:
    """One log line, one counter step per scenario and one error event per run whose telemetry is missing."""
    failed = [(i, t.missing_reason) for i, t in enumerate(enriched) if t is not None and t.missing_reason]
    if not failed:
        return
    if metrics is not None:
        metrics.enrichment_failures.inc(len(failed))
    first = failed[0][1] or ""
    message = f"{len(failed)} of {len(enriched)} scenarios published without (some) telemetry; first: {first}"
    log.error(
        "enrichment of %s failed: %s (re-run with: transcode-energy ingest --reenrich %s)",
        run_id,
        message,
        run_id,
    )
    with contextlib.suppress(*_TRANSIENT):
        await publish_error(
            js,
            ErrorEvent(
                service=SERVICE,
                reason="enrichment_failed",
                message=message,
                at=time.time(),
                file=file_name,
                run_id=run_id,
                json_path=f"$.scenarios[{failed[0][0]}]",
            ),
        )


def make_enricher(args: argparse.Namespace) -> Enricher | None:
    if not args.prometheus_url:
        return None
    return Enricher(
        EnrichSettings(
            prometheus_url=args.prometheus_url,
            queries=TelemetryQueries.load(args.telemetry_queries),
            timeout_s=args.enrich_timeout,
            retry_budget_s=args.enrich_retry_seconds,
            concurrency=args.enrich_concurrency,
        )
    )


async def reenrich(args: argparse.Namespace, run_id: str) -> int:
    """Fetch telemetry again for the published content of ``run_id`` and publish it as a new generation."""
    enricher = make_enricher(args)
    if enricher is None:
        print("--reenrich needs --prometheus-url (or PROMETHEUS_URL)", file=sys.stderr)
        return 2
    nc, js, publisher = await open_publisher(bus.nats_config_from_args(args))
    try:
        run = await load_published_run(js, publisher, run_id)
        if run is None:
            print(f"run {run_id!r} has not been ingested", file=sys.stderr)
            return 1
        enriched = await enricher.enrich_run(run.results.scenarios)
        await report_enrichment_failures(js, None, run.run_id, run.file_name, enriched)
        outcome = await publisher.publish(run, enriched, new_generation=True)
        missing = sum(1 for t in enriched if t is not None and t.missing_reason)
        print(
            f"re-enriched {run_id}: generation {outcome.generation}, {len(enriched)} scenarios, "
            f"{missing} still missing telemetry"
        )
        return 1 if missing else 0
    finally:
        enricher.close()
        await bus.drain(nc)


async def load_published_run(js: JetStreamContext, publisher: RunPublisher, run_id: str) -> ParsedRun | None:
    """Rebuild a run from its manifest and scenario messages in the ingest stream."""
    try:
        entry = await publisher.kv.get(kv_key(run_id))
    except KeyNotFoundError:
        return None
    record = msgspec.json.decode(entry.value or b"", type=IngestRecord)
    manifest = await latest_manifest(js, run_digest(record.run_id, record.file_sha256))
    if manifest is None:
        return None
    messages = await load_scenarios(js, manifest)
    results = ResultsFile(
        scenarios=[m.scenario for m in messages],
        test_date=manifest.test_date,
        test_metadata=manifest.test_metadata,
    )
    return ParsedRun(
        run_id=manifest.run_id,
        file_name=manifest.file_name,
        sha256=manifest.file_sha256,
        size=manifest.file_bytes,
        results=results,
        extras=[m.extra for m in messages],
    )


async def open_publisher(cfg: bus.NatsConfig) -> tuple[NATS, JetStreamContext, RunPublisher]:
    """Connect, make sure streams and the ingest bucket exist, and return a ready publisher."""
    nc = await bus.connect(cfg, name=SERVICE)
    js = nc.jetstream()
    await bus.ensure_topology(js, replicas=cfg.replicas)
    kv = await bus.ensure_kv(js, subjects.KV_INGESTED, history=5, replicas=cfg.replicas)
    return nc, js, RunPublisher(js, kv, max_payload=nc.max_payload)


async def one_shot(args: argparse.Namespace) -> int:
    """Publish the named files and exit; bad input is reported on stderr and in an error event."""
    nc, js, publisher = await open_publisher(bus.nats_config_from_args(args))
    failures = 0
    try:
        for path in args.files:
            try:
                run = decode_results(read_results_file(path, args.max_file_bytes), path.name)
                outcome = await publisher.publish(run)
            except FileNotFoundError:
                failures += 1
                print(f"{path}: no such file", file=sys.stderr)
                continue
            except ResultsFileError as error:
                failures += 1
                print(f"{path}: {error.describe()}", file=sys.stderr)
                await publish_error(js, error.to_event(SERVICE, path.name))
                continue
            state = "already published" if outcome.duplicate else "published"
            print(
                f"{path}: {state} as run {outcome.run_id} (digest {outcome.digest}, "
                f"generation {outcome.generation}, {len(run.results.scenarios)} scenarios)"
            )
    finally:
        await bus.drain(nc)
    return 1 if failures else 0


async def main(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event | None = None) -> int:
    if args.reenrich:
        return await reenrich(args, args.reenrich)
    if args.files:
        return await one_shot(args)
    settings = IngestSettings(
        results_dir=Path(args.results_dir),
        max_file_bytes=args.max_file_bytes,
        settle_seconds=args.settle_seconds,
        debounce_ms=args.debounce_ms,
        force_polling=args.poll,
        publish_retry_max=args.publish_retry_max_seconds,
    )
    metrics = IngestMetrics()
    nc, js, publisher = await open_publisher(bus.nats_config_from_args(args))
    enricher = make_enricher(args)
    service = IngestService(settings, publisher, js, metrics, enricher)
    status: StatusServer | None = None
    if args.status_port:
        status = StatusServer(
            metrics.registry,
            host=args.bind,
            port=args.status_port,
            ready=lambda: service.scan_done.is_set() and nc.is_connected,
            name="ingest",
        )
        status.start()
        log.info("ingest status on http://%s:%d/metrics", args.bind, status.port)
    announce = asyncio.ensure_future(_announce(service, ready)) if ready is not None else None
    discoverable = await bus.announce(nc, SERVICE)
    try:
        await service.run(stop)
    finally:
        if announce is not None:
            announce.cancel()
        with contextlib.suppress(Exception):
            await discoverable.stop()
        if status is not None:
            status.stop()
        if enricher is not None:
            enricher.close()
        await bus.drain(nc)
    log.info("ingest stopped")
    return 0


async def _announce(service: IngestService, ready: asyncio.Event) -> None:
    await service.scan_done.wait()
    ready.set()
