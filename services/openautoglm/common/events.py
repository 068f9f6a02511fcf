"""NATS JetStream plumbing shared by the services: streams, publishing, durable consumers.

Subjects (`subjects.py`) and the event messages on them are listed in
protos/openautoglm/v1/events.proto. Every service starts NATS the same way: `NatsBus.connect`.
Everything that must survive a crash goes through JetStream: train jobs sit in a work-queue
stream (one subject per trainer, chosen by the scheduler's packing) until that trainer
acknowledges them, and trial/study events in a limits stream. Each event
carries its id in `Nats-Msg-Id` (server-side de-duplication) and the W3C trace context in its
headers, so a consumer's spans join the study's trace. Consumers ack explicitly, after their
handler returns; a handler that raises gets the message redelivered.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable

import nats
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import BadRequestError
from opentelemetry import context as otel_context

from openautoglm.common import nats_auth, subjects, telemetry
from openautoglm.common.metrics import CONSUMER_ACK_PENDING, CONSUMER_PENDING, CONSUMER_REDELIVERIES
from openautoglm.common.tls import NATS_IDENTITY, MeshIdentity

log = logging.getLogger(__name__)

JOBS_STREAM_NAME = "AUTOGLM_JOBS"
EVENTS_STREAM_NAME = "AUTOGLM_EVENTS"
# How often a consumer's lag is read into the metrics.
LAG_REPORT_SECONDS = 5.0
# How long stop() waits for the consumer's tasks after cancelling them.
STOP_WAIT_SECONDS = 10.0
JOBS_STREAM = StreamConfig(
    name=JOBS_STREAM_NAME,
    subjects=[f"{subjects.SUBJECT_TRAIN}.*"],
    retention=RetentionPolicy.WORK_QUEUE,
    storage=StorageType.FILE,
    duplicate_window=600.0,
)
EVENTS_STREAM = StreamConfig(
    name=EVENTS_STREAM_NAME,
    subjects=[
        subjects.SUBJECT_PROGRESS,
        subjects.SUBJECT_TRAINED,
        subjects.SUBJECT_FAILED,
        subjects.SUBJECT_PRUNED,
    ],
    retention=RetentionPolicy.LIMITS,
    storage=StorageType.FILE,
    max_age=7 * 24 * 3600.0,
    duplicate_window=600.0,
)


async def connect(url: str, name: str, identity: MeshIdentity | None = None) -> NATS:
    """Connect with reconnects on, so a NATS restart does not take the service down; with an
    identity, over mutual TLS as that identity's NATS user, replies on its own inbox prefix
    (nats_auth.py), else plaintext and anonymous (a bare server in tests)."""
    secure: dict = {}
    if identity is not None:
        secure = {"tls": identity.ssl_context(), "tls_hostname": NATS_IDENTITY,
                  "inbox_prefix": nats_auth.inbox_prefix(identity.name)}
    async def report(err: Exception) -> None:
        # A refused certificate or a permissions violation says so here (nats-py retries quietly).
        log.warning("nats (%s): %s", name, err)

    # pending_size=0: while disconnected, a publish fails at once (BusUnavailable to the caller,
    # who retries) instead of waiting in a buffer that is sent on reconnecting: a stale command
    # sent late (a purge of a trainer's queue after that queue was refilled, say) does harm.
    return await nats.connect(
        url, name=name, max_reconnect_attempts=-1, reconnect_time_wait=0.5, connect_timeout=5, error_cb=report,
        pending_size=0, **secure
    )


async def close(nc: NATS) -> None:
    """Flush what we published, then close. (nats-py's drain() can hang on pull subscriptions.)"""
    if nc is None or nc.is_closed:
        return
    with contextlib.suppress(Exception):
        await nc.flush(timeout=5)
    await nc.close()


async def ensure_streams(js: JetStreamContext) -> None:
    """Create (or update to this code's config) the two streams; safe to call from every service."""
    for config in (JOBS_STREAM, EVENTS_STREAM):
        try:
            await js.add_stream(config=config)
        except BadRequestError:
            await js.update_stream(config=config)


class NatsBus:
    """A service's NATS connection: core NATS, JetStream with the mesh's streams ensured, and
    the publishing every service does. One start-up (`connect`) and one shutdown (`close`)."""

    def __init__(self, nc: NATS, js: JetStreamContext):
        self.nc = nc
        self.js = js

    @classmethod
    async def connect(cls, url: str, name: str, identity: MeshIdentity | None, streams: bool = False) -> "NatsBus":
        """`streams`: create or update the mesh's streams (the gateway's right alone, nats_auth.py)."""
        nc = await connect(url, name, identity)
        js = nc.jetstream()
        if streams:
            await ensure_streams(js)
        return cls(nc, js)

    async def wait_for_stream(self, stream: str, poll_seconds: float = 0.5) -> None:
        """Wait until `stream` exists (the gateway creates the streams; a trainer may start first)."""
        from nats.js.errors import NotFoundError

        while True:
            try:
                await self.js.stream_info(stream)
                return
            except NotFoundError:
                log.info("waiting for the gateway to create stream %s", stream)
                await asyncio.sleep(poll_seconds)

    async def publish(self, subject: str, event: subjects.Event, ctx: otel_context.Context | None = None) -> None:
        """A durable event on JetStream (de-duplicated by its event id, trace context in headers);
        subjects.BusUnavailable when NATS cannot take it now."""
        with _unavailable_on_nats_errors(subject):
            await publish(self.js, subject, event, ctx=ctx)

    async def notify(self, subject: str, event: subjects.Event) -> None:
        """A core-NATS message (stop requests, heartbeats): fire and forget, trace context in headers."""
        with _unavailable_on_nats_errors(subject):
            await self.nc.publish(subject, event.SerializeToString(), headers=telemetry.inject_headers())

    async def purge_jobs(self, worker_id: str) -> None:
        """Drop every job still queued for one trainer."""
        with _unavailable_on_nats_errors(subjects.train_subject(worker_id)):
            await self.js.purge_stream(JOBS_STREAM_NAME, subject=subjects.train_subject(worker_id))

    async def close(self) -> None:
        await close(self.nc)


@contextlib.contextmanager
def _unavailable_on_nats_errors(subject: str):
    """NATS errors (a timeout, no connection, no stream yet) as subjects.BusUnavailable."""
    try:
        yield
    except (nats.errors.Error, asyncio.TimeoutError) as err:
        raise subjects.BusUnavailable(f"{subject}: {type(err).__name__}: {err}") from err


async def publish(js: JetStreamContext, subject: str, event: subjects.Event, ctx: otel_context.Context | None = None) -> None:
    """Publish an event (its `meta.event_id` as Nats-Msg-Id) with the trace context in headers."""
    headers = telemetry.inject_headers({"Nats-Msg-Id": event.meta.event_id}, ctx=ctx)
    await js.publish(subject, event.SerializeToString(), headers=headers, timeout=10)


Handler = Callable[[Msg, otel_context.Context], Awaitable[None]]
GiveUp = Callable[[Msg, Exception], Awaitable[None]]


@dataclass
class DurableConsumer:
    """A durable pull consumer with explicit acks, run as a background task.

    The handler gets each message and the trace context it carried. Returning acks the
    message; raising naks it (redelivered after `retry_delay`). While a handler runs, the
    consumer tells the server it is still in progress, so long work (training) is not
    redelivered to another replica. `stop()` hands an unfinished message back at once.
    """

    js: JetStreamContext
    stream: str
    durable: str
    subjects: list[str]
    handler: Handler
    ack_wait: float = 30.0
    max_deliver: int = 5
    retry_delay: float = 1.0
    concurrency: int = 1
    deliver_new_only: bool = False
    on_give_up: GiveUp | None = None
    _tasks: list[asyncio.Task] = field(default_factory=list)
    _stopping: bool = False
    _sub: JetStreamContext.PullSubscription | None = None

    async def start(self) -> None:
        config = ConsumerConfig(
            durable_name=self.durable,
            name=self.durable,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=self.ack_wait,
            max_deliver=self.max_deliver,
            deliver_policy=DeliverPolicy.NEW if self.deliver_new_only else DeliverPolicy.ALL,
            max_ack_pending=max(64, self.concurrency * 4),
        )
        if len(self.subjects) == 1:
            config.filter_subject = self.subjects[0]
        else:
            config.filter_subjects = list(self.subjects)
        await self.js.add_consumer(self.stream, config=config)
        self._sub = await self.js.pull_subscribe_bind(
            durable=self.durable, stream=self.stream, name=self.durable
        )
        self._tasks = [asyncio.create_task(self._loop(self._sub)) for _ in range(self.concurrency)]
        self._tasks.append(asyncio.create_task(self._report_lag()))

    async def _report_lag(self) -> None:
        """Keep the consumer's lag and unacknowledged count in the metrics (metrics.py)."""
        pending = CONSUMER_PENDING.labels(self.stream, self.durable)
        ack_pending = CONSUMER_ACK_PENDING.labels(self.stream, self.durable)
        # Not `while True`: on Python 3.11 a cancel that lands as consumer_info's own wait_for
        # completes can be swallowed (bpo-42130), and stop() would then wait on this loop forever.
        while not self._stopping:
            with contextlib.suppress(Exception):  # NATS away: the last figures stand
                info = await self.js.consumer_info(self.stream, self.durable, timeout=5)
                pending.set(info.num_pending or 0)
                ack_pending.set(info.num_ack_pending or 0)
            await asyncio.sleep(LAG_REPORT_SECONDS)

    async def stop(self) -> None:
        self._stopping = True
        for task in self._tasks:
            task.cancel()
        # Bounded: a task whose cancel was swallowed still sees _stopping within a fetch's or a
        # lag report's wait; one that does not is left behind, said in the log, not waited on.
        _, stuck = await asyncio.wait(self._tasks, timeout=STOP_WAIT_SECONDS) if self._tasks else (set(), set())
        if stuck:
            log.warning("consumer %s/%s: %d task(s) did not stop within %.0fs", self.stream, self.durable,
                        len(stuck), STOP_WAIT_SECONDS)
        if self._sub is not None:
            with contextlib.suppress(Exception):
                await self._sub.unsubscribe()

    async def _loop(self, sub) -> None:
        while not self._stopping:
            try:
                msgs = await sub.fetch(1, timeout=1.0)
            except (nats.errors.TimeoutError, asyncio.TimeoutError):
                continue
            except asyncio.CancelledError:
                raise
            except Exception as err:  # connection hiccup: back off, keep consuming
                log.warning("fetch from %s/%s failed: %s", self.stream, self.durable, err)
                await asyncio.sleep(1.0)
                continue
            for msg in msgs:
                await self._handle(msg)

    async def _handle(self, msg: Msg) -> None:
        if msg.metadata.num_delivered > 1:
            CONSUMER_REDELIVERIES.labels(self.stream, self.durable).inc()
        ctx = telemetry.extract_context(msg.headers)
        keepalive = asyncio.create_task(self._keep_in_progress(msg))
        try:
            await self.handler(msg, ctx)
        except asyncio.CancelledError:
            # Stopping: hand the message back to the queue for another replica (or our restart).
            with contextlib.suppress(Exception):
                await asyncio.shield(msg.nak())
            raise
        except Exception as err:
            last = msg.metadata.num_delivered >= self.max_deliver
            if last and self.on_give_up is not None:
                log.exception("handler for %s failed on its last delivery; giving up", msg.subject)
                try:
                    await self.on_give_up(msg, err)
                    await msg.ack()
                except Exception:
                    log.exception("recording the give-up for %s failed", msg.subject)
                    with contextlib.suppress(Exception):
                        await msg.nak(delay=self.retry_delay)
                return
            log.exception("handler for %s failed; message will be redelivered", msg.subject)
            with contextlib.suppress(Exception):
                await msg.nak(delay=self.retry_delay)
        else:
            with contextlib.suppress(Exception):
                await msg.ack()
        finally:
            keepalive.cancel()

    async def _keep_in_progress(self, msg: Msg) -> None:
        while True:
            await asyncio.sleep(self.ack_wait / 3)
            with contextlib.suppress(Exception):
                await msg.in_progress()
