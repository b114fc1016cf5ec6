"""End-to-end throughput of the system run one process per service, on loopback, with one and two replicas.

One ``nats-server`` (JetStream, with its monitoring port) is started here, then ``python -m services ingest``,
each worker kind of ``services.kinds.KINDS`` once or twice (a second process of a kind is a replica: both bind
the kind's durable consumer) and the exporter. Every process is stopped in ``finally``; every wait is bounded.

* **Many runs**: 100 runs of the 15 scenarios of ``examples/test_results_20251228_203216.json``, each under
  its own run id (``test_results_2099MMDD_HHMMSS.json``), written as ``.tmp`` files and then all moved into
  the watched directory with ``os.replace`` at once. Timed from the first ``os.replace`` until every run has
  every kind's result. Shown as time per scenario (target 1 ms, i.e. >= 1,000 scenarios/s) with the
  scenarios/s in the note; the two-replica row gives the ratio two replicas / one.
* **One big run**: one run of 10,000 scenarios (target 30 s), with one and with two replicas.
* **Kill to recomputed**: one cost replica holds a 10,000-scenario run (its durable consumer shows the run as
  ack-pending on the nats-server monitoring endpoint); it is killed with SIGKILL, a new cost process is started
  at once, and the time from the kill until the advisor lists cost as done for the run is measured (target 30 s;
  JetStream redelivers after the worker's ack wait, ``shared.worker.ACK_WAIT_S``).

"Every run has every kind's result": the advisor API's ``runs`` answer (what ``transcode-energy runs --format
json`` prints) lists every kind in ``kinds_done`` for every run dropped. It is asked in-process over NATS every
0.1 s, on one kept connection (the CLI would add an interpreter start to every poll, a new connection its
set-up); the time is taken after the answer that showed it. The gateway's
``transcode_gateway_results_received_total`` is not used: it counts messages (a derived kind can publish twice
for one run), and with a 10,000-scenario run exported /metrics is about 98 MB and a scrape after a change
took about 4 s here.

Each figure is the median of 3 rounds on the same running system (fresh run ids each round). ``BENCH_QUICK=1``
(``python -m bench --quick``): one round, 20 runs and a 2,000-scenario run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import msgspec

from bench.bench_system import REPO, clean_env, quick, stop, tail
from bench.harness import Row
from services.kinds import kind_names
from services.up import find_nats_server, free_port, wait_for_nats
from shared import subjects
from shared.schemas import RunsRequest, RunsResponse
from shared.worker import ACK_WAIT_S

if TYPE_CHECKING:
    from nats.aio.client import Client as NATS

EXAMPLE = REPO / "examples" / "test_results_20251228_203216.json"

SCENARIO_TARGET_S = 1e-3  # >= 1,000 scenarios/s
BIG_TARGET_S = 30.0
KILL_TARGET_S = 30.0

START_TIMEOUT_S = 120.0
DONE_TIMEOUT_S = 300.0
HOLD_TIMEOUT_S = 120.0
#: Between two questions to the advisor API (each answered by the advice process under test).
POLL_S = 0.1
RUNS_TIMEOUT_S = 5.0
INGEST_STREAM = "TE_INGEST"


def runs_per_round() -> int:
    return 20 if quick() else 100


def big_scenarios() -> int:
    return 2_000 if quick() else 10_000


def rounds() -> int:
    return 1 if quick() else 3


def big_run(n: int) -> bytes:
    """A results file of ``n`` small scenarios (10 s of 5 s power samples each, spread over 8 stream
    counts and 5 bitrates)."""
    scenarios = []
    for i in range(n):
        kbps = 1000 + 500 * (i % 5)
        base = 10.0 + i % 8
        scenarios.append(
            {
                "name": f"{i % 8 + 1} Streams @ {kbps}k",
                "bitrate": f"{kbps}k",
                "resolution": "1280x720",
                "fps": 30,
                "start_time": 1_767_000_000 + 20 * i,
                "end_time": 1_767_000_010 + 20 * i,
                "vmaf_score": 80 + i % 15,
                "telemetry": {"step_seconds": 5, "power_watts": [base, base + 1.0, base + 2.0]},
            }
        )
    return json.dumps({"scenarios": scenarios}).encode()


class RunIds:
    """Distinct run ids ``test_results_2099MMDD_HHMMSS``, one second apart, in increasing order."""

    def __init__(self) -> None:
        self.next = datetime(2099, 1, 1)

    def take(self) -> str:
        run_id = self.next.strftime("test_results_%Y%m%d_%H%M%S")
        self.next += timedelta(seconds=1)
        return run_id


def wait_for(what: str, predicate: Callable[[], bool], timeout: float, check: Callable[[], None]) -> float:
    """Poll ``predicate`` until true; returns the perf_counter time at which it was seen true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        if predicate():
            return time.perf_counter()
        time.sleep(POLL_S)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


