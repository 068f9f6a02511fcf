"""The gnn-scheduler's wiring: the Scheduler servicer, and the cluster view kept from the
trainers' heartbeats on `autoglm.trainer.heartbeat`. Every change (a trainer joined, left, or
stopped beating) is announced on `autoglm.cluster.changed`, which makes the gateway pack again.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging

from openautoglm.common.tls import service_identity
from openautoglm.common import events, subjects
from openautoglm.common.config import ServiceSettings
from openautoglm.gnn_scheduler.cluster import CapacityRegistry
from openautoglm.gnn_scheduler.service import SchedulerServicer
from openautoglm.v1 import events_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)


class SchedulerApp:
    service_names = (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.registry = CapacityRegistry(settings.heartbeat_ttl)
        self.bus: events.NatsBus | None = None
        self._sweeper: asyncio.Task[None] | None = None

    def register(self, server):
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(self.registry, self._default_policy()), server)

    @staticmethod
    def _default_policy() -> str:
        try:
            from openautoglm.gnn_scheduler.gnn import load_default

            load_default()
            return "gnn"
        except Exception as err:  # missing weights or torch-geometric: plan with the heuristic
            log.warning("GNN policy unavailable (%s); planning with critical_path", err)
            return "critical_path"

    async def _on_heartbeat(self, msg):
        try:
            beat = events_pb2.TrainerHeartbeat.FromString(msg.data)
        except Exception:
            log.warning("ignoring undecodable heartbeat on %s", msg.subject)
            return
        joined, left = self.registry.update(beat)
        if joined or left:
            await self._announce(joined, left)

    async def _announce(self, joined: list[str], left: list[str]) -> None:
        workers = self.registry.live()
        for worker_id in joined:
            log.info("trainer %s joined (%d live)", worker_id, len(workers))
        for worker_id in left:
            log.warning("trainer %s left (%d live)", worker_id, len(workers))
        change = events_pb2.ClusterChanged(meta=subjects.new_meta("gnn-scheduler"), workers=workers,
                                           joined=joined, left=left)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.notify(subjects.SUBJECT_CLUSTER, change)

    async def _sweep(self):
        """Notice trainers that stopped beating (crashed, partitioned) within a second or so."""
        while True:
            await asyncio.sleep(min(1.0, self.registry.ttl / 4))
            gone = self.registry.expire()
            if gone:
                await self._announce([], gone)

    async def start(self):
        self.bus = await events.NatsBus.connect(self.settings.nats_url, "gnn-scheduler", service_identity(self.settings))
        await self.bus.nc.subscribe(subjects.SUBJECT_HEARTBEAT, cb=self._on_heartbeat)
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self):
        if self._sweeper:
            self._sweeper.cancel()
        if self.bus is not None:
            await self.bus.close()
