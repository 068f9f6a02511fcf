"""The `Models` API: the registry (registry.py) and serving through the trainers' ModelServer.

Every call is scoped to the caller's tenant. Predict and Generate go straight to the trainer
serving the version (its address from the live workers), with no waiting for a trainer that is
away: the client hears UNAVAILABLE and retries, the way the trust boundary says a peer that is
down is a retry. A trainer that restarted and lost the version (its files gone) is given it again.
"""
from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from openautoglm.common import artifacts
from openautoglm.gateway import auth
from openautoglm.gateway.registry import MANIFEST, NAME, ModelRegistry, Registrar, model_name_for, object_prefix
from openautoglm.gateway.store import StudyStore, now_ts
from openautoglm.gateway.paging import page_of, requested_page
from openautoglm.v1 import common_pb2, models_pb2, models_pb2_grpc, scheduler_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
V = models_pb2
MAX_INPUTS = 256
DOWNLOAD_CHUNK_BYTES = 256 * 1024
# Live trainers' addresses are read again after this many seconds (or at once on a miss).
WORKERS_TTL_SECONDS = 2.0
# Predict resolves a model reference to its deployment at most this often per reference (a
# change made on another gateway replica is seen within it; this replica's own at once).
SERVING_TTL_SECONDS = 1.0


def served_key(version: models_pb2.ModelVersion) -> str:
    return f"{version.tenant}/{version.name}/{version.version}"


class TrainerDirectory:
    """Where each live trainer answers, from the scheduler's workers (cached briefly)."""

    def __init__(self, workers: Callable[[], Awaitable[list[scheduler_pb2.Worker]]], channel: Callable[[str], grpc.aio.Channel]):
        self._workers = workers
        self._channel = channel
        self._seen: list[scheduler_pb2.Worker] = []
        self._read_at = 0.0
        self._channels: dict[str, grpc.aio.Channel] = {}

    async def live(self, fresh: bool = False) -> list[scheduler_pb2.Worker]:
        if fresh or time.monotonic() - self._read_at > WORKERS_TTL_SECONDS:
            self._seen = [w for w in await self._workers() if w.address]
            self._read_at = time.monotonic()
        return self._seen

    async def address(self, trainer_id: str) -> str | None:
        for fresh in (False, True):
            found = next((w.address for w in await self.live(fresh) if w.id == trainer_id), None)
            if found:
                return found
        return None

    def channel(self, address: str) -> grpc.aio.Channel:
        if address not in self._channels:
            self._channels[address] = self._channel(address)
        return self._channels[address]

    async def close(self) -> None:
        for channel in self._channels.values():
            await channel.close()


