"""The learned policy on the live path: the pending work of every running study, as the
scheduler sees it at one Pack, in the shape simulate.Simulation gives a policy.

Each running study is a job: its queued trials' first stages are its ready tasks (costs: the
gateway's predicted seconds on a reference trainer), their later stages (rungs, scoring on the
evaluator pool, the study's export) its waiting tasks, joined by the request's edges so the GCN
passes messages along them; its running trials count against it. The free slots are the live
trainers' free places. `learned_placements` asks the policy for one start after another until
no free slot holds a ready task; it never waits (a Pack answers now). A picked stage's
successors stay waiting: they follow it on its slot (rungs) or go to the evaluators (scoring).
"""
from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from openautoglm.gnn_scheduler.dags import Job
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots, cost, fits
from openautoglm.gnn_scheduler.simulate import JobState, Slot


CANDIDATES_PER_STUDY = 4


@dataclass
class LiveSnapshot:
    workers: list[WorkerSlots]
    free: list[Slot]
    now: float = 0.0
    can_wait: bool = False
    jobs: dict[str, JobState] = field(default_factory=dict)
    task: dict[str, TaskNode] = field(default_factory=dict)
    job_of: dict[str, str] = field(default_factory=dict)

    @property
    def active(self) -> dict[str, JobState]:
        return self.jobs

    @property
    def slots(self) -> list[Slot]:
        return self.free  # busy places' end times are not known here: only the free ones count

    @property
    def total_slots(self) -> int:
        return sum(w.slots for w in self.workers)

    @property
    def max_speed(self) -> float:
        return max(w.speed for w in self.workers)

    def earliest_end(self, tid: str, options: list[Slot]) -> tuple[float, Slot | None]:
        task = self.task[tid]
        best: tuple[float, Slot | None] = (float("inf"), None)
        for w, s in options:
            if fits(task, w):
                end = self.now + cost(task, w)
                if end < best[0]:
                    best = (end, (w, s))
        return best


def learned_placements(pending: list[TaskNode], study_of: dict[str, str], running_work: list[TaskNode],
                       running_study: dict[str, str], workers: list[WorkerSlots], free: dict[str, int],
                       policy, later: Sequence[TaskNode] = (),
                       edges: Sequence[tuple[str, str, float]] = ()) -> list[tuple[str, str]]:
    """(task id, worker id) to start now, in the order the learned policy picks them: `pending`
    are the ready tasks, `later` the waiting ones, `edges` join them (pending to pending)."""
    by_worker = {w.id: w for w in workers}
    snapshot = LiveSnapshot(workers=[w for w in workers if w.slots > 0],
                            free=[(by_worker[wid], i) for wid, n in free.items() for i in range(n)])
    if not snapshot.workers:
        return []
    tasks_of: dict[str, list[TaskNode]] = {}
    for t in [*pending, *later]:
        tasks_of.setdefault(study_of[t.id], []).append(t)
    edges_of: dict[str, list[tuple[str, str, float]]] = defaultdict(list)
    for edge in edges:
        if study_of[edge[0]] == study_of[edge[1]]:
            edges_of[study_of[edge[0]]].append(edge)
    running = Counter(running_study.values())
    running_seconds: dict[str, float] = defaultdict(float)
    for t in running_work:
        running_seconds[running_study.get(t.id, "")] += t.compute_seconds
    for study, tasks in tasks_of.items():
        unstarted = sum(t.compute_seconds for t in tasks)
        state = JobState(Job(study, tasks, edges_of[study]), unstarted + running_seconds[study], unstarted,
                         len(tasks), running[study])
        snapshot.jobs[study] = state
        for t in tasks:
            snapshot.task[t.id], snapshot.job_of[t.id] = t, study
        policy.arrive(state.job, snapshot)
    out: list[tuple[str, str]] = []
    waiting = list(pending)
    while snapshot.free:
        # A study's queued trials differ little: its first few that fit are its candidates, so a
        # pick costs O(studies), not O(queued trials).
        per_study: Counter[str] = Counter()
        candidates = []
        for t in waiting:
            study = snapshot.job_of[t.id]
            if per_study[study] < CANDIDATES_PER_STUDY and any(fits(t, w) for w, _ in snapshot.free):
                per_study[study] += 1
                candidates.append(t.id)
        if not candidates:
            break
        index, slot = policy.pick(snapshot, candidates)
        task = snapshot.task[candidates[index]]
        slot = slot or snapshot.earliest_end(task.id, snapshot.free)[1]
        assert slot is not None
        snapshot.free.remove(slot)
        waiting.remove(task)
        state = snapshot.jobs[snapshot.job_of[task.id]]
        state.running += 1
        state.unstarted_work -= task.compute_seconds
        out.append((task.id, slot[0].id))
    return out
