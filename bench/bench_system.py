"""The whole system as a user runs it, on loopback: memory, idle CPU, file-drop latency, the health probe.

* ``up`` in its default one-process mode with the example runs processed: VmRSS of ``up`` plus its
  ``nats-server`` child (target 90 MiB; the three old exporters used 384 MiB), median of fresh starts.
* Every service standalone (``python -m services <name>``) against one ``nats-server`` started here, with the
  example runs processed: VmRSS of each (targets: exporter 35, ingest 40, cost and qoe 45, modeling 65 MiB).
* ``transcode-energy healthcheck`` against the live gateway: peak RSS and CPU time of the probe, read with
  ``getrusage(RUSAGE_CHILDREN)`` in a parent that spawns nothing else (targets 20 MiB and 0.1 s), 7 runs.
* Idle CPU of ``up`` + ``nats-server`` over 30 s once settled (target 0.3 % of one core): the window starts
  ``SETTLE_S`` after processing, because the first seconds after a burst still hold its tail (the gateway's
  last consumer-lag poll, nats-server's own housekeeping and Go's memory scavenger). That tail is measured too
  and printed beside it, without a target.
* A new results file dropped into the watched directory (written as ``.tmp``, then ``os.replace``) until the
  gateway's ``transcode_gateway_latest_run_info`` names it (target 0.5 s), 5 drops.

"Processed" means: ``up`` printed ``ready`` and ``transcode_gateway_results_received_total`` of every kind
in the exposition reached the number of example runs. ``BENCH_QUICK=1`` (or ``python -m bench --quick``)
shortens the idle window to 10 s and starts everything once instead of three times.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from pathlib import Path

from bench.harness import Row
from services.catalog import service_names
from services.up import find_nats_server, free_port, wait_for_nats

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = sorted((REPO / "examples").glob("test_results_*.json"))
MIB = 1024 * 1024

OLD_EXPORTERS_MIB = 384.0
UP_TARGET_MIB = 90.0
#: Standalone services in the order `up` starts them, with their RSS targets in MiB.
#: The issue's targets; a service without one (a kind added later, such as advice) is measured and shown
#: against the largest worker target.
SERVICE_TARGETS_MIB = {"ingest": 40.0, "modeling": 65.0, "cost": 45.0, "qoe": 45.0, "exporter": 35.0}
WORKER_TARGET_MIB = 45.0
PROBE_RSS_TARGET_MIB = 20.0
PROBE_CPU_TARGET_S = 0.1
PROBE_RUNS = 7
IDLE_TARGET_PERCENT = 0.3
DROP_TARGET_S = 0.5
DROPS = 5

READY_TIMEOUT_S = 120.0
PROCESSED_TIMEOUT_S = 180.0
DROP_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 30.0
#: After the last result is counted: let the gateway finish its rebuild before memory is read.
SETTLE_S = 1.0

RECEIVED = re.compile(r'^transcode_gateway_results_received_total\{kind="([^"]+)"\} (\S+)$', re.MULTILINE)

#: Run by a fresh, lean interpreter (-I -S, only os and resource) whose only child is the probe, so
#: RUSAGE_CHILDREN is the probe's alone. On Linux a child's ru_maxrss starts at its parent's RSS (the address
#: space it had until exec), so this parent is kept small; that floor is measured with /bin/true and shown.
PROBE_PARENT = """
import os, resource, sys
devnull = [(os.POSIX_SPAWN_OPEN, fd, os.devnull, os.O_WRONLY, 0) for fd in (1, 2)]
pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ, file_actions=devnull)
_, status = os.waitpid(pid, 0)
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
print(os.waitstatus_to_exitcode(status), usage.ru_maxrss, usage.ru_utime + usage.ru_stime)
"""


def quick() -> bool:
    return os.environ.get("BENCH_QUICK", "") not in ("", "0")


def repeats() -> int:
    return 1 if quick() else 3


def idle_window_s() -> float:
    return 10.0 if quick() else 30.0


#: Seconds after processing before the idle window opens (measured as the "settling" row).
SETTLE_S = 10.0


# ---------------------------------------------------------------------------------------------------------
# /proc and the gateway
# ---------------------------------------------------------------------------------------------------------


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024 / MIB
    raise RuntimeError(f"no VmRSS for pid {pid}")


def _stat_fields(pid: int) -> list[str]:
    """Fields of /proc/<pid>/stat after the command name (the first is the state, field 3)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def cpu_seconds(pid: int) -> float:
    fields = _stat_fields(pid)
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def alive(pid: int) -> bool:
    try:
        return _stat_fields(pid)[0] not in ("Z", "X")
    except (OSError, ValueError):
        return False


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parents[int(entry.name)] = int(_stat_fields(int(entry.name))[1])
            except (OSError, ValueError, IndexError):
                continue
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, ppid in parents.items() if ppid == parent]
        found += children
        frontier += children
    return found


