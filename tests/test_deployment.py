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

from services import cli
from services.catalog import service_names
from services.cli import build_parser
from services.kinds import kind_names
from services.up import free_port
from tests.conftest import REPO, require_binary, start_prometheus, up_argv
from tests.test_gateway_e2e import make_run

COMPOSE = REPO / "docker-compose.yml"
CLUSTER = REPO / "docker-compose.cluster.yml"
DASHBOARDS = REPO / "deploy" / "grafana" / "dashboards"
ALERTS = REPO / "deploy" / "alerts" / "alerts.yml"
#: Every service of the registry (ingest, one worker per result kind, the gateway): adding a kind without its
#: compose entry, cluster override, scrape job and alert selector fails these tests.
OUR_SERVICES = set(service_names())


def compose(path: Path = COMPOSE) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def cli_defaults(command: str) -> dict[str, Any]:
    parser = build_parser()
    return vars(parser.parse_args([command]))


def interpolate(value: object) -> str:
    """A compose environment value as compose would pass it with nothing set: ``${X:-d}`` -> ``d``."""
    return re.sub(r"\$\{[A-Z0-9_]+(?::?-([^}]*))?\}", lambda m: m.group(1) or "", str(value))


def merged_environment(name: str, files: tuple[Path, ...]) -> dict[str, str]:
    """The environment a service gets from ``docker compose -f a -f b``: later files add and override keys."""
    env: dict[str, str] = {}
    for path in files:
        service = compose(path)["services"].get(name, {})
        env.update({key: interpolate(value) for key, value in service.get("environment", {}).items()})
    return env


#: Every variable a port flag reads: cleared first so the developer's own environment cannot leak in.
PORT_VARIABLES = ("STATUS_PORT", "INGEST_STATUS_PORT", "METRICS_PORT", "HEALTHCHECK_URL")


def served_port(args: dict[str, Any]) -> int:
    """The port a parsed service configuration serves /ready on: the gateway's all-families listener, or a
    worker's or ingest's status listener."""
    port = args["metrics_port"] if args["command"] == "exporter" else args["status_port"]
    assert isinstance(port, int)
    return port


