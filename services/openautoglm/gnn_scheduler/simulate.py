"""An online cluster simulator: jobs (DAGs) arrive over time, and whenever a slot is free and a
ready task fits it, the policy picks which task runs next (and may pick the slot). Measures
average job completion time (JCT) and makespan.

A policy (heuristics.py, or the learned one in gnn.py) sees the live state through the
`Simulation` it is handed: the clock, the free slots, every arrived job's total and unstarted
work and running tasks. Unless it names a slot, the task is placed by the simulation's placement
rule (PLACEMENTS; inputs made on another worker add their transfer time), memory permitting, so
policies that only order tasks differ only in what they run first. Tasks are not preempted.
"""
from __future__ import annotations

import heapq
import itertools
import math
import random
from dataclasses import dataclass, field
from typing import Callable, Protocol

from openautoglm.gnn_scheduler.dags import Job
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots, cost, fits, topological_order, upward_ranks

Slot = tuple[WorkerSlots, int]
# Where a task goes when the policy names no slot:
# - free: the free slot where it finishes earliest (work-conserving: a free slot never idles
#   while a ready task fits it);
# - eft: the slot, free or busy, where it finishes earliest (HEFT's rule; it may queue behind a
#   running task on a faster worker);
# - lazy: like free, but a task whose earliest finish is on a busy slot is not offered for the
#   free ones (it waits for the faster worker without committing to it).
PLACEMENTS = ("free", "eft", "lazy")
# What `pick` returns to leave the free slots idle until the next arrival or finish (allowed
# only while `Simulation.can_wait`).
WAIT = -1
# A static priority: a key per task, fixed when its job arrives (larger runs first).
Priority = Callable[[Job, list[WorkerSlots]], dict[str, float]]


@dataclass
class JobState:
    job: Job
    total_work: float  # compute seconds at speed 1, all tasks
    unstarted_work: float  # of the tasks not started yet
    remaining_tasks: int
    running: int = 0
    finished_at: float | None = None


class Policy(Protocol):
    def arrive(self, job: Job, sim: "Simulation") -> None:
        """A job arrived (precompute what the policy needs of it)."""

    def pick(self, sim: "Simulation", candidates: list[str]) -> tuple[int, Slot | None]:
        """Which candidate (ready, fits a free slot) starts now, and on which slot (None: the
        placement rule's); or (WAIT, None) to start nothing until the next event."""


@dataclass
class Outcome:
    avg_jct: float
    makespan: float
    jct: dict[str, float] = field(default_factory=dict)
    # (time, jobs in the system from then on) at every arrival and completion, for returns.
    occupancy: list[tuple[float, int]] = field(default_factory=list)
    # Each task's worker and its (start, finish) times.
    where: dict[str, str] = field(default_factory=dict)
    times: dict[str, tuple[float, float]] = field(default_factory=dict)


