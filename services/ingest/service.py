"""The ingest service: results files in, scenario and run messages out.

* Watches ``--results-dir`` (not recursively) for ``test_results_*.json`` and scans it at start-up, because
  events that happen while the watcher is down are lost.
* A truncated file (the writer has not finished) is retried with backoff until it parses or the settle
  deadline passes; a new event for the file wakes the retry at once.
* A file that cannot be used is moved to ``<results-dir>/rejected/`` with ``<name>.error.json`` beside it,
  an ``ErrorEvent`` is published, one log line is written, and the service goes on with the next file.
* A NATS outage never rejects a file: publishing is retried until NATS is back.

Every candidate ends in exactly one state: published (or found already published), rejected (moved aside
with its sidecar, event, log line and counter), or gone. In particular:

* Nothing but a regular file is ever opened: a FIFO, socket, device or directory with a results name is
  rejected after ``lstat``/``stat`` (``not_regular_file``), and files are opened ``O_NONBLOCK | O_NOFOLLOW``
  and checked again with ``fstat``, so a FIFO swapped in at the last moment cannot block either.
* Reading and decoding run in their own daemon threads, at most ``read_concurrency`` at once, each given
  ``read_timeout`` seconds: a read that hangs (a dead network file system) is abandoned and its file rejected
  (``read_timeout``), and it stops holding a slot, so it cannot starve the other files.
* A bug is not retried forever on every restart: any unexpected exception rejects the file with reason
  ``internal_error`` and the exception's type and message.
* The watch is active before the start-up scan and before readiness (``scan_done``, ``/ready``, the
  "watching" log line), so no file dropped at start-up is missed. If the watcher fails later (watchfiles
  stops on a file name that is not UTF-8), it is started again and the directory scanned again.

With ``--prometheus-url``, the service also checks every ``--telemetry-health-interval`` seconds whether each
telemetry source (RAPL, container CPU, cAdvisor, DCGM) answers and how fresh its newest sample is, and
publishes a ``TelemetryHealth`` event (docs/telemetry.md).

One-shot mode and ``--reenrich`` give up on an unreachable NATS after ``--connect-timeout-total`` seconds
(exit 2, naming the URL) and stop at once on SIGINT/SIGTERM (exit 130).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import functools
import logging
import os
import stat
import sys
import threading
import time
import types
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
    printable,
    run_digest,
)
from shared.runs import latest_manifest, load_scenarios
from shared.schemas import ErrorEvent, IngestRecord, ResultsFile, Telemetry, TelemetryHealth

if TYPE_CHECKING:
    from watchfiles.main import FileChange

log = logging.getLogger("ingest")

T = TypeVar("T")

SERVICE = "ingest"
DEFAULT_MAX_FILE_BYTES = 16 * 1024 * 1024
DEFAULT_READ_TIMEOUT = 30.0
#: How often the file watcher's thread wakes to look for changes, ms (see ``_watcher``).
WATCH_STEP_MS = 100
#: An exception's text can be anything, up to a whole document: the event and sidecar keep its start.
_MAX_INTERNAL_MESSAGE = 2000
#: Exit codes of one-shot mode and --reenrich besides 0 and 1 (bad input): NATS unreachable, interrupted.
EXIT_NATS_UNAVAILABLE = 2
EXIT_INTERRUPTED = 130
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
        "--read-timeout",
        env="INGEST_READ_TIMEOUT_SECONDS",
        default=DEFAULT_READ_TIMEOUT,
        type=positive_float,
        help="longest one file's read and decode may take before the file is rejected (read_timeout)",
    )
    flag(
        parser,
        "--read-concurrency",
        env="INGEST_READ_CONCURRENCY",
        default=8,
        type=int,
        help="files read at once (a read past --read-timeout gives its slot back)",
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
        "--telemetry-health-interval",
        env="TELEMETRY_HEALTH_INTERVAL",
        default=30.0,
        type=non_negative_float,
        help="with --prometheus-url: seconds between checks that each telemetry source answers and is fresh "
        "(0: off)",
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
        "--connect-timeout-total",
        env="INGEST_CONNECT_TIMEOUT_TOTAL",
        default=30.0,
        type=positive_float,
        help="one-shot mode and --reenrich: give up (exit 2) when NATS cannot be reached within this many "
        "seconds in all (the service itself waits for NATS as long as it takes)",
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
    """Built from the flags only (:func:`settings_from_args`): each default is declared once, by its flag."""

    results_dir: Path
    max_file_bytes: int
    settle_seconds: float
    debounce_ms: int
    force_polling: bool
    publish_retry_max: float
    #: Seconds one file's read and decode may take before it is abandoned and the file rejected.
    read_timeout: float
    #: Files read at once; a read past its timeout gives its slot back.
    read_concurrency: int


def settings_from_args(args: argparse.Namespace) -> IngestSettings:
    return IngestSettings(
        results_dir=Path(args.results_dir),
        max_file_bytes=args.max_file_bytes,
        settle_seconds=args.settle_seconds,
        debounce_ms=args.debounce_ms,
        force_polling=args.poll,
        publish_retry_max=args.publish_retry_max_seconds,
        read_timeout=args.read_timeout,
        read_concurrency=args.read_concurrency,
    )


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
        self.enrichment_empty = Counter(
            "transcode_ingest_enrichment_empty_total",
            "Scenario queries that Prometheus answered with no data (count), by query field",
            ["query"],
            registry=self.registry,
        )
        self.ready = Gauge(
            "transcode_ingest_ready", "1 once the start-up scan is done", registry=self.registry
        )


class Rejection(Exception):
    def __init__(self, error: ResultsFileError) -> None:
        super().__init__(error.message)
        self.error = error


_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFSOCK: "a socket",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
}


def _require_regular(mode: int) -> None:
    if not stat.S_ISREG(mode):
        kind = _KINDS.get(stat.S_IFMT(mode), "not a regular file")
        raise ResultsFileError(
            "not_regular_file", f"this is {kind}; it was not opened", expected="a regular file"
        )


def _resolve_link(path: Path, root: Path | None) -> Path:
    """Where the symbolic link ``path`` leads, refusing loops, dangling links and (with ``root``) targets
    outside ``root``."""
    try:
        target = path.resolve(strict=True)
    except FileNotFoundError:
        if not os.path.lexists(path):
            raise  # the link itself is gone
        raise ResultsFileError(
            "bad_symlink", "symbolic link points to nothing", expected="a link to an existing file"
        ) from None
    except (RuntimeError, OSError) as exc:  # Python 3.11 raises RuntimeError for a loop, later ones ELOOP
        raise ResultsFileError(
            "bad_symlink", f"symbolic link cannot be resolved: {exc}", expected="a link to an existing file"
        ) from None
    if root is not None and not target.is_relative_to(root):
        raise ResultsFileError(
            "outside_directory",
            "symbolic link points outside the results directory; it is not read",
            expected=f"a file inside {root}",
        )
    return target


def read_results_file(path: Path, limit: int, root: Path | None = None) -> bytes:
    """The bytes of the regular file ``path`` (or of the file a symbolic link leads to, inside ``root`` when
    given), refusing without reading them whole files over ``limit`` bytes. Blocking: run it in a thread.

    Nothing else is ever opened: the type is checked with ``lstat``/``stat`` first, the open is
    ``O_NONBLOCK | O_NOFOLLOW`` (a FIFO swapped in after the check still cannot block; a symbolic link swapped
    in is refused) and ``fstat`` checks the opened file again.

    Raises ResultsFileError (``too_large``, ``unreadable``, ``not_regular_file``, ``bad_symlink``,
    ``outside_directory``) and FileNotFoundError (gone: nothing to do).
    """
    try:
        info = os.lstat(path)
        target = path
        if stat.S_ISLNK(info.st_mode):
            target = _resolve_link(path, root)
            info = target.stat()
    except (FileNotFoundError, ResultsFileError):
        raise
    except OSError as exc:
        raise ResultsFileError("unreadable", f"cannot stat file: {exc.strerror}") from None
    _require_regular(info.st_mode)
    if info.st_size > limit:
        raise ResultsFileError(
            "too_large",
            f"file is {info.st_size} bytes, over the {limit}-byte limit; it was not read",
            expected=f"<= {limit} bytes",
        )
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(target, flags)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            message = "became a symbolic link while being checked; it was not read"
        else:
            message = f"cannot open file: {exc.strerror}"
        raise ResultsFileError("unreadable", message) from None
    try:
        with os.fdopen(fd, "rb") as fh:
            _require_regular(os.fstat(fd).st_mode)
            data = fh.read(limit + 1)
    except OSError as exc:
        raise ResultsFileError("unreadable", f"cannot read file: {exc.strerror}") from None
    if len(data) > limit:
        raise ResultsFileError(
            "too_large",
            f"file grew past the {limit}-byte limit while being read",
            expected=f"<= {limit} bytes",
        )
    return data


async def in_daemon_thread(work: Callable[[], T], seconds: float) -> T:
    """``work()`` in a thread of its own, given ``seconds`` to finish (then :class:`TimeoutError`).

    Not ``asyncio.to_thread``: a read blocked in the kernel cannot be interrupted, and in the shared executor
    it would hold a worker for good (a few of them starve every other file) and keep ``asyncio.run`` from
    returning at exit. A daemon thread that never comes back is simply left behind.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[T] = loop.create_future()

    def deliver(result: T | None, error: BaseException | None) -> None:
        if future.done():  # timed out or cancelled already
            return
        if error is not None:
            future.set_exception(error)
        else:
            future.set_result(result)  # type: ignore[arg-type]  # None only with an error

    def run() -> None:
        result: T | None = None
        error: BaseException | None = None
        try:
            result = work()
        except BaseException as exc:  # handed to the awaiting task, which decides
            error = exc
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            loop.call_soon_threadsafe(deliver, result, error)

    threading.Thread(target=run, name="ingest-read", daemon=True).start()
    async with asyncio.timeout(seconds):
        return await future


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
        self._read_slots = asyncio.Semaphore(settings.read_concurrency)
        #: Set (and replaced by a fresh one) on every NATS reconnect: a publish pausing between attempts
        #: tries again at once instead of sleeping out its backoff.
        self._reconnected = asyncio.Event()

    def on_reconnect(self) -> None:
        """Wake every publish waiting to retry (register with :func:`shared.bus.on_reconnect`)."""
        woken, self._reconnected = self._reconnected, asyncio.Event()
        woken.set()

    # -- file checks -----------------------------------------------------------------------------------------

    def _load(self, path: Path) -> ParsedRun:
        """Everything that can be said about a file before publishing it. Blocking: runs in a thread."""
        data = read_results_file(path, self.settings.max_file_bytes, root=self.root.resolve())
        run = decode_results(data, path.name)
        self.publisher.encode_scenarios(run)  # refuse oversize scenarios before claiming anything
        return run

    async def _off_loop(self, work: Callable[[], T], what: str) -> T:
        """``work`` in its own thread; past ``read_timeout`` the thread is abandoned and its slot freed."""
        timeout = self.settings.read_timeout
        async with self._read_slots:
            try:
                return await in_daemon_thread(work, timeout)
            except TimeoutError:
                raise ResultsFileError(
                    "read_timeout",
                    f"{what} did not finish within {timeout:g}s (a hung file system?); it was abandoned",
                    expected=f"done within {timeout:g}s",
                ) from None

    # -- rejection ---------------------------------------------------------------------------------------------

    def _move_aside(self, path: Path, event: ErrorEvent) -> Path:
        """Rename (never open) ``path`` into rejected/ and write its sidecar. Works for FIFOs and links too."""
        target_dir = self.root / REJECTED_DIR
        target_dir.mkdir(exist_ok=True)
        target = target_dir / path.name
        if os.path.lexists(target):
            stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
            target = target_dir / f"{path.stem}.{stamp}.{time.time_ns() % 1_000_000}{path.suffix}"
        path.replace(target)
        sidecar = target.with_name(target.name + ".error.json")
        record = msgspec.structs.replace(event, moved_to=printable(str(target)))
        sidecar.write_bytes(msgspec.json.format(msgspec.json.encode(record)))
        return target

    async def _reject(self, path: Path, error: ResultsFileError) -> None:
        event = error.to_event(SERVICE, path.name)
        moved: Path | None = None
        try:
            moved = await self._off_loop(lambda: self._move_aside(path, event), "moving the file aside")
        except FileNotFoundError:
            pass  # gone already: nothing to move
        except (OSError, ResultsFileError) as exc:
            log.error("could not move %s aside: %s", printable(path.name), printable(str(exc)))
        shown = printable(str(moved)) if moved else "left in place"
        log.error("rejected %s: %s -> %s", printable(path.name), error.describe(), shown)
        self.metrics.files.labels("rejected").inc()
        self.metrics.rejected.labels(error.reason).inc()
        event = msgspec.structs.replace(event, moved_to=printable(str(moved)) if moved else None)
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
        enriched = await self.enricher.enrich_run(run.results.scenarios, run_id=run.run_id)
        await report_enrichment_failures(self.js, self.metrics, run.run_id, run.file_name, enriched)
        return enriched

    async def _publish_with_retry(self, run: ParsedRun) -> None:
        delay = 0.5
        enriched: list[Telemetry | None] | None = None
        enriched_done = False
        while True:
            reconnected = self._reconnected  # a reconnect during this attempt shortens the pause after it
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
                    "publishing %s failed (%s); retrying in %.1fs or on a reconnect",
                    printable(run.file_name),
                    type(exc).__name__,
                    delay,
                )
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(reconnected.wait(), timeout=delay)
                delay = min(delay * 2, self.settings.publish_retry_max)
                continue
            break
        if outcome.duplicate:
            self.metrics.files.labels("duplicate").inc()
            log.info(
                "%s: content already published (generation %d); nothing new",
                printable(run.file_name),
                outcome.generation,
            )
        else:
            self.metrics.files.labels("published").inc()
            self.metrics.scenarios.inc(len(run.results.scenarios))
            log.info(
                "published %s: %d scenarios, digest %s, generation %d",
                printable(run.run_id),
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
                run = await self._off_loop(lambda: self._load(path), "reading and decoding the file")
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
        except Exception as exc:
            if self._stop.is_set() and isinstance(exc, _RETRY_PUBLISH):
                # Shutting down during an outage: not the file's fault; the next start publishes it.
                log.warning(
                    "stopping before %s could be published; it stays for the next start", printable(path.name)
                )
                return
            # A bug must not take the watcher down with it, nor be met again on every restart: the file is
            # moved aside with the exception, like any other file ingest cannot handle.
            log.exception("unexpected error while ingesting %s", printable(path.name))
            error = ResultsFileError(
                "internal_error",
                f"{type(exc).__name__}: {exc}"[:_MAX_INTERNAL_MESSAGE],
                expected="no internal error (please report it with this file)",
            )
            try:
                await self._reject(path, error)
            except Exception:
                log.exception("could not reject %s either; it stays in place", printable(path.name))
        finally:
            self._tasks.pop(path, None)
            self._wake.pop(path, None)

    async def scan(self) -> None:
        # Not glob(): the same name test as the watcher, so both see exactly the same candidates.
        names = await asyncio.to_thread(os.listdir, self.root)
        for name in sorted(n for n in names if is_results_file_name(n)):
            self.schedule(self.root / name)
        pending = [t for t in self._tasks.values() if not t.done()]
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _watcher(self, stop: asyncio.Event) -> types.AsyncGeneratorType[set[FileChange], None]:
        from watchfiles import awatch

        watcher = awatch(
            self.root,
            stop_event=stop,
            debounce=self.settings.debounce_ms,
            # How often the watcher thread wakes to look for changes. A batch is handed over one to two
            # steps after its first event, so the step is most of the time from a drop to its first message;
            # each wake-up costs about 16 us of CPU (0.016 % of a core at 10 a second, 0.056 % more at 20).
            step=min(WATCH_STEP_MS, self.settings.debounce_ms),
            # The watcher thread checks ``stop`` every step, so it need not come back to the event loop every
            # 5 s (watchfiles' default) to be stoppable: once a minute keeps an idle loop asleep.
            rust_timeout=60_000,
            recursive=False,
            force_polling=self.settings.force_polling or None,
        )
        assert isinstance(watcher, types.AsyncGeneratorType)
        return watcher

    async def _start_watching(
        self, stop: asyncio.Event
    ) -> tuple[types.AsyncGeneratorType[set[FileChange], None], asyncio.Future[set[FileChange]]]:
        """A watcher that is watching when this returns, and the pending first batch of its changes.

        ``awatch`` does nothing until its first ``__anext__`` runs. That step creates the ``RustNotify``,
        whose constructor registers the inotify watch (or takes the polling snapshot) before returning and
        which keeps every event from then on until it is asked for them; only then does the generator reach
        its first ``await``. So once the generator is suspended at an await (``ag_await`` set), the watch is
        in place; before that, a file dropped is missed by the watcher, and by a scan that already ran.
        """
        watcher = self._watcher(stop)
        first: asyncio.Future[set[FileChange]] = asyncio.ensure_future(watcher.__anext__())
        deadline = time.monotonic() + 30
        while watcher.ag_await is None:
            if first.done():
                first.result()  # raises why it could not start (the directory is gone, ...)
                break
            if time.monotonic() > deadline:
                first.cancel()
                raise RuntimeError(f"the watcher of {self.root} did not start")
            await asyncio.sleep(0)
        return watcher, first

    async def _restart_watching(
        self, stop: asyncio.Event
    ) -> tuple[types.AsyncGeneratorType[set[FileChange], None], asyncio.Future[set[FileChange]]] | None:
        """A new watcher after the last one failed, retried with backoff; None once ``stop`` is set."""
        delay = 0.5
        while True:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return None
            try:
                self.root.mkdir(parents=True, exist_ok=True)
                return await self._start_watching(stop)
            except Exception as exc:
                log.warning("cannot watch %s yet (%s)", self.root, _describe(exc))
            delay = min(delay * 2, 10.0)

    async def _follow(
        self,
        watcher: types.AsyncGeneratorType[set[FileChange], None],
        pending: asyncio.Future[set[FileChange]],
    ) -> None:
        """Schedule every file the watcher reports, until ``stop`` ends it (or it fails: that raises)."""
        from watchfiles import Change

        try:
            while True:
                try:
                    changes = await pending
                except StopAsyncIteration:
                    return
                for change, raw in changes:
                    if change in (Change.added, Change.modified):
                        self.schedule(Path(raw))
                pending = asyncio.ensure_future(watcher.__anext__())
        finally:
            pending.cancel()

    async def run(self, stop: asyncio.Event) -> None:
        self._stop = stop
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            # Watch first, then scan: a file dropped during the scan is seen by both, never by neither.
            watcher, pending = await self._start_watching(stop)
            await self.scan()
            self.scan_done.set()
            self.metrics.ready.set(1)
            log.info("watching %s for test_results_*.json", self.root)
            while True:
                try:
                    await self._follow(watcher, pending)
                    return
                except Exception as exc:
                    # watchfiles ends on some events (a file name that is not UTF-8): events may have been
                    # lost with it, so watch again and scan again.
                    log.warning("file watcher failed (%s); watching again and rescanning", _describe(exc))
                restarted = await self._restart_watching(stop)
                if restarted is None:
                    return
                watcher, pending = restarted
                await self.scan()
        finally:
            tasks = list(self._tasks.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    """One line naming the innermost error (anyio wraps the watcher's in an ExceptionGroup)."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return printable(f"{type(exc).__name__}: {exc}")


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


def enrich_settings(args: argparse.Namespace) -> EnrichSettings:
    """Enrichment settings from the flags (the one place their defaults are declared)."""
    return EnrichSettings(
        prometheus_url=args.prometheus_url,
        queries=TelemetryQueries.load(args.telemetry_queries),
        timeout_s=args.enrich_timeout,
        retry_budget_s=args.enrich_retry_seconds,
        concurrency=args.enrich_concurrency,
    )


def make_enricher(args: argparse.Namespace, metrics: IngestMetrics | None = None) -> Enricher | None:
    if not args.prometheus_url:
        return None

    def count_empty(query: str, scenarios: int) -> None:
        if metrics is not None:
            metrics.enrichment_empty.labels(query).inc(scenarios)

    return Enricher(
        enrich_settings(args),
        on_empty=count_empty,
    )


async def publish_telemetry_health(js: JetStreamContext, report: TelemetryHealth) -> None:
    """Publish ``report`` and purge the older ones from the events stream: only the newest is of use, and a
    check every 30 s would otherwise fill the stream (and the gateway's replay) with stale copies."""
    ack = await js.publish(subjects.TELEMETRY_HEALTH, msgspec.json.encode(report))
    await js.purge_stream(ack.stream, subject=subjects.TELEMETRY_HEALTH, keep=1)


async def telemetry_health_loop(
    js: JetStreamContext, enricher: Enricher, interval: float, stop: asyncio.Event
) -> None:
    """Check the telemetry sources every ``interval`` seconds and publish each report, until ``stop``.

    A change of a source's state is logged once (not every check): down (with the error), up without data
    (WARNING; INFO for ``gpu``, normal on a machine without GPUs), back with data (INFO)."""
    previous: dict[str, tuple[bool, bool]] = {}
    while not stop.is_set():
        try:
            report = await enricher.check_health()
        except Exception:  # a bug here must not end the checks for good, nor take ingest down
            log.exception("telemetry health check failed")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            continue
        for source in report.sources:
            state = (source.up, source.has_data)
            if previous.get(source.name) == state:
                continue
            if not source.up:
                log.warning("telemetry source %s is down: %s", source.name, printable(source.error or ""))
            elif not source.has_data:
                log.log(
                    logging.INFO if source.name == "gpu" else logging.WARNING,
                    "telemetry source %s has no recent samples (query: %s)%s",
                    source.name,
                    printable(source.query),
                    "; normal on a machine without GPUs" if source.name == "gpu" else "",
                )
            elif source.name in previous:
                log.info(
                    "telemetry source %s has data again (newest sample %.0fs old)",
                    source.name,
                    source.age_seconds or 0.0,
                )
        previous = {s.name: (s.up, s.has_data) for s in report.sources}
        try:
            await publish_telemetry_health(js, report)
        except _TRANSIENT as exc:
            log.warning(
                "could not publish the telemetry health (%s); next check in %gs", _describe(exc), interval
            )
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), interval)


async def reenrich(args: argparse.Namespace, run_id: str) -> int:
    """Fetch telemetry again for the published content of ``run_id`` and publish it as a new generation."""
    enricher = make_enricher(args)
    if enricher is None:
        print("--reenrich needs --prometheus-url (or PROMETHEUS_URL)", file=sys.stderr)
        return 2
    try:
        nc, js, publisher = await open_publisher_within(
            bus.nats_config_from_args(args), args.connect_timeout_total
        )
    except NatsUnavailableError:
        enricher.close()
        raise
    try:
        run = await load_published_run(nc, publisher, run_id)
        if run is None:
            print(f"run {run_id!r} has not been ingested", file=sys.stderr)
            return 1
        enriched = await enricher.enrich_run(run.results.scenarios, run_id=run.run_id)
        await report_enrichment_failures(js, None, run.run_id, run.file_name, enriched)
        outcome = await publisher.publish(run, enriched, new_generation=True)
        missing = sum(1 for t in enriched if t is not None and t.missing_reason)
        print(
            f"re-enriched {run_id}: generation {outcome.generation}, {len(enriched)} scenarios, "
            f"{missing} still missing telemetry"
        )
        return 1 if missing else 0
    except _TRANSIENT as exc:
        raise NatsUnavailableError(
            f"lost NATS at {bus.nats_config_from_args(args).display()} while re-enriching ({_describe(exc)})"
        ) from None
    finally:
        enricher.close()
        await bus.drain(nc)


async def load_published_run(nc: NATS, publisher: RunPublisher, run_id: str) -> ParsedRun | None:
    """Rebuild a run from its manifest and scenario messages in the ingest stream."""
    try:
        entry = await publisher.kv.get(kv_key(run_id))
    except KeyNotFoundError:
        return None
    record = msgspec.json.decode(entry.value or b"", type=IngestRecord)
    manifest = await latest_manifest(nc, run_digest(record.run_id, record.file_sha256))
    if manifest is None:
        return None
    messages = await load_scenarios(nc, manifest)
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
    try:
        js = nc.jetstream()
        await bus.ensure_topology(js, replicas=cfg.replicas)
        kv = await bus.ensure_kv(js, subjects.KV_INGESTED, history=5, replicas=cfg.replicas)
    except BaseException:  # timed out or cancelled half-way: do not leave a reconnecting client behind
        await nc.close()
        raise
    return nc, js, RunPublisher(js, kv, max_payload=nc.max_payload)


class NatsUnavailableError(Exception):
    """One-shot work could not reach NATS; the message names the server(s), credentials redacted."""


async def open_publisher_within(
    cfg: bus.NatsConfig, seconds: float
) -> tuple[NATS, JetStreamContext, RunPublisher]:
    """:func:`open_publisher`, giving up after ``seconds`` in all (the client itself retries forever)."""
    log.info("connecting to NATS at %s (giving up after %gs)", cfg.display(), seconds)
    try:
        async with asyncio.timeout(seconds):
            return await open_publisher(cfg)
    except _TRANSIENT as exc:  # TimeoutError among them
        why = "no answer" if isinstance(exc, TimeoutError) else _describe(exc)
        raise NatsUnavailableError(
            f"cannot reach NATS at {cfg.display()} within {seconds:g}s ({why}); "
            "check --nats-url and that the server is running (--connect-timeout-total sets the limit)"
        ) from None


def _read_and_decode(path: Path, limit: int) -> ParsedRun:
    return decode_results(read_results_file(path, limit), path.name)


async def one_shot(args: argparse.Namespace) -> int:
    """Publish the named files and exit; bad input is reported on stderr and in an error event."""
    cfg = bus.nats_config_from_args(args)
    nc, js, publisher = await open_publisher_within(cfg, args.connect_timeout_total)
    failures = 0
    try:
        for path in args.files:
            shown = printable(str(path))
            try:
                try:
                    run = await in_daemon_thread(
                        functools.partial(_read_and_decode, path, args.max_file_bytes), DEFAULT_READ_TIMEOUT
                    )
                except TimeoutError:
                    raise ResultsFileError(
                        "read_timeout",
                        f"reading the file did not finish within {DEFAULT_READ_TIMEOUT:g}s",
                    ) from None
                outcome = await publisher.publish(run)
            except FileNotFoundError:
                failures += 1
                print(f"{shown}: no such file", file=sys.stderr)
                continue
            except ResultsFileError as error:
                failures += 1
                print(f"{shown}: {error.describe()}", file=sys.stderr)
                await publish_error(js, error.to_event(SERVICE, path.name))
                continue
            state = "already published" if outcome.duplicate else "published"
            print(
                f"{shown}: {state} as run {printable(outcome.run_id)} (digest {outcome.digest}, "
                f"generation {outcome.generation}, {len(run.results.scenarios)} scenarios)"
            )
    except _TRANSIENT as exc:
        raise NatsUnavailableError(
            f"lost NATS at {cfg.display()} while publishing ({_describe(exc)})"
        ) from None
    finally:
        await bus.drain(nc)
    return 1 if failures else 0


async def until_stopped(work: Coroutine[Any, Any, int], stop: asyncio.Event) -> int:
    """Run one-shot ``work`` to its exit code, unless ``stop`` (SIGINT/SIGTERM) comes first: then cancel it
    and return :data:`EXIT_INTERRUPTED`. A NATS that cannot be reached is :data:`EXIT_NATS_UNAVAILABLE`."""
    task = asyncio.ensure_future(work)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if not task.done():
        task.cancel()
        # Its clean-up (closing the NATS client) gets a moment, not a say in when we exit.
        await asyncio.wait({task}, timeout=5)
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    try:
        return task.result()
    except NatsUnavailableError as exc:
        print(exc, file=sys.stderr)
        return EXIT_NATS_UNAVAILABLE


async def main(args: argparse.Namespace, stop: asyncio.Event, ready: asyncio.Event | None = None) -> int:
    if args.reenrich:
        return await until_stopped(reenrich(args, args.reenrich), stop)
    if args.files:
        return await until_stopped(one_shot(args), stop)
    settings = settings_from_args(args)
    metrics = IngestMetrics()
    nc, js, publisher = await open_publisher(bus.nats_config_from_args(args))
    enricher = make_enricher(args, metrics)
    service = IngestService(settings, publisher, js, metrics, enricher)
    bus.on_reconnect(nc, service.on_reconnect)
    health: asyncio.Future[None] | None = None
    if enricher is not None and args.telemetry_health_interval > 0:
        health = asyncio.ensure_future(
            telemetry_health_loop(js, enricher, args.telemetry_health_interval, stop)
        )
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
        if health is not None:
            health.cancel()
            await asyncio.gather(health, return_exceptions=True)
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
