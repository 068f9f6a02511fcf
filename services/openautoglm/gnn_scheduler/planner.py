"""Planning a task DAG onto trainer slots, with no gRPC in sight.

List-scheduling policies over the model in graph.py, each a priority order plus a placement rule:

- `fifo`: tasks in arrival order, each on the slot where it can start earliest.
- `critical_path`: tasks by bottom level (longest compute-only path to an exit), each on the
  slot where it can start earliest.
- `gnn`: tasks by the learned policy's scores (gnn.py), placed like critical_path.
- `heft` (Topcuoglu, Hariri, Wu 2002): tasks by upward rank (mean compute + mean transfer along
  the longest path to an exit), each on the slot where it *finishes* earliest, allowed to use
  an idle gap between already placed tasks (insertion).

A slot is one concurrent place on a worker; data moves free between slots of one worker. A
task's compute time on a worker is its per-worker cost when given (unrelated machines, as in
the HEFT paper), else compute_seconds / speed. A cyclic graph, an unknown dependency, or a
task that no worker can hold in memory is refused.
"""
from __future__ import annotations

import heapq
import math

from openautoglm.gnn_scheduler.graph import (
    POOLS,
    FieldPlanError,
    Placement,
    Plan,
    PlanError,
    TaskNode,
    WorkerSlots,
    cost,
    fits,
    topological_order,
    upward_ranks,
)

POLICIES = ("critical_path", "fifo", "heft", "gnn")


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise PlanError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")


# Bounds on what one request may ask for: planning is quadratic in tasks for some policies,
# and a worker's slots are laid out one by one.
MAX_PLAN_TASKS = 10_000
MAX_PACK_TASKS = 100_000
MAX_WORKERS = 10_000
MAX_SLOTS_PER_WORKER = 4096


def _finite_at_least_zero(value: float) -> bool:
    return math.isfinite(value) and value >= 0


def check_task_values(tasks: list[TaskNode], field: str = "tasks", limit: int = MAX_PACK_TASKS) -> None:
    """Costs and memory are finite and >= 0 (0 = unknown / none); per-worker costs name a worker."""
    if len(tasks) > limit:
        raise FieldPlanError(f"{field}: {len(tasks)} tasks; at most {limit} per request")
    for i, t in enumerate(tasks):
        if t.pool not in POOLS:
            raise FieldPlanError(f"{field}[{i}].pool: {t.pool!r}; expected one of {', '.join(POOLS)} (empty: trainer)")
        if not (_finite_at_least_zero(t.compute_seconds) and _finite_at_least_zero(t.memory_mb)):
            raise FieldPlanError(f"{field}[{i}] (task {t.id!r}): compute_seconds and memory_mb must be finite numbers >= 0")
        for worker_id, seconds in (t.cost_by_worker or {}).items():
            if not worker_id or not _finite_at_least_zero(seconds):
                raise FieldPlanError(f"{field}[{i}].compute_seconds_by_worker[{worker_id!r}]: "
                                "needs a worker id and a finite number of seconds >= 0")


def check_edges(edges: list[tuple[str, str, float]], field: str = "graph.dependencies") -> None:
    for i, (src, dst, transfer) in enumerate(edges):
        if src == dst:
            raise FieldPlanError(f"{field}[{i}]: task {src!r} depends on itself (a cycle)")
        if not _finite_at_least_zero(transfer):
            raise FieldPlanError(f"{field}[{i}].transfer_seconds: must be a finite number >= 0")


def check_workers(workers: list[WorkerSlots], field: str = "workers") -> None:
    """Ids unique, slots within bounds (0 = draining), memory finite >= 0, speed finite > 0."""
    if len(workers) > MAX_WORKERS:
        raise FieldPlanError(f"{field}: {len(workers)} workers; at most {MAX_WORKERS} per request")
    seen: set[str] = set()
    for i, w in enumerate(workers):
        if not w.id:
            raise FieldPlanError(f"{field}[{i}].id: required")
        if w.id in seen:
            raise FieldPlanError(f"{field}[{i}].id: duplicate worker id {w.id!r}")
        seen.add(w.id)
        if w.pool not in POOLS:
            raise FieldPlanError(f"{field}[{i}].pool: {w.pool!r}; expected one of {', '.join(POOLS)} (empty: trainer)")
        if not 0 <= w.slots <= MAX_SLOTS_PER_WORKER:
            raise FieldPlanError(f"{field}[{i}].slots: must be between 0 and {MAX_SLOTS_PER_WORKER}")
        if not _finite_at_least_zero(w.memory_mb):
            raise FieldPlanError(f"{field}[{i}].memory_mb: must be a finite number >= 0 (0 = unlimited)")
        if not (math.isfinite(w.speed) and w.speed > 0):
            raise FieldPlanError(f"{field}[{i}].speed: must be a finite number > 0")