class Simulation:
    """The state a policy reads; `run()` plays the jobs out."""

    def __init__(self, jobs: list[Job], workers: list[WorkerSlots], policy: Policy, placement: str = "free"):
        if placement not in PLACEMENTS:
            raise ValueError(f"placement {placement!r}: expected one of {', '.join(PLACEMENTS)}")
        self.placement = placement
        self.jobs_in = jobs
        self.workers = [w for w in workers if w.slots > 0]
        self.policy = policy
        self.now = 0.0
        self.slots: list[Slot] = [(w, s) for w in self.workers for s in range(w.slots)]
        self.total_slots = len(self.slots)
        self.max_speed = max(w.speed for w in self.workers)
        self.free: list[Slot] = []
        self.task: dict[str, TaskNode] = {}
        self.job_of: dict[str, str] = {}
        self.jobs: dict[str, JobState] = {}
        self.active: dict[str, JobState] = {}  # arrived and unfinished
        self.preds: dict[str, list[tuple[str, float]]] = {}
        self.succ: dict[str, list[str]] = {}
        self.free_at: dict[tuple[str, int], float] = {}
        self.data_ready: dict[str, dict[str, float]] = {}
        self.can_wait = False

    def earliest_end(self, tid: str, options: list[Slot]) -> tuple[float, Slot | None]:
        """Where among `options` a ready task would finish first, and when (inf, None: nowhere)."""
        task, data = self.task[tid], self.data_ready[tid]
        best: tuple[float, Slot | None] = (float("inf"), None)
        for w, s in options:
            if fits(task, w):
                end = max(self.now, self.free_at[(w.id, s)], data[w.id]) + cost(task, w)
                if end < best[0]:
                    best = (end, (w, s))
        return best

    def run(self) -> Outcome:
        free_at = self.free_at = {(w.id, s): 0.0 for w, s in self.slots}
        waiting: dict[str, int] = {}
        finish: dict[str, float] = {}
        where: dict[str, str] = {}
        # When a ready task's inputs are on each worker (fixed once it is ready).
        data_ready = self.data_ready
        data_ready.clear()
        seq = itertools.count()
        events = [(job.arrival, next(seq), "arrive", job.id) for job in self.jobs_in]
        heapq.heapify(events)
        jobs_by_id = {j.id: j for j in self.jobs_in}
        ready: list[str] = []
        occupancy: list[tuple[float, int]] = []
        times: dict[str, tuple[float, float]] = {}

        def make_ready(tid: str) -> None:
            ready.append(tid)
            data_ready[tid] = {w.id: max((finish[p] + (0.0 if where[p] == w.id else c) for p, c in self.preds[tid]),
                                         default=self.now) for w in self.workers}

        def handle(kind: str, ident: str) -> None:
            if kind == "arrive":
                job = jobs_by_id[ident]
                work = sum(t.compute_seconds for t in job.tasks)
                state = JobState(job, work, work, len(job.tasks))
                self.jobs[job.id] = self.active[job.id] = state
                occupancy.append((self.now, len(self.active)))
                for t in job.tasks:
                    self.task[t.id], self.preds[t.id], self.succ[t.id], self.job_of[t.id] = t, [], [], job.id
                for a, b, c in job.edges:
                    self.preds[b].append((a, c))
                    self.succ[a].append(b)
                self.policy.arrive(job, self)
                for t in job.tasks:
                    waiting[t.id] = len(self.preds[t.id])
                    if waiting[t.id] == 0:
                        make_ready(t.id)
                return
            state = self.jobs[self.job_of[ident]]
            state.running -= 1
            state.remaining_tasks -= 1
            if state.remaining_tasks == 0:
                state.finished_at = self.now
                del self.active[state.job.id]
                occupancy.append((self.now, len(self.active)))
            for nxt in self.succ[ident]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    make_ready(nxt)

        earliest_end = self.earliest_end
        while True:
            while events and events[0][0] <= self.now + 1e-12:
                _, _, kind, ident = heapq.heappop(events)
                handle(kind, ident)
            self.free = [(w, s) for w, s in self.slots if free_at[(w.id, s)] <= self.now + 1e-12]
            candidates = [tid for tid in ready if any(fits(self.task[tid], w) for w, _ in self.free)] if self.free else []
            if candidates and self.placement == "lazy":
                # Only tasks that finish soonest on a slot free now; the rest wait for a faster one.
                candidates = [tid for tid in candidates
                              if earliest_end(tid, self.free)[0] <= earliest_end(tid, self.slots)[0] + 1e-9]
            self.can_wait = bool(events)  # a running task or an arrival will call again
            index, chosen = self.policy.pick(self, candidates) if candidates else (WAIT, None)
            if index == WAIT and candidates and not self.can_wait:
                raise RuntimeError("the policy waited with nothing running and no job to come")
            if index != WAIT:
                tid = candidates[index]
                ready.remove(tid)
                options = [chosen] if chosen is not None else (self.slots if self.placement == "eft" else self.free)
                end, slot = earliest_end(tid, options)
                assert slot is not None, f"no slot holds task {tid!r}"
                w, s = slot
                free_at[(w.id, s)] = end
                finish[tid], where[tid] = end, w.id
                times[tid] = (end - cost(self.task[tid], w), end)
                state = self.jobs[self.job_of[tid]]
                state.running += 1
                state.unstarted_work -= self.task[tid].compute_seconds
                heapq.heappush(events, (end, next(seq), "finish", tid))
                continue
            if not events:
                break
            self.now = events[0][0]
        if any(s.finished_at is None for s in self.jobs.values()) or len(self.jobs) != len(self.jobs_in):
            raise RuntimeError("simulation ended with unfinished jobs (a task fits no worker)")
        jct = {jid: s.finished_at - s.job.arrival for jid, s in self.jobs.items() if s.finished_at is not None}
        ends = [s.finished_at for s in self.jobs.values() if s.finished_at is not None]
        return Outcome(sum(jct.values()) / len(jct), max(ends) - min(j.arrival for j in self.jobs_in),
                       jct=jct, occupancy=occupancy, where=where, times=times)


