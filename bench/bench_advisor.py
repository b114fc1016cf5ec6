"""The advisor's answers: ``recommend`` and ``report`` for a 100-scenario run, answered by the running
service (target < 50 ms each, NATS round trip included), and a client command's wall time including the
interpreter's start (target < 400 ms).

One ``transcode-energy up`` (default mode) is seeded with a 100-scenario run made from the example run (its
15 scenarios with inline telemetry, repeated with other names and stream counts); the requests go over
loopback NATS from this process, the CLI runs as a subprocess that finds the ``up`` by itself.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgspec

from bench.bench_system import (
    EXAMPLES,
    READY_TIMEOUT_S,
    REPO,
    clean_env,
    quick,
    stop,
    tail,
    transcode_energy,
    wait_until,
)
from bench.harness import Row
from services.up import free_port
from shared import subjects
from shared.schemas import RecommendRequest, ReportRequest, RunsRequest, RunsResponse

SCENARIOS = 100
SERVICE_TARGET_S = 0.050
CLI_TARGET_S = 0.400
RUN_ID = "test_results_20990601_000000"


def hundred_scenarios() -> dict[str, Any]:
    example = next(p for p in EXAMPLES if p.name == "test_results_20251228_203216.json")
    doc: dict[str, Any] = json.loads(example.read_text())
    base = [s for s in doc["scenarios"] if "Baseline" not in s.get("name", "")]
    scenarios = [doc["scenarios"][0]]  # the baseline once
    for i in range(SCENARIOS - 1):
        s = dict(base[i % len(base)])
        s["name"] = f"{s['name']} #{i}"
        scenarios.append(s)
    return {**doc, "scenarios": scenarios}


async def answer_times(url: str, rounds: int) -> tuple[list[float], list[float]]:
    import nats

    nc = await nats.connect(url)
    try:
        recommend: list[float] = []
        report: list[float] = []
        for _ in range(rounds):
            for subject, request, times in (
                (subjects.ADVISOR_RECOMMEND, RecommendRequest(run_id=RUN_ID), recommend),
                (subjects.ADVISOR_REPORT, ReportRequest(run_id=RUN_ID, format="md"), report),
            ):
                started = time.perf_counter()
                reply = await nc.request(subject, msgspec.json.encode(request), timeout=10)
                times.append(time.perf_counter() - started)
                assert "Nats-Service-Error" not in (reply.headers or {}), reply.headers
        return recommend, report
    finally:
        await nc.close()


def advice_done(url: str) -> bool:
    async def ask() -> bool:
        from shared import bus

        # Quiet and without reconnects: up's NATS may not be listening yet, and that is no error.
        nc = await asyncio.wait_for(
            bus.connect(bus.NatsConfig(servers=[url]), "bench", max_reconnect_attempts=0, quiet=True), 5
        )
        try:
            reply = await nc.request(subjects.ADVISOR_RUNS, msgspec.json.encode(RunsRequest()), timeout=5)
            runs = msgspec.json.decode(reply.data, type=RunsResponse).runs
            return any(r.run_id == RUN_ID and "advice" in r.kinds_done for r in runs)
        finally:
            await nc.close()

    try:
        return asyncio.run(ask())
    except Exception:
        return False


def run() -> list[Row]:
    env = clean_env()
    rounds = 5 if quick() else 20
    with tempfile.TemporaryDirectory(prefix="bench-advisor-") as root:
        results = Path(root) / "results"
        results.mkdir()
        (results / f"{RUN_ID}.json").write_text(json.dumps(hundred_scenarios()))
        nats_port = free_port()
        env = {**env, "XDG_STATE_HOME": str(Path(root) / "state")}
        argv = [
            *transcode_energy(),
            "up",
            "--results-dir",
            str(results),
            "--data-dir",
            str(Path(root) / "nats"),
        ]
        argv += ["--nats-port", str(nats_port), "--metrics-port", "0", "--results-port", "0"]
        argv += ["--qoe-port", "0", "--cost-port", "0"]
        log = Path(root) / "up.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)

        def check() -> None:
            if proc.poll() is not None:
                raise RuntimeError(f"up exited with code {proc.returncode}:\n{tail(log)}")

        try:
            url = f"nats://127.0.0.1:{nats_port}"
            wait_until("advice of the 100-scenario run", lambda: advice_done(url), READY_TIMEOUT_S, check)
            recommend, report = asyncio.run(answer_times(url, rounds))
            walls = []
            for _ in range(5 if quick() else 9):
                started = time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "services", "recommend", RUN_ID, "--top", "5"],
                    env=env,
                    capture_output=True,
                    timeout=30,
                    cwd=REPO,
                )
                walls.append(time.perf_counter() - started)
                if done.returncode != 0:
                    raise RuntimeError(done.stderr.decode(errors="replace"))
        finally:
            stop([proc])
    return [
        Row(
            "advisor: recommend, 100 scenarios (service, NATS round trip)",
            statistics.median(recommend),
            len(recommend),
            "te.advisor.recommend",
            SERVICE_TARGET_S,
        ),
        Row(
            "advisor: recommend, first answer (run not yet in memory)",
            recommend[0],
            1,
            "reads 100 scenario messages and 4 results",
            SERVICE_TARGET_S,
        ),
        Row(
            "advisor: report md, 100 scenarios (service, NATS round trip)",
            statistics.median(report),
            len(report),
            "te.advisor.report",
            SERVICE_TARGET_S,
        ),
        Row(
            "advisor: `transcode-energy recommend` wall time",
            statistics.median(walls),
            len(walls),
            "interpreter start, discovery, connect, answer, table",
            CLI_TARGET_S,
        ),
    ]
