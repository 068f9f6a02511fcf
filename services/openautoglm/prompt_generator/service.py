"""gRPC face of the prompt-generator: Render, Propose, Feedback over search.StudySearch.

Rewards arrive two ways, both idempotent: the gateway's Feedback call (so its next Propose sees
the result) and `autoglm.trial.evaluated` events from the evaluator (so a reward is never lost
when a gateway call fails).
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from openautoglm.common import telemetry
from openautoglm.common.spec.protos import param_to_proto
from openautoglm.common.spec.schema import SpecError
from openautoglm.common.spec.templates import template_fields
from openautoglm.prompt_generator.search import render_all
from openautoglm.prompt_generator.studies import PromptGeneratorCore
from openautoglm.v1 import common_pb2, prompt_generator_pb2, prompt_generator_pb2_grpc

log = logging.getLogger(__name__)


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