class ModelsServicer(models_pb2_grpc.ModelsServicer):
    def __init__(self, registry: ModelRegistry, registrar: Registrar, store: StudyStore, bucket: Callable[[], Awaitable[Any]],
                 trainers: TrainerDirectory):
        self.registry = registry
        self.registrar = registrar
        self.store = store
        self.bucket = bucket
        self.trainers = trainers
        # (tenant, name, version, alias) -> (deployed version, its trainer's address, until).
        self._serving_cache: dict[tuple[str, str, int, str], tuple[models_pb2.ModelVersion, str, float]] = {}

    async def _version(self, ref: models_pb2.ModelRef, context, field: str = "model") -> models_pb2.ModelVersion:
        if not ref.name:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}.name: required")
        version = self.registry.get(auth.current().tenant, ref)
        if version is None:
            which = f"version {ref.version}" if ref.version else f"alias {ref.alias!r}" if ref.alias else "a ready version"
            await context.abort(grpc.StatusCode.NOT_FOUND, f"{field}: no model {ref.name!r} with {which}")
        assert version is not None
        return version

    async def RegisterModel(self, request, context):
        tenant = auth.current().tenant
        study = self.store.study(request.study_id) if request.study_id else None
        if study is None or study.tenant != tenant:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"study_id: no study {request.study_id!r}")
        assert study is not None
        trial_id = request.trial_id or study.best_trial_id
        trial = next((t for t in study.trials if t.id == trial_id), None)
        if trial is None or trial.status != common_pb2.TRIAL_STATUS_SUCCEEDED:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"trial_id: {trial_id or 'the best trial'} is not a succeeded trial of {study.id}")
        if request.name and not NAME.match(request.name):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "name: letters, digits, '.', '_' and '-', at most 64")
        version = self.register(study, trial_id, request.name)
        return models_pb2.RegisterModelResponse(model=version)

    def register(self, study: common_pb2.Study, trial_id: str, name: str = "") -> models_pb2.ModelVersion:
        trial = next(t for t in study.trials if t.id == trial_id)
        version = self.registry.create(models_pb2.ModelVersion(
            name=name or model_name_for(study.spec.name), state=V.MODEL_VERSION_STATE_REGISTERING, study_id=study.id,
            trial_id=trial.id, task=study.spec.task, metrics=dict(trial.metrics), objective_value=trial.objective_value,
            created_at=now_ts(), tenant=study.tenant))
        self.registrar.start(version)
        return version

    async def ListModels(self, request, context):
        size, before = await requested_page(request, context, "ListModels")
        page, token = page_of(self.registry.versions(auth.current().tenant, request.name, size + 1, before), size,
                              lambda version: version.created_at.ToNanoseconds() / 1e9)
        return models_pb2.ListModelsResponse(models=page, next_page_token=token)

    async def GetModel(self, request, context):
        return models_pb2.GetModelResponse(model=await self._version(request.model, context))

    async def DownloadModel(self, request, context):
        version = await self._version(request.model, context)
        if version.state != V.MODEL_VERSION_STATE_READY:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model: version {version.version} is not READY")
        bucket = await self.bucket()
        prefix = object_prefix(version.tenant, version.name, version.version)
        with tempfile.TemporaryDirectory(prefix="openautoglm-download-") as scratch:
            for f in version.files:
                local = Path(scratch) / "file"
                await artifacts.fetch_file(bucket, f"{prefix}/{f.path}", local)  # the store checks its digest
                yield models_pb2.DownloadModelResponse(file=f)
                with local.open("rb") as handle:
                    while chunk := handle.read(DOWNLOAD_CHUNK_BYTES):
                        yield models_pb2.DownloadModelResponse(chunk=chunk)
                local.unlink()

    async def SetAlias(self, request, context):
        if not NAME.match(request.alias) or request.alias.isdigit():
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "alias: letters, digits, '.', '_' and '-' (not only digits)")
        version = await self._version(request.model, context)
        self.registry.set_alias(version, request.alias)
        self._changed()
        return models_pb2.SetAliasResponse(model=await self._version(
            models_pb2.ModelRef(name=version.name, version=version.version), context))

    async def DeleteModel(self, request, context):
        version = await self._version(request.model, context)
        if version.HasField("deployment"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model: version {version.version} is deployed; Undeploy it first")
        self.registry.delete(version)
        self._changed()
        bucket = await self.bucket()
        prefix = object_prefix(version.tenant, version.name, version.version)
        for f in version.files:
            await artifacts.delete_object(bucket, f"{prefix}/{f.path}")
        return models_pb2.DeleteModelResponse(model=version)

    async def Deploy(self, request, context):
        version = await self._version(request.model, context)
        if version.state != V.MODEL_VERSION_STATE_READY:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model: version {version.version} is not READY")
        if request.max_batch < 0 or request.max_wait_ms < 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_batch, max_wait_ms: must be >= 0")
        live = await self.trainers.live(fresh=True)
        if version.HasField("deployment"):
            candidates = [w for w in live if w.id == version.deployment.trainer_id] or live
        else:
            candidates = sorted(live, key=lambda w: (w.serving_memory_mb, w.id))
        if not candidates:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "no trainer is live to serve it; retry")
        worker = candidates[0]
        try:
            loaded = await self._load(version, worker.address, request.max_batch, request.max_wait_ms)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), f"trainer {worker.id}: {err.details()}")
        version.deployment.CopyFrom(models_pb2.Deployment(state=V.DEPLOYMENT_STATE_DEPLOYED, trainer_id=worker.id,
                                                          deployed_at=now_ts(), max_input_tokens=loaded.max_input_tokens))
        self.registry.set_deployed(version, worker.id)
        self._changed()
        log.info("%s version %d deployed on %s", version.name, version.version, worker.id)
        return models_pb2.DeployResponse(model=version)

    async def _load(self, version: models_pb2.ModelVersion, address: str, max_batch: int = 0,
                    max_wait_ms: float = 0) -> trainer_pb2.LoadModelResponse:
        served = trainer_pb2.ServedModel(key=served_key(version), object_prefix=object_prefix(version.tenant, version.name,
                                                                                             version.version),
                                         files=[f for f in version.files if f.path != MANIFEST])
        stub = trainer_pb2_grpc.ModelServerStub(self.trainers.channel(address))
        return await stub.LoadModel(trainer_pb2.LoadModelRequest(model=served, max_batch=max_batch, max_wait_ms=max_wait_ms),
                                    timeout=600)

    async def Undeploy(self, request, context):
        version = await self._version(request.model, context)
        if not version.HasField("deployment"):
            return models_pb2.UndeployResponse(model=version)
        address = await self.trainers.address(version.deployment.trainer_id)
        if address:
            try:
                await trainer_pb2_grpc.ModelServerStub(self.trainers.channel(address)).UnloadModel(
                    trainer_pb2.UnloadModelRequest(key=served_key(version)), timeout=30)
            except grpc.aio.AioRpcError as err:
                await context.abort(err.code(), f"trainer {version.deployment.trainer_id}: {err.details()}")
        version.ClearField("deployment")
        self.registry.set_deployed(version, None)
        self._changed()
        return models_pb2.UndeployResponse(model=version)

    async def _serving(self, ref: models_pb2.ModelRef, context) -> tuple[models_pb2.ModelVersion, str]:
        """The deployed version and its trainer's address; FAILED_PRECONDITION when it is not
        deployed, UNAVAILABLE while its trainer is away."""
        key = (auth.current().tenant, ref.name, ref.version, ref.alias)
        cached = self._serving_cache.get(key)
        if cached is not None and cached[2] > time.monotonic():
            return cached[0], cached[1]
        version = await self._version(ref, context)
        if not version.HasField("deployment"):
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION,
                                f"model: {version.name} version {version.version} is not deployed (call Deploy)")
        address = await self.trainers.address(version.deployment.trainer_id)
        if not address:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"model: the trainer serving {version.name} is away; retry")
        assert address is not None
        self._serving_cache[key] = (version, address, time.monotonic() + SERVING_TTL_SECONDS)
        return version, address

    def _changed(self) -> None:
        """A deployment, alias or version changed here: resolve references afresh."""
        self._serving_cache.clear()

    async def Predict(self, request, context):
        if not request.inputs or len(request.inputs) > MAX_INPUTS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"inputs: 1 to {MAX_INPUTS} per call")
        version, address = await self._serving(request.model, context)
        stub = trainer_pb2_grpc.ModelServerStub(self.trainers.channel(address))
        call = trainer_pb2.ServePredictRequest(key=served_key(version), inputs=request.inputs)
        for attempt in (1, 2):
            try:
                reply = await stub.ServePredict(call, timeout=120)
                return models_pb2.PredictResponse(predictions=reply.predictions, name=version.name, version=version.version)
            except grpc.aio.AioRpcError as err:
                if err.code() == grpc.StatusCode.UNAVAILABLE:
                    self._changed()  # its trainer may come back elsewhere
                if err.code() == grpc.StatusCode.FAILED_PRECONDITION and attempt == 1:
                    try:  # the trainer restarted without it (its files gone): load it again
                        await self._load(version, address)
                        continue
                    except grpc.aio.AioRpcError as reload_err:
                        err = reload_err
                await context.abort(err.code(), err.details() or err.code().name)

    async def Generate(self, request, context):
        if not request.input:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "input: required")
        if request.max_new_tokens < 0 or request.max_new_tokens > 4096:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "max_new_tokens: 0 to 4096")
        version, address = await self._serving(request.model, context)
        if version.task != common_pb2.TASK_TYPE_GENERATION:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model: {version.name} is a classification model; use Predict")
        stub = trainer_pb2_grpc.ModelServerStub(self.trainers.channel(address))
        try:
            async for part in stub.ServeGenerate(trainer_pb2.ServeGenerateRequest(
                    key=served_key(version), input=request.input, max_new_tokens=request.max_new_tokens), timeout=600):
                yield models_pb2.GenerateResponse(text=part.text, done=part.done, full_text=part.full_text)
        except grpc.aio.AioRpcError as err:
            await context.abort(err.code(), err.details() or err.code().name)