class TestCompose:
    def test_both_files_parse_and_run_every_service_of_the_registry(self) -> None:
        services = compose()["services"]
        assert set(services) >= OUR_SERVICES
        assert {"nats", "victoriametrics", "vmalert", "grafana"} <= set(services)
        cluster = compose(CLUSTER)["services"]
        assert {"nats", "nats-2", "nats-3"} <= set(cluster)
        for name in OUR_SERVICES:
            assert cluster[name]["environment"]["JS_REPLICAS"] == "3"
            assert cluster[name]["environment"]["NATS_URL"].count("nats://") == 3

    def test_every_service_restarts(self) -> None:
        for path in (COMPOSE, CLUSTER):
            for name, service in compose(path)["services"].items():
                if path == CLUSTER and name in compose()["services"]:
                    continue  # an override of a base service inherits the base's policy
                assert service.get("restart") == "unless-stopped", (path.name, name)

    def test_every_command_is_a_real_subcommand(self) -> None:
        parser = build_parser()
        for name in OUR_SERVICES:
            service = compose()["services"][name]
            expected = "transcode-energy-qoe:latest" if name == "qoe" else "transcode-energy:latest"
            assert service["image"] == expected
            command = service["command"]
            assert command[0] == name
            parser.parse_args(command)  # exits (fails the test) on an unknown flag
        qoe = compose()["services"]["qoe"]["build"]
        assert re.search(rf"^FROM \S+ AS {qoe['target']}$", (REPO / "Dockerfile").read_text(), re.MULTILINE)

    @pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, CLUSTER)], ids=["single", "cluster"])
    def test_every_healthcheck_probes_the_port_its_service_listens_on(
        self, files: tuple[Path, ...], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The port in each compose healthcheck URL, and the one the image's default probe would pick, is
        the port the service's own configuration (command line + environment, as parsed by the real CLI)
        listens on."""
        services = compose()["services"]
        for name, service in services.items():
            assert "healthcheck" in service, name
        for name in sorted(OUR_SERVICES):
            env = merged_environment(name, files)
            with monkeypatch.context() as patch:
                for variable in PORT_VARIABLES:
                    patch.delenv(variable, raising=False)
                for key, value in env.items():
                    patch.setenv(key, value)
                parser = build_parser()  # flags read their variables when declared
                args = vars(parser.parse_args(services[name]["command"]))
            port = served_port(args)
            assert port != 0, f"{name} serves no status port in compose"
            test = services[name]["healthcheck"]["test"]
            assert test[:3] == ["CMD", "transcode-energy", "healthcheck"], (name, test)
            url = urllib.parse.urlsplit(test[3])
            assert (url.hostname, url.port, url.path) == ("127.0.0.1", port, "/ready"), (name, test)
            # The image's own HEALTHCHECK (no URL) reads the main process's argv and the same variables.
            argv = ["/usr/local/bin/python", "/usr/local/bin/transcode-energy", *services[name]["command"]]
            assert cli.served_port(argv, {**IMAGE_ENV, **env}) == port, name

    def test_the_image_default_probe_never_picks_a_port_nothing_serves(self) -> None:
        """With the image's environment and no flags, every service listens somewhere, and the default probe
        picks exactly that port (the parser is built with the image's variables only)."""
        saved = {k: os.environ.pop(k) for k in PORT_VARIABLES if k in os.environ}
        try:
            os.environ.update(IMAGE_ENV)
            parser = build_parser()
            for name in sorted(OUR_SERVICES):
                port = served_port(vars(parser.parse_args([name])))
                argv = ["python", "transcode-energy", name]
                assert port != 0 and cli.served_port(argv, IMAGE_ENV) == port, name
        finally:
            for key in IMAGE_ENV:
                os.environ.pop(key, None)
            os.environ.update(saved)

    def test_mounted_files_exist(self) -> None:
        for path in (COMPOSE, CLUSTER):
            for name, service in compose(path)["services"].items():
                for volume in service.get("volumes", []):
                    source = volume.split(":")[0]
                    if source.startswith("./"):
                        assert (REPO / source).exists(), f"{path.name}: {name} mounts missing {source}"

    def test_the_qoe_worker_reads_its_media_from_a_read_only_mount(self) -> None:
        qoe = compose()["services"]["qoe"]
        root = qoe["environment"]["QOE_MEDIA_ROOT"]
        assert any(v.endswith(f":{root}:ro") for v in qoe["volumes"]), qoe["volumes"]

    def test_nothing_needs_a_variable_to_be_set(self) -> None:
        """`docker compose ps/logs/down/config` interpolate the whole file: a `${X:?...}` guard makes them
        fail when X is unset, so no variable may be required."""
        for path in (COMPOSE, CLUSTER):
            assert not re.search(r"\$\{[A-Z0-9_]+:?\?", path.read_text()), path.name

    def test_ports_match_cli_defaults(self) -> None:
        defaults = cli_defaults("exporter")
        exporter = compose()["services"]["exporter"]
        parser = build_parser()
        args = vars(parser.parse_args(exporter["command"]))
        served = [args["metrics_port"], args["results_port"], args["qoe_port"], args["cost_port"]]
        assert served == [
            defaults["metrics_port"],
            defaults["results_port"],
            defaults["qoe_port"],
            defaults["cost_port"],
        ]
        assert served == [9520, 9502, 9503, 9504]
        # Scalable: no fixed host port (host part empty), loopback only.
        assert exporter["ports"] == [f"127.0.0.1::{defaults['metrics_port']}"]
        for name in OUR_SERVICES - {"exporter"}:
            assert "ports" not in compose()["services"][name], name
        nats_url = compose()["x-service"]["environment"]["NATS_URL"]
        assert nats_url == "nats://nats:4222" and "-js" in compose()["services"]["nats"]["command"]

    def test_scrape_config_reaches_the_gateway_and_every_status_port(self) -> None:
        promtool = require_binary("promtool")
        scrape_path = REPO / "deploy/victoriametrics/scrape.yml"
        subprocess.run([promtool, "check", "config", str(scrape_path)], check=True, capture_output=True)
        jobs = {job["job_name"]: job for job in yaml.safe_load(scrape_path.read_text())["scrape_configs"]}
        gateway = jobs["transcode-energy"]
        assert gateway["honor_labels"] is True
        assert gateway["static_configs"][0]["targets"] == [
            f"exporter:{cli_defaults('exporter')['metrics_port']}"
        ]
        services = compose()["services"]
        for name in sorted(OUR_SERVICES - {"exporter"}):
            (sd,) = jobs[f"transcode-energy-{name}"]["dns_sd_configs"]
            variable = "INGEST_STATUS_PORT" if name == "ingest" else "STATUS_PORT"
            assert sd["names"] == [name] and sd["type"] == "A", name
            assert str(sd["port"]) == services[name]["environment"][variable], name
        # The gateway's event-stream count of rejected files is the one kept (ingest's would double it).
        (drop,) = jobs["transcode-energy-ingest"]["metric_relabel_configs"]
        assert drop["action"] == "drop" and drop["regex"] == "transcode_ingest_rejected_files_total"

    def test_grafana_password_comes_from_a_secret_file(self) -> None:
        loaded = compose()
        grafana = loaded["services"]["grafana"]
        assert "GF_SECURITY_ADMIN_PASSWORD" not in grafana["environment"]
        (secret,) = grafana["secrets"]
        target = grafana["environment"]["GF_SECURITY_ADMIN_PASSWORD__FILE"]
        assert target == f"/run/secrets/{secret}"
        source = loaded["secrets"][secret]["file"]
        assert interpolate(source) == "./deploy/secrets/grafana_admin_password"
        # The default location is ignored by git and kept out of the image's build context.
        assert (REPO / "deploy/secrets/.gitignore").read_text().splitlines()[-2:] == ["*", "!.gitignore"]
        assert "deploy/secrets" in (REPO / ".dockerignore").read_text().splitlines()

    def test_grafana_is_provisioned_and_locked_down(self) -> None:
        grafana = compose()["services"]["grafana"]
        assert grafana["environment"]["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
        provider = yaml.safe_load(
            (REPO / "deploy/grafana/provisioning/dashboards/transcode-energy.yml").read_text()
        )
        path = provider["providers"][0]["options"]["path"]
        assert any(v.endswith(f":{path}:ro") for v in grafana["volumes"])

    def test_alerts_on_worker_errors_select_every_kind(self) -> None:
        """An alert that lists services by name must list every worker kind of the registry."""
        selectors = re.findall(r'service=~"([^"]+)"', ALERTS.read_text())
        assert selectors, "no alert selects services by name any more: drop this test"
        for selector in selectors:
            assert set(selector.split("|")) == set(kind_names()), selector

    def test_vmalert_loads_the_rules(self) -> None:
        vmalert = compose()["services"]["vmalert"]
        assert "-rule=/etc/alerts/alerts.yml" in vmalert["command"]
        assert any(v.startswith("./deploy/alerts/alerts.yml:") for v in vmalert["volumes"])


DOCKERFILE = (REPO / "Dockerfile").read_text()


def stage(name: str | None) -> str:
    """The text of one Dockerfile stage (``None``: the last, default one)."""
    parts = re.split(r"^(?=FROM )", DOCKERFILE, flags=re.MULTILINE)[1:]
    if name is None:
        return parts[-1]
    (found,) = [p for p in parts if re.match(rf"FROM \S+ AS {name}\n", p)]
    return found


#: The environment the runtime image sets (its ENV lines), as the default probe sees it.
IMAGE_ENV: dict[str, str] = dict(
    re.findall(r"(\w+)=(\S+)", stage("runtime").split("\nENV ")[1].split("\nUSER")[0])
)


class TestImage:
    def test_entrypoint_is_the_console_script(self) -> None:
        scripts = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["scripts"]
        entry = re.search(r'^ENTRYPOINT \["([^"]+)"\]$', DOCKERFILE, re.MULTILINE)
        assert entry is not None and entry.group(1) in scripts
        froms = re.findall(r"^FROM (\S+)", DOCKERFILE, re.MULTILINE)
        assert [f for f in froms if "python" in f] == ["python:3.11-slim"] * 2
        assert stage(None).strip() == "FROM runtime", "the default target is the slim runtime"

    def test_runtime_stages_are_slim_and_non_root(self) -> None:
        for name in ("runtime", "qoe"):
            text = stage(name)
            users = re.findall(r"^USER (\S+)$", text, re.MULTILINE)
            assert users and users[-1] != "root", name
            assert not re.search(r"\b(gcc|build-essential|apt-get install)\b", text), name

    def test_healthcheck_is_the_cheap_probe(self) -> None:
        # The CLI's probe imports the standard library only (tests/test_imports.py checks that).
        assert re.search(
            r'^HEALTHCHECK .* CMD \["transcode-energy", "healthcheck"\]$', stage("runtime"), re.MULTILINE
        )

    def test_the_qoe_image_has_ffmpeg_with_libvmaf(self) -> None:
        """The qoe target installs imageio-ffmpeg's ffmpeg and checks for libvmaf at build time; the same
        wheel is a test dependency, so its ffmpeg is checked here for real."""
        text = stage("qoe")
        assert "imageio_ffmpeg.get_ffmpeg_exe()" in text and "/usr/local/bin/ffmpeg" in text
        assert "grep -q ' libvmaf '" in text
        imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
        filters = subprocess.run(
            [imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-filters"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert " libvmaf " in filters


class TestProbe:
    """``transcode-energy healthcheck`` against a real HTTP listener."""

    @pytest.fixture
    def listener(self) -> Iterator[int]:
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200 if self.path == "/ready" else 503)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield server.server_address[1]
        finally:
            server.shutdown()
            server.server_close()

    def test_answers_by_status(self, listener: int) -> None:
        def main(argv: list[str]) -> int:
            return cli.main(["healthcheck", *argv])

        assert main([f"http://127.0.0.1:{listener}/ready"]) == 0
        assert main([f"http://127.0.0.1:{listener}/health"]) == 1  # 503
        assert main([f"http://127.0.0.1:{free_port()}/ready", "--timeout", "1"]) == 1
        assert main(["file:///etc/passwd"]) == 2

    def test_default_url_from_the_main_process_command_line(self, tmp_path: Path, listener: int) -> None:
        cmdline = tmp_path / "cmdline"
        cmdline.write_bytes(
            b"\0".join([b"python", b"transcode-energy", b"cost", b"--status-port", b"%d" % listener])
        )
        default_url = cli.default_health_url
        assert default_url({}, cmdline) == f"http://127.0.0.1:{listener}/ready"
        cmdline.write_bytes(b"\0".join([b"python", b"transcode-energy", b"exporter"]))
        assert default_url({"METRICS_PORT": "9999"}, cmdline) == "http://127.0.0.1:9999/ready"
        cmdline.write_bytes(b"\0".join([b"python", b"transcode-energy", b"modeling"]))
        assert default_url({}, cmdline) is None  # no status port: nothing to probe, and the check says so
        assert default_url({"HEALTHCHECK_URL": "http://127.0.0.1:1/x"}, cmdline) == "http://127.0.0.1:1/x"


def test_dashboards_are_generated_from_the_script() -> None:
    generated = runpy.run_path(str(REPO / "scripts/make_dashboards.py"))["render"]()
    committed = {p.name: p.read_text() for p in DASHBOARDS.glob("*.json")}
    assert committed == generated, "run: python scripts/make_dashboards.py"


def walk(node: object) -> Iterator[tuple[str, object]]:
    """Every (key, value) pair anywhere in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


BOARDS = sorted(DASHBOARDS.glob("*.json"))


class TestDashboards:
    def test_there_are_dashboards(self) -> None:
        assert len(BOARDS) >= 4

    @pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.stem)
    def test_importable_anywhere(self, board: Path) -> None:
        """No datasource uid is written: everything goes through the ``datasource`` variable, whose default
        is the ``__inputs`` placeholder that "Import dashboard" asks for."""
        loaded = json.loads(board.read_text())
        (source_input,) = loaded["__inputs"]
        assert source_input["type"] == "datasource" and source_input["pluginId"] == "prometheus"
        variables = {v["name"]: v for v in loaded["templating"]["list"]}
        source = variables["datasource"]
        assert source["type"] == "datasource" and source["query"] == "prometheus"
        assert source["current"]["value"] == f"${{{source_input['name']}}}"
        references = [value for key, value in walk(loaded) if key == "datasource"]
        assert len(references) > len(loaded["panels"])  # panels and their targets
        assert all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in references), references
        assert "DS_VICTORIAMETRICS" not in board.read_text()
        for panel in loaded["panels"]:
            assert panel["fieldConfig"]["defaults"]["unit"], (board.name, panel["title"])
            assert panel["targets"], (board.name, panel["title"])

    @pytest.mark.parametrize("board", BOARDS, ids=lambda p: p.stem)
    def test_results_panels_follow_the_run_variable(self, board: Path) -> None:
        loaded = json.loads(board.read_text())
        variables = {v["name"]: v for v in loaded["templating"]["list"]}
        exprs = [target["expr"] for panel in loaded["panels"] for target in panel["targets"]]
        for expr in exprs:
            # Every results_scenario_* series carries run_id; each selection of one filters on $run.
            assert len(re.findall(r"results_scenario_\w+", expr)) == expr.count('{run_id="$run"}'), expr
        if any("$run" in e for e in exprs):
            run = variables["run"]
            assert run["type"] == "query"
            assert run["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert run["query"]["query"] == "label_values(results_scenario_mean_power_watts, run_id)"
            assert run["sort"] == 2  # descending: the default is the latest run
        else:
            assert "run" not in variables

    def test_provisioned_datasource_is_what_the_variable_picks(self) -> None:
        """Provisioned dashboards keep the import placeholder, which names no datasource, so Grafana picks
        the default one of the variable's type: the provisioned VictoriaMetrics must be that default and of
        the type the variable lists."""
        (source,) = yaml.safe_load(
            (REPO / "deploy/grafana/provisioning/datasources/victoriametrics.yml").read_text()
        )["datasources"]
        assert source["isDefault"] is True and source["type"] == "prometheus"

    def test_a_panel_joins_results_with_qoe(self) -> None:
        exprs = [
            target["expr"]
            for board in BOARDS
            for panel in json.loads(board.read_text())["panels"]
            for target in panel["targets"]
        ]
        assert any("results_scenario_" in e and "qoe_" in e and "label_replace" in e for e in exprs)


def all_queries(run: str = "") -> list[tuple[str, str]]:
    """(where, expr) for every PromQL expression in the dashboards and alert rules, with ``$run`` replaced
    as the dashboards' run variable would replace it."""
    out = []
    for board in BOARDS:
        for panel in json.loads(board.read_text())["panels"]:
            for target in panel["targets"]:
                out.append((f"{board.name}: {panel['title']}", target["expr"].replace("$run", run)))
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
    "alert TelemetrySourceDown": None,  # fires in this test: see below
    "alert TelemetryStale": "the telemetry sources are down here (TelemetrySourceDown fires), not stale",
    "pipeline-health.json: Telemetry sources: age of the newest sample": "no source answers here: no age",
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


def run_ids(base: str) -> list[str]:
    """The ``run`` variable's values, through the same API Grafana's label_values() uses."""
    url = f"{base}/api/v1/label/run_id/values?" + urllib.parse.urlencode(
        {"match[]": "results_scenario_mean_power_watts"}
    )
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            values: list[str] = json.load(response)["data"]
    except OSError:
        return []
    return values


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
    # $run as the dashboards' variable resolves it: label_values(results_scenario_mean_power_watts, run_id),
    # greatest first. Until the run's results are scraped there is no value, so resolve it in the loop.
    run_id = ""
    queries = all_queries(run_id)
    assert len(queries) > 40
    deadline = time.monotonic() + 90
    missing: list[str] = []
    while time.monotonic() < deadline:
        if not run_id:
            run_id = max(run_ids(base), default="")
            queries = all_queries(run_id)
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
    assert run_id == "test_results_20260101_000000"  # the variable's default is the latest run
    # The alerts that should fire in this system do: a file was rejected and enrichment failed.
    assert query(base, "increase(transcode_ingest_rejected_files_total[15m]) > 0")
    assert query(base, "increase(transcode_enrichment_failures_total[30m]) > 0")
    # Every telemetry source is down: enrichment's Prometheus is unreachable.
    down = query(base, "transcode_telemetry_source_up == 0")
    assert sorted(row["metric"]["source"] for row in down) == ["container", "cpu", "gpu", "rapl"]
    for where, expr in queries:
        if where in EXPECTED_EMPTY and EXPECTED_EMPTY[where] is not None:
            assert query(base, expr) == [], f"{where} fires in a healthy system: {expr}"
