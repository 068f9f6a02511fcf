"""gRPC face of the prompt-generator: Render, Propose, Feedback over search.StudySearch.

Rewards arrive two ways, both idempotent: the gateway's Feedback call (so its next Propose sees
the result) and `autoglm.trial.evaluated` events from the evaluator (so a reward is never lost
when a gateway call fails).
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from openautoglm.common import events, telemetry
from openautoglm.common.config import ServiceSettings
from openautoglm.common.spec.protos import param_from_proto, param_to_proto, spec_from_proto
from openautoglm.common.spec.schema import SpecError
from openautoglm.common.spec.templates import template_fields
from openautoglm.common.spec.warm_start import prior_params
from openautoglm.prompt_generator.search import RenderCache, StudySearch, render_all
from openautoglm.v1 import common_pb2, events_pb2, prompt_generator_pb2, prompt_generator_pb2_grpc

log = logging.getLogger(__name__)


class PromptGeneratorCore:
    """The studies this replica searches, created on first Propose (or reloaded from storage)."""

    def __init__(self, storage: str | None):
        self.storage = storage
        self.cache = RenderCache()
        self.studies: dict[str, StudySearch] = {}
        self._lock = asyncio.Lock()

    async def search_for(self, study_id: str, spec_proto, prior_trials=()) -> StudySearch:
        async with self._lock:
            search = self.studies.get(study_id)
            if search is None:
                spec = spec_from_proto(spec_proto)
                priors = []
                for i, prior in enumerate(prior_trials):
                    hps = {k: param_from_proto(v) for k, v in prior.hyperparameters.items()}
                    try:
                        params = prior_params(spec.search_space, prior.template_id, dict(prior.variables), hps)
                    except ValueError as err:
                        raise SpecError(f"prior_trials[{i}]", str(err)) from None
                    priors.append((prior.template_id, dict(prior.variables), params, prior.objective_value))
                search = await asyncio.to_thread(StudySearch, study_id, spec, self.storage, self.cache, priors)
                self.studies[study_id] = search
            return search

    async def feedback(self, study_id: str, candidate_id: str, value: float | None, pruned: bool = False,
                       extra: list[float] = ()) -> bool:
        search = self.studies.get(study_id)
        if search is None:
            raise KeyError(study_id)
        return await asyncio.to_thread(search.feedback, candidate_id, value, pruned, list(extra))

    async def report(self, study_id: str, candidate_id: str, step: int, value: float) -> bool:
        search = self.studies.get(study_id)
        if search is None:
            raise KeyError(study_id)
        return await asyncio.to_thread(search.report, candidate_id, step, value)


class PromptGeneratorServicer(prompt_generator_pb2_grpc.PromptGeneratorServicer):
    def __init__(self, core: PromptGeneratorCore):
        self.core = core

    async def Render(self, request, context):
        if not request.templates:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "templates: give at least one template")
        variables = {v.name: list(v.values) for v in request.variables}
        for i, t in enumerate(request.templates):
            try:
                missing = sorted(template_fields(t.text) - {"input"} - set(variables))
            except ValueError as err:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"templates[{i}].text: {err}")
            if missing:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"templates[{i}].text: undefined variable(s) {', '.join(missing)}")
        for name, values in variables.items():
            if not values:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"variables: {name!r} has no values")
        rendered = render_all([(t.id, t.text) for t in request.templates], variables, request.model_version, self.core.cache)
        return prompt_generator_pb2.RenderResponse(
            prompts=[prompt_generator_pb2.RenderedPrompt(template_id=p.template_id, variables=dict(p.variables), prompt=p.prompt) for p in rendered],
            cache_hits=self.core.cache.hits,
            cache_lookups=self.core.cache.lookups,
        )

    async def Propose(self, request, context):
        if not request.study_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "study_id: required")
        if request.count <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "count: must be positive")
        try:
            search = await self.core.search_for(request.study_id, request.spec, request.prior_trials)
        except SpecError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        with telemetry.tracer().start_as_current_span("propose") as span:
            span.set_attribute("openautoglm.strategy", search.spec.strategy)
            candidates, exhausted = await asyncio.to_thread(search.propose, request.count, set(request.known_candidate_ids))
            span.set_attribute("openautoglm.proposed", len(candidates))
            cache = self.core.cache
            span.set_attribute("openautoglm.render_cache_hit_rate", cache.hits / cache.lookups if cache.lookups else 0.0)
        return prompt_generator_pb2.ProposeResponse(
            candidates=[
                common_pb2.Candidate(
                    id=c.id,
                    template_id=c.template_id,
                    variables=c.variables,
                    prompt=c.prompt,
                    hyperparameters={k: param_to_proto(v) for k, v in c.hyperparameters.items()},
                )
                for c in candidates
            ],
            exhausted=exhausted,
            render_cache_hits=self.core.cache.hits,
            render_cache_lookups=self.core.cache.lookups,
        )

    async def Feedback(self, request, context):
        try:
            recorded = await self.core.feedback(
                request.study_id, request.candidate_id, None if request.failed else request.objective_value, request.pruned,
                request.extra_objective_values,
            )
        except KeyError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown study or candidate: {err.args[0]}")
        except ValueError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"extra_objective_values: {err}")
        return prompt_generator_pb2.FeedbackResponse(recorded=recorded)

    async def ReportIntermediate(self, request, context):
        try:
            prune = await self.core.report(request.study_id, request.candidate_id, request.step, request.value)
        except KeyError as err:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown study or candidate: {err.args[0]}")
        return prompt_generator_pb2.ReportIntermediateResponse(should_prune=prune)


class PromptGeneratorApp:
    service_names = (prompt_generator_pb2.DESCRIPTOR.services_by_name["PromptGenerator"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        storage = settings.optuna_storage or f"sqlite:///{settings.service_dir() / 'optuna.db'}"
        self.core = PromptGeneratorCore(storage)
        self.nc = None
        self.consumer = None

    def register(self, server):
        prompt_generator_pb2_grpc.add_PromptGeneratorServicer_to_server(PromptGeneratorServicer(self.core), server)

    async def _on_evaluated(self, msg, ctx):
        event = events_pb2.TrialEvaluatedEvent.FromString(msg.data)
        with telemetry.tracer().start_as_current_span("reward", context=ctx):
            search = self.core.studies.get(event.meta.study_id)
            if search is not None and search.spec.extra_objectives:
                return  # multi-objective rewards need every objective: they come through Feedback
            try:
                await self.core.feedback(event.meta.study_id, event.candidate_id, event.objective_value)
            except KeyError:
                pass  # a study another replica searches, or one from before a storage reset

    async def start(self):
        if not self.settings.nats_url:
            log.info("no NATS URL: rewards come only through the Feedback RPC")
            return
        self.nc = await events.connect(self.settings.nats_url, "prompt-generator")
        js = self.nc.jetstream()
        await events.ensure_streams(js)
        self.consumer = events.DurableConsumer(
            js, events.EVENTS_STREAM.name, "prompt-generator-rewards", [events.SUBJECT_EVALUATED],
            self._on_evaluated, deliver_new_only=True,
        )
        await self.consumer.start()

    async def stop(self):
        if self.consumer:
            await self.consumer.stop()
        await events.close(self.nc)
