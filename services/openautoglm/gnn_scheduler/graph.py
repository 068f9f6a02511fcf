"""The scheduling model: tasks (a DAG with compute, memory and per-worker costs), workers with
slots, placements and plans, and the graph measures every policy uses (topological order,
upward rank). No policy here: planner.py and gnn.py build on this.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from openautoglm.common.subjects import POOL_EVALUATOR, POOL_TRAINER

# A task or worker with no pool named is the trainers' (POOL_TRAINER).
POOLS = (POOL_TRAINER, POOL_EVALUATOR)


class PlanError(ValueError):
    """The graph or capacity cannot be planned; the message names the problem."""


class FieldPlanError(PlanError):
    """A PlanError whose message begins with the request field it names ("workers[1].speed: ...")."""


@dataclass(frozen=True)
class TaskNode:
    id: str
    compute_seconds: float
    memory_mb: float = 0.0
    kind: str = ""
    # Per-worker compute time (worker id -> seconds), overriding compute_seconds / speed.
    cost_by_worker: dict[str, float] | None = None
    pool: str = POOL_TRAINER


@dataclass(frozen=True)
class WorkerSlots:
    id: str
    slots: int
    memory_mb: float  # per slot; 0 = unlimited
    speed: float = 1.0
    pool: str = POOL_TRAINER


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
        seen: set[str] = set()
        dupes: set[str] = set()
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
    """Whether one slot of the worker holds the task: the same pool, and the memory (0: unknown
    need / unlimited slot)."""
    return task.pool == worker.pool and (worker.memory_mb <= 0 or task.memory_mb <= worker.memory_mb)


def cost(task: TaskNode, worker: WorkerSlots) -> float:
    if task.cost_by_worker and worker.id in task.cost_by_worker:
        return float(task.cost_by_worker[worker.id])
    return task.compute_seconds / (worker.speed or 1.0)


def mean_cost(task: TaskNode, workers: list[WorkerSlots]) -> float:
    """Mean over the workers of the task's pool (its reference seconds when none is known)."""
    mine = [w for w in workers if w.pool == task.pool]
    return sum(cost(task, w) for w in mine) / len(mine) if mine else task.compute_seconds


def upward_ranks(tasks: list[TaskNode], edges: list[tuple[str, str, float]], workers: list[WorkerSlots],
                 with_transfers: bool = True, order: list[str] | None = None) -> dict[str, float]:
    """Longest path (mean compute [+ transfer]) from each task to an exit task, inclusive."""
    order = order or topological_order(tasks, edges)
    compute = {t.id: mean_cost(t, workers) for t in tasks}
    succ: dict[str, list[tuple[str, float]]] = {t.id: [] for t in tasks}
    for src, dst, transfer in edges:
        succ[src].append((dst, transfer if with_transfers else 0.0))
    rank: dict[str, float] = {}
    for node in reversed(order):
        rank[node] = compute[node] + max((c + rank[dst] for dst, c in succ[node]), default=0.0)
    return rank
