"""The shared service bootstrap over real gRPC: a call that races start-up is told to retry
(UNAVAILABLE), never answered by a half-built service; health follows the app's life."""
import asyncio

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from openautoglm.common.config import ServiceSettings
from openautoglm.common.net import free_port
from openautoglm.common.server import serve, wait_serving
from openautoglm.evaluator.service import EvaluatorServicer
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc


class SlowStartingEvaluator:
    """The real Evaluator servicer behind an app whose start() waits until the test releases it."""

    service_names = (evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,)

    def __init__(self) -> None:
        self.release = asyncio.Event()

    def register(self, server):
        evaluator_pb2_grpc.add_EvaluatorServicer_to_server(EvaluatorServicer(), server)

    async def start(self):
        await self.release.wait()

    async def stop(self):
        return None


async def test_calls_before_start_finishes_get_unavailable_then_succeed(tmp_path):
    port = free_port()
    app, stop = SlowStartingEvaluator(), asyncio.Event()
    settings = ServiceSettings(service="evaluator", port=port, data_dir=tmp_path, grace_seconds=1, plaintext=True)
    server = asyncio.create_task(serve(settings, app, stop))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            await asyncio.wait_for(channel.channel_ready(), 15)
            health = health_pb2_grpc.HealthStub(channel)
            assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.NOT_SERVING
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await stub.ListMetrics(evaluator_pb2.ListMetricsRequest(), timeout=5)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
            assert "starting" in refused.value.details()
            app.release.set()
            await wait_serving(f"127.0.0.1:{port}", timeout=10)
            reply = await stub.ListMetrics(evaluator_pb2.ListMetricsRequest(), timeout=5)
            assert {m.name for m in reply.metrics} >= {"accuracy", "bleu"}
    finally:
        stop.set()
        await asyncio.wait_for(server, 15)
