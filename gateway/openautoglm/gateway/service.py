"""The gateway's public API (`Studies`) over the StudyController, and its wiring.

Specs are validated by the same pydantic model the CLI uses; a bad one is refused with
INVALID_ARGUMENT naming the field, and nothing is stored.
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Protocol

import grpc

from openautoglm.common.spec.protos import param_from_proto, param_to_proto, spec_from_proto, spec_to_proto
from openautoglm.common.spec.schema import SpecError
from openautoglm.common.spec.warm_start import load_prior_trials, prior_params
from openautoglm.gateway import auth
from openautoglm.gateway.artifacts import ArtifactRecords
from openautoglm.gateway.controller import StudyController
from openautoglm.gateway.importance import EVALUATOR_NAME, parameter_importance
from openautoglm.gateway.estimates import largest_trial_memory_mb
from openautoglm.gateway.keys import KeyRefused, KeyStore
from openautoglm.gateway.peers import PeerError
from openautoglm.gateway.quotas import QuotaExceeded, Quotas
from openautoglm.gateway.results import search_trials
from openautoglm.gateway.states import TERMINAL_STUDY
from openautoglm.gateway.store import StudyStore, request_key
from openautoglm.gateway.paging import page_of, requested_page
from openautoglm.v1 import (
    cluster_pb2,
    cluster_pb2_grpc,
    common_pb2,
    keys_pb2,
    keys_pb2_grpc,
    scheduler_pb2,
    studies_pb2,
    studies_pb2_grpc,
)

log = logging.getLogger(__name__)
# GetStudy trial pages: the default size when only a token is given, and the largest.
DEFAULT_TRIAL_PAGE = 100
MAX_TRIAL_PAGE = 1000


class GatewayState(Protocol):
    """What the servicer needs of the gateway app (app.py): its store, its controller (None until
    the app has started; the bootstrap's ReadyGate holds calls until then) and the evaluator's metrics."""

    store: StudyStore
    artifacts: ArtifactRecords
    controller: StudyController | None
    # The only folders a spec's file paths may name (common/sandbox.py).
    read_roots: tuple[Path, ...]
    quotas: Quotas

    async def evaluator_metrics(self) -> dict[str, list[str]] | None: ...


class StudiesServicer(studies_pb2_grpc.StudiesServicer):
    def __init__(self, app: GatewayState):
        self.app = app

    @property
    def controller(self) -> StudyController:
        if self.app.controller is None:  # health is NOT_SERVING until start() has built it
            raise RuntimeError("the gateway has not started")
        return self.app.controller

    async def CreateStudy(self, request, context):
        if not request.HasField("spec"):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "spec: required")
        try:
            model = spec_from_proto(request.spec, await self.app.evaluator_metrics(), self.app.read_roots)
            priors = self._prior_trials(model)
        except SpecError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        spec = spec_to_proto(model)
        tenant = auth.current().tenant
        named = [("spec.dataset.artifact", spec.dataset.artifact), ("spec.model.artifact", spec.model.artifact),
                 *((f"spec.search_space.models[{i}].artifact", m.artifact) for i, m in enumerate(spec.search_space.models))]
        for field, artifact_id in named:
            if artifact_id and self.app.artifacts.get(artifact_id, tenant) is None:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: no artifact {artifact_id!r} (deleted, or never uploaded)")
        retry = bool(request.request_id) and self.app.store.study_by_request(request_key(tenant, request.request_id)) is not None
        if not retry:
            try:
                self.app.quotas.check(self.app.store, tenant, spec)
            except QuotaExceeded as err:
                await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED, str(err))
        workers = await self._live_workers()
        too_big = _larger_than_every_trainer(spec, workers)
        if too_big:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, too_big)
        refusal = await self.controller.search.refusal(spec, priors)
        if refusal:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, refusal)
        study = await self.controller.create(spec, request.request_id, priors, workers, tenant)
        return studies_pb2.CreateStudyResponse(study=study)

    async def _live_workers(self) -> list[scheduler_pb2.Worker] | None:
        """The trainers the scheduler knows now (None when it does not answer)."""
        try:
            reply = await self.controller.peers.scheduler.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=5)
        except PeerError as err:
            log.warning("no capacity reading from the scheduler (%s)", err)
            return None
        return list(reply.workers)

    def _prior_trials(self, model) -> common_pb2.PriorTrials:
        """The warm-start results, each checked against the new study's search space."""
        warm = model.warm_start
        rows: list[tuple[str, dict]] = []  # (where, row)
        if warm.from_study_id:
            earlier = self.app.store.study(warm.from_study_id)
            if earlier is None or earlier.tenant != auth.current().tenant:
                raise SpecError("spec.warm_start.from_study_id", f"no study {warm.from_study_id!r}")
            for t in search_trials(earlier):  # validation scores of the search's own trials only
                if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED:
                    rows.append((f"spec.warm_start.from_study_id: trial {t.number}", {
                        "template_id": t.candidate.template_id, "variables": dict(t.candidate.variables),
                        "hyperparameters": {k: param_from_proto(v) for k, v in t.candidate.hyperparameters.items()},
                        "objective": t.objective_value}))
        elif warm.trials_path:
            try:
                loaded = load_prior_trials(warm.trials_path)
            except SpecError as err:
                raise SpecError("spec." + err.field, f"{err.file}:{err.line}: {err.message}") from None
            rows = [(f"spec.warm_start.trials_path: {warm.trials_path}:{r['line']}", r) for r in loaded]
        priors = common_pb2.PriorTrials()
        for where, row in rows:
            try:
                params = prior_params(model.search_space, row["template_id"], row["variables"], row["hyperparameters"])
            except ValueError as err:
                raise SpecError(where.split(":")[0], f"{where.split(': ', 1)[1]}: {err}") from None
            priors.trials.add(template_id=row["template_id"], variables=row["variables"], objective_value=row["objective"],
                              hyperparameters={k: param_to_proto(v) for k, v in params.items()})
        return priors

    async def _get(self, study_id: str, context, with_trials: bool = True):
        if not study_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "study_id: required")
        study = self.app.store.study(study_id, with_trials=with_trials)
        if study is None or study.tenant != auth.current().tenant:  # another tenant's: not revealed
            await context.abort(grpc.StatusCode.NOT_FOUND, f"study_id: no study {study_id!r}")
        return study

    async def GetStudy(self, request, context):
        paged = request.trial_page_size or request.trial_page_token
        if request.trial_page_size < 0 or request.trial_page_size > MAX_TRIAL_PAGE:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"trial_page_size: must be 0 to {MAX_TRIAL_PAGE}")
        from_number = 0
        if request.trial_page_token:
            if not request.trial_page_token.isdigit() or len(request.trial_page_token) > 9:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "trial_page_token: not a token from GetStudy")
            from_number = int(request.trial_page_token)
        study = await self._get(request.study_id, context, with_trials=not (paged or request.without_trials))
        if not paged or request.without_trials:
            return studies_pb2.GetStudyResponse(study=study)
        size = request.trial_page_size or DEFAULT_TRIAL_PAGE
        trials = self.app.store.trials_page(study.id, from_number, size + 1)
        study.trials.extend(trials[:size])
        token = str(trials[size].number) if len(trials) > size else ""
        return studies_pb2.GetStudyResponse(study=study, next_trial_page_token=token)

    async def ListStudies(self, request, context):
        size, before = await requested_page(request, context, "ListStudies")
        page, token = page_of(self.app.store.list_studies(size + 1, before, auth.current().tenant), size, lambda row: row[0])
        return studies_pb2.ListStudiesResponse(studies=[s for _, s in page], next_page_token=token)

    async def WatchStudy(self, request, context):
        study = await self._get(request.study_id, context)
        queue = self.controller.watchers.subscribe(study.id)
        try:
            yield studies_pb2.WatchStudyResponse(study=study, change="snapshot")
            while study.state not in TERMINAL_STUDY:
                change, trial_id = await queue.get()
                changed = {trial_id} if trial_id else set()
                while not queue.empty() and not change.startswith("study."):
                    change, trial_id = queue.get_nowait()  # coalesce a burst into its latest state
                    if trial_id:
                        changed.add(trial_id)
                if request.changes_only:  # what changed, not the whole study again
                    study = self.app.store.existing_study(study.id, with_trials=False)
                    trials = self.app.store.trials_by_id(sorted(changed)) if changed else []
                    yield studies_pb2.WatchStudyResponse(study=study, change=change, changed_trials=trials)
                else:
                    study = self.app.store.existing_study(study.id)
                    yield studies_pb2.WatchStudyResponse(study=study, change=change)
        finally:
            self.controller.watchers.unsubscribe(study.id, queue)

    async def ExportBest(self, request, context):
        study = await self._get(request.study_id, context)
        if self.controller.peers.trainer is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "export needs a trainer address (OPENAUTOGLM_TRAINER_ADDR)")
        try:
            trial_id, files = await self.controller.export_best(study)
        except LookupError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"study_id: {err}")
        return studies_pb2.ExportBestResponse(trial_id=trial_id, files=files)

    async def CancelStudy(self, request, context):
        await self._get(request.study_id, context)
        study = await self.controller.cancel(request.study_id)
        return studies_pb2.CancelStudyResponse(study=study)

    async def GetParameterImportance(self, request, context):
        study = await self._get(request.study_id, context)
        try:  # fANOVA fits a random forest: off the event loop
            found = await asyncio.to_thread(parameter_importance, study, request.objective_index)
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return studies_pb2.GetParameterImportanceResponse(
            importances=[studies_pb2.ParameterImportance(name=n, importance=v) for n, v in found.values],
            trials=found.trials, evaluator=EVALUATOR_NAME)


