"""The compose stack's own services, started the way docker-compose.yml starts them, without Docker.

Each service of the registry runs as a process with exactly the command and environment its compose entry
gives it (YAML anchors and merges resolved, ``${X:-default}`` as compose interpolates it with nothing set).
Only what Docker itself would provide is translated: the compose network's host names become the real
servers of this test on loopback, the containers' shared status port 8080 a free port each, and a mounted
path a temporary directory. Then a results file is dropped, the advisor is asked about it, and every status
listener the scrape config names is scraped.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from services.catalog import service_names
from services.kinds import kind_names
from services.up import free_port
from tests.conftest import EXAMPLES, VictoriaMetrics, start_nats, stop_process
from tests.test_deployment import COMPOSE, compose, interpolate

pytestmark = pytest.mark.slow

RUN = "test_results_20251228_203216"
SCRAPE = COMPOSE.parent / "deploy" / "victoriametrics" / "scrape.yml"
TIMEOUT = 90.0


def translate(value: str, hosts: dict[str, str], mounts: dict[str, str]) -> str:
    """What Docker resolves for a process inside the stack, resolved for one on loopback instead."""
    for container, local in hosts.items():
        value = value.replace(container, local)
    for container, local in mounts.items():
        if value == container or value.startswith(container + "/"):
            value = local + value[len(container) :]
    return value


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


class Stack:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        #: service -> the port its /ready and /metrics are served on here (8080 or 9520 in compose).
        self.ports: dict[str, int] = {}
        self.env: dict[str, str] = {}

    def log_tail(self) -> str:
        return "\n".join(f"--- {name}\n{path.read_text()[-2500:]}" for name, path in self.logs.items())


def service_environment(name: str) -> dict[str, str]:
    loaded = compose()["services"][name].get("environment", {})
    return {key: interpolate(value) for key, value in loaded.items()}


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("compose")
    nats = start_nats(tmp / "nats")
    vm_port = free_port()
    vm = VictoriaMetrics(f"http://127.0.0.1:{vm_port}", vm_port, tmp / "vm", subprocess.Popen(["true"]))
    vm.start()
    results, media = tmp / "results", tmp / "media"
    results.mkdir()
    media.mkdir()
    hosts = {"nats:4222": f"127.0.0.1:{nats.port}", "victoriametrics:8428": f"127.0.0.1:{vm_port}"}
    mounts = {"/results": str(results), "/media": str(media)}
    stack = Stack(tmp)
    # Nothing of the developer's shell that a service reads may leak in: only what compose sets applies.
    base = {key: os.environ[key] for key in ("PATH", "HOME", "LANG", "TMPDIR") if key in os.environ}
    base["XDG_STATE_HOME"] = str(tmp / "state")
    stack.env = {**base, "NATS_URL": nats.url}
    try:
        for name in service_names():
            service = compose()["services"][name]
            env = {k: translate(v, hosts, mounts) for k, v in service_environment(name).items()}
            command = [translate(str(arg), hosts, mounts) for arg in service["command"]]
            assert env["BIND_ADDRESS"] == "0.0.0.0"
            env["BIND_ADDRESS"] = "127.0.0.1"  # loopback only here; in compose the container's network
            if name == "exporter":
                # Every listener port of the command gets a free port of its own; 9520 is the one probed.
                for flag in ("--metrics-port", "--results-port", "--qoe-port", "--cost-port"):
                    index = command.index(flag) + 1
                    port = free_port()
                    if flag == "--metrics-port":
                        stack.ports[name] = port
                    command[index] = str(port)
            else:
                variable = "INGEST_STATUS_PORT" if name == "ingest" else "STATUS_PORT"
                assert env[variable] == "8080", (name, env)
                stack.ports[name] = free_port()
                env[variable] = str(stack.ports[name])
            log = tmp / f"{name}.log"
            stack.logs[name] = log
            with log.open("wb") as out:
                stack.procs[name] = subprocess.Popen(
                    [sys.executable, "-m", "services", *command],
                    env={**base, **env},
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        deadline = time.monotonic() + TIMEOUT
        for name, port in stack.ports.items():
            while not http_ok(f"http://127.0.0.1:{port}/ready"):
                if stack.procs[name].poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"{name} never became ready\n{stack.log_tail()}")
                time.sleep(0.2)
        (results / f"{RUN}.json").write_text((EXAMPLES / f"{RUN}.json").read_text())
        yield stack
    finally:
        for proc in reversed(stack.procs.values()):
            stop_process(proc)
        vm.stop()
        nats.stop()


def client(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services", *args, "--format", "json"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_compose_starts_every_service_of_the_registry(stack: Stack) -> None:
    assert list(stack.procs) == service_names()
    assert set(kind_names()) <= set(stack.procs)


def test_the_advisor_answers_for_a_dropped_run(stack: Stack) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        done = client(stack, "runs")
        runs = json.loads(done.stdout)["runs"] if done.returncode == 0 else []
        if any(r["run_id"] == RUN and sorted(r["kinds_done"]) == sorted(kind_names()) for r in runs):
            break
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{RUN} not done by every kind: {done.stdout}{done.stderr}\n{stack.log_tail()}"
            )
        time.sleep(0.5)
    answer = client(stack, "recommend", RUN)
    assert answer.returncode == 0, answer.stderr
    recommended = json.loads(answer.stdout)
    scenarios = json.loads((EXAMPLES / f"{RUN}.json").read_text())["scenarios"]
    assert recommended["run_id"] == RUN and recommended["recommendations"]
    # Every scenario but the idle baseline is ranked, or counted as left out.
    measured = [s for s in scenarios if "baseline" not in s["name"].lower()]
    assert len(recommended["rows"]) + recommended["filtered_out"] == len(measured)
    assert [row["rank"] for row in recommended["rows"]][:1] == [1]


def test_every_job_of_the_scrape_config_is_served(stack: Stack) -> None:
    """Each job names a compose service and port; the service it names serves /metrics there."""
    jobs = yaml.safe_load(SCRAPE.read_text())["scrape_configs"]
    served = set()
    for job in jobs:
        for sd in job.get("dns_sd_configs", []):
            (name,) = sd["names"]
            assert sd["port"] == 8080, job
            served.add(name)
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                served.add(target.split(":")[0])
    assert served == set(service_names())
    for name, port in stack.ports.items():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
        if name in kind_names():
            assert f'transcode_worker_runs_processed_total{{kind="{name}"}}' in text, name


def test_cost_and_advice_price_alike() -> None:
    """The advisor's plans and reports must price what the stored costs priced: same variables, same values."""
    pricing = ("REGION", "CURRENCY", "ENERGY_COST_PER_KWH", "CPU_COST_PER_HOUR", "GPU_COST_PER_HOUR")
    cost, advice = service_environment("cost"), service_environment("advice")
    for variable in (*pricing, "ELECTRICITY_MAPS_TOKEN"):
        assert cost[variable] == advice[variable], variable
