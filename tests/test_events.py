"""NATS JetStream plumbing against a real nats-server: streams, de-duplication, explicit acks,
redelivery after a failing handler, hand-back on stop, and trace context in headers."""
import asyncio

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from openautoglm.common import events, telemetry
from openautoglm.v1 import events_pb2, trainer_pb2


def _job_event(trial_id: str) -> events_pb2.TrainJobEvent:
    return events_pb2.TrainJobEvent(
        meta=events.new_meta("test", "study", trial_id, event_id=f"train-{trial_id}"),
        job=trainer_pb2.TrainJob(study_id="study", trial_id=trial_id),
    )


async def _drain_queue(js):
    await js.purge_stream(events.JOBS_STREAM.name)


async def test_duplicate_event_ids_are_stored_once(nats_url):
    nc = await events.connect(nats_url, "t")
    js = nc.jetstream()
    await events.ensure_streams(js)
    await events.ensure_streams(js)  # idempotent
    await _drain_queue(js)
    for _ in range(3):
        await events.publish(js, events.SUBJECT_TRAIN, _job_event("dup"))
    info = await js.stream_info(events.JOBS_STREAM.name)
    assert info.state.messages == 1
    await _drain_queue(js)
    await events.close(nc)


async def test_failing_handler_leads_to_redelivery_then_ack(nats_url):
    nc = await events.connect(nats_url, "t")
    js = nc.jetstream()
    await events.ensure_streams(js)
    await _drain_queue(js)
    deliveries = []
    done = asyncio.Event()

    async def handler(msg, ctx):
        deliveries.append(msg.metadata.num_delivered)
        if len(deliveries) == 1:
            raise RuntimeError("first attempt fails")
        done.set()

    consumer = events.DurableConsumer(js, events.JOBS_STREAM.name, "redelivery-test", [events.SUBJECT_TRAIN],
                                      handler, retry_delay=0.1)
    await consumer.start()
    await events.publish(js, events.SUBJECT_TRAIN, _job_event("flaky"))
    await asyncio.wait_for(done.wait(), 15)
    await consumer.stop()
    assert deliveries == [1, 2]
    await asyncio.sleep(0.3)
    info = await js.stream_info(events.JOBS_STREAM.name)
    assert info.state.messages == 0  # acked: the work queue dropped it
    await js.delete_consumer(events.JOBS_STREAM.name, "redelivery-test")
    await events.close(nc)


async def test_stopping_mid_handler_hands_the_message_back(nats_url):
    nc = await events.connect(nats_url, "t")
    js = nc.jetstream()
    await events.ensure_streams(js)
    await _drain_queue(js)
    started = asyncio.Event()

    async def slow(msg, ctx):
        started.set()
        await asyncio.sleep(60)

    first = events.DurableConsumer(js, events.JOBS_STREAM.name, "handback-test", [events.SUBJECT_TRAIN], slow)
    await first.start()
    await events.publish(js, events.SUBJECT_TRAIN, _job_event("handback"))
    await asyncio.wait_for(started.wait(), 10)
    await first.stop()  # nak: back to the queue at once, not after ack_wait

    got = asyncio.Event()
    seen = []

    async def quick(msg, ctx):
        seen.append(events_pb2.TrainJobEvent.FromString(msg.data).job.trial_id)
        got.set()

    second = events.DurableConsumer(js, events.JOBS_STREAM.name, "handback-test", [events.SUBJECT_TRAIN], quick)
    await second.start()
    await asyncio.wait_for(got.wait(), 5)
    await second.stop()
    assert seen == ["handback"]
    await js.delete_consumer(events.JOBS_STREAM.name, "handback-test")
    await events.close(nc)


async def test_trace_context_crosses_nats_headers(nats_url):
    provider = TracerProvider()
    tracer = provider.get_tracer("test")
    nc = await events.connect(nats_url, "t")
    js = nc.jetstream()
    await events.ensure_streams(js)
    await _drain_queue(js)
    received = asyncio.Future()

    async def handler(msg, ctx):
        received.set_result(trace.get_current_span(ctx).get_span_context())

    consumer = events.DurableConsumer(js, events.JOBS_STREAM.name, "trace-test", [events.SUBJECT_TRAIN], handler)
    await consumer.start()
    with tracer.start_as_current_span("publisher") as span:
        await events.publish(js, events.SUBJECT_TRAIN, _job_event("traced"))
        sent = span.get_span_context()
    got = await asyncio.wait_for(received, 10)
    await consumer.stop()
    assert got.trace_id == sent.trace_id and got.span_id == sent.span_id
    assert telemetry.extract_context({}) is not None
    await js.delete_consumer(events.JOBS_STREAM.name, "trace-test")
    await events.close(nc)