class ClusterServicer(cluster_pb2_grpc.ClusterServicer):
    """The live trainers and their load, for any key (no addresses: those stay in the mesh)."""

    def __init__(self, app: GatewayState):
        self.app = app

    async def ListTrainers(self, request, context):
        if self.app.controller is None:  # health is NOT_SERVING until start() has built it
            raise RuntimeError("the gateway has not started")
        try:
            reply = await self.app.controller.peers.scheduler.ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=5)
        except PeerError as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"the scheduler does not answer ({err.code}); retry")
        return cluster_pb2.ListTrainersResponse(trainers=[trainer_status(w, reply.busy_slots.get(w.id, 0))
                                                          for w in reply.workers])


def trainer_status(worker: scheduler_pb2.Worker, busy_slots: int) -> cluster_pb2.TrainerStatus:
    return cluster_pb2.TrainerStatus(
        id=worker.id, device_kind=worker.device_kind, slots=worker.slots, busy_slots=busy_slots,
        utilisation=min(1.0, busy_slots / worker.slots) if worker.slots > 0 else 0.0,
        memory_mb=worker.memory_mb, serving_memory_mb=worker.serving_memory_mb, speed=worker.speed,
        queue_slots=worker.queue_slots, tokens_per_second=dict(worker.tokens_per_second))


