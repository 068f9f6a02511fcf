"""The prompt-generator's wiring: its servicer on the shared bootstrap, the optuna storage, and
the rewards taken from `autoglm.trial.evaluated` events."""
from __future__ import annotations

import logging

from openautoglm.common import events, subjects, telemetry
from openautoglm.common.config import ServiceSettings
from openautoglm.prompt_generator.service import PromptGeneratorServicer
from openautoglm.prompt_generator.studies import PromptGeneratorCore
from openautoglm.v1 import events_pb2, prompt_generator_pb2, prompt_generator_pb2_grpc

log = logging.getLogger(__name__)


class PromptGeneratorApp:
    service_names = (prompt_generator_pb2.DESCRIPTOR.services_by_name["PromptGenerator"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        storage = settings.optuna_storage or f"sqlite:///{settings.service_dir() / 'optuna.db'}"
        self.core = PromptGeneratorCore(storage)
        self.bus: events.NatsBus | None = None
        self.consumer: events.DurableConsumer | None = None

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
        self.bus = await events.NatsBus.connect(self.settings.nats_url, "prompt-generator")
        self.consumer = events.DurableConsumer(
            self.bus.js, events.EVENTS_STREAM_NAME, "prompt-generator-rewards", [subjects.SUBJECT_EVALUATED],
            self._on_evaluated, deliver_new_only=True,
        )
        await self.consumer.start()

    async def stop(self):
        if self.consumer:
            await self.consumer.stop()
        if self.bus is not None:
            await self.bus.close()
