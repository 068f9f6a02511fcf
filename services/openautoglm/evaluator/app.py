"""The evaluator's wiring: its servicer on the shared bootstrap. It needs no NATS: trainers call
Evaluate with their predictions and publish the scores themselves."""
from __future__ import annotations

from openautoglm.common.config import ServiceSettings
from openautoglm.evaluator import metrics
from openautoglm.evaluator.service import EvaluatorServicer
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc


class EvaluatorApp:
    service_names = (evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        # Before the gRPC server exists (its threads must not see the forks some libraries make
        # while loading), and before SERVING: no study waits for these seconds of loading.
        metrics.warm_up()

    def register(self, server):
        evaluator_pb2_grpc.add_EvaluatorServicer_to_server(EvaluatorServicer(), server)

    async def start(self):
        return None

    async def stop(self):
        return None
