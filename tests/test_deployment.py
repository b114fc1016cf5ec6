"""Deployment files: checked statically (no Docker engine here) and their queries evaluated for real."""

from __future__ import annotations

import contextlib
import json
import os
import re
import runpy
import signal
import subprocess
import time
import tomllib
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from services.cli import build_parser
from services.up import free_port
from tests.conftest import REPO, start_prometheus, up_argv
from tests.test_gateway_e2e import make_run

COMPOSE = REPO / "docker-compose.yml"
CLUSTER = REPO / "docker-compose.cluster.yml"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
ALERTS = REPO / "deploy" / "alerts" / "alerts.yml"
OUR_SERVICES = {"ingest", "modeling", "cost", "qoe", "exporter"}


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def cli_defaults(command: str) -> dict[str, Any]:
    parser = build_parser()
    return vars(parser.parse_args([command]))


class TestCompose:
    def test_both_files_parse_and_run_our_five_services(self) -> None:
        services = compose()["services"]
        assert set(services) >= OUR_SERVICES
        assert {"nats", "victoriametrics", "vmalert", "grafana"} <= set(services)
        cluster = compose(CLUSTER)["services"]
        assert {"nats", "nats-2", "nats-3"} <= set(cluster)
        for name in OUR_SERVICES:
            assert cluster[name]["environment"]["JS_REPLICAS"] == "3"
            assert cluster[name]["environment"]["NATS_URL"].count("nats://") == 3

    def test_every_command_is_a_real_subcommand(self) -> None:
        parser = build_parser()
        for name in OUR_SERVICES:
            service = compose()["services"][name]
            assert service["image"] == "transcode-energy:latest"
            command = service["command"]
            assert command[0] == name
            parser.parse_args(command)  # exits (fails the test) on an unknown flag

    def test_every_service_has_a_healthcheck_on_a_port_it_serves(self) -> None:
        parser = build_parser()
        services = compose()["services"]
        for name, service in services.items():
            assert "healthcheck" in service, name
            if name not in OUR_SERVICES:
                continue
            url = service["healthcheck"]["test"][-1]
            port = int(re.search(r":(\d+)/", url).group(1))  # type: ignore[union-attr]
            args = vars(parser.parse_args(service["command"]))
            served = {args.get("status_port"), args.get("metrics_port")}
            assert port in served, (name, url, served)

    def test_mounted_files_exist(self) -> None:
        for path in (COMPOSE, CLUSTER):
            for name, service in compose(path)["services"].items():
                for volume in service.get("volumes", []):
                    source = volume.split(":")[0]
                    if source.startswith("./"):
                        assert (REPO / source).exists(), f"{path.name}: {name} mounts missing {source}"

    def test_ports_match_cli_defaults(self) -> None:
        defaults = cli_defaults("exporter")
        published = {int(p.split(":")[-1]) for p in compose()["services"]["exporter"]["ports"]}
        assert (
            published
            == {
                defaults["metrics_port"],
                defaults["results_port"],
                defaults["qoe_port"],
                defaults["cost_port"],
            }
            == {9520, 9502, 9503, 9504}
        )
        scrape = yaml.safe_load((REPO / "deploy/victoriametrics/scrape.yml").read_text())
        job = scrape["scrape_configs"][0]
        assert job["honor_labels"] is True
        assert job["static_configs"][0]["targets"] == [f"exporter:{defaults['metrics_port']}"]
        nats_url = compose()["x-service"]["environment"]["NATS_URL"]
        assert nats_url == "nats://nats:4222" and "-js" in compose()["services"]["nats"]["command"]

    def test_grafana_is_provisioned_and_locked_down(self) -> None:
        grafana = compose()["services"]["grafana"]
        assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
        assert "GRAFANA_ADMIN_PASSWORD" in grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD"]
        provider = yaml.safe_load(
            (REPO / "deploy/grafana/provisioning/dashboards/transcode-energy.yml").read_text()
        )
        path = provider["providers"][0]["options"]["path"]
        assert any(v.endswith(f":{path}:ro") for v in grafana["volumes"])
        datasource = yaml.safe_load(
            (REPO / "deploy/grafana/provisioning/datasources/victoriametrics.yml").read_text()
        )
        uid = datasource["datasources"][0]["uid"]
        for board in DASHBOARDS.glob("*.json"):
            for panel in json.loads(board.read_text())["panels"]:
                assert panel["datasource"]["uid"] == uid
                assert panel["fieldConfig"]["defaults"]["unit"], (board.name, panel["title"])
                assert panel["targets"], (board.name, panel["title"])

    def test_vmalert_loads_the_rules(self) -> None:
        vmalert = compose()["services"]["vmalert"]
        assert "-rule=/etc/alerts/alerts.yml" in vmalert["command"]
        assert any(v.startswith("./deploy/alerts/alerts.yml:") for v in vmalert["volumes"])


