"""NATS JetStream plumbing against a real nats-server: streams, de-duplication, explicit acks,
redelivery after a failing handler, give-up on the last delivery, hand-back on stop, and trace
context in headers."""
import asyncio

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from openautoglm.common import events, subjects
from openautoglm.v1 import events_pb2, trainer_pb2


def _job_event(trial_id: str) -> events_pb2.TrainJobEvent:
    return events_pb2.TrainJobEvent(
        meta=subjects.new_meta("test", "study", trial_id, event_id=f"train-{trial_id}"),
        job=trainer_pb2.TrainJob(study_id="study", trial_id=trial_id),
    )


@pytest.fixture
async def js(nats_url):
    """A JetStream context on an empty job queue; consumers made by the test are removed after."""
    nc = await events.connect(nats_url, "test")
    context = nc.jetstream()
    await events.ensure_streams(context)
    await context.purge_stream(events.JOBS_STREAM_NAME)
    yield context
    for info in await context.consumers_info(events.JOBS_STREAM_NAME):
        await context.delete_consumer(events.JOBS_STREAM_NAME, info.name)
    await events.close(nc)


def _consumer(js, name, handler, **kw):
    return events.DurableConsumer(js, events.JOBS_STREAM_NAME, name, [subjects.train_subject("w")], handler, **kw)


async def test_duplicate_event_ids_are_stored_once(js):
    await events.ensure_streams(js)  # idempotent
    for _ in range(3):
        await events.publish(js, subjects.train_subject("w"), _job_event("dup"))
    assert (await js.stream_info(events.JOBS_STREAM_NAME)).state.messages == 1


async def test_failing_handler_leads_to_redelivery_then_ack(js):
    deliveries = []
    done = asyncio.Event()

    async def handler(msg, ctx):
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) == 1:
            raise RuntimeError("first attempt fails")
        done.set()

    consumer = _consumer(js, "redelivery", handler, retry_delay=0.1)
    await consumer.start()
    await events.publish(js, subjects.train_subject("w"), _job_event("flaky"))
    await asyncio.wait_for(done.wait(), 15)
    await consumer.stop()
    assert deliveries == [1, 2]
    await asyncio.sleep(0.3)
    assert (await js.stream_info(events.JOBS_STREAM_NAME)).state.messages == 0  # acked: gone from the queue


async def test_the_last_failed_delivery_is_given_up_and_recorded(js):
    attempts, gave_up = [], asyncio.Future()

    async def always_fails(msg, ctx):
        attempts.append(msg.metadata.num_delivered)
        raise ValueError("broken job")

    async def give_up(msg, err):
        gave_up.set_result((msg.metadata.num_delivered, str(err)))

    consumer = _consumer(js, "give-up", always_fails, retry_delay=0.05, max_deliver=3, on_give_up=give_up)
    await consumer.start()
    await events.publish(js, subjects.train_subject("w"), _job_event("doomed"))
    assert await asyncio.wait_for(gave_up, 15) == (3, "broken job")
    await consumer.stop()
    assert attempts == [1, 2, 3]
    await asyncio.sleep(0.3)
    assert (await js.stream_info(events.JOBS_STREAM_NAME)).state.messages == 0


async def test_stopping_mid_handler_hands_the_message_back(js):
    started = asyncio.Event()

    async def slow(msg, ctx):
        started.set()
        await asyncio.sleep(60)

    first = _consumer(js, "handback", slow)
    await first.start()
    await events.publish(js, subjects.train_subject("w"), _job_event("handback"))
    await asyncio.wait_for(started.wait(), 10)
    await first.stop()  # nak: back to the queue at once, not after ack_wait

    got, seen = asyncio.Event(), []

    async def quick(msg, ctx):
        seen.append(events_pb2.TrainJobEvent.FromString(msg.data).job.trial_id)
        got.set()

    second = _consumer(js, "handback", quick)
    await second.start()
    await asyncio.wait_for(got.wait(), 5)
    await second.stop()
    assert seen == ["handback"]


async def test_trace_context_crosses_nats_headers(js):
    tracer = TracerProvider().get_tracer("test")
    received = asyncio.Future()

    async def handler(msg, ctx):
        received.set_result(trace.get_current_span(ctx).get_span_context())

    consumer = _consumer(js, "trace", handler)
    await consumer.start()
    with tracer.start_as_current_span("publisher") as span:
        await events.publish(js, subjects.train_subject("w"), _job_event("traced"))
        sent = span.get_span_context()
    got = await asyncio.wait_for(received, 10)
    await consumer.stop()
    assert got.trace_id == sent.trace_id and got.span_id == sent.span_id


async def test_stop_returns_when_a_cancel_is_swallowed_inside_nats_calls(js, monkeypatch):
    """On Python 3.11 a cancel that lands as an inner wait_for completes can be swallowed
    (bpo-42130). Here every consumer_info swallows it, as that race does: stop() must still end,
    because the lag loop watches the stopping flag (a `while True` loop hung stop() for ever)."""
    real_info = js.consumer_info

    async def swallowing_info(*args, **kwargs):
        try:
            await asyncio.sleep(0.5)
        except asyncio.CancelledError:
            pass  # the race: the caller never sees its cancel
        return await real_info(*args, **kwargs)

    monkeypatch.setattr(js, "consumer_info", swallowing_info)
    monkeypatch.setattr(events, "LAG_REPORT_SECONDS", 0.05)

    async def handler(msg, ctx):
        pass

    consumer = _consumer(js, "swallowed", handler)
    await consumer.start()
    await asyncio.sleep(0.2)  # the lag loop is inside consumer_info
    started = asyncio.get_running_loop().time()
    await asyncio.wait_for(consumer.stop(), events.STOP_WAIT_SECONDS + 5)
    assert asyncio.get_running_loop().time() - started < events.STOP_WAIT_SECONDS
