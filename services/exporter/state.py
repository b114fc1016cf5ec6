"""What the gateway knows: the newest generation of every run's manifest and results, the latest run's
scenarios, and counts of error events. Updated from NATS, read by the snapshot builder. No I/O.

Which kinds exist, what their results look like and which families they export all come from the kinds
registry (services/kinds.py); nothing here names a kind.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from shared.families import Family, RunView, non_empty, up_family
from shared.kinds import LEGACY_LISTENERS, Kind
from shared.schemas import ErrorEvent, ResultEnvelope, RunManifest, ScenarioMessage, TelemetryHealth

log = logging.getLogger("exporter")

Result = ResultEnvelope

SERVICE_INGEST = "ingest"
#: ErrorEvent reasons of the ingest service that reject a file (enrichment_failed does not).
INGEST_REJECTION_REASONS = (
    "invalid_json",
    "invalid_utf8",
    "schema",
    "out_of_range",
    "inconsistent",
    "empty_run",
    "too_deep",
    "too_large",
    "truncated",
    "outside_directory",
    "bad_symlink",
    "bad_name",
    "not_regular_file",
    "unreadable",
    "read_timeout",
    "scenario_too_large",
    "internal_error",
)
WORKER_ERROR_REASONS = ("compute_failed", "bad_message", "schema_version", "result_too_large", "crashed")
#: The "up"/"alive" family each legacy listener always shows, as the old exporters did.
ALIVE_FAMILIES = {
    "results": ("results_exporter_up", "Results exporter is running"),
    "cost": ("cost_exporter_alive", "Cost exporter is alive"),
}


def listener_groups(kinds: Sequence[Kind]) -> dict[str, tuple[str, ...]]:
    """Snapshot groups served by each listener: the gateway's own (``metrics``) serves every group; each
    legacy listener its alive family and the kinds that name it. Order is the old exporters' order."""
    legacy: dict[str, tuple[str, ...]] = {}
    for listener in LEGACY_LISTENERS:
        alive = (f"{listener}_alive",) if listener in ALIVE_FAMILIES else ()
        legacy[listener] = alive + tuple(k.name for k in kinds if k.listener == listener)
    others = tuple(k.name for k in kinds if k.listener is None)
    everything = tuple(g for groups in legacy.values() for g in groups) + others + ("health",)
    return {"metrics": everything, **legacy}


