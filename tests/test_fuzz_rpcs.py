"""Every RPC of every service, probed with generated requests (hypothesis): valid-shaped messages
built from the protos' descriptors (random scalars, NaN and infinities, hostile strings, unknown
enum values, repeated and map fields), the same messages cut short, and random bytes. Only
deliberate status codes may come back, a refused CreateStudy leaves no study behind, and every
service is SERVING afterwards. Real servers over real sockets (the embedded stack).

CI runs a few hundred cases per service; `pytest -m slow` runs 2,000 per service.
"""
from __future__ import annotations

import asyncio

import grpc
import pytest
from google.protobuf import message_factory
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import SERVICES_BY_PROCESS, process_channel, serving_statuses
from openautoglm.v1 import studies_pb2, studies_pb2_grpc

# Answers a hostile request may get. UNKNOWN and INTERNAL (an unhandled exception),
# UNAVAILABLE (a crashed or stalled peer) and DEADLINE_EXCEEDED (a hang) may not.
DELIBERATE = {
    grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.OUT_OF_RANGE,
    grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED,
}
HOSTILE_TEXT = st.sampled_from([
    "", "\x00", "../../etc/passwd", "/etc/passwd", "/etc", "{input}", "{", "}", "{input} {input}", "sentiment-demo",
    "tiny", "tpe", "grid", "accuracy", "gnn", "heft", "st-1", "%s%n", "\u202e", "a" * 300,
])
TEXT = st.one_of(HOSTILE_TEXT, st.text(max_size=24))
INT32, INT64 = st.integers(-(2**31), 2**31 - 1), st.integers(-(2**63), 2**63 - 1)
SCALARS = {
    FieldDescriptor.TYPE_DOUBLE: st.floats(allow_nan=True, allow_infinity=True),
    FieldDescriptor.TYPE_FLOAT: st.floats(allow_nan=True, allow_infinity=True, width=32),
    FieldDescriptor.TYPE_INT32: INT32, FieldDescriptor.TYPE_SINT32: INT32, FieldDescriptor.TYPE_SFIXED32: INT32,
    FieldDescriptor.TYPE_INT64: INT64, FieldDescriptor.TYPE_SINT64: INT64, FieldDescriptor.TYPE_SFIXED64: INT64,
    FieldDescriptor.TYPE_UINT32: st.integers(0, 2**32 - 1), FieldDescriptor.TYPE_FIXED32: st.integers(0, 2**32 - 1),
    FieldDescriptor.TYPE_UINT64: st.integers(0, 2**64 - 1), FieldDescriptor.TYPE_FIXED64: st.integers(0, 2**64 - 1),
    FieldDescriptor.TYPE_BOOL: st.booleans(),
    FieldDescriptor.TYPE_STRING: TEXT,
    FieldDescriptor.TYPE_BYTES: st.binary(max_size=24),
}
MAX_DEPTH = 4
CASES_IN_CI = 200
CASES_SLOW = 2000


def _scalar(field: FieldDescriptor) -> st.SearchStrategy:
    if field.type == FieldDescriptor.TYPE_ENUM:
        # Declared values and one the enum does not declare (proto3 enums are open).
        return st.one_of(st.sampled_from([v.number for v in field.enum_type.values]), st.integers(-5, 99))
    return SCALARS[field.type]


@st.composite
def messages(draw, descriptor: Descriptor, depth: int = 0):
    """A message of `descriptor`'s type with a random subset of its fields set."""
    message = message_factory.GetMessageClass(descriptor)()
    for field in descriptor.fields:
        if not draw(st.booleans()):
            continue
        entry = field.message_type
        if entry is not None and entry.GetOptions().map_entry:
            key, value = entry.fields_by_name["key"], entry.fields_by_name["value"]
            target = getattr(message, field.name)
            for _ in range(draw(st.integers(0, 3))):
                k = draw(_scalar(key))
                if value.message_type is not None:
                    if depth < MAX_DEPTH:
                        target[k].CopyFrom(draw(messages(value.message_type, depth + 1)))
                else:
                    target[k] = draw(_scalar(value))
        elif field.is_repeated:
            target = getattr(message, field.name)
            for _ in range(draw(st.integers(0, 4))):
                if entry is not None:
                    if depth < MAX_DEPTH:
                        target.add().CopyFrom(draw(messages(entry, depth + 1)))
                else:
                    target.append(draw(_scalar(field)))
        elif entry is not None:
            if depth < MAX_DEPTH:
                getattr(message, field.name).CopyFrom(draw(messages(entry, depth + 1)))
        else:
            setattr(message, field.name, draw(_scalar(field)))
    return message