def _check(tasks: list[TaskNode], edges: list[tuple[str, str, float]], workers: list[WorkerSlots], policy: str) -> None:
    check_policy(policy)
    check_workers(workers)
    if not workers or all(w.slots <= 0 for w in workers):
        raise PlanError("no worker capacity to plan onto")
    if not tasks:
        raise FieldPlanError("graph.tasks: empty; a plan needs at least one task")
    check_task_values(tasks, "graph.tasks", MAX_PLAN_TASKS)
    check_edges(edges)
    biggest = max((w.memory_mb for w in workers), default=0.0)
    unlimited = any(w.memory_mb <= 0 for w in workers)
    for t in tasks:
        if not unlimited and t.memory_mb > biggest:
            raise PlanError(f"task {t.id!r} needs {t.memory_mb:.0f} MiB but the largest slot has {biggest:.0f} MiB")


def plan(
    tasks: list[TaskNode],
    edges: list[tuple[str, str, float]],
    workers: list[WorkerSlots],
    policy: str = "critical_path",
    priority: list[str] | None = None,
) -> Plan:
    """Place every task; `priority` (a task order) overrides the policy's own ranking."""
    _check(tasks, edges, workers, policy)
    workers = [w for w in workers if w.slots > 0]
    order = topological_order(tasks, edges)
    position = {tid: i for i, tid in enumerate(order)}
    if priority is None:
        if policy == "heft":
            rank = upward_ranks(tasks, edges, workers, True, order)
            priority = sorted(order, key=lambda tid: (-round(rank[tid], 9), position[tid]))
        elif policy == "critical_path":
            rank = upward_ranks(tasks, edges, workers, False, order)
            priority = sorted(order, key=lambda tid: (-round(rank[tid], 9), position[tid]))
        elif policy == "gnn":
            from openautoglm.gnn_scheduler.gnn import priority_order

            priority = priority_order(tasks, edges, workers)
        else:
            priority = [t.id for t in tasks]
    return _list_schedule(tasks, edges, workers, priority, earliest_finish=policy == "heft", insertion=policy == "heft")


def _list_schedule(tasks: list[TaskNode], edges: list[tuple[str, str, float]], workers: list[WorkerSlots], priority: list[str],
                   earliest_finish: bool, insertion: bool) -> Plan:
    by_id = {t.id: t for t in tasks}
    preds: dict[str, list[tuple[str, float]]] = {t.id: [] for t in tasks}
    for src, dst, transfer in edges:
        preds[dst].append((src, transfer))
    slots = [(w, s) for w in workers for s in range(w.slots)]
    busy: dict[tuple[str, int], list[tuple[float, float]]] = {(w.id, s): [] for w, s in slots}
    slot_ends = {w.id: [0.0] * w.slots for w in workers}
    placed: dict[str, Placement] = {}
    rank_of = {tid: i for i, tid in enumerate(priority)}
    # Ready tasks (all predecessors placed), taken in priority order.
    waiting = {t.id: len(preds[t.id]) for t in tasks}
    succ: dict[str, list[str]] = {t.id: [] for t in tasks}
    for src, dst, _ in edges:
        succ[src].append(dst)

    ready = [(rank_of[t], t) for t, n in waiting.items() if n == 0]
    heapq.heapify(ready)
    out = Plan()
    while ready:
        _, tid = heapq.heappop(ready)
        task = by_id[tid]
        best = None
        arrivals = [(placed[p].finish, placed[p].worker_id, c) for p, c in preds[tid]]
        for worker in workers:
            if not fits(task, worker):
                continue
            wid = worker.id
            data_ready = max((f if w == wid else f + c for f, w, c in arrivals), default=0.0)
            duration = cost(task, worker)
            if insertion:
                options = [(slot, _earliest_start(busy[(wid, slot)], data_ready, duration, True)) for slot in range(worker.slots)]
            else:  # without insertion only the slot that frees first can be best
                ends = slot_ends[wid]
                slot = ends.index(min(ends))
                options = [(slot, max(data_ready, ends[slot]))]
            for slot, start in options:
                key = (start + duration) if earliest_finish else start
                if best is None or key < best[0] - 1e-12:
                    best = (key, Placement(tid, wid, slot, start, start + duration))
        assert best is not None, f"no worker can hold task {tid!r}"  # _check refused such tasks
        placement = best[1]
        intervals = busy[(placement.worker_id, placement.slot)]
        intervals.append((placement.start, placement.finish))
        intervals.sort()
        ends = slot_ends[placement.worker_id]
        ends[placement.slot] = max(ends[placement.slot], placement.finish)
        placed[tid] = placement
        out.placements.append(placement)
        for nxt in succ[tid]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                heapq.heappush(ready, (rank_of[nxt], nxt))
    out.placements.sort(key=lambda p: (p.start, p.finish, p.task_id))
    for i, p in enumerate(out.placements):
        p.order = i
    out.makespan = max((p.finish for p in out.placements), default=0.0)
    return out


def _earliest_start(intervals: list[tuple[float, float]], ready: float, duration: float, insertion: bool) -> float:
    """Earliest start >= ready on a slot with these busy intervals (sorted)."""
    if not intervals:
        return ready
    if not insertion:
        return max(ready, intervals[-1][1])
    previous_end = 0.0
    for begin, end in intervals:
        start = max(ready, previous_end)
        if start + duration <= begin + 1e-12:
            return start
        previous_end = max(previous_end, end)
    return max(ready, previous_end)
