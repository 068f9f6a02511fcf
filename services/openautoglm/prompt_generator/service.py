"""gRPC face of the prompt-generator: Render, RegisterStudy, Propose and ShouldPrune over the
registered studies' searches. Every question carries the study's trials (the gateway owns them),
so results reach the search one way only: inside the question that needs them.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import grpc

from openautoglm.common import telemetry
from openautoglm.common.spec.protos import spec_from_proto
from openautoglm.common.spec.schema import SpecError
from openautoglm.common.spec.templates import template_fields
from openautoglm.prompt_generator.convert import candidate_to_proto, priors_from_proto, records_from_proto
from openautoglm.prompt_generator.prompts import render_all
from openautoglm.prompt_generator.search import RecordError, StudySearch, TrialRecord
from openautoglm.prompt_generator.studies import StudyRegistry, UnknownStudy
from openautoglm.v1 import prompt_generator_pb2, prompt_generator_pb2_grpc

log = logging.getLogger(__name__)


class PromptGeneratorServicer(prompt_generator_pb2_grpc.PromptGeneratorServicer):
    def __init__(self, registry: StudyRegistry):
        self.registry = registry

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
        rendered = render_all([(t.id, t.text) for t in request.templates], variables, request.model_version, self.registry.cache)
        return prompt_generator_pb2.RenderResponse(
            prompts=[prompt_generator_pb2.RenderedPrompt(template_id=p.template_id, variables=dict(p.variables), prompt=p.prompt) for p in rendered],
            cache_hits=self.registry.cache.hits,
            cache_lookups=self.registry.cache.lookups,
        )

    async def RegisterStudy(self, request, context):
        search = await self._register(request, context, "")
        return prompt_generator_pb2.RegisterStudyResponse(space_size=search.space_size or 0)

    async def _register(self, request, context, field: str) -> StudySearch:
        prefix = f"{field}." if field else ""
        checking = request.validate_only and not field
        if not request.study_id and not checking:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{prefix}study_id: required")
        try:
            spec = spec_from_proto(request.spec)
            if checking:
                return await asyncio.to_thread(self.registry.check, spec, priors_from_proto(request.prior_trials))
            search = self.registry.register(request.study_id, spec, priors_from_proto(request.prior_trials))
            log.info("study %s registered (%s, %s candidates)", request.study_id, spec.strategy,
                     search.space_size or "unbounded", extra={"study_id": request.study_id})
            return search
        except SpecError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{prefix}{err}")
        raise AssertionError("unreachable: abort raises")

    async def Propose(self, request, context):
        if request.count <= 0:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "count: must be positive")
        records = await self._records(request, context)
        with telemetry.tracer().start_as_current_span("propose") as span:
            async with _search_errors(context, request.study_id):
                candidates, exhausted = await self.registry.propose(request.study_id, records, request.count, request.next_number)
            span.set_attribute("openautoglm.proposed", len(candidates))
            cache = self.registry.cache
            span.set_attribute("openautoglm.render_cache_hit_rate", cache.hits / cache.lookups if cache.lookups else 0.0)
        return prompt_generator_pb2.ProposeResponse(
            candidates=[candidate_to_proto(c) for c in candidates],
            exhausted=exhausted,
            render_cache_hits=self.registry.cache.hits,
            render_cache_lookups=self.registry.cache.lookups,
        )

    async def ShouldPrune(self, request, context):
        records = await self._records(request, context)
        try:
            async with _search_errors(context, request.study_id):
                prune, state = await self.registry.should_prune(request.study_id, records, request.trial_number, request.step)
        except KeyError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"trial_number: {err.args[0]}")
        return prompt_generator_pb2.ShouldPruneResponse(should_prune=prune,
                                                        search_state=json.dumps(state, sort_keys=True) if state else "")

    async def _records(self, request, context) -> list[TrialRecord]:
        """The question's trials, after registering the study when the question carries it."""
        if not request.study_id:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "study_id: required")
        if request.HasField("registration"):
            if request.registration.study_id != request.study_id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "registration.study_id: must equal study_id")
            await self._register(request.registration, context, "registration")
        try:
            return records_from_proto(request.trials)
        except SpecError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        raise AssertionError("unreachable: abort raises")


@contextlib.asynccontextmanager
async def _search_errors(context, study_id: str) -> AsyncIterator[None]:
    """A question the search cannot answer: an unknown study (NOT_FOUND: the gateway re-asks
    with the registration) or a trial record that does not fit the space (INVALID_ARGUMENT)."""
    try:
        yield
    except UnknownStudy:
        await context.abort(grpc.StatusCode.NOT_FOUND, f"study_id: {study_id!r} is not registered here")
    except RecordError as err:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"trials[{err.index}]: {err}")
