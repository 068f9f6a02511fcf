"""An online cluster simulator: jobs (DAGs) arrive over time, and whenever a slot is free the
policy picks which ready task runs next. Measures average job completion time (JCT) and makespan.

Every policy is a priority per task, fixed when its job arrives; all use the same placement
(the free slot where the task finishes earliest, memory permitting) so they differ only in
what they run first. The GNN policy can also sample its choices (softmax over the ready
tasks' scores) and return their log-probabilities, for policy-gradient training.
"""
from __future__ import annotations

import heapq
import math
import random
from dataclasses import dataclass
from typing import Any, Callable

from openautoglm.gnn_scheduler.dags import Job
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots, cost, fits, topological_order, upward_ranks

Priority = Callable[[Job, list[WorkerSlots]], dict[str, float]]


def fifo_priority(job: Job, workers: list[WorkerSlots]) -> dict[str, float]:
    order = topological_order(job.tasks, job.edges)
    return {tid: -job.arrival * 1e6 - i for i, tid in enumerate(order)}


def critical_path_priority(job: Job, workers: list[WorkerSlots]) -> dict[str, float]:
    return upward_ranks(job.tasks, job.edges, workers, with_transfers=False)


def heft_priority(job: Job, workers: list[WorkerSlots]) -> dict[str, float]:
    return upward_ranks(job.tasks, job.edges, workers, with_transfers=True)


@dataclass
class Outcome:
    avg_jct: float
    makespan: float
    log_probs: list[Any] | None = None


def simulate(jobs: list[Job], workers: list[WorkerSlots], priority: Priority | None = None,
             sample_scores: Callable[[Job], Any] | None = None) -> Outcome:
    """Run the jobs; with `sample_scores(job) -> tensor` the choices are sampled (GNN training)."""
    import itertools

    slots = [(w, s) for w in workers for s in range(w.slots)]
    free_at = {(w.id, s): 0.0 for w, s in slots}
    by_id: dict[str, TaskNode] = {}
    preds: dict[str, list[tuple[str, float]]] = {}
    succ: dict[str, list[str]] = {}
    waiting: dict[str, int] = {}
    prio: dict[str, float] = {}
    job_of: dict[str, str] = {}
    scores_t: dict[str, Any] = {}
    remaining: dict[str, int] = {}
    finish: dict[str, float] = {}
    where: dict[str, str] = {}
    done_at: dict[str, float] = {}
    seq = itertools.count()
    events = [(job.arrival, next(seq), "arrive", job.id) for job in jobs]
    heapq.heapify(events)
    jobs_by_id = {j.id: j for j in jobs}
    ready: list[str] = []
    log_probs: list[Any] = []
    now = 0.0

    def handle(kind: str, ident: str) -> None:
        if kind == "arrive":
            job = jobs_by_id[ident]
            remaining[job.id] = len(job.tasks)
            if sample_scores is not None:
                values = sample_scores(job)
                for i, t in enumerate(job.tasks):
                    scores_t[t.id] = values[i]
                    prio[t.id] = float(values[i])
            else:
                assert priority is not None, "simulate() needs a priority or sample_scores"
                prio.update(priority(job, workers))
            for t in job.tasks:
                by_id[t.id], preds[t.id], succ[t.id], job_of[t.id] = t, [], [], job.id
            for a, b, c in job.edges:
                preds[b].append((a, c))
                succ[a].append(b)
            for t in job.tasks:
                waiting[t.id] = len(preds[t.id])
                if waiting[t.id] == 0:
                    ready.append(t.id)
            return
        jid = job_of[ident]
        remaining[jid] -= 1
        if remaining[jid] == 0:
            done_at[jid] = now
        for nxt in succ[ident]:
            waiting[nxt] -= 1
            if waiting[nxt] == 0:
                ready.append(nxt)

    def fits_a_free_slot(tid: str, free: list[tuple[WorkerSlots, int]]) -> bool:
        return any(fits(by_id[tid], w) for w, _ in free)

    while True:
        while events and events[0][0] <= now + 1e-12:
            _, _, kind, ident = heapq.heappop(events)
            handle(kind, ident)
        free = [(w, s) for w, s in slots if free_at[(w.id, s)] <= now + 1e-12]
        candidates = [i for i, tid in enumerate(ready) if fits_a_free_slot(tid, free)] if free else []
        if candidates:
            if sample_scores is not None:
                import torch

                logits = torch.stack([scores_t[ready[i]] for i in candidates])
                dist = torch.distributions.Categorical(logits=logits)
                pick = dist.sample()
                log_probs.append(dist.log_prob(pick))
                tid = ready.pop(candidates[int(pick)])
            else:
                tid = ready.pop(max(candidates, key=lambda i: prio[ready[i]]))
            task, choice = by_id[tid], None
            for w, s in free:
                if not fits(task, w):
                    continue
                data = max((finish[p] + (0.0 if where[p] == w.id else c) for p, c in preds[tid]), default=now)
                end = max(now, data) + cost(task, w)
                if choice is None or end < choice[0]:
                    choice = (end, w, s)
            assert choice is not None, f"no free slot holds task {tid!r}"
            end, w, s = choice
            free_at[(w.id, s)] = end
            finish[tid], where[tid] = end, w.id
            heapq.heappush(events, (end, next(seq), "finish", tid))
            continue
        if not events:
            break
        now = events[0][0]
    if len(done_at) != len(jobs):
        raise RuntimeError("simulation ended with unfinished jobs (a task fits no worker)")
    jcts = [done_at[j.id] - j.arrival for j in jobs]
    return Outcome(sum(jcts) / len(jcts), max(done_at.values()) - min(j.arrival for j in jobs),
                   log_probs if sample_scores is not None else None)


def poisson_arrivals(jobs: list[Job], mean_gap: float, rng: random.Random) -> list[Job]:
    t = 0.0
    for job in jobs:
        job.arrival = t
        t += -math.log(1.0 - rng.random()) * mean_gap
    return jobs