@st.composite
def request_bytes(draw, method) -> bytes:
    """A valid-shaped request, the same cut short, or random bytes."""
    kind = draw(st.sampled_from(["message", "message", "truncated", "random"]))
    if kind == "random":
        return draw(st.binary(max_size=96))
    raw = draw(messages(method.input_type)).SerializeToString()
    if kind == "truncated" and raw:
        return raw[: draw(st.integers(0, len(raw) - 1))]
    return raw


async def _call(channel: grpc.aio.Channel, service, method, raw: bytes) -> tuple[grpc.StatusCode, str]:
    path = f"/{service.full_name}/{method.name}"
    try:
        if method.server_streaming:
            async for _ in channel.unary_stream(path)(raw, timeout=20):
                pass
        else:
            await channel.unary_unary(path)(raw, timeout=20)
    except grpc.aio.AioRpcError as err:
        return err.code(), err.details() or ""
    return grpc.StatusCode.OK, ""


async def _study_ids(stack) -> set[str]:
    async with stack.gateway_channel() as channel:
        reply = await studies_pb2_grpc.StudiesStub(channel).ListStudies(studies_pb2.ListStudiesRequest(page_size=500))
        return {s.id for s in reply.studies}


def _fuzz(stack, process: str, cases: int, derandomize: bool) -> None:
    methods = [(service, method) for service in SERVICES_BY_PROCESS[process] for method in service.methods]
    loop = asyncio.new_event_loop()
    channel = loop.run_until_complete(_open(stack, process))
    studies_before = loop.run_until_complete(_study_ids(stack))
    created = 0
    undeliberate: list[str] = []

    @settings(max_examples=cases, deadline=None, derandomize=derandomize, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def probe(data):
        nonlocal created
        service, method = data.draw(st.sampled_from(methods), label="method")
        raw = data.draw(request_bytes(method), label="request")
        code, details = loop.run_until_complete(_call(channel, service, method, raw))
        if code not in DELIBERATE:
            undeliberate.append(f"{method.name}({raw!r}) -> {code.name}: {details[:300]}")
        if method.name == "CreateStudy" and code == grpc.StatusCode.OK:
            created += 1

    try:
        probe()
        assert not undeliberate, "undeliberate answers:\n" + "\n".join(undeliberate[:10])
        studies_after = loop.run_until_complete(_study_ids(stack))
        new = studies_after - studies_before
        assert len(new) == created, "a refused CreateStudy left a study behind"
        loop.run_until_complete(_cancel(stack, new))
        assert loop.run_until_complete(serving_statuses(stack)) == {"SERVING"}
    finally:
        loop.run_until_complete(channel.close())
        loop.close()


async def _open(stack, process: str) -> grpc.aio.Channel:
    return process_channel(stack, process)  # created inside the fuzzing loop


async def _cancel(stack, study_ids: set[str]) -> None:
    """Studies that random specs happened to create stop, so the other tests have the trainer."""
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        for study_id in study_ids:
            await stub.CancelStudy(studies_pb2.CancelStudyRequest(study_id=study_id), timeout=10)


def test_the_generator_builds_every_request_type():
    """Each request type can be generated and round-trips through its own serialization."""
    for service in (service for services in SERVICES_BY_PROCESS.values() for service in services):
        for method in service.methods:
            @settings(max_examples=5, deadline=None, database=None)
            @given(messages(method.input_type))
            def roundtrip(message):
                raw = message.SerializeToString(deterministic=True)
                assert type(message).FromString(raw).SerializeToString(deterministic=True) == raw

            roundtrip()


@pytest.mark.parametrize("process", list(SERVICES_BY_PROCESS))
def test_generated_requests_get_deliberate_answers(stack, process):
    _fuzz(stack, process, CASES_IN_CI, derandomize=True)


@pytest.mark.slow
@pytest.mark.parametrize("process", list(SERVICES_BY_PROCESS))
def test_generated_requests_get_deliberate_answers_at_length(stack, process):
    _fuzz(stack, process, CASES_SLOW, derandomize=False)