class System:
    """nats-server and every service as its own process; ``replicas`` processes per worker kind."""

    def __init__(self, root: Path, env: dict[str, str], replicas: int) -> None:
        self.root = root
        self.env = {**env, "XDG_STATE_HOME": str(root / "state")}
        self.results = root / "results"
        self.results.mkdir()
        self.kinds = kind_names()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.nats: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.replicas = replicas
        #: The cost process the kill measurement kills next.
        self.victim = ""
        self.nats_port = free_port()
        self.monitor_port = free_port()
        self.metrics_port = free_port()
        self.nats_url = f"nats://127.0.0.1:{self.nats_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        #: The poller's loop (a thread of its own) and its one connection, made at the first question.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._nc: NATS | None = None

    # -- processes -----------------------------------------------------------------------------------------

    def start(self) -> None:
        argv = [find_nats_server(), "-js", "-a", "127.0.0.1", "-p", str(self.nats_port)]
        argv += ["-m", str(self.monitor_port), "-sd", str(self.root / "nats")]
        self.nats = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_nats("127.0.0.1", self.nats_port, 15.0, self.nats)
        self.spawn("ingest", ["--results-dir", str(self.results)])
        for kind in self.kinds:
            for _ in range(self.replicas):
                self.spawn(kind)
        ports = ["--metrics-port", str(self.metrics_port), "--results-port", "0", "--qoe-port", "0"]
        self.spawn("exporter", [*ports, "--cost-port", "0"])
        wait_for("every service ready", self.ready, START_TIMEOUT_S, self.check)

    def spawn(self, service: str, extra: list[str] | None = None) -> str:
        """Start one process of ``service``; returns its label (``cost#2``), also its log's name."""
        self.starts += 1
        label = f"{service}#{self.starts}"
        argv = [sys.executable, "-m", "services", service, "--nats-url", self.nats_url, *(extra or [])]
        with self.log(label).open("wb") as out:
            self.procs[label] = subprocess.Popen(
                argv, stdout=out, stderr=subprocess.STDOUT, env=self.env, cwd=REPO
            )
        return label

    def log(self, label: str) -> Path:
        return self.root / f"{label}.log"

    def kill(self, label: str) -> None:
        """SIGKILL one process and forget it (it is no longer a failure that it is gone)."""
        proc = self.procs.pop(label)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    def check(self) -> None:
        for label, proc in self.procs.items():
            if proc.poll() is not None:
                raise RuntimeError(f"{label} exited with code {proc.returncode}:\n{tail(self.log(label))}")

    def stop(self) -> None:
        try:
            if self._loop is not None:
                if self._nc is not None:
                    closing = asyncio.run_coroutine_threadsafe(self._nc.close(), self._loop)
                    with contextlib.suppress(Exception):
                        closing.result(timeout=5)
                self._loop.call_soon_threadsafe(self._loop.stop)
            stop(list(self.procs.values()))
        finally:
            if self.nats is not None:
                stop([self.nats])

    def logged(self, label: str, text: str) -> bool:
        try:
            return text in self.log(label).read_text(errors="replace")
        except OSError:
            return False

    def ready(self) -> bool:
        """Ingest watches, every worker consumes, the advisor API answers, the gateway answers /ready."""
        for label in self.procs:
            service = label.split("#")[0]
            if service == "ingest" and not self.logged(label, "watching "):
                return False
            if service in self.kinds and not self.logged(label, "worker consuming"):
                return False
        if self._ask() is None:
            return False
        try:
            ready_url = self.metrics_url.removesuffix("/metrics") + "/ready"
            with urllib.request.urlopen(ready_url, timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    # -- what the system has done ----------------------------------------------------------------------------

    def ack_pending(self, consumer: str) -> int:
        """The consumer's ack-pending count from nats-server's monitoring endpoint (-1 when not found)."""
        url = f"http://127.0.0.1:{self.monitor_port}/jsz?consumers=true"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                jsz = json.loads(response.read())
        except OSError:
            return -1
        for account in jsz.get("account_details") or []:
            for stream in account.get("stream_detail") or []:
                if stream.get("name") != INGEST_STREAM:
                    continue
                for info in stream.get("consumer_detail") or []:
                    if info.get("name") == consumer:
                        return int(info.get("num_ack_pending", 0))
        return -1

    def kinds_done(self) -> dict[str, set[str]]:
        """run id -> kinds done: the advisor API's ``runs`` answer (empty when it did not answer)."""
        return self._ask() or {}

    def _ask(self) -> dict[str, set[str]] | None:
        # One connection for every question, on a loop of its own: the measuring must not cost the machine
        # under test a connection set-up per poll.
        if self._loop is None:
            self._loop = asyncio.new_event_loop()
            threading.Thread(target=self._loop.run_forever, name="bench-poller", daemon=True).start()
        future = asyncio.run_coroutine_threadsafe(self._runs(), self._loop)
        return future.result(timeout=RUNS_TIMEOUT_S + 10)

    async def _runs(self) -> dict[str, set[str]] | None:
        import nats
        import nats.errors

        if self._nc is None:
            self._nc = await nats.connect(self.nats_url, connect_timeout=5, max_reconnect_attempts=3)
        try:
            request = msgspec.json.encode(RunsRequest())
            reply = await self._nc.request(subjects.ADVISOR_RUNS, request, timeout=RUNS_TIMEOUT_S)
        except (nats.errors.TimeoutError, nats.errors.NoRespondersError):
            return None
        if "Nats-Service-Error-Code" in (reply.headers or {}):
            return None
        answer = msgspec.json.decode(reply.data, type=RunsResponse)
        return {run.run_id: set(run.kinds_done) for run in answer.runs}

    # -- a round -----------------------------------------------------------------------------------------------

    def drop(self, files: dict[str, bytes]) -> float:
        """Write every file as .tmp, then os.replace them all into the watched directory; returns the
        perf_counter time of the first replace."""
        staged = []
        for run_id, data in files.items():
            tmp = self.results / f".{run_id}.json.tmp"
            tmp.write_bytes(data)
            staged.append((tmp, self.results / f"{run_id}.json"))
        started = time.perf_counter()
        for tmp, final in staged:
            tmp.replace(final)  # os.replace: the file appears complete
        return started

    def until_done(self, run_ids: list[str], started: float) -> tuple[float, dict[str, float]]:
        """Seconds from ``started`` until every run listed every kind in ``kinds_done``, and until each
        kind was listed for every run (the time after the answer that showed it)."""
        arrivals: dict[str, float] = {}

        def done() -> bool:
            answer = self.kinds_done()
            now = time.perf_counter() - started
            for kind in self.kinds:
                if kind not in arrivals and all(kind in answer.get(run_id, ()) for run_id in run_ids):
                    arrivals[kind] = now
            return len(arrivals) == len(self.kinds)

        wait_for(f"{len(run_ids)} run(s) with every kind's result", done, DONE_TIMEOUT_S, self.check)
        return max(arrivals.values()), arrivals

    def round(self, files: dict[str, bytes]) -> tuple[float, dict[str, float]]:
        """Seconds from dropping ``files`` until every one has every kind's result, and until each kind's
        results were all in."""
        return self.until_done(list(files), self.drop(files))

    def kill_to_recomputed(self, victim: str, data: bytes, run_id: str) -> float:
        """Drop one run, SIGKILL ``victim`` (the only cost process) while it holds the run, start a new
        cost process at once; seconds from the kill until the cost result is in."""

        def holding() -> bool:
            return self.ack_pending("cost") >= 1

        self.drop({run_id: data})
        wait_for("the cost replica holds the run", holding, HOLD_TIMEOUT_S, self.check)
        killed = time.perf_counter()
        self.kill(victim)
        self.victim = self.spawn("cost")
        if "cost" in self.kinds_done().get(run_id, ()) or self.logged(victim, f"{run_id} generation"):
            raise RuntimeError("the cost result was published before the kill; nothing to recompute")

        def arrived() -> bool:
            return "cost" in self.kinds_done().get(run_id, ())

        return wait_for("cost result after the kill", arrived, DONE_TIMEOUT_S, self.check) - killed


@contextmanager
def running_system(env: dict[str, str], replicas: int) -> Iterator[System]:
    with tempfile.TemporaryDirectory(prefix="bench-throughput-") as tmp:
        system = System(Path(tmp), env, replicas)
        try:
            system.start()
            yield system
        finally:
            system.stop()


def by_kind(samples: list[dict[str, float]]) -> str:
    """Median seconds until each kind's results were all in, in the order of KINDS."""
    kinds = [k for k in kind_names() if all(k in sample for sample in samples)]
    return ", ".join(f"{k} {statistics.median(sample[k] for sample in samples):.1f} s" for k in kinds)


def run() -> list[Row]:
    if not EXAMPLE.exists():
        return [Row(f"throughput: skipped (no {EXAMPLE.name})", 0.0, 0)]
    example = EXAMPLE.read_bytes()
    per_run = len(json.loads(example)["scenarios"])
    n_runs, n_big, n_rounds = runs_per_round(), big_scenarios(), rounds()
    big = big_run(n_big)
    env = clean_env()
    ids = RunIds()
    many: dict[int, list[tuple[float, dict[str, float]]]] = {}
    single: dict[int, list[tuple[float, dict[str, float]]]] = {}
    for replicas in (1, 2):
        with running_system(env, replicas) as system:
            many[replicas] = [
                system.round({ids.take(): example for _ in range(n_runs)}) for _ in range(n_rounds)
            ]
            single[replicas] = [system.round({ids.take(): big}) for _ in range(n_rounds)]
    kills: list[float] = []
    with running_system(env, 1) as system:
        system.victim = next(label for label in system.procs if label.startswith("cost#"))
        for _ in range(n_rounds):
            kills.append(system.kill_to_recomputed(system.victim, big, ids.take()))

    def median(samples: list[tuple[float, dict[str, float]]]) -> float:
        return statistics.median(total for total, _ in samples)

    scenarios = n_runs * per_run
    rate = {r: scenarios / median(many[r]) for r in many}
    rows = []
    for replicas in (1, 2):
        note = f"{rate[replicas]:,.0f} scenarios/s (target >= 1,000/s), batch {median(many[replicas]):.2f} s"
        if replicas == 2:
            note += f"; 2 replicas / 1 = {rate[2] / rate[1]:.2f}x"
        note += f"; each kind in: {by_kind([k for _, k in many[replicas]])}"
        rows.append(
            Row(
                f"throughput: {n_runs} runs x {per_run} scenarios, {replicas} replica(s) per kind, per scenario",
                median(many[replicas]) / scenarios,
                n_rounds,
                note,
                SCENARIO_TARGET_S,
            )
        )
    for replicas in (1, 2):
        note = f"{n_big / median(single[replicas]):,.0f} scenarios/s"
        if replicas == 2:
            note += f"; 2 replicas / 1 = {median(single[1]) / median(single[2]):.2f}x"
        note += f"; each kind in: {by_kind([k for _, k in single[replicas]])}"
        rows.append(
            Row(
                f"throughput: one run of {n_big:,} scenarios, {replicas} replica(s) per kind",
                median(single[replicas]),
                n_rounds,
                note,
                BIG_TARGET_S,
            )
        )
    rows.append(
        Row(
            f"throughput: cost SIGKILLed holding a {n_big:,}-scenario run, kill to recomputed",
            statistics.median(kills),
            len(kills),
            f"new cost process started at the kill; max {max(kills):.1f} s; ack wait {ACK_WAIT_S:g} s",
            KILL_TARGET_S,
        )
    )
    return rows
