"""Planning a task DAG onto trainer slots, with no gRPC in sight.

Three list-scheduling policies, each a priority order plus a placement rule:

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
from dataclasses import dataclass, field

POLICIES = ("critical_path", "fifo", "heft", "gnn")


class PlanError(ValueError):
    """The graph or capacity cannot be planned; the message names the problem."""


@dataclass(frozen=True)
class TaskNode:
    id: str
    compute_seconds: float
    memory_mb: float = 0.0
    kind: str = ""
    # Per-worker compute time (worker id -> seconds), overriding compute_seconds / speed.
    cost_by_worker: dict | None = None


@dataclass(frozen=True)
class WorkerSlots:
    id: str
    slots: int
    memory_mb: float  # per slot; 0 = unlimited
    speed: float = 1.0


@dataclass
class Placement:
    task_id: str
    worker_id: str
    slot: int
    start: float
    finish: float
    order: int = 0


@dataclass
class Plan:
    placements: list[Placement] = field(default_factory=list)
    makespan: float = 0.0


def topological_order(tasks: list[TaskNode], edges: list[tuple[str, str, float]]) -> list[str]:
    """Kahn's algorithm in input order; raises PlanError naming a task on a cycle."""
    ids = [t.id for t in tasks]
    known = set(ids)
    if len(known) != len(ids):
        seen, dupes = set(), set()
        for i in ids:
            (dupes if i in seen else seen).add(i)
        raise PlanError(f"duplicate task id(s): {', '.join(sorted(dupes))}")
    indegree = dict.fromkeys(ids, 0)
    succ: dict[str, list[str]] = {i: [] for i in ids}
    for src, dst, _ in edges:
        for end in (src, dst):
            if end not in known:
                raise PlanError(f"dependency names unknown task {end!r}")
        succ[src].append(dst)
        indegree[dst] += 1
    ready = [i for i in ids if indegree[i] == 0]
    order = []
    head = 0
    while head < len(ready):
        node = ready[head]
        head += 1
        order.append(node)
        for nxt in succ[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(ids):
        stuck = sorted(i for i in ids if indegree[i] > 0)
        raise PlanError(f"the task graph has a cycle through: {', '.join(stuck[:5])}")
    return order


def fits(task: TaskNode, worker: WorkerSlots) -> bool:
    """Whether one slot of the worker holds the task (memory 0: unknown need / unlimited slot)."""
    return worker.memory_mb <= 0 or task.memory_mb <= worker.memory_mb


def cost(task: TaskNode, worker: WorkerSlots) -> float:
    if task.cost_by_worker and worker.id in task.cost_by_worker:
        return float(task.cost_by_worker[worker.id])
    return task.compute_seconds / (worker.speed or 1.0)


def _mean_cost(task: TaskNode, workers: list[WorkerSlots]) -> float:
    return sum(cost(task, w) for w in workers) / len(workers)


def upward_ranks(tasks, edges, workers: list[WorkerSlots], with_transfers: bool = True, order=None) -> dict[str, float]:
    """Longest path (mean compute [+ transfer]) from each task to an exit task, inclusive."""
    order = order or topological_order(tasks, edges)
    compute = {t.id: _mean_cost(t, workers) for t in tasks}
    succ: dict[str, list[tuple[str, float]]] = {t.id: [] for t in tasks}
    for src, dst, transfer in edges:
        succ[src].append((dst, transfer if with_transfers else 0.0))
    rank: dict[str, float] = {}
    for node in reversed(order):
        rank[node] = compute[node] + max((c + rank[dst] for dst, c in succ[node]), default=0.0)
    return rank


def check_policy(policy: str) -> None:
    if policy not in POLICIES:
        raise PlanError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")


def check_task_values(tasks: list[TaskNode]) -> None:
    for t in tasks:
        if t.compute_seconds < 0 or t.memory_mb < 0:
            raise PlanError(f"task {t.id!r}: compute_seconds and memory_mb must be >= 0")


def _check(tasks: list[TaskNode], workers: list[WorkerSlots], policy: str) -> None:
    check_policy(policy)
    if not workers or all(w.slots <= 0 for w in workers):
        raise PlanError("no worker capacity to plan onto")
    check_task_values(tasks)
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
    _check(tasks, workers, policy)
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


def _list_schedule(tasks, edges, workers, priority, earliest_finish: bool, insertion: bool) -> Plan:
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