@dataclass
class GatewayState:
    manifests: dict[str, RunManifest] = field(default_factory=dict)
    #: run_id -> (generation, scenario messages) for runs whose scenarios have been loaded.
    scenarios: dict[str, tuple[int, list[ScenarioMessage]]] = field(default_factory=dict)
    results: dict[tuple[str, str], Result] = field(default_factory=dict)
    errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    received: Counter[str] = field(default_factory=Counter)
    #: Families a kind failed to build (a bad run must cost its own metrics, never the whole gateway).
    family_errors: Counter[str] = field(default_factory=Counter)
    #: The newest telemetry-source health check published by ingest.
    telemetry: TelemetryHealth | None = None
    version: int = 0
    #: A run whose results must be read back from the results stream (set when a deletion exposes it).
    reload_results: str | None = None

    def add_manifest(self, manifest: RunManifest) -> bool:
        current = self.manifests.get(manifest.run_id)
        if current is not None and current.generation > manifest.generation:
            return False
        self.manifests[manifest.run_id] = manifest
        latest = self.latest_run_id
        # Only the latest run is exported: results of older runs would only cost memory.
        self.results = {key: r for key, r in self.results.items() if latest is None or key[1] >= latest}
        self.version += 1
        return True

    def add_result(self, kind: str, result: Result, *, count: bool = True) -> bool:
        run_id = result.run_id
        key = (kind, run_id)
        if count:
            self.received[kind] += 1
        latest = self.latest_run_id
        if latest is not None and run_id < latest:
            return False  # an older run's result: counted, not kept
        current = self.results.get(key)
        if current is not None and current.generation > result.generation:
            return False
        self.results[key] = result
        self.version += 1
        return True

    def remove_run(self, run_id: str, digests: list[str]) -> bool:
        """Forget a run deleted on request, unless a content published since (another digest) replaced it."""
        current = self.manifests.get(run_id)
        if current is None or current.digest not in digests:
            return False
        was_latest = run_id == self.latest_run_id
        del self.manifests[run_id]
        self.scenarios.pop(run_id, None)
        self.results = {key: r for key, r in self.results.items() if key[1] != run_id}
        if was_latest:
            # The run exported now had its results dropped when the deleted one replaced it.
            self.reload_results = self.latest_run_id
        self.version += 1
        return True

    def add_error(self, event: ErrorEvent) -> None:
        self.errors[(event.service, event.reason)] += 1
        self.version += 1

    def set_telemetry_health(self, report: TelemetryHealth) -> bool:
        """Keep ``report`` unless a newer check is known already (replay order is not check order across
        ingest replicas)."""
        if self.telemetry is not None and self.telemetry.checked_at > report.checked_at:
            return False
        self.telemetry = report
        self.version += 1
        return True

    def set_scenarios(self, run_id: str, generation: int, scenarios: list[ScenarioMessage]) -> None:
        self.scenarios = {run_id: (generation, scenarios)}  # only the latest run's are kept
        self.version += 1

    @property
    def latest_run_id(self) -> str | None:
        """The lexicographically greatest run id, as the old exporters chose the latest file."""
        return max(self.manifests) if self.manifests else None

    def latest_manifest(self) -> RunManifest | None:
        run_id = self.latest_run_id
        return self.manifests[run_id] if run_id else None

    def needs_scenarios(self) -> RunManifest | None:
        manifest = self.latest_manifest()
        if manifest is None:
            return None
        loaded = self.scenarios.get(manifest.run_id)
        return None if loaded is not None and loaded[0] == manifest.generation else manifest

    def view(self) -> RunView | None:
        manifest = self.latest_manifest()
        if manifest is None or manifest.run_id not in self.scenarios:
            return None
        _, scenarios = self.scenarios[manifest.run_id]
        results = {kind: r for (kind, run_id), r in self.results.items() if run_id == manifest.run_id}
        return RunView(manifest=manifest, scenarios=scenarios, results=results)


@dataclass(frozen=True)
class Snapshot:
    """Families by listener group, built once per state change; scrapes only serialise it."""

    version: int
    groups: dict[str, list[Family]]

    def families(self, *groups: str) -> list[Family]:
        return [f for g in groups for f in self.groups.get(g, [])]


def kind_groups(view: RunView | None, kinds: Sequence[Kind], errors: Counter[str]) -> dict[str, list[Family]]:
    """Every kind's families for the latest run (pure; may run in a worker thread)."""
    groups: dict[str, list[Family]] = {}
    for kind in kinds:
        groups[kind.name] = []
        if view is None:
            continue
        try:
            groups[kind.name] = non_empty(kind.families(view))
        except Exception:
            # Isolate a run that the kind's families cannot render: its metrics are missing, the gateway and
            # every other kind keep serving, and the failure is logged and counted.
            errors[kind.name] += 1
            log.exception("%s families of run %s could not be built", kind.name, view.manifest.run_id)
    return groups


def build_snapshot(version: int, health: list[Family], groups: dict[str, list[Family]]) -> Snapshot:
    out: dict[str, list[Family]] = {
        f"{listener}_alive": [up_family(name, help_)] for listener, (name, help_) in ALIVE_FAMILIES.items()
    }
    out.update(groups)
    out["health"] = health
    return Snapshot(version=version, groups=out)


def telemetry_families(report: TelemetryHealth | None, now: float) -> list[Family]:
    """The newest telemetry-source health check as four families labelled by ``source``. A ``gpu`` source
    that is up without data is normal on a machine without GPUs (docs/telemetry.md)."""
    up = Family(
        "transcode_telemetry_source_up",
        "1 when the telemetry source's health query answered without error at the last check, else 0 (1/0)",
        ("source",),
    )
    has_data = Family(
        "transcode_telemetry_source_has_data",
        "1 when the telemetry source had a sample within the server's lookback at the last check, else 0 "
        "(1/0; gpu 0 with up 1 is normal without GPUs)",
        ("source",),
    )
    age = Family(
        "transcode_telemetry_source_age_seconds",
        "Age of the telemetry source's newest sample, seconds: its age at the last check plus the seconds "
        "since that check (absent without data)",
        ("source",),
    )
    checked = Family(
        "transcode_telemetry_source_checked_at_seconds",
        "When the telemetry source was last checked, unix time in seconds",
        ("source",),
    )
    for source in report.sources if report is not None else ():
        labels = (source.name,)
        up.add(labels, 1.0 if source.up else 0.0)
        has_data.add(labels, 1.0 if source.has_data else 0.0)
        checked.add(labels, source.checked_at)
        if source.age_seconds is not None:
            age.add(labels, source.age_seconds + max(0.0, now - source.checked_at))
    return [up, has_data, age, checked]


