"""Planning a task DAG onto trainer slots, with no gRPC in sight.

`plan` is list scheduling: tasks are ranked by a policy (critical path = upward rank, the longest
compute+transfer path from the task to an exit, as in HEFT; or FIFO = arrival order), then each
ready task in rank order goes to the slot where it finishes earliest among those whose memory
fits. A cyclic graph, an unknown dependency or a task no worker can hold is refused.
"""
from __future__ import annotations

from dataclasses import dataclass, field

POLICIES = ("critical_path", "fifo")


class PlanError(ValueError):
    """The graph or capacity cannot be planned; the message names the problem."""


@dataclass(frozen=True)
class TaskNode:
    id: str
    compute_seconds: float
    memory_mb: float = 0.0
    kind: str = ""


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
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        raise PlanError(f"duplicate task id(s): {', '.join(dupes)}")
    indegree = {i: 0 for i in ids}
    succ: dict[str, list[str]] = {i: [] for i in ids}
    for src, dst, _ in edges:
        for end in (src, dst):
            if end not in known:
                raise PlanError(f"dependency names unknown task {end!r}")
        succ[src].append(dst)
        indegree[dst] += 1
    ready = [i for i in ids if indegree[i] == 0]
    order = []
    while ready:
        node = ready.pop(0)
        order.append(node)
        for nxt in succ[node]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if len(order) != len(ids):
        stuck = sorted(i for i in ids if indegree[i] > 0)
        raise PlanError(f"the task graph has a cycle through: {', '.join(stuck[:5])}")
    return order


def upward_ranks(tasks, edges, mean_speed: float) -> dict[str, float]:
    """Longest path (compute at mean speed + transfer) from each task to an exit task."""
    order = topological_order(tasks, edges)
    compute = {t.id: t.compute_seconds / mean_speed for t in tasks}
    succ: dict[str, list[tuple[str, float]]] = {t.id: [] for t in tasks}
    for src, dst, cost in edges:
        succ[src].append((dst, cost))
    rank: dict[str, float] = {}
    for node in reversed(order):
        rank[node] = compute[node] + max((cost + rank[dst] for dst, cost in succ[node]), default=0.0)
    return rank


def plan(
    tasks: list[TaskNode],
    edges: list[tuple[str, str, float]],
    workers: list[WorkerSlots],
    policy: str = "critical_path",
) -> Plan:
    if policy not in POLICIES:
        raise PlanError(f"unknown policy {policy!r}; expected one of {', '.join(POLICIES)}")
    if not workers or all(w.slots <= 0 for w in workers):
        raise PlanError("no worker capacity to plan onto")
    for t in tasks:
        if t.compute_seconds < 0 or t.memory_mb < 0:
            raise PlanError(f"task {t.id!r}: compute_seconds and memory_mb must be >= 0")
        if not any(w.memory_mb <= 0 or t.memory_mb <= w.memory_mb for w in workers):
            biggest = max(w.memory_mb for w in workers)
            raise PlanError(f"task {t.id!r} needs {t.memory_mb:.0f} MiB but the largest slot has {biggest:.0f} MiB")
    order = topological_order(tasks, edges)
    mean_speed = sum(w.speed * w.slots for w in workers) / sum(w.slots for w in workers)
    if policy == "critical_path":
        rank = upward_ranks(tasks, edges, mean_speed)
        position = {tid: i for i, tid in enumerate(order)}
        priority = sorted(order, key=lambda tid: (-rank[tid], position[tid]))
    else:
        priority = [t.id for t in tasks]

    by_id = {t.id: t for t in tasks}
    preds: dict[str, list[tuple[str, float]]] = {t.id: [] for t in tasks}
    for src, dst, cost in edges:
        preds[dst].append((src, cost))
    slots = [(w, s) for w in workers for s in range(w.slots)]
    free_at = {(w.id, s): 0.0 for w, s in slots}
    placed: dict[str, Placement] = {}
    out = Plan()
    remaining = list(priority)
    while remaining:
        # Highest-priority task whose predecessors are all placed (list scheduling).
        tid = next(t for t in remaining if all(p in placed for p, _ in preds[t]))
        remaining.remove(tid)
        task = by_id[tid]
        best = None
        for worker, slot in slots:
            if worker.memory_mb > 0 and task.memory_mb > worker.memory_mb:
                continue
            ready = max(
                (placed[p].finish + (0.0 if placed[p].worker_id == worker.id else cost) for p, cost in preds[tid]),
                default=0.0,
            )
            start = max(ready, free_at[(worker.id, slot)])
            finish = start + task.compute_seconds / (worker.speed or 1.0)
            if best is None or finish < best.finish:
                best = Placement(tid, worker.id, slot, start, finish)
        free_at[(best.worker_id, best.slot)] = best.finish
        placed[tid] = best
        out.placements.append(best)
    out.placements.sort(key=lambda p: (p.start, p.finish))
    for i, p in enumerate(out.placements):
        p.order = i
    out.makespan = max((p.finish for p in out.placements), default=0.0)
    return out
