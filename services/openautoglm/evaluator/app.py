"""The evaluator's wiring: its gRPC servicer on the shared bootstrap, and NATS for its events."""
from __future__ import annotations

from openautoglm.common import events, subjects
from openautoglm.common.config import ServiceSettings
from openautoglm.evaluator.service import EvaluatorServicer
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc


class EvaluatorApp:
    service_names = (evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.bus: events.NatsBus | None = None

    async def _publish(self, subject: str, event: subjects.Event) -> None:
        assert self.bus is not None, "publishing before start()"
        await self.bus.publish(subject, event)

    def register(self, server):
        evaluator_pb2_grpc.add_EvaluatorServicer_to_server(EvaluatorServicer(self._publish), server)

    async def start(self):
        self.bus = await events.NatsBus.connect(self.settings.nats_url, "evaluator")

    async def stop(self):
        if self.bus is not None:
            await self.bus.close()
