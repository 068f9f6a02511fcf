"""Hostile bytes get a deliberate answer: request bytes that do not decode are INVALID_ARGUMENT on
every method of every service (one mechanism in the server bootstrap), and the services stay
SERVING afterwards. Real servers, real sockets: the embedded stack."""
from __future__ import annotations

import asyncio

import grpc
import pytest

from helpers import SERVICES_BY_PROCESS, process_channel, serving_statuses
from openautoglm.v1 import evaluator_pb2, scheduler_pb2, scheduler_pb2_grpc

SERVED_BY = {service: process for process, services in SERVICES_BY_PROCESS.items() for service in services}
METHODS = [(service, method) for service in SERVED_BY for method in service.methods]
# Field 1, length-delimited, claims 127 bytes and has none: no message type decodes this.
TRUNCATED = b"\x0a\x7f"
# A tag with wire type 7, which does not exist.
BAD_WIRE_TYPE = b"\x0f\x00"


def test_every_method_of_the_contract_is_probed():
    assert len(METHODS) == sum(len(service.methods) for service in SERVED_BY) >= 18


@pytest.mark.parametrize("garbage", [TRUNCATED, BAD_WIRE_TYPE], ids=["truncated", "bad-wire-type"])
def test_undecodable_bytes_are_invalid_argument_on_every_method(stack, garbage):
    async def probe() -> dict[str, tuple[grpc.StatusCode, str]]:
        answers = {}
        for service, method in METHODS:
            path = f"/{service.full_name}/{method.name}"
            async with process_channel(stack, SERVED_BY[service]) as channel:
                # No serializers: the bytes go out as they are.
                if method.server_streaming:
                    call = channel.unary_stream(path)(garbage, timeout=10)
                    try:
                        async for _ in call:
                            pass
                        answers[path] = (grpc.StatusCode.OK, "")
                    except grpc.aio.AioRpcError as err:
                        answers[path] = (err.code(), err.details())
                else:
                    try:
                        await channel.unary_unary(path)(garbage, timeout=10)
                        answers[path] = (grpc.StatusCode.OK, "")
                    except grpc.aio.AioRpcError as err:
                        answers[path] = (err.code(), err.details())
        return answers

    answers = asyncio.run(probe())
    wrong = {path: answer for path, answer in answers.items() if answer[0] != grpc.StatusCode.INVALID_ARGUMENT}
    assert not wrong, f"undecodable bytes not refused as INVALID_ARGUMENT: {wrong}"
    for (service, method) in METHODS:
        details = answers[f"/{service.full_name}/{method.name}"][1]
        assert method.input_type.full_name in details and details.startswith("request:")

    assert asyncio.run(serving_statuses(stack)) == {"SERVING"}


NAN, INF = float("nan"), float("inf")
ONE_WORKER = [scheduler_pb2.Worker(id="w", slots=1, memory_mb=1000, speed=1.0)]
TASK = scheduler_pb2.Task(id="a", compute_seconds=1.0, memory_mb=10)


def _plan(tasks=(TASK,), workers=ONE_WORKER, deps=()):
    return scheduler_pb2.PlanRequest(graph=scheduler_pb2.TaskGraph(tasks=list(tasks), dependencies=list(deps)),
                                     workers=list(workers), policy="gnn")


