"""NATS subjects, JetStream streams, consumers and KV buckets: the wire contract of the system.

Everything another tool needs in order to subscribe is here and in the README table. Subject tokens that vary
(``<digest>``) are the first 16 hex digits of ``sha256(run_id + "\\n" + sha256(file bytes))``
(shared.resultsfile.run_digest), so they identify one content of one run and never contain characters that
are special to NATS (``.``, ``*``, ``>``, spaces), whatever the file is called.
"""

from __future__ import annotations

import re

PREFIX = "te"

# --- ingest -------------------------------------------------------------------------------------------
#: One message per scenario: ``te.ingest.scenario.<digest>.<index>``, payload ``ScenarioMessage``.
INGEST_SCENARIO = f"{PREFIX}.ingest.scenario"
#: One message per run, published after all of its scenarios: ``te.ingest.run.<digest>``, payload
#: ``RunManifest``. Its arrival means "every scenario of this run is in the stream".
INGEST_RUN = f"{PREFIX}.ingest.run"
#: Every scenario of a run in one message, published after them and before the manifest:
#: ``te.ingest.bundle.<digest>``, payload ``RunBundle``. A copy the services read instead of one message per
#: scenario (one direct get, not ``scenario_count`` of them); a run too large for one message has none.
INGEST_BUNDLE = f"{PREFIX}.ingest.bundle"
INGEST_STREAM = "TE_INGEST"
INGEST_STREAM_SUBJECTS = [f"{PREFIX}.ingest.>"]

# --- computed results -----------------------------------------------------------------------------------
#: ``te.results.<kind>.<digest>``: one message per run and result kind (the kinds are listed once, in
#: services/kinds.py; each kind's durable consumer on the ingest stream carries the kind's name).
RESULTS = f"{PREFIX}.results"
#: ``te.parts.<kind>.<digest>.<i>``: consecutive byte slices of a result too large for one message; the
#: message on ``te.results.<kind>.<digest>`` then holds only the result's envelope and the header
#: ``TE-Parts: <n>`` (shared/runs.py reassembles it).
PARTS = f"{PREFIX}.parts"
RESULTS_STREAM = "TE_RESULTS"
RESULTS_STREAM_SUBJECTS = [f"{PREFIX}.results.>", f"{PREFIX}.parts.>"]

# --- error and pipeline events -------------------------------------------------------------------------------
#: ``te.events.error.<service>``: payload ``ErrorEvent`` (a rejected file, a failed enrichment, ...).
EVENTS_ERROR = f"{PREFIX}.events.error"
#: ``te.events.run.deleted``: payload ``RunDeleted`` (a run removed on request; the gateway drops it).
RUN_DELETED = f"{PREFIX}.events.run.deleted"
#: ``te.events.telemetry.health``: payload ``TelemetryHealth`` (ingest's periodic check of the telemetry sources;
#: after each publish the older ones are purged from the stream, so it holds only the newest).
TELEMETRY_HEALTH = f"{PREFIX}.events.telemetry.health"
EVENTS_STREAM = "TE_EVENTS"
EVENTS_STREAM_SUBJECTS = [f"{PREFIX}.events.>"]

# --- key-value buckets -------------------------------------------------------------------------------------
#: run key -> ``IngestRecord``: which content of a results file has been published (dedupe across restarts).
KV_INGESTED = "te_ingested"
#: hardware fingerprint -> saved power model (modeling worker).
KV_MODELS = "te_models"
#: hardware fingerprint -> bounded training history (modeling worker).
KV_HISTORY = "te_history"
#: kind name -> fingerprint of the settings its stored results were computed with (re-pricing).
KV_KIND_SETTINGS = "te_kind_settings"

# --- request/reply (nats.micro) ------------------------------------------------------------------------------
MICRO_MODELING_SERVICE = "transcode-energy-modeling"
PREDICT_POWER = f"{PREFIX}.predict.power"
#: The advisor (nats.micro service ``transcode-energy-advisor``): request -> response Structs in schemas.
MICRO_ADVISOR_SERVICE = "transcode-energy-advisor"
ADVISOR = f"{PREFIX}.advisor"
ADVISOR_RUNS = f"{ADVISOR}.runs"  # RunsRequest -> RunsResponse
ADVISOR_RECOMMEND = f"{ADVISOR}.recommend"  # RecommendRequest -> RecommendResponse
ADVISOR_COMPARE = f"{ADVISOR}.compare"  # CompareRequest -> RunComparison
ADVISOR_PLAN = f"{ADVISOR}.plan"  # PlanRequest -> FleetPlan
ADVISOR_REPORT = f"{ADVISOR}.report"  # ReportRequest -> ReportResponse
ADVISOR_DELETE_RUN = f"{ADVISOR}.runs.delete"  # DeleteRunRequest -> DeleteRunResponse
#: Every service announces itself as ``transcode-energy-<service>`` (nats.micro), so ``$SRV.PING`` finds it.
MICRO_SERVICE_PREFIX = "transcode-energy-"

_DIGEST_RE = re.compile(r"^[0-9a-f]{16}$")


def _token(digest: str) -> str:
    if not _DIGEST_RE.match(digest):
        raise ValueError(f"not a 16-hex-digit run digest: {digest!r}")
    return digest


def scenario_subject(digest: str, index: int) -> str:
    """Subject of scenario ``index`` (0-based, file order) of the run with this digest."""
    if index < 0:
        raise ValueError("scenario index must be >= 0")
    return f"{INGEST_SCENARIO}.{_token(digest)}.{index}"


def scenario_wildcard(digest: str) -> str:
    """Every scenario subject of one run."""
    return f"{INGEST_SCENARIO}.{_token(digest)}.*"


def run_subject(digest: str) -> str:
    return f"{INGEST_RUN}.{_token(digest)}"


def bundle_subject(digest: str) -> str:
    return f"{INGEST_BUNDLE}.{_token(digest)}"


_NAME_RE = re.compile(r"[a-z][a-z0-9_-]*")


def result_subject(kind: str, digest: str) -> str:
    if not _NAME_RE.fullmatch(kind):
        raise ValueError(f"bad result kind name for a subject: {kind!r}")
    return f"{RESULTS}.{kind}.{_token(digest)}"


def result_part_subject(kind: str, digest: str, index: int) -> str:
    if not _NAME_RE.fullmatch(kind) or index < 0:
        raise ValueError(f"bad result part: kind {kind!r}, index {index}")
    return f"{PARTS}.{kind}.{_token(digest)}.{index}"


def result_kind(subject: str) -> str | None:
    """The kind token of a ``te.results.<kind>.<digest>`` subject, or None for any other subject."""
    parts = subject.split(".")
    if len(parts) != 4 or f"{parts[0]}.{parts[1]}" != RESULTS:
        return None
    return parts[2]


def error_subject(service: str) -> str:
    if not _NAME_RE.fullmatch(service):
        raise ValueError(f"bad service name for a subject: {service!r}")
    return f"{EVENTS_ERROR}.{service}"
