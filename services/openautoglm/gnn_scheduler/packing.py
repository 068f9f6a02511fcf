"""Online packing: which pending trials of all studies start now, and on which trainer.

The gateway holds the work (pending trials of every running study, and the trials already
placed); the trainers announce their capacity (slots, memory per slot). `pack` is called again
whenever either side changes, so this module is a pure function of that snapshot:

1. Tasks placed on a worker that is no longer live are *orphaned*: the caller re-queues them.
   (`is_gone` can narrow this: a scheduler that has just started leaves work on trainers it has
   not heard from yet where it is.)
2. A pending task with a predecessor (pending or running, in `edges`) is not ready: never placed
   now, but part of the graph the policy ranks by (a trial's later stages: the rungs after its
   first, its scoring on the evaluator pool, its study's export).
3. Ready tasks that no live worker can hold are *unfit*: they wait (never placed anywhere).
4. The rest are ranked by the scheduling policy (planner.plan over all pending tasks of all
   studies at once, onto the whole cluster), and taken in the order of their planned start.
   The learned policy (`gnn`) instead decides online, as in the simulator: each study is a job
   whose queued trials are its ready tasks, and it picks one start after another, each on the
   free slot where it finishes first (live.py).
   Each goes to the free slot that fits it most tightly (best fit on memory per slot, then the
   fastest worker), so large slots stay free for large tasks. A task that fits no free slot waits, and smaller
   tasks behind it may use the slots it cannot (backfilling).

A task is never placed on a slot with less memory than it needs; memory 0 means "unknown: fits
anywhere" for a task and "unlimited" for a worker.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from openautoglm.gnn_scheduler.graph import FieldPlanError, PlanError, TaskNode, WorkerSlots, fits, topological_order
from openautoglm.gnn_scheduler.planner import check_edges, check_policy, check_task_values, check_workers, plan


@dataclass
class Packing:
    # (task id, worker id) to start now, in dispatch order.
    placements: list[tuple[str, str]] = field(default_factory=list)
    orphaned: list[str] = field(default_factory=list)
    unfit: list[str] = field(default_factory=list)
    # Free slots per worker after the placements.
    free_slots: dict[str, int] = field(default_factory=dict)


def pack(
    pending: list[TaskNode],
    running: dict[str, str],
    workers: list[WorkerSlots],
    policy: str = "critical_path",
    is_gone: Callable[[str], bool] | None = None,
    study_of: dict[str, str] | None = None,
    running_work: list[TaskNode] | None = None,
    edges: list[tuple[str, str, float]] | None = None,
) -> Packing:
    """Place ready pending tasks onto free slots; `running` maps placed task id -> worker id.
    `is_gone(worker id)` says whether a worker missing from `workers` has gone (default: yes).
    With `study_of` (task id -> study id, for pending and running tasks) the `gnn` policy
    decides online, each study one job (live.py); `running_work` gives the running tasks' costs.
    `edges` (from, to, transfer seconds) join pending tasks, or a running task to a pending one."""
    check_policy(policy)
    check_workers(workers)
    edges = edges or []
    check_edges(edges, "dependencies")
    pending_ids = {t.id for t in pending}
    known = pending_ids | set(running) | {t.id for t in running_work or []}
    for i, (src, dst, _) in enumerate(edges):
        if dst not in pending_ids:
            raise FieldPlanError(f"dependencies[{i}].to_task: {dst!r} is not a pending task")
        if src not in known:
            raise FieldPlanError(f"dependencies[{i}].from_task: {src!r} is neither pending nor running")
    inner = [e for e in edges if e[0] in pending_ids]
    topological_order(pending, inner)  # refuses duplicate ids and cycles
    both = sorted(pending_ids & set(running))
    if both:
        raise PlanError(f"task {both[0]!r} is both pending and running")
    check_task_values(pending, "pending")
    live = {w.id: w for w in workers}  # a worker announcing 0 slots is draining: live, takes nothing
    capable = [w for w in workers if w.slots > 0]
    out = Packing()
    out.orphaned = sorted(tid for tid, wid in running.items() if wid not in live and (is_gone is None or is_gone(wid)))
    used = Counter(wid for wid in running.values() if wid in live)
    free = {wid: max(0, w.slots - used[wid]) for wid, w in live.items()}
    blocked = {dst for _, dst, _ in edges}
    later = [t for t in pending if t.id in blocked]
    placeable: list[TaskNode] = []
    unfit: list[TaskNode] = []
    for task in pending:
        if task.id not in blocked:
            (placeable if any(fits(task, w) for w in capable) else unfit).append(task)
    out.unfit = [t.id for t in unfit]
    if placeable and any(free.values()) and policy == "gnn" and study_of is not None:
        from openautoglm.gnn_scheduler.gnn import LearnedPolicy, load_default
        from openautoglm.gnn_scheduler.live import learned_placements

        live_running = {tid: study_of.get(tid, "") for tid, wid in running.items() if wid in live}
        for task_id, chosen in learned_placements(placeable, study_of, running_work or [], live_running, capable, free,
                                                  LearnedPolicy(load_default()), later, inner):
            free[chosen] -= 1
            out.placements.append((task_id, chosen))
    elif placeable and any(free.values()):
        # The ready tasks and the stages to come that some live worker can hold, so a critical
        # path runs through a trial's later rungs (stages of a pool with no worker here drop out).
        graph = placeable + [t for t in later if any(fits(t, w) for w in capable)]
        in_graph = {t.id for t in graph}
        planned = plan(graph, [e for e in inner if e[0] in in_graph and e[1] in in_graph], capable, policy)
        ranked = sorted(planned.placements, key=lambda p: p.order)
        by_id = {t.id: t for t in placeable}
        for placement in ranked:
            if placement.task_id not in by_id:
                continue  # a stage to come: ranked, not placed
            task = by_id[placement.task_id]
            worker_id = _best_fit(task, live, free)
            if worker_id is None:
                continue
            free[worker_id] -= 1
            out.placements.append((task.id, worker_id))
            if not any(free.values()):
                break
    out.free_slots = free
    return out


def _best_fit(task: TaskNode, live: dict[str, WorkerSlots], free: dict[str, int]) -> str | None:
    options = [w for wid, w in live.items() if free[wid] > 0 and fits(task, w)]
    if not options:
        return None
    # Best fit: the tightest memory per slot (unlimited counts as the loosest), then the fastest.
    best = min(options, key=lambda w: (w.memory_mb if w.memory_mb > 0 else float("inf"), -w.speed, w.id))
    return best.id