NUMERIC_EDGES = [
    ("empty graph", "Plan", _plan(tasks=()), "graph.tasks"),
    ("NaN cost", "Plan", _plan(tasks=[scheduler_pb2.Task(id="a", compute_seconds=NAN)]), "graph.tasks[0]"),
    ("infinite cost", "Plan", _plan(tasks=[scheduler_pb2.Task(id="a", compute_seconds=INF)]), "graph.tasks[0]"),
    ("negative cost", "Plan", _plan(tasks=[scheduler_pb2.Task(id="a", compute_seconds=-1)]), "graph.tasks[0]"),
    ("NaN per-worker cost", "Plan",
     _plan(tasks=[scheduler_pb2.Task(id="a", compute_seconds_by_worker={"w": NAN})]), "compute_seconds_by_worker"),
    ("negative speed", "Plan", _plan(workers=[scheduler_pb2.Worker(id="w", slots=1, speed=-2)]), "workers[0].speed"),
    ("infinite speed", "Plan", _plan(workers=[scheduler_pb2.Worker(id="w", slots=1, speed=INF)]), "workers[0].speed"),
    ("negative slots", "Plan", _plan(workers=[scheduler_pb2.Worker(id="w", slots=-3)]), "workers[0].slots"),
    ("huge slots", "Plan", _plan(workers=[scheduler_pb2.Worker(id="w", slots=2**31 - 1)]), "workers[0].slots"),
    ("NaN memory", "Plan", _plan(workers=[scheduler_pb2.Worker(id="w", slots=1, memory_mb=NAN)]), "workers[0].memory_mb"),
    ("duplicate workers", "Plan", _plan(workers=ONE_WORKER * 2), "workers[1].id"),
    ("worker without id", "Plan", _plan(workers=[scheduler_pb2.Worker(slots=1)]), "workers[0].id"),
    ("self-dependency", "Plan",
     _plan(deps=[scheduler_pb2.Dependency(from_task="a", to_task="a")]), "graph.dependencies[0]"),
    ("NaN transfer", "Plan", _plan(tasks=[TASK, scheduler_pb2.Task(id="b", compute_seconds=1)],
                                   deps=[scheduler_pb2.Dependency(from_task="a", to_task="b", transfer_seconds=NAN)]),
     "transfer_seconds"),
    ("too many tasks", "Plan", _plan(tasks=[scheduler_pb2.Task(id=str(i), compute_seconds=1) for i in range(10_001)]),
     "graph.tasks"),
    ("NaN pending memory", "Pack",
     scheduler_pb2.PackRequest(pending=[scheduler_pb2.Task(id="a", memory_mb=NAN)], workers=ONE_WORKER), "pending[0]"),
    ("zero-speed-is-default but negative is not", "Pack",
     scheduler_pb2.PackRequest(pending=[TASK], workers=[scheduler_pb2.Worker(id="w", slots=1, speed=-1)]),
     "workers[0].speed"),
]


@pytest.mark.parametrize("case", NUMERIC_EDGES, ids=[c[0] for c in NUMERIC_EDGES])
def test_scheduler_numeric_edge_cases_are_invalid_argument_naming_the_field(stack, case):
    _, method, request, field = case

    async def call():
        async with stack.service_channel("gnn-scheduler") as channel:
            stub = scheduler_pb2_grpc.SchedulerStub(channel)
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await getattr(stub, method)(request, timeout=30)
            return caught.value

    err = asyncio.run(call())
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT, err.details()
    assert field in err.details()


async def test_a_request_over_the_configured_size_is_resource_exhausted(tmp_path):
    """A real evaluator server (the common bootstrap) with a 64 KiB request limit."""
    from openautoglm.common.config import ServiceSettings
    from openautoglm.common.net import free_port
    from openautoglm.common.server import serve, wait_serving
    from openautoglm.evaluator.app import EvaluatorApp
    from openautoglm.v1 import evaluator_pb2_grpc

    settings = ServiceSettings(service="evaluator", port=free_port(), data_dir=tmp_path, max_message_bytes=64 * 1024,
                               plaintext=True)
    stop = asyncio.Event()
    server = asyncio.create_task(serve(settings, EvaluatorApp(settings), stop))
    try:
        address = f"127.0.0.1:{settings.port}"
        await wait_serving(address, 60)
        async with grpc.aio.insecure_channel(address) as channel:
            stub = evaluator_pb2_grpc.EvaluatorStub(channel)
            small = evaluator_pb2.EvaluateRequest(task=1, predictions=["a", "b"], references=["a", "b"])
            big = evaluator_pb2.EvaluateRequest(task=1, predictions=["x" * 1000] * 100, references=["x" * 1000] * 100)
            assert (await stub.Evaluate(small, timeout=10)).metrics  # under the limit: served
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Evaluate(big, timeout=10)
            assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert str(64 * 1024) in caught.value.details()
    finally:
        stop.set()
        await server
