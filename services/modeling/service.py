"""Modeling worker: per-scenario statistics and power predictions for every ingested run.

For each run it computes the old results exporter's statistics (shared/scenario_stats.py), adds the run's
measured scenarios to the training history of its hardware (KV ``te_history``, bounded), trains the power
model on that history (shared/power_model.py), saves it (KV ``te_models``, keyed by the hardware
fingerprint) and publishes a ``ModelingResult``. It also answers "predict power for this configuration" on
``te.predict.power`` (a nats.micro service, discoverable with ``$SRV.PING``/``$SRV.INFO``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import time

import msgspec
import nats.micro
from nats.aio.client import Client as NATS
from nats.js.errors import KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from nats.micro.request import Request
from nats.micro.service import Service

from shared import bus, subjects
from shared.config import flag
from shared.power_model import (
    MIN_TRAINING_POINTS,
    PowerModel,
    TrainingPoint,
    features_of,
    hardware_fingerprint,
    train,
)
from shared.scenario_stats import run_stats
from shared.schemas import ModelingResult, ModelingScenario, PredictRequest, PredictResponse
from shared.telemetry import resolve
from shared.worker import RunInput, RunWorker, add_worker_arguments

log = logging.getLogger("modeling")
SERVICE = "modeling"


class History(msgspec.Struct, kw_only=True):
    """Training points of one machine, oldest first."""

    points: list[TrainingPoint] = []


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_worker_arguments(parser)
    flag(
        parser,
        "--selection",
        env="MODEL_SELECTION",
        default="cv",
        help="model selection: cv (cross-validated RMSE) or rule (the old linear/poly2 rule)",
    )
    flag(
        parser,
        "--confidence-level",
        env="MODEL_CONFIDENCE_LEVEL",
        default=0.95,
        type=float,
        help="level of the prediction intervals",
    )
    flag(
        parser,
        "--history-limit",
        env="MODEL_HISTORY_LIMIT",
        default=2000,
        type=int,
        help="training points kept per machine (oldest runs are dropped first)",
    )


class Modeler:
    def __init__(
        self,
        models: KeyValue,
        history: KeyValue,
        *,
        selection: str = "cv",
        confidence_level: float = 0.95,
        history_limit: int = 2000,
    ) -> None:
        self.models_kv = models
        self.history_kv = history
        self.selection = selection
        self.confidence_level = confidence_level
        self.history_limit = history_limit
        self.models: dict[str, PowerModel] = {}

    async def load_models(self) -> None:
        """Reload every saved model (a restarted worker answers predictions at once)."""
        with contextlib.suppress(Exception):
            for key in await self.models_kv.keys():
                await self._model_for(key)
        log.info("loaded %d saved model(s)", len(self.models))

    async def _model_for(self, fingerprint: str) -> PowerModel | None:
        try:
            entry = await self.models_kv.get(fingerprint)
        except KeyNotFoundError:
            return self.models.get(fingerprint)
        if entry.value:
            self.models[fingerprint] = PowerModel.from_json(entry.value)
        return self.models.get(fingerprint)

    async def _merge_history(
        self, fingerprint: str, run_id: str, points: list[TrainingPoint]
    ) -> list[TrainingPoint]:
        """Replace this run's points in the machine's history (compare-and-set, retried on a race)."""
        for _ in range(10):
            try:
                entry = await self.history_kv.get(fingerprint)
                history = msgspec.json.decode(entry.value or b"{}", type=History)
                revision = entry.revision or 0
            except KeyNotFoundError:
                history, revision = History(), 0
            merged = [p for p in history.points if p.run_id != run_id] + points
            merged = merged[-self.history_limit :]
            payload = msgspec.json.encode(History(points=merged))
            try:
                if revision:
                    await self.history_kv.update(fingerprint, payload, last=revision)
                else:
                    await self.history_kv.create(fingerprint, payload)
                return merged
            except KeyWrongLastSequenceError:
                await asyncio.sleep(0.05)
        raise RuntimeError(f"could not update the training history of {fingerprint} (too much contention)")

    async def compute(self, run: RunInput) -> ModelingResult:
        started = time.perf_counter()
        manifest = run.manifest
        scenarios = [m.scenario for m in run.scenarios]
        resolved = [resolve(m.scenario, m.enriched) for m in run.scenarios]
        stats, baseline_index = run_stats(scenarios, resolved)
        cpu_model = next(
            (s.hardware.cpu_model for s in scenarios if s.hardware and s.hardware.cpu_model), None
        )
        fingerprint = hardware_fingerprint(cpu_model)

        features = [features_of(s) for s in scenarios]
        points = [
            TrainingPoint(run_id=manifest.run_id, index=st.index, power_w=st.mean_power_w, **f)
            for st, f in zip(stats, features, strict=True)
            if f is not None and not st.is_baseline and st.mean_power_w is not None and st.mean_power_w > 0
        ]
        history = await self._merge_history(fingerprint, manifest.run_id, points)
        model_or_reason = await asyncio.to_thread(
            train,
            history,
            selection=self.selection,
            confidence_level=self.confidence_level,
            fingerprint=fingerprint,
        )
        model: PowerModel | None = None
        reason: str | None = None
        if isinstance(model_or_reason, str):
            reason = model_or_reason
            if len(points) < MIN_TRAINING_POINTS:
                reason = f"{reason} (this run has {len(points)}, history of this machine {len(history)})"
            log.warning("%s: no power model: %s", manifest.run_id, reason)
        else:
            model = model_or_reason
            model.info.runs = sorted({p.run_id for p in history})
            self.models[fingerprint] = model
            await self.models_kv.put(fingerprint, model.to_json())

        out: list[ModelingScenario] = []
        for st, f in zip(stats, features, strict=True):
            if model is None or f is None or st.is_baseline or st.duration_s is None:
                why = (
                    reason if model is None else ("baseline" if st.is_baseline else "no features or duration")
                )
                out.append(msgspec.structs.replace(st, notes=[*st.notes, f"no prediction: {why}"]))
                continue
            interval = model.predict(f)
            predicted_energy = interval.mean * st.duration_s
            out.append(
                msgspec.structs.replace(
                    st,
                    predicted_power_w=interval.mean,
                    predicted_energy_j=predicted_energy,
                    predicted_efficiency_score=(
                        st.total_pixels / predicted_energy
                        if st.total_pixels and predicted_energy > 0
                        else None
                    ),
                    prediction_interval_low_w=interval.low,
                    prediction_interval_high_w=interval.high,
                )
            )
        return ModelingResult(
            run_id=manifest.run_id,
            digest=manifest.digest,
            generation=manifest.generation,
            scenarios=out,
            baseline_index=baseline_index,
            model=model.info if model else None,
            model_reason=reason,
            computed_at=time.time(),
            compute_seconds=time.perf_counter() - started,
        )

    async def handle_predict(self, request: Request) -> None:
        try:
            query = msgspec.json.decode(request.data, type=PredictRequest)
        except msgspec.DecodeError as exc:
            await request.respond_error("400", f"bad request: {exc}")
            return
        features = features_of(query.scenario)
        if features is None:
            await request.respond_error("400", "the scenario needs a readable bitrate and resolution/fps")
            return
        fingerprint = hardware_fingerprint(query.cpu_model)
        model = self.models.get(fingerprint) or await self._model_for(fingerprint)
        if model is None:
            await request.respond_error("404", f"no model for cpu_model {query.cpu_model or 'unknown'!r} yet")
            return
        interval = model.predict(features)
        response = PredictResponse(
            mean_power_w=interval.mean,
            prediction_interval_low_w=interval.low,
            prediction_interval_high_w=interval.high,
            confidence_level=interval.confidence_level,
            features=features,
            model=model.info,
        )
        await request.respond(msgspec.json.encode(response))


async def start_modeling(nc: NATS, args: argparse.Namespace) -> tuple[Modeler, RunWorker, Service]:
    js = nc.jetstream()
    replicas = getattr(args, "js_replicas", 1)
    await bus.ensure_topology(js, replicas=replicas)
    models = await bus.ensure_kv(js, subjects.KV_MODELS, replicas=replicas)
    history = await bus.ensure_kv(js, subjects.KV_HISTORY, replicas=replicas)
    modeler = Modeler(
        models,
        history,
        selection=args.selection,
        confidence_level=args.confidence_level,
        history_limit=args.history_limit,
    )
    await modeler.load_models()
    service = await nats.micro.add_service(
        nc,
        name=subjects.MICRO_MODELING_SERVICE,
        version="0.1.0",
        description="Predict transcoding power for a configuration from the trained model",
    )
    await service.add_endpoint(
        name="predict-power", subject=subjects.PREDICT_POWER, handler=modeler.handle_predict
    )
    worker = RunWorker(
        nc, kind="modeling", durable=subjects.CONSUMER_MODELING, compute=modeler.compute, replicas=replicas
    )
    return modeler, worker, service


async def main(args: argparse.Namespace, stop: asyncio.Event) -> int:
    nc = await bus.connect(bus.nats_config_from_args(args), name=SERVICE)
    try:
        _, worker, service = await start_modeling(nc, args)
        try:
            await worker.serve(stop, args.bind, args.status_port)
        finally:
            await service.stop()
    finally:
        await bus.drain(nc)
    log.info("modeling stopped")
    return 0
