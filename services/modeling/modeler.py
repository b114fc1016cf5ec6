"""The modeling kind's running state: training history and saved models in KV, the power model, and the
``te.predict.power`` request/reply endpoint (nats.micro service ``transcode-energy-modeling``).

Imported only by the process that fits models (it pulls in numpy through shared/power_model.py).
"""

from __future__ import annotations

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

from services.modeling.kind import ModelingSettings
from shared import bus, subjects
from shared.kinds import run_maths
from shared.planning import extrapolation_warnings
from shared.power_model import (
    MIN_TRAINING_POINTS,
    PowerModel,
    TrainingPoint,
    features_of,
    hardware_fingerprint,
    predicted_figures,
    train,
)
from shared.runs import RunInput, make_result
from shared.scenario_stats import run_stats
from shared.schemas import ModelingResult, ModelingScenario, PredictRequest, PredictResponse
from shared.telemetry import resolve
from shared.units import JOULES_PER_WH, SECONDS_PER_HOUR
from shared.version import version

log = logging.getLogger("modeling")

#: While more runs wait, a model trained this recently serves them; the burst's last run retrains.
DEFER_TRAINING_S = 10.0


class History(msgspec.Struct, kw_only=True):
    """Training points of one machine, oldest first."""

    points: list[TrainingPoint] = []


