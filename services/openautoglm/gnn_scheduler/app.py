"""The gnn-scheduler's wiring: the Scheduler servicer, and the cluster view kept from the
trainers' heartbeats on `autoglm.trainer.heartbeat`. Every change (a trainer joined, left, or
stopped beating) is announced on `autoglm.cluster.changed`, which makes the gateway pack again.

A killed trainer stops beating, but waiting out the heartbeat timeout would hold its job that
long. So the scheduler also pings each trainer every second on the subject its heartbeat names:
NATS answers "no responders" at once when no connection subscribes there any more, which is
what a dead process looks like (a busy one answers late, which is not taken as gone). Two such
answers in a row, while the scheduler's own connection has been steady for a while (after a NATS
restart the trainers need a moment to subscribe again), and the trainer is gone.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import nats.errors

from openautoglm.common.tls import service_identity
from openautoglm.common import events, subjects
from openautoglm.common.config import ServiceSettings
from openautoglm.gnn_scheduler.cluster import CapacityRegistry
from openautoglm.gnn_scheduler.service import DefaultPolicy, SchedulerServicer
from openautoglm.v1 import events_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)
PING_SECONDS = 1.0
# "No responders" this many times in a row means gone.
PING_STRIKES = 2
# After our own reconnect, pings are not trusted for this long (trainers re-subscribe too).
RECONNECT_GRACE_SECONDS = 5.0


def _decode_beat(msg) -> events_pb2.TrainerHeartbeat | None:
    try:
        return events_pb2.TrainerHeartbeat.FromString(msg.data)
    except Exception:
        log.warning("ignoring undecodable heartbeat on %s", msg.subject)
        return None


class SchedulerApp:
    service_names = (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.registry = CapacityRegistry(settings.heartbeat_ttl)
        self.evaluators = CapacityRegistry(settings.heartbeat_ttl)  # scoring capacity, no pings
        self.bus: events.NatsBus | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._pinger: asyncio.Task[None] | None = None
        # The learned policy loads after SERVING (start); another default needs no load.
        self.policy = DefaultPolicy(learned=settings.scheduler_policy == "gnn", name=settings.scheduler_policy)
        self._policy_load: asyncio.Task[None] | None = None

    def register(self, server):
        scheduler_pb2_grpc.add_SchedulerServicer_to_server(SchedulerServicer(self.registry, self.policy, self.evaluators), server)

    async def _on_heartbeat(self, msg):
        beat = _decode_beat(msg)
        if beat is None:
            return
        joined, left = self.registry.update(beat)
        if joined or left:
            await self._announce(joined, left)

    async def _on_evaluator_heartbeat(self, msg):
        beat = _decode_beat(msg)
        if beat is None:
            return
        beat.worker.pool = subjects.POOL_EVALUATOR  # whatever it says: this subject is the evaluators'
        joined, left = self.evaluators.update(beat)
        for worker_id in joined:
            log.info("evaluator %s joined (%d slots)", worker_id, beat.worker.slots)
        for worker_id in left:
            log.info("evaluator %s left", worker_id)

    async def _announce(self, joined: list[str], left: list[str], settled: bool = False) -> None:
        workers = self.registry.live()
        for worker_id in joined:
            log.info("trainer %s joined (%d live)", worker_id, len(workers))
        for worker_id in left:
            log.warning("trainer %s left (%d live)", worker_id, len(workers))
        change = events_pb2.ClusterChanged(meta=subjects.new_meta("gnn-scheduler"), workers=workers,
                                           joined=joined, left=left, settled=settled)
        if self.bus is not None:
            with contextlib.suppress(Exception):
                await self.bus.notify(subjects.SUBJECT_CLUSTER, change)

    async def _sweep(self):
        """Notice trainers that stopped beating (crashed, partitioned) within a second or so, and
        say once when the registry has settled if work was left on trainers not heard from then
        (it is orphaned now, unless they have joined since)."""
        settling = True
        while True:
            await asyncio.sleep(min(1.0, self.registry.ttl / 4))
            gone = self.registry.expire()
            settled_now = settling and self.registry.settled()
            unheard = sorted(w for w in self.registry.undecided if self.registry.is_gone(w)) if settled_now else []
            if gone or unheard:
                await self._announce([], gone, settled=settled_now)
            if settled_now:
                settling = False
                if unheard:
                    log.warning("trainers %s never beat since this scheduler started: their work is placed again", unheard)

    async def _ping(self):
        """Ping the trainers that answer pings; declare gone those whose connection is gone."""
        assert self.bus is not None
        nc = self.bus.nc
        strikes: dict[str, int] = {}
        reconnects, steady_since = nc.stats["reconnects"], time.monotonic()
        while True:
            await asyncio.sleep(PING_SECONDS)
            if nc.stats["reconnects"] != reconnects or not nc.is_connected:
                reconnects, steady_since = nc.stats["reconnects"], time.monotonic()
                strikes.clear()
                continue
            if time.monotonic() - steady_since < RECONNECT_GRACE_SECONDS:
                continue
            targets = self.registry.ping_subjects()
            answers = await asyncio.gather(*(self._answers(nc, subject) for subject in targets.values()))
            gone = []
            for worker_id, answered in zip(targets, answers):
                strikes[worker_id] = 0 if answered else strikes.get(worker_id, 0) + 1
                if strikes[worker_id] >= PING_STRIKES and self.registry.depart(worker_id):
                    log.warning("trainer %s is disconnected (no responders on its ping subject)", worker_id)
                    gone.append(worker_id)
                    del strikes[worker_id]
            if gone:
                await self._announce([], gone)

    @staticmethod
    async def _answers(nc, subject: str) -> bool:
        """False only when NATS says no one subscribes to `subject` (a slow answer is alive)."""
        try:
            await nc.request(subject, b"", timeout=PING_SECONDS)
        except nats.errors.NoRespondersError:
            return False
        except Exception:  # a timeout, or our connection hiccuped: not evidence of death
            pass
        return True

    async def start(self):
        self.bus = await events.NatsBus.connect(self.settings.nats_url, "gnn-scheduler", service_identity(self.settings))
        await self.bus.nc.subscribe(subjects.SUBJECT_HEARTBEAT, cb=self._on_heartbeat)
        await self.bus.nc.subscribe(subjects.SUBJECT_EVALUATOR_HEARTBEAT, cb=self._on_evaluator_heartbeat)
        self._sweeper = asyncio.create_task(self._sweep())
        self._pinger = asyncio.create_task(self._ping())
        if self.settings.scheduler_policy == "gnn":
            self._policy_load = asyncio.create_task(self.policy.load())

    async def stop(self):
        for task in (self._sweeper, self._pinger, self._policy_load):
            if task is not None:
                task.cancel()
        if self.bus is not None:
            await self.bus.close()
