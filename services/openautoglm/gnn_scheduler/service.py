"""gRPC face of the gnn-scheduler: Plan, Pack and ListWorkers over planner.plan / packing.pack
and the live capacity that trainers announce on `autoglm.trainer.heartbeat`.

Policies (planner.py): gnn (the default: the learned policy in gnn.py, shipped weights),
critical_path, heft and fifo, which are also the GNN's baselines and its fallback when its
weights cannot be loaded.

The scheduler keeps no work of its own (the gateway's store is the one record of it): Pack is a
function of the request and the live trainers, so a restarted scheduler loses nothing. It does
own the cluster view, and announces every change (a trainer joined, left, or stopped beating) on
`autoglm.cluster.changed`, which makes the gateway pack again at once.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import time

import grpc

from openautoglm.common import events, telemetry
from openautoglm.common.config import ServiceSettings
from openautoglm.gnn_scheduler.packing import pack
from openautoglm.gnn_scheduler.planner import PlanError, TaskNode, WorkerSlots, plan
from openautoglm.v1 import events_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)


class CapacityRegistry:
    """Latest heartbeat per trainer; a trainer that stops beating for `ttl` seconds is gone."""

    def __init__(self, ttl: float = 15.0):
        self.ttl = ttl
        self._beats: dict[str, tuple[float, scheduler_pb2.Worker]] = {}

    def update(self, beat: events_pb2.TrainerHeartbeat) -> tuple[list[str], list[str]]:
        """Record a beat; returns (joined, left) trainer ids."""
        worker_id = beat.worker.id
        if beat.leaving:
            return ([], [worker_id]) if self._beats.pop(worker_id, None) else ([], [])
        known = worker_id in self._beats
        self._beats[worker_id] = (time.monotonic(), beat.worker)
        return ([] if known else [worker_id]), []

    def expire(self) -> list[str]:
        """Forget trainers silent for longer than the ttl; returns their ids."""
        now = time.monotonic()
        gone = sorted(k for k, (seen, _) in self._beats.items() if now - seen > self.ttl)
        for worker_id in gone:
            del self._beats[worker_id]
        return gone

    def live(self) -> list[scheduler_pb2.Worker]:
        self.expire()
        return [w for _, w in sorted(self._beats.values(), key=lambda v: v[1].id)]


def _task_nodes(tasks) -> list[TaskNode]:
    return [TaskNode(t.id, t.compute_seconds, t.memory_mb, t.kind, dict(t.compute_seconds_by_worker) or None)
            for t in tasks]


def _worker_slots(workers) -> list[WorkerSlots]:
    return [WorkerSlots(w.id, w.slots, w.memory_mb, w.speed or 1.0) for w in workers]


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, registry: CapacityRegistry, default_policy: str = "critical_path"):
        self.registry = registry
        self.default_policy = default_policy

    async def Plan(self, request, context):
        workers = list(request.workers) or self.registry.live()
        if not workers:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "workers: none given and no trainer has reported capacity")
        for i, t in enumerate(request.graph.tasks):
            if not t.id:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"graph.tasks[{i}].id: required")
        try:
            with telemetry.tracer().start_as_current_span("plan") as span:
                result = plan(
                    _task_nodes(request.graph.tasks),
                    [(d.from_task, d.to_task, d.transfer_seconds) for d in request.graph.dependencies],
                    _worker_slots(workers),
                    request.policy or self.default_policy,
                )
                span.set_attribute("openautoglm.tasks", len(request.graph.tasks))
                span.set_attribute("openautoglm.makespan_s", result.makespan)
        except PlanError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"graph: {err}")
        return scheduler_pb2.PlanResponse(
            assignments=[
                scheduler_pb2.Assignment(task_id=p.task_id, worker_id=p.worker_id, slot=p.slot,
                                         start_seconds=p.start, finish_seconds=p.finish, order=p.order)
                for p in result.placements
            ],
            makespan_seconds=result.makespan,
            total_slots=sum(w.slots for w in workers),
            policy=request.policy or self.default_policy,
        )

    async def ListWorkers(self, request, context):
        return scheduler_pb2.ListWorkersResponse(workers=self.registry.live())

    async def Pack(self, request, context):
        policy = request.policy or self.default_policy
        for field, ids in (("pending", [t.id for t in request.pending]), ("running", [a.task_id for a in request.running])):
            for i, task_id in enumerate(ids):
                if not task_id:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}[{i}]: task id required")
        workers = list(request.workers) or self.registry.live()
        try:
            with telemetry.tracer().start_as_current_span("pack") as span:
                result = pack(_task_nodes(request.pending), {a.task_id: a.worker_id for a in request.running},
                              _worker_slots(workers), policy)
                span.set_attribute("openautoglm.pending", len(request.pending))
                span.set_attribute("openautoglm.running", len(request.running))
                span.set_attribute("openautoglm.workers", len(workers))
                span.set_attribute("openautoglm.placed", len(result.placements))
        except PlanError as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        return scheduler_pb2.PackResponse(
            placements=[scheduler_pb2.Assignment(task_id=task_id, worker_id=worker_id, order=i)
                        for i, (task_id, worker_id) in enumerate(result.placements)],
            orphaned_task_ids=result.orphaned,
            unfit_task_ids=result.unfit,
            workers=workers,
            free_slots=[result.free_slots.get(w.id, 0) for w in workers],
            policy=policy,
        )


class SchedulerApp:
    service_names = (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.registry = CapacityRegistry(settings.heartbeat_ttl)
        self.nc = None
        self._sweeper = None

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
        change = events_pb2.ClusterChanged(meta=events.new_meta("gnn-scheduler"), workers=workers,
                                           joined=joined, left=left)
        with contextlib.suppress(Exception):
            await self.nc.publish(events.SUBJECT_CLUSTER, change.SerializeToString())

    async def _sweep(self):
        """Notice trainers that stopped beating (crashed, partitioned) within a second or so."""
        while True:
            await asyncio.sleep(min(1.0, self.registry.ttl / 4))
            gone = self.registry.expire()
            if gone:
                await self._announce([], gone)

    async def start(self):
        self.nc = await events.connect(self.settings.nats_url, "gnn-scheduler")
        await self.nc.subscribe(events.SUBJECT_HEARTBEAT, cb=self._on_heartbeat)
        self._sweeper = asyncio.create_task(self._sweep())

    async def stop(self):
        if self._sweeper:
            self._sweeper.cancel()
        await events.close(self.nc)