class Modeler:
    def __init__(self, models: KeyValue, history: KeyValue, settings: ModelingSettings) -> None:
        self.models_kv = models
        self.history_kv = history
        self.settings = settings
        self.models: dict[str, PowerModel] = {}
        self.service: Service | None = None
        #: The worker handles several runs at once; history and models change one run at a time.
        self._lock = asyncio.Lock()
        #: Runs in hand waiting for the lock: like a consumer backlog, they mean "a later run will train".
        self._waiting = 0
        #: machine fingerprint -> (KV revision, history) as this process last wrote it; not kept for the
        #: histories another replica was seen writing, which are read before each write instead.
        self._history: dict[str, tuple[int, History]] = {}
        self._shared_histories: set[str] = set()

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
        self, fingerprint: str, run_id: str, content: str, points: list[TrainingPoint]
    ) -> list[TrainingPoint]:
        """Replace this run's points (and any earlier copy of the same file content under another run id) in
        the machine's history: a content counts once. Compare-and-set, retried on a race.

        The history this process wrote last is kept with its revision and written over directly: one round
        trip per run instead of two, and no decoding of the whole history. When another replica wrote in
        between, the compare-and-set fails and the stored history is read again, and from then on before every
        write (with replicas taking turns, a kept copy would fail every time)."""
        known = self._history.get(fingerprint)
        for _ in range(10):
            if known is not None:
                revision, history = known
            else:
                try:
                    entry = await self.history_kv.get(fingerprint)
                    history = msgspec.json.decode(entry.value or b"{}", type=History)
                    revision = entry.revision or 0
                except KeyNotFoundError:
                    history, revision = History(), 0
            merged = [
                p for p in history.points if p.run_id != run_id and not (content and p.content == content)
            ] + points
            merged = merged[-self.settings.history_limit :]
            payload = msgspec.json.encode(History(points=merged))
            try:
                if revision:
                    revision = await self.history_kv.update(fingerprint, payload, last=revision)
                else:
                    revision = await self.history_kv.create(fingerprint, payload)
            except KeyWrongLastSequenceError:
                if known is None:
                    await asyncio.sleep(0.05)
                else:
                    # Another replica writes this history too: read it first from now on.
                    self._shared_histories.add(fingerprint)
                known = None
                continue
            except BaseException:
                # Written or not, the stored history is unknown now: read it next time.
                self._history.pop(fingerprint, None)
                raise
            if fingerprint not in self._shared_histories:
                self._history[fingerprint] = (revision, History(points=merged))
            return merged
        raise RuntimeError(f"could not update the training history of {fingerprint} (too much contention)")

    async def compute(self, run: RunInput) -> ModelingResult:
        self._waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self._waiting -= 1
        try:
            return await self._compute(run)
        finally:
            self._lock.release()

    async def _compute(self, run: RunInput) -> ModelingResult:
        manifest = run.manifest
        scenarios = [m.scenario for m in run.scenarios]
        resolved = [resolve(m.scenario, m.enriched) for m in run.scenarios]
        stats, baseline_index = await run_maths(len(scenarios), run_stats, scenarios, resolved)
        cpu_model = next(
            (s.hardware.cpu_model for s in scenarios if s.hardware and s.hardware.cpu_model), None
        )
        fingerprint = hardware_fingerprint(cpu_model)

        features = [features_of(s) for s in scenarios]
        points = [
            TrainingPoint(
                run_id=manifest.run_id,
                index=st.index,
                content=manifest.file_sha256,
                power_w=st.mean_power_w,
                **f,
            )
            for st, f in zip(stats, features, strict=True)
            if f is not None and not st.is_baseline and st.mean_power_w is not None and st.mean_power_w > 0
        ]
        history = await self._merge_history(fingerprint, manifest.run_id, manifest.file_sha256, points)
        current = self.models.get(fingerprint)
        model_or_reason: PowerModel | str
        burst = run.backlog or self._waiting
        if burst and current is not None and time.time() - current.info.trained_at < DEFER_TRAINING_S:
            # A burst of runs: the history takes this run's points now, and the last run of the burst trains
            # on all of them; meanwhile predictions come from the model of a moment ago (its info says so).
            model_or_reason = current
        else:
            # Always in a thread: cross-validation refits the candidates once per fold (about 20 ms even for
            # a few points), and it runs once per burst, so the hop costs little.
            model_or_reason = await asyncio.to_thread(
                train,
                history,
                selection=self.settings.selection,
                confidence_level=self.settings.confidence_level,
                fingerprint=fingerprint,
            )
        model: PowerModel | None = None
        reason: str | None = None
        if isinstance(model_or_reason, str):
            reason = model_or_reason
            if len(points) < MIN_TRAINING_POINTS:
                reason = f"{reason} (this run has {len(points)}, history of this machine {len(history)})"
            log.warning("%s: no power model: %s", manifest.run_id, reason)
        elif model_or_reason is current:
            model = current
        else:
            model = model_or_reason
            model.info.runs = sorted({p.run_id for p in history})
            self.models[fingerprint] = model
            await self.models_kv.put(fingerprint, model.to_json())

        # Every predictable scenario in one matrix product, by position in the run.
        rows = {
            i: f
            for i, (st, f) in enumerate(zip(stats, features, strict=True))
            if f is not None and not st.is_baseline and st.duration_s is not None
        }
        predicted = (
            dict(zip(rows, model.predict_many(list(rows.values())), strict=True)) if model is not None else {}
        )
        out: list[ModelingScenario] = []
        for i, (scenario, st) in enumerate(zip(scenarios, stats, strict=True)):
            interval = predicted.get(i)
            if interval is None or st.duration_s is None:
                why = (
                    reason if model is None else ("baseline" if st.is_baseline else "no features or duration")
                )
                out.append(msgspec.structs.replace(st, notes=[*st.notes, f"no prediction: {why}"]))
                continue
            energy, efficiency = predicted_figures(scenario, interval.mean, st.duration_s)
            out.append(
                msgspec.structs.replace(
                    st,
                    predicted_power_w=interval.mean,
                    predicted_energy_j=energy,
                    predicted_efficiency_score=efficiency,
                    prediction_interval_low_w=interval.low,
                    prediction_interval_high_w=interval.high,
                )
            )
        return make_result(
            ModelingResult,
            run,
            scenarios=out,
            baseline_index=baseline_index,
            model=model.info if model else None,
            model_reason=reason,
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
        await request.respond(msgspec.json.encode(predict_response(model, features)))

    async def close(self) -> None:
        if self.service is not None:
            with contextlib.suppress(Exception):
                await self.service.stop()


def predict_response(model: PowerModel, features: dict[str, float]) -> PredictResponse:
    """The model's answer for one configuration: mean power W with its prediction interval, the energy of
    one hour at that power (Wh = W x 1 h), and a warning per feature outside the trained range."""
    interval = model.predict(features)
    mean = model.predict_mean(features)
    ranges = {name: (bounds[0], bounds[1]) for name, bounds in model.info.feature_ranges.items()}
    return PredictResponse(
        mean_power_w=interval.mean,
        prediction_interval_low_w=interval.low,
        prediction_interval_high_w=interval.high,
        mean_interval_low_w=mean.low,
        mean_interval_high_w=mean.high,
        confidence_level=interval.confidence_level,
        features=features,
        model=model.info,
        energy_wh_per_hour=interval.mean * SECONDS_PER_HOUR / JOULES_PER_WH,
        energy_wh_per_hour_low=None
        if interval.low is None
        else interval.low * SECONDS_PER_HOUR / JOULES_PER_WH,
        energy_wh_per_hour_high=(
            None if interval.high is None else interval.high * SECONDS_PER_HOUR / JOULES_PER_WH
        ),
        warnings=extrapolation_warnings(features, ranges),
    )


async def start_modeler(nc: NATS, settings: ModelingSettings) -> Modeler:
    """Buckets, saved models and the predict endpoint; the returned Modeler computes runs."""
    js = nc.jetstream()
    models = await bus.ensure_kv(js, subjects.KV_MODELS, replicas=settings.replicas)
    history = await bus.ensure_kv(js, subjects.KV_HISTORY, replicas=settings.replicas)
    modeler = Modeler(models, history, settings)
    await modeler.load_models()
    modeler.service = await nats.micro.add_service(
        nc,
        name=subjects.MICRO_MODELING_SERVICE,
        version=version(),
        description="Predict transcoding power for a configuration from the trained model",
        metadata={"service": "modeling"},
    )
    await modeler.service.add_endpoint(
        name="predict-power", subject=subjects.PREDICT_POWER, handler=modeler.handle_predict
    )
    return modeler
