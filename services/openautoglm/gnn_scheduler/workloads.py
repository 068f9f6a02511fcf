"""Workloads for training, tuning and benchmarking scheduling policies: a set of jobs (DAGs) with
arrival times, on one heterogeneous cluster.

Families: `random_layered` (random layered DAGs), `wfcommons` (generated from WfCommons recipes),
`real_workflows` (real execution traces, WfFormat 1.5, drawn from a directory) and `studies`
(tuning studies in the live mesh's shape, dags.study_job, on STUDY_CLUSTER: the trainers plus an
evaluator pool). Arrivals are
`poisson` (continuous, at UTILISATION of the cluster's capacity) or `batched` (all at 0, as
Decima reports both).

Seeds are split so nothing is tuned or trained on what it is scored on: TRAIN seeds for the GNN's
training and the heuristics' parameter sweeps, VALIDATION seeds to choose between training
stages, TEST seeds for the benchmark's held-out sets. Real traces are never trained or tuned on.
"""
from __future__ import annotations

import random
import statistics

from openautoglm.gnn_scheduler.dags import WFCOMMONS_RECIPES, WFCOMMONS_SIZES, Job, random_layered, study_job, wfcommons_job
from openautoglm.common.subjects import POOL_EVALUATOR, POOL_TRAINER
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots
from openautoglm.gnn_scheduler.simulate import batched_arrivals, poisson_arrivals

CLUSTER = [WorkerSlots("a", 2, 4000, 1.0), WorkerSlots("b", 2, 4000, 2.0), WorkerSlots("c", 2, 1500, 0.5)]
CAPACITY = sum(w.slots * w.speed for w in CLUSTER)
# The trainers and two evaluator workers (scoring needs no trainer memory).
STUDY_CLUSTER = [*CLUSTER, WorkerSlots("e", 2, 0, 1.0, POOL_EVALUATOR)]
UTILISATION = 0.8
ARRIVALS = ("poisson", "batched")
TRAIN_SEEDS = 20_000
VALIDATION_SEEDS = 10_000
TEST_SEEDS = 50_000


def with_arrivals(jobs: list[Job], arrivals: str, rng: random.Random) -> list[Job]:
    if arrivals == "batched":
        return batched_arrivals(jobs)
    # The load is the trainers' (an evaluator pool is sized not to be the bottleneck).
    mean_work = statistics.mean(sum(t.compute_seconds for t in j.tasks if t.pool == POOL_TRAINER) for j in jobs)
    return poisson_arrivals(jobs, mean_work / (CAPACITY * UTILISATION), rng)


def random_workload(seed: int, jobs: int, arrivals: str = "poisson", sizes: tuple[int, int] = (8, 60)) -> list[Job]:
    rng = random.Random(seed)
    return with_arrivals([random_layered(rng, rng.randint(*sizes), f"r{seed}j{i}") for i in range(jobs)], arrivals, rng)


def wfcommons_workload(seed: int, jobs: int, arrivals: str = "poisson") -> list[Job]:
    rng = random.Random(seed)
    recipes = [WFCOMMONS_RECIPES[(seed + i) % len(WFCOMMONS_RECIPES)] for i in range(jobs)]
    batch = [wfcommons_job(r, rng.randint(*WFCOMMONS_SIZES[r]), seed * 100 + i, f"w{seed}j{i}") for i, r in enumerate(recipes)]
    return with_arrivals(batch, arrivals, rng)


def study_workload(seed: int, jobs: int, arrivals: str = "poisson") -> list[Job]:
    rng = random.Random(seed)
    return with_arrivals([study_job(rng, f"s{seed}j{i}") for i in range(jobs)], arrivals, rng)


def cluster_for(jobs: list[Job]) -> list[WorkerSlots]:
    """The cluster a workload runs on: STUDY_CLUSTER when any task needs the evaluator pool."""
    return STUDY_CLUSTER if any(t.pool == POOL_EVALUATOR for j in jobs for t in j.tasks) else CLUSTER


def renamed(job: Job, job_id: str) -> Job:
    """A copy of a job under a new id (one trace can arrive several times in a workload)."""
    ids = {t.id: f"{job_id}/{i}" for i, t in enumerate(job.tasks)}
    return Job(job_id, [TaskNode(ids[t.id], t.compute_seconds, t.memory_mb, t.kind, t.cost_by_worker, t.pool) for t in job.tasks],
               [(ids[a], ids[b], c) for a, b, c in job.edges])


def trace_workload(traces: list[Job], seed: int, jobs: int, arrivals: str = "poisson") -> list[Job]:
    """`jobs` traces drawn (with replacement) from the loaded ones."""
    rng = random.Random(seed)
    return with_arrivals([renamed(rng.choice(traces), f"x{seed}j{i}") for i in range(jobs)], arrivals, rng)
