"""gRPC face of the gnn-scheduler: Plan and ListWorkers over planner.plan and the live capacity
that trainers announce on `autoglm.trainer.heartbeat`.

Policies (planner.py): gnn (the default: the learned policy in gnn.py, shipped weights),
critical_path, heft and fifo, which are also the GNN's baselines and its fallback when its
weights cannot be loaded.
"""
from __future__ import annotations

import logging
import time

import grpc

from openautoglm.common import events, telemetry
from openautoglm.common.config import ServiceSettings
from openautoglm.gnn_scheduler.planner import PlanError, TaskNode, WorkerSlots, plan
from openautoglm.v1 import events_pb2, scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)
# A trainer missing heartbeats for this long is taken as gone.
HEARTBEAT_TTL_SECONDS = 15.0


class CapacityRegistry:
    """Latest heartbeat per trainer, forgetting trainers that stopped beating."""

    def __init__(self, ttl: float = HEARTBEAT_TTL_SECONDS):
        self.ttl = ttl
        self._beats: dict[str, tuple[float, scheduler_pb2.Worker]] = {}

    def update(self, beat: events_pb2.TrainerHeartbeat) -> None:
        self._beats[beat.worker.id] = (time.monotonic(), beat.worker)

    def live(self) -> list[scheduler_pb2.Worker]:
        now = time.monotonic()
        self._beats = {k: v for k, v in self._beats.items() if now - v[0] <= self.ttl}
        return [w for _, w in sorted(self._beats.values(), key=lambda v: v[1].id)]


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
                    [TaskNode(t.id, t.compute_seconds, t.memory_mb, t.kind, dict(t.compute_seconds_by_worker) or None)
                     for t in request.graph.tasks],
                    [(d.from_task, d.to_task, d.transfer_seconds) for d in request.graph.dependencies],
                    [WorkerSlots(w.id, w.slots, w.memory_mb, w.speed or 1.0) for w in workers],
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


class SchedulerApp:
    service_names = (scheduler_pb2.DESCRIPTOR.services_by_name["Scheduler"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.registry = CapacityRegistry()
        self.nc = None

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
            self.registry.update(events_pb2.TrainerHeartbeat.FromString(msg.data))
        except Exception:
            log.warning("ignoring undecodable heartbeat on %s", msg.subject)

    async def start(self):
        self.nc = await events.connect(self.settings.nats_url, "gnn-scheduler")
        await self.nc.subscribe(events.SUBJECT_HEARTBEAT, cb=self._on_heartbeat)

    async def stop(self):
        await events.close(self.nc)
