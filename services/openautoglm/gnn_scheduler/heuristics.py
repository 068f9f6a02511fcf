"""The scheduling baselines the literature compares a learned scheduler against (Decima, Mao et
al. SIGCOMM 2019, section 7), as online policies for simulate.py:

- `fifo`: jobs in arrival order, tasks in topological order.
- `sjf_cp`: the job with the least total work first, then the task on its critical path.
- `fair`: every job an equal share of the slots: the next task goes to the job running the
  fewest (critical path within it).
- `weighted_fair`: a job's share proportional to (total work)^alpha; alpha is swept on training
  workloads (Decima sweeps it, and negative alpha leans towards small jobs).
- `tetris` (Grandl et al. SIGCOMM 2014): task and slot chosen together by a packing score (the
  alignment of the task's demand with the worker's free resources) plus a shortest-remaining-work
  term, the two normalised and weighted (the weight swept on training workloads as well).
- `critical_path` and `heft`: every job's tasks by upward rank (compute only / with transfers).
"""
from __future__ import annotations

from openautoglm.gnn_scheduler.dags import Job
from openautoglm.gnn_scheduler.graph import fits, upward_ranks
from openautoglm.gnn_scheduler.simulate import (
    Simulation, Slot, StaticPriority, critical_path_priority, fifo_priority, heft_priority,
)

HEURISTICS = ("fifo", "sjf_cp", "fair", "weighted_fair", "tetris", "critical_path", "heft")
# Swept on training workloads only (benchmarks/scheduler.py picks the best per arrival mode).
ALPHAS = (-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0)
TETRIS_WEIGHTS = (0.25, 0.5, 1.0, 2.0, 4.0)


class WithinJobCriticalPath:
    """Keeps each arrived job's tasks' bottom levels (critical path within the job): the base of the
    policies that order within a job by critical path (and of train_gnn's teacher)."""

    def __init__(self) -> None:
        self.rank: dict[str, float] = {}

    def arrive(self, job: Job, sim: Simulation) -> None:
        self.rank.update(upward_ranks(job.tasks, job.edges, sim.workers, with_transfers=False))


class SjfCp(WithinJobCriticalPath):
    def pick(self, sim: Simulation, candidates: list[str]) -> tuple[int, Slot | None]:
        jobs, job_of, rank = sim.jobs, sim.job_of, self.rank
        return min(range(len(candidates)), key=lambda i: (jobs[job_of[candidates[i]]].total_work,
                                                          -rank[candidates[i]])), None


class WeightedFair(WithinJobCriticalPath):
    """alpha 0 is fair sharing."""

    def __init__(self, alpha: float = 0.0):
        super().__init__()
        self.alpha = alpha

    def pick(self, sim: Simulation, candidates: list[str]) -> tuple[int, Slot | None]:
        jobs, job_of, rank = sim.jobs, sim.job_of, self.rank

        def key(i: int) -> tuple[float, float, float]:
            # Weighted fair queueing: the job whose allocation, one more slot given, is the
            # smallest fraction of its weight gets the slot.
            state = jobs[job_of[candidates[i]]]
            weight = max(state.total_work, 1e-9) ** self.alpha
            return (state.running + 1) / weight, state.job.arrival, -rank[candidates[i]]

        return min(range(len(candidates)), key=key), None


class Tetris(WithinJobCriticalPath):
    """Packing score + weight x shortest-remaining-work score, each divided by its mean over the
    options so the weight is scale-free; the (task, slot) pair with the highest score runs."""

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight

    def pick(self, sim: Simulation, candidates: list[str]) -> tuple[int, Slot | None]:
        free_per_worker: dict[str, int] = {}
        for w, _ in sim.free:
            free_per_worker[w.id] = free_per_worker.get(w.id, 0) + 1
        most_unstarted = max(s.unstarted_work for s in sim.active.values()) or 1.0
        options = []
        for i, tid in enumerate(candidates):
            task = sim.task[tid]
            state = sim.jobs[sim.job_of[tid]]
            shortness = 1.0 - state.unstarted_work / most_unstarted + 1e-3
            seen: set[str] = set()
            for w, s in sim.free:
                if w.id in seen or not fits(task, w):
                    continue
                seen.add(w.id)
                # Demand (one slot's compute at this worker's speed, the task's memory share of a
                # slot) dotted with what the worker has free (its free slots, the whole free slot).
                memory_share = task.memory_mb / w.memory_mb if w.memory_mb > 0 else 0.0
                alignment = (free_per_worker[w.id] / w.slots) * (w.speed / sim.max_speed) + memory_share
                options.append((alignment, shortness, self.rank[tid], i, (w, s)))
        mean_alignment = sum(o[0] for o in options) / len(options) or 1.0
        mean_shortness = sum(o[1] for o in options) / len(options) or 1.0
        best = max(options, key=lambda o: (o[0] / mean_alignment + self.weight * o[1] / mean_shortness, o[2]))
        return best[3], best[4]


def make(name: str, alpha: float = 0.0, tetris_weight: float = 1.0):
    """A fresh policy object by name (policies keep per-run state: one per simulation)."""
    if name == "fifo":
        return StaticPriority(fifo_priority)
    if name == "critical_path":
        return StaticPriority(critical_path_priority)
    if name == "heft":
        return StaticPriority(heft_priority)
    if name == "sjf_cp":
        return SjfCp()
    if name == "fair":
        return WeightedFair(0.0)
    if name == "weighted_fair":
        return WeightedFair(alpha)
    if name == "tetris":
        return Tetris(tetris_weight)
    raise ValueError(f"unknown heuristic {name!r}; expected one of {', '.join(HEURISTICS)}")