class KeysServicer(keys_pb2_grpc.KeysServicer):
    """API keys (admins only: auth.py checks the role before any of this runs)."""

    def __init__(self, keys: KeyStore):
        self.keys = keys

    async def CreateKey(self, request, context):
        try:
            key, secret = self.keys.create(request.tenant, request.role, request.name)
        except KeyRefused as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        log.info("API key %s created for tenant %s (%s) by %s", key.id, key.tenant, keys_pb2.Role.Name(key.role),
                 auth.current().key_id)
        return keys_pb2.CreateKeyResponse(key=key, secret=secret)

    async def ListKeys(self, request, context):
        return keys_pb2.ListKeysResponse(keys=self.keys.list())

    async def RevokeKey(self, request, context):
        if not request.key_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "key_id: required")
        key = self.keys.revoke(request.key_id)
        if key is None:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"key_id: no key {request.key_id!r}")
        assert key is not None  # abort raised
        log.info("API key %s revoked by %s", key.id, auth.current().key_id)
        return keys_pb2.RevokeKeyResponse(key=key)


def _larger_than_every_trainer(spec: common_pb2.StudySpec, workers: list[scheduler_pb2.Worker] | None) -> str:
    """Why the study's largest trial fits no live trainer slot ("" if it fits, or if no trainer
    has reported yet: then its trials wait for one)."""
    serving = [w for w in workers or () if w.slots > 0]
    if not serving or any(w.memory_mb <= 0 for w in serving):
        return ""
    need = largest_trial_memory_mb(spec)
    largest = max(w.memory_mb for w in serving)
    if need <= largest:
        return ""
    return (f"training.memory_mb: a trial of this study needs {need:.0f} MiB, more than any trainer slot offers "
            f"(largest: {largest:.0f} MiB on {max(serving, key=lambda w: w.memory_mb).id})")