def health_families(
    state: GatewayState, *, ready: bool, lag: dict[str, tuple[int, int]], kinds: Sequence[Kind]
) -> list[Family]:
    """The gateway's own metrics: readiness, what it has seen, errors reported by services, consumer lag."""
    out = []
    up = Family("transcode_gateway_ready", "1 when connected to NATS and caught up with every stream")
    up.add((), 1.0 if ready else 0.0)
    out.append(up)
    runs = Family("transcode_gateway_runs", "Runs known to the gateway (count)")
    runs.add((), len(state.manifests))
    out.append(runs)
    manifest = state.latest_manifest()
    if manifest is not None:
        info = Family(
            "transcode_gateway_latest_run_info",
            "The run whose scenarios are exported",
            ("run_id", "generation"),
        )
        info.add((manifest.run_id, str(manifest.generation)), 1.0)
        out.append(info)
        latency = Family(
            "transcode_pipeline_latency_seconds",
            "Latest run: seconds from ingest to each worker's result",
            ("kind",),
        )
        for kind in kinds:
            result = state.results.get((kind.name, manifest.run_id))
            if result is not None:
                latency.add((kind.name,), max(0.0, result.computed_at - manifest.ingested_at))
        out.append(latency)
        age = Family("transcode_latest_run_age_seconds", "Seconds since the latest run was ingested")
        age.add((), max(0.0, time.time() - manifest.ingested_at))
        out.append(age)
    received = Family(
        "transcode_gateway_results_received", "Result messages received, by kind", ("kind",), kind="counter"
    )
    for kind in kinds:
        received.add((kind.name,), state.received.get(kind.name, 0))
    out.append(received)
    family_errors = Family(
        "transcode_gateway_family_errors",
        "Times a kind's metric families could not be built for the latest run",
        ("kind",),
        kind="counter",
    )
    for kind in kinds:
        family_errors.add((kind.name,), state.family_errors.get(kind.name, 0))
    out.append(family_errors)
    rejected = Family(
        "transcode_ingest_rejected_files",
        "Results files rejected by ingest, by reason",
        ("reason",),
        kind="counter",
    )
    enrichment = Family(
        "transcode_enrichment_failures", "Runs published with telemetry missing", kind="counter"
    )
    enrichment.add((), state.errors.get((SERVICE_INGEST, "enrichment_failed"), 0))
    errors = Family(
        "transcode_service_errors",
        "Error events by service and reason",
        ("service", "reason"),
        kind="counter",
    )
    # Known reasons start at 0, so the first rejection is an increase() that alerts can see.
    counts = Counter({(SERVICE_INGEST, reason): 0 for reason in INGEST_REJECTION_REASONS})
    counts.update({(k.name, reason): 0 for k in kinds for reason in WORKER_ERROR_REASONS})
    counts.update(state.errors)
    for (service, reason), count in sorted(counts.items()):
        errors.add((service, reason), count)
        if service == SERVICE_INGEST and reason != "enrichment_failed":
            rejected.add((reason,), count)
    out += [rejected, enrichment, errors]
    pending = Family(
        "transcode_consumer_pending_messages", "Runs waiting for a worker type (count)", ("consumer",)
    )
    acks = Family(
        "transcode_consumer_ack_pending_messages",
        "Runs being processed, not yet acked (count)",
        ("consumer",),
    )
    for consumer, (num_pending, num_ack_pending) in sorted(lag.items()):
        pending.add((consumer,), num_pending)
        acks.add((consumer,), num_ack_pending)
    out += [pending, acks]
    out += telemetry_families(state.telemetry, time.time())
    return non_empty(out)