class StaticPriority:
    """A policy from a per-task priority fixed at arrival: the highest ready candidate runs."""

    def __init__(self, priority: Priority):
        self.priority = priority
        self.key: dict[str, float] = {}

    def arrive(self, job: Job, sim: Simulation) -> None:
        self.key.update(self.priority(job, sim.workers))

    def pick(self, sim: Simulation, candidates: list[str]) -> tuple[int, Slot | None]:
        key = self.key
        return max(range(len(candidates)), key=lambda i: key[candidates[i]]), None


def simulate(jobs: list[Job], workers: list[WorkerSlots], policy: Policy | Priority, placement: str = "free") -> Outcome:
    """Play the jobs out under a policy (or a static priority function)."""
    chosen: Policy = StaticPriority(policy) if callable(policy) and not hasattr(policy, "pick") else policy  # type: ignore[assignment]
    return Simulation(jobs, workers, chosen, placement).run()


def fifo_priority(job: Job, workers: list[WorkerSlots]) -> dict[str, float]:
    order = topological_order(job.tasks, job.edges)
    return {tid: -job.arrival * 1e6 - i for i, tid in enumerate(order)}


def critical_path_priority(job: Job, workers: list[WorkerSlots]) -> dict[str, float]:
    return upward_ranks(job.tasks, job.edges, workers, with_transfers=False)


def heft_priority(job: Job, workers: list[WorkerSlots]) -> dict[str, float]:
    return upward_ranks(job.tasks, job.edges, workers, with_transfers=True)


def poisson_arrivals(jobs: list[Job], mean_gap: float, rng: random.Random) -> list[Job]:
    """Continuous arrivals: exponential gaps with this mean (the first job at 0)."""
    t = 0.0
    for job in jobs:
        job.arrival = t
        t += -math.log(1.0 - rng.random()) * mean_gap
    return jobs


def batched_arrivals(jobs: list[Job]) -> list[Job]:
    """Every job at time 0 (Decima's batched setting)."""
    for job in jobs:
        job.arrival = 0.0
    return jobs


def returns_at(outcome: Outcome, times: list[float]) -> list[float]:
    """-(job-seconds spent in the system from each time on): the return of a decision taken then,
    whose sum over the episode is -(sum of JCTs) (Decima's reward)."""
    points = outcome.occupancy  # chronological: appended as events happen
    # Integral of jobs-in-system from the start to each breakpoint.
    cumulative = [0.0]
    for (t0, n), (t1, _) in zip(points, points[1:]):
        cumulative.append(cumulative[-1] + n * (t1 - t0))
    total = cumulative[-1]
    out = []
    for t in times:
        i = max(0, min(len(points) - 1, _bisect(points, t)))
        t0, n = points[i]
        before = cumulative[i] + n * max(0.0, t - t0) if i < len(points) - 1 else total
        out.append(-(total - min(before, total)))
    return out


def _bisect(points: list[tuple[float, int]], t: float) -> int:
    """Index of the last breakpoint at or before t."""
    lo, hi = 0, len(points)
    while lo < hi:
        mid = (lo + hi) // 2
        if points[mid][0] <= t:
            lo = mid + 1
        else:
            hi = mid
    return lo - 1