class TestImage:
    def test_entrypoint_is_the_console_script(self) -> None:
        dockerfile = (REPO / "Dockerfile").read_text()
        scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
        entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]$', dockerfile, re.MULTILINE)
        assert entry is not None and entry.group(1) in scripts
        assert re.search(r"^USER (?!root)\S+$", dockerfile, re.MULTILINE)
        assert "HEALTHCHECK" in dockerfile
        stages = re.findall(r"^FROM (\S+)", dockerfile, re.MULTILINE)
        assert len(stages) == 2 and all("slim" in s for s in stages)
        final = dockerfile[dockerfile.rindex("\nFROM ") :]
        assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", final)


def test_dashboards_are_generated_from_the_script() -> None:
    generated = runpy.run_path(str(REPO / "scripts/make_dashboards.py"))["render"]()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert committed == generated, "run: python scripts/make_dashboards.py"


def all_queries() -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboards and alert rules."""
    out = []
    for board in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(board.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{board.name}: {panel['title']}", target["expr"]))
    for group in yaml.safe_load(ALERTS.read_text())["groups"]:
        for rule in group["rules"]:
            out.append((f"alert {rule['alert']}", rule["expr"]))
    return out


#: Alerts that must be quiet in a healthy test system (their inputs are fine, or the telemetry they watch is
#: not scraped in the test), with the reason.
EXPECTED_EMPTY = {
    "alert EnrichmentFailing": None,  # fires in this test: see below
    "alert IngestRejectingFiles": None,  # fires in this test: see below
    "alert WorkerLagGrowing": "the workers keep up",
    "alert WorkerErrors": "no worker fails",
    "alert GatewayNotReady": "the gateway is ready",
    "alert GatewayDown": "the gateway is scraped",
    "alert HighCpuPackagePower": "rapl_power_watts is telemetry of the benchmark host, not scraped here",
    "alert HighCpuPackagePowerCritical": "as above",
    "alert HighGpuPower": "DCGM is not scraped here",
    "alert HighGpuPowerCritical": "as above",
}


@pytest.fixture
def scraped_system(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`up` (with an unreachable Prometheus for enrichment) scraped by a real Prometheus every second.
    Yields the Prometheus base URL and the results directory."""
    results = tmp_path / "results"
    results.mkdir()
    metrics_port = free_port()
    env = {**os.environ, "ENRICH_RETRY_SECONDS": "0.5", "ENRICH_TIMEOUT_SECONDS": "0.5"}
    system = subprocess.Popen(
        up_argv(
            results,
            tmp_path / "nats",
            metrics_port=metrics_port,
            results_port=0,
            qoe_port=0,
            cost_port=0,
            prometheus_url=f"http://127.0.0.1:{free_port()}",
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    prom, prom_url = start_prometheus(tmp_path, f"127.0.0.1:{metrics_port}")
    try:
        yield prom_url, results
    finally:
        prom.terminate()
        system.send_signal(signal.SIGINT)
        prom.wait(timeout=30)
        system.wait(timeout=60)


def query(base: str, expr: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


@pytest.mark.slow
def test_every_dashboard_and_alert_query_against_a_real_prometheus(scraped_system: tuple[str, Path]) -> None:
    base, results = scraped_system
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            if query(base, "transcode_gateway_ready"):
                break
        time.sleep(0.5)
    # Dropped once Prometheus has seen the counters at 0, so increase() sees the rejection and the failure.
    run = make_run()
    run["scenarios"][3]["viewers"] = 250
    (results / "test_results_20260101_000000.json").write_text(json.dumps(run))
    (results / "test_results_20250101_000000.json").write_text('{"scenarios": [{"fps": "thirty"}]}')
    queries = all_queries()
    assert len(queries) > 40
    deadline = time.monotonic() + 90
    missing: list[str] = []
    while time.monotonic() < deadline:
        missing = []
        for where, expr in queries:
            try:
                rows = query(base, expr)
            except OSError:
                rows = []
            if not rows and where not in EXPECTED_EMPTY:
                missing.append(f"{where}: {expr}")
        enrichment = query(base, "increase(transcode_enrichment_failures_total[1h])") if not missing else []
        if not missing and enrichment and float(enrichment[0]["value"][1]) > 0:
            break
        time.sleep(1)
    assert missing == [], "queries without data:\n" + "\n".join(missing)
    # The alerts that should fire in this system do: a file was rejected and enrichment failed.
    assert query(base, "increase(transcode_ingest_rejected_files_total[15m]) > 0")
    assert query(base, "increase(transcode_enrichment_failures_total[30m]) > 0")
    for where, expr in queries:
        if where in EXPECTED_EMPTY and EXPECTED_EMPTY[where] is not None:
            assert query(base, expr) == [], f"{where} fires in a healthy system: {expr}"
