"""gRPC face of the gnn-scheduler: Plan, Pack and ListWorkers over planner.plan / packing.pack
and the live capacity that trainers announce on `autoglm.trainer.heartbeat` (and evaluators, for
Pack's evaluator pool, on `autoglm.evaluator.heartbeat`).

Policies (planner.py): gnn (the default: the learned policy in gnn.py, shipped weights),
critical_path, heft and fifo, which are also the GNN's baselines and its fallback when its
weights cannot be loaded.

The scheduler keeps no work of its own (the gateway's store is the one record of it): Pack is a
function of the request and the live trainers (cluster.py), so a restarted scheduler loses nothing.
"""
from __future__ import annotations

import asyncio
import logging

import grpc

from openautoglm.common import telemetry
from openautoglm.gnn_scheduler.cluster import CapacityRegistry
from openautoglm.gnn_scheduler.packing import pack
from openautoglm.common.subjects import POOL_TRAINER
from openautoglm.gnn_scheduler.graph import FieldPlanError, PlanError, TaskNode, WorkerSlots
from openautoglm.gnn_scheduler.planner import plan
from openautoglm.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger(__name__)


def _task_nodes(tasks) -> list[TaskNode]:
    return [TaskNode(t.id, t.compute_seconds, t.memory_mb, t.kind, dict(t.compute_seconds_by_worker) or None,
                     t.pool or POOL_TRAINER) for t in tasks]


def _worker_slots(workers, with_queues: bool = False) -> list[WorkerSlots]:
    """Workers as the planner sees them; `with_queues` counts the jobs a worker holds waiting
    beside its slots as places too (packing fills them, so the next trial is already there)."""
    return [WorkerSlots(w.id, w.slots + (w.queue_slots if with_queues else 0), w.memory_mb, w.speed or 1.0,
                        w.pool or POOL_TRAINER) for w in workers]


class DefaultPolicy:
    """The policy a request that names none gets: the learned one (`gnn`) once its weights have
    loaded, the critical-path heuristic before that and if they cannot load.

    Loading means importing torch-geometric, about 10 s on two cores, so it happens after the
    scheduler answers SERVING: a restarted scheduler places work (Pack) at once, with the
    heuristic for its first seconds (each reply names the policy it used). Plan, and any
    request that names `gnn`, waits for the load instead."""

    FALLBACK = "critical_path"

    def __init__(self, learned: bool = False, name: str = "gnn"):
        """`learned`: `load()` will be called (until it ends, the fallback answers); `name`: the
        default when it is not the learned policy (a deployment's --scheduler-policy)."""
        self.name = self.FALLBACK if learned or name == "gnn" else name
        self.loaded = asyncio.Event()
        if not learned:
            self.loaded.set()

    async def load(self) -> None:
        try:
            from openautoglm.gnn_scheduler.gnn import load_default

            await asyncio.to_thread(load_default)
            self.name = "gnn"
            log.info("learned policy loaded: planning with gnn")
        except Exception as err:  # missing weights or torch-geometric: plan with the heuristic
            log.warning("GNN policy unavailable (%s); planning with %s", err, self.FALLBACK)
        finally:
            self.loaded.set()

    async def resolve(self, requested: str, wait: bool = False) -> str:
        """The policy to use; `wait`: for the learned one to load even if not named (Plan, an
        offline request, gets the default it documents; Pack, on the live path, does not wait)."""
        if (requested == "gnn" or (wait and not requested)) and not self.loaded.is_set():
            await self.loaded.wait()
        return requested or self.name


class SchedulerServicer(scheduler_pb2_grpc.SchedulerServicer):
    def __init__(self, registry: CapacityRegistry, default_policy: DefaultPolicy | None = None,
                 evaluators: CapacityRegistry | None = None):
        self.registry = registry
        # The evaluators' announced scoring capacity: the pool trials' scoring stages run on.
        self.evaluators = evaluators or CapacityRegistry()
        self.default_policy = default_policy or DefaultPolicy()

    async def Plan(self, request, context):
        policy = await self.default_policy.resolve(request.policy, wait=True)
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
                    policy,
                )
                span.set_attribute("openautoglm.tasks", len(request.graph.tasks))
                span.set_attribute("openautoglm.makespan_s", result.makespan)
        except PlanError as err:  # one naming its own field as it is, the graph's as "graph: ..."
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                str(err) if isinstance(err, FieldPlanError) else f"graph: {err}")
        return scheduler_pb2.PlanResponse(
            assignments=[
                scheduler_pb2.Assignment(task_id=p.task_id, worker_id=p.worker_id, slot=p.slot,
                                         start_seconds=p.start, finish_seconds=p.finish, order=p.order)
                for p in result.placements
            ],
            makespan_seconds=result.makespan,
            total_slots=sum(w.slots for w in workers),
            policy=policy,
        )

    async def ListWorkers(self, request, context):
        return scheduler_pb2.ListWorkersResponse(workers=self.registry.live(), busy_slots=self.registry.busy_slots())

    async def Pack(self, request, context):
        policy = await self.default_policy.resolve(request.policy)
        for field, ids in (("pending", [t.id for t in request.pending]), ("running", [a.task_id for a in request.running])):
            for i, task_id in enumerate(ids):
                if not task_id:
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"{field}[{i}]: task id required")
        # Workers named in the request are the whole cluster; else the live trainers and
        # evaluators, and work on a trainer not heard from is orphaned only once it is known to be
        # gone (cluster.py).
        workers = list(request.workers) or [*self.registry.live(), *self.evaluators.live()]
        is_gone = None if request.workers else self.registry.is_gone
        try:
            with telemetry.tracer().start_as_current_span("pack") as span:
                study_of = {t.id: t.study_id for t in (*request.pending, *request.running_work)}
                result = pack(_task_nodes(request.pending), {a.task_id: a.worker_id for a in request.running},
                              _worker_slots(workers, with_queues=True), policy, is_gone, study_of,
                              _task_nodes(request.running_work),
                              [(d.from_task, d.to_task, d.transfer_seconds) for d in request.dependencies])
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
