"""The evaluator's wiring: its servicer on the shared bootstrap, and its capacity announcement.

Trainers call Evaluate with their predictions and publish the scores themselves, so scoring
needs no NATS. With a NATS URL the evaluator also announces its scoring capacity every few
seconds on `autoglm.evaluator.heartbeat` (a Worker in the "evaluator" pool, one slot per
concurrent scoring it runs): the scheduler's evaluator pool, which the policy weighs a trial's
scoring stage against. NATS being down delays the announcement only, never scoring.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket

from nats.aio.client import Client as NATS

from openautoglm.common import events, subjects
from openautoglm.common.config import ServiceSettings
from openautoglm.common.net import advertised_address
from openautoglm.common.tls import service_identity
from openautoglm.evaluator import metrics
from openautoglm.evaluator.service import EvaluatorServicer
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc, events_pb2, scheduler_pb2

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0


class EvaluatorApp:
    service_names = (evaluator_pb2.DESCRIPTOR.services_by_name["Evaluator"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        # Before the gRPC server exists (its threads must not see the forks some libraries make
        # while loading), and before SERVING: no study waits for these seconds of loading.
        metrics.warm_up()
        # Scorings run at once, one per core: what it announces is what it runs.
        self.workers = max(1, os.cpu_count() or 1)
        self.servicer = EvaluatorServicer(self.workers)
        self.evaluator_id = f"evaluator-{socket.gethostname()}-{os.getpid()}"
        self._announcer: asyncio.Task[None] | None = None
        self._nc: NATS | None = None

    def register(self, server):
        evaluator_pb2_grpc.add_EvaluatorServicer_to_server(self.servicer, server)

    def _beat(self, leaving: bool = False) -> events_pb2.TrainerHeartbeat:
        worker = scheduler_pb2.Worker(id=self.evaluator_id, slots=self.workers, speed=1.0, device_kind="cpu", pool=subjects.POOL_EVALUATOR,
                                      address=advertised_address(self.settings.host, self.settings.port, self.settings.advertise_addr))
        return events_pb2.TrainerHeartbeat(meta=subjects.new_meta("evaluator"), worker=worker,
                                           busy_slots=self.servicer.busy, leaving=leaving)

    async def _announce(self) -> None:
        while True:
            try:
                if self._nc is None:
                    self._nc = await events.connect(self.settings.nats_url, "evaluator", service_identity(self.settings))
                await self._nc.publish(subjects.SUBJECT_EVALUATOR_HEARTBEAT, self._beat().SerializeToString())
            except asyncio.CancelledError:
                raise
            except Exception as err:  # NATS not up yet: scoring goes on, the announcement waits
                log.debug("evaluator heartbeat not sent: %s", err)
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def start(self):
        if self.settings.nats_url:
            self._announcer = asyncio.create_task(self._announce(), name="evaluator-heartbeat")

    async def stop(self):
        if self._announcer is not None:
            self._announcer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._announcer
        if self._nc is not None:
            with contextlib.suppress(Exception):
                await self._nc.publish(subjects.SUBJECT_EVALUATOR_HEARTBEAT, self._beat(leaving=True).SerializeToString())
            await events.close(self._nc)