def command_name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


def scrape(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return None


def received(text: str) -> dict[str, float]:
    return {kind: float(value) for kind, value in RECEIVED.findall(text)}


def processed(url: str, runs: int) -> bool:
    text = scrape(url)
    counts = received(text) if text else {}
    return bool(counts) and all(v >= runs for v in counts.values())


def wait_until(what: str, predicate: Callable[[], bool], timeout: float, check: Callable[[], None]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        check()
        if predicate():
            return
        time.sleep(0.05)
    raise TimeoutError(f"{what}: not within {timeout:g} s")


# ---------------------------------------------------------------------------------------------------------
# Processes: every one started here is stopped here
# ---------------------------------------------------------------------------------------------------------


def clean_env() -> dict[str, str]:
    """Our environment without the project's own settings (a stray PROMETHEUS_URL would change the run)."""
    from services.cli import build_parser
    from shared.config import env_flags

    names: set[str] = set()
    for action in build_parser()._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_parser in action.choices.values():
                names.update(env_flags(sub_parser))
    return {k: v for k, v in os.environ.items() if k not in names}


def seed(results: Path) -> None:
    results.mkdir(parents=True)
    for example in EXAMPLES:
        shutil.copy(example, results / example.name)


def tail(log: Path, lines: int = 15) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def stop(procs: list[subprocess.Popen[bytes]], orphans: Sequence[int] = ()) -> None:
    """SIGTERM (the services drain), then SIGKILL after STOP_TIMEOUT_S; ``orphans`` are grandchildren
    (`up`'s nats-server) that `up` should have stopped and are stopped by pid if it did not."""
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for proc in procs:
        try:
            proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    for pid in orphans:
        if alive(pid):
            os.kill(pid, signal.SIGTERM)
            end = time.monotonic() + 10
            while alive(pid) and time.monotonic() < end:
                time.sleep(0.05)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)


def transcode_energy() -> list[str]:
    script = Path(sys.executable).parent / "transcode-energy"
    return [str(script)] if script.exists() else [sys.executable, "-m", "services"]


class Up:
    """`transcode-energy up` (default mode) on a seeded temporary results directory."""

    def __init__(self, root: Path, env: dict[str, str]) -> None:
        self.results = root / "results"
        self.log = root / "up.log"
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/metrics"
        seed(self.results)
        argv = [*transcode_energy(), "up", "--results-dir", str(self.results)]
        argv += ["--data-dir", str(root / "nats")]
        argv += [
            "--metrics-port",
            str(self.port),
            "--results-port",
            "0",
            "--qoe-port",
            "0",
            "--cost-port",
            "0",
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
        self.children: list[int] = []

    def check(self) -> None:
        if self.proc.poll() is not None:
            raise RuntimeError(f"up exited with code {self.proc.returncode}:\n{tail(self.log)}")

    def wait_processed(self) -> None:
        def ready() -> bool:
            return "ready" in self.log.read_text(errors="replace").splitlines()

        wait_until("up printed ready", ready, READY_TIMEOUT_S, self.check)
        self.children = descendants(self.proc.pid)
        wait_until(
            "example runs processed",
            lambda: processed(self.url, len(EXAMPLES)),
            PROCESSED_TIMEOUT_S,
            self.check,
        )
        time.sleep(SETTLE_S)
        self.children = descendants(self.proc.pid)

    @property
    def pids(self) -> list[int]:
        return [self.proc.pid, *self.children]

    def stop(self) -> None:
        stop([self.proc], self.children)


@contextmanager
def running_up(env: dict[str, str]) -> Iterator[Up]:
    with tempfile.TemporaryDirectory(prefix="bench-system-") as root:
        up = Up(Path(root), env)
        try:
            up.wait_processed()
            yield up
        finally:
            up.stop()


# ---------------------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------------------


def idle_cpu_percent(pids: list[int], window: float) -> float:
    start_t, start_cpu = time.monotonic(), sum(cpu_seconds(p) for p in pids)
    time.sleep(window)
    end_t, end_cpu = time.monotonic(), sum(cpu_seconds(p) for p in pids)
    return 100.0 * (end_cpu - start_cpu) / (end_t - start_t)


def drop_latencies(up: Up) -> list[float]:
    data = EXAMPLES[-1].read_bytes()
    out = []
    for i in range(DROPS):
        run_id = f"test_results_20990101_{i:06d}"
        needle = f'run_id="{run_id}"'

        def shown(needle: str = needle) -> bool:
            text = scrape(up.url) or ""
            return any(
                needle in line
                for line in text.splitlines()
                if line.startswith("transcode_gateway_latest_run_info")
            )

        tmp = up.results / f".{run_id}.json.tmp"
        tmp.write_bytes(data)
        started = time.perf_counter()
        tmp.replace(up.results / f"{run_id}.json")  # os.replace: the file appears complete
        wait_until(f"{run_id} in latest_run_info", shown, DROP_TIMEOUT_S, up.check)
        out.append(time.perf_counter() - started)
        # The next drop starts on a quiet system: every worker's result for this one is in.
        done = partial(processed, up.url, len(EXAMPLES) + i + 1)
        wait_until(f"{run_id} processed", done, PROCESSED_TIMEOUT_S, up.check)
    return out


def spawned(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Peak RSS (MiB) and CPU seconds (user+sys) of ``argv``, run by PROBE_PARENT; it must exit 0."""
    parent = [sys.executable, "-I", "-S", "-c", PROBE_PARENT, *argv]
    done = subprocess.run(parent, capture_output=True, text=True, timeout=60, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"probe parent failed: {done.stderr.strip()}")
    code, maxrss, cpu = done.stdout.split()
    if code != "0":
        raise RuntimeError(f"{' '.join(argv)} exited with {code}")
    # ru_maxrss is in KiB on Linux, bytes on macOS.
    scale = MIB if sys.platform == "darwin" else 1024
    return int(maxrss) / scale, float(cpu)


def standalone(env: dict[str, str]) -> dict[str, float]:
    """RSS (MiB) of each service run alone, plus the nats-server they share, after the example runs."""
    with tempfile.TemporaryDirectory(prefix="bench-system-") as tmp:
        root = Path(tmp)
        results = root / "results"
        seed(results)
        nats_port = free_port()
        procs: dict[str, subprocess.Popen[bytes]] = {}
        logs: dict[str, Path] = {}
        nats_argv = [
            find_nats_server(),
            "-js",
            "-a",
            "127.0.0.1",
            "-p",
            str(nats_port),
            "-sd",
            str(root / "nats"),
        ]
        nats = subprocess.Popen(nats_argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_nats("127.0.0.1", nats_port, 15.0, nats)
            url = f"nats://127.0.0.1:{nats_port}"
            metrics_port = free_port()
            for name in service_names():
                argv = [sys.executable, "-m", "services", name, "--nats-url", url]
                if name == "ingest":
                    argv += ["--results-dir", str(results)]
                if name == "exporter":
                    argv += ["--metrics-port", str(metrics_port)]
                    argv += ["--results-port", "0", "--qoe-port", "0", "--cost-port", "0"]
                logs[name] = root / f"{name}.log"
                with logs[name].open("wb") as out:
                    procs[name] = subprocess.Popen(
                        argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO
                    )

            def check() -> None:
                for name, proc in procs.items():
                    if proc.poll() is not None:
                        raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{tail(logs[name])}")

            metrics = f"http://127.0.0.1:{metrics_port}/metrics"
            wait_until(
                "example runs processed",
                lambda: processed(metrics, len(EXAMPLES)),
                PROCESSED_TIMEOUT_S,
                check,
            )
            time.sleep(SETTLE_S)
            check()
            rss = {name: rss_mib(proc.pid) for name, proc in procs.items()}
            rss["nats-server"] = rss_mib(nats.pid)
            return rss
        finally:
            stop(list(procs.values()))
            stop([nats])


def run() -> list[Row]:
    if not EXAMPLES:
        return [Row("system: skipped (no examples/test_results_*.json)", 0.0, 0)]
    env = clean_env()
    window = idle_window_s()
    sessions = repeats()
    up_rss: list[float] = []
    nats_rss: list[float] = []
    idle: list[float] = []
    settling: list[float] = []
    drops: list[float] = []
    probes: list[tuple[float, float]] = []
    floor = 0.0
    for session in range(sessions):
        with running_up(env) as up:
            nats = [p for p in up.children if command_name(p).startswith("nats-server")]
            up_rss.append(sum(rss_mib(p) for p in up.pids))
            nats_rss.append(sum(rss_mib(p) for p in nats))
            settling.append(idle_cpu_percent(up.pids, SETTLE_S))
            idle.append(idle_cpu_percent(up.pids, window))
            if session == 0:
                drops = drop_latencies(up)
                health = up.url.removesuffix("/metrics") + "/health"
                argv = [*transcode_energy(), "healthcheck", health]
                probes = [spawned(argv, env) for _ in range(PROBE_RUNS)]
                true = shutil.which("true") or "/bin/true"
                floor = statistics.median(spawned([true], env)[0] for _ in range(3))
    alone = [standalone(env) for _ in range(sessions)]

    total = statistics.median(up_rss)
    nats_mib = statistics.median(nats_rss)
    rows = [
        Row(
            "system: up (one process) RSS, up + nats-server",
            total,
            sessions,
            f"up {total - nats_mib:.1f} + nats {nats_mib:.1f} MiB; old exporters 384 MiB: "
            f"384 / measured = {OLD_EXPORTERS_MIB / total:.1f}x",
            UP_TARGET_MIB,
            "MiB",
        )
    ]
    for name, target in sorted((n, SERVICE_TARGETS_MIB.get(n, WORKER_TARGET_MIB)) for n in service_names()):
        value = statistics.median(a[name] for a in alone)
        rows.append(
            Row(f"system: standalone {name} RSS", value, sessions, "example runs processed", target, "MiB")
        )
    rows.append(
        Row(
            "system: standalone nats-server RSS",
            statistics.median(a["nats-server"] for a in alone),
            sessions,
            "shared by the services above",
            unit="MiB",
        )
    )
    rows += [
        Row(
            "system: healthcheck probe peak RSS",
            statistics.median(p[0] for p in probes),
            len(probes),
            f"ru_maxrss of RUSAGE_CHILDREN, against up's /health; method floor (true) {floor:.1f} MiB",
            PROBE_RSS_TARGET_MIB,
            "MiB",
        ),
        Row(
            "system: healthcheck probe CPU (user+sys)",
            statistics.median(p[1] for p in probes),
            len(probes),
            "whole process: interpreter start, import, request",
            PROBE_CPU_TARGET_S,
        ),
        Row(
            f"system: up idle CPU over {window:g} s, up + nats-server",
            statistics.median(idle),
            len(idle),
            f"% of one core, from {SETTLE_S:g} s after the example runs were processed",
            IDLE_TARGET_PERCENT,
            "%",
        ),
        Row(
            f"system: up CPU in the first {SETTLE_S:g} s after processing",
            statistics.median(settling),
            len(settling),
            "% of one core; the tail of the burst, before the idle window",
            unit="%",
        ),
        Row(
            "system: file drop to /metrics latest_run_info",
            statistics.median(drops),
            len(drops),
            f"max {max(drops) * 1000:.0f} ms; .tmp then os.replace",
            DROP_TARGET_S,
        ),
    ]
    return rows
