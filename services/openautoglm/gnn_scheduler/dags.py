"""Task DAGs for training and benchmarking the scheduler: seeded random layered DAGs, scientific
workflows generated from WfCommons recipes (Montage, Epigenomics, ...), and tuning studies in the
shape the live mesh gives the scheduler (`study_job`: trials as chains of stages on the trainer
and evaluator pools, trial_stages)."""
from __future__ import annotations

import random
from dataclasses import dataclass

from openautoglm.common.subjects import POOL_EVALUATOR
from openautoglm.gnn_scheduler.graph import TaskNode

WFCOMMONS_RECIPES = ("montage", "epigenomics", "seismology", "cycles")
# Task counts each recipe can generate (a recipe cannot shrink below its base graph).
WFCOMMONS_SIZES = {"montage": (60, 120), "epigenomics": (60, 120), "seismology": (110, 160), "cycles": (80, 140)}


@dataclass
class Job:
    id: str
    tasks: list[TaskNode]
    edges: list[tuple[str, str, float]]
    arrival: float = 0.0


def random_layered(rng: random.Random, n_tasks: int, job_id: str = "job") -> Job:
    """Layers of random width; each task depends on 1-3 tasks of the layers above."""
    layers: list[list[str]] = []
    tasks, edges = [], []
    made = 0
    while made < n_tasks:
        width = min(n_tasks - made, rng.randint(1, max(2, n_tasks // 4)))
        layer = [f"{job_id}/t{made + i}" for i in range(width)]
        for tid in layer:
            tasks.append(TaskNode(tid, rng.lognormvariate(1.0, 0.8), rng.uniform(100, 2000)))
            if layers:
                above = [t for lay in layers[-2:] for t in lay]
                for src in rng.sample(above, min(len(above), rng.randint(1, 3))):
                    edges.append((src, tid, rng.uniform(0.0, 1.0)))
        layers.append(layer)
        made += width
    return Job(job_id, tasks, edges)


def wfcommons_job(recipe: str, n_tasks: int, seed: int, job_id: str = "wf") -> Job:
    """A workflow DAG from a WfCommons recipe (runtimes in seconds, memory in MiB)."""
    import numpy as np
    from wfcommons import WorkflowGenerator
    from wfcommons.wfchef import recipes

    cls = {"montage": recipes.MontageRecipe, "epigenomics": recipes.EpigenomicsRecipe,
           "seismology": recipes.SeismologyRecipe, "cycles": recipes.CyclesRecipe}[recipe]
    random.seed(seed)
    np.random.seed(seed % 2**32)
    workflow = WorkflowGenerator(cls.from_num_tasks(n_tasks)).build_workflow()
    tasks, index = [], {}
    for i, name in enumerate(workflow.nodes):
        task = workflow.nodes[name]["task"]
        index[name] = f"{job_id}/{i}"
        memory = (task.memory or 0) / 2**20 if task.memory else 256.0
        tasks.append(TaskNode(index[name], max(float(task.runtime or 0.0), 0.01), min(memory, 4000.0), task.category or ""))
    edges = [(index[a], index[b], 0.05) for a, b in workflow.edges]
    return Job(job_id, tasks, edges)


def trial_stages(trial_id: str, train_seconds: float, rungs: int, score_seconds: float, memory_mb: float,
                 prepare_share: float = 0.0) -> tuple[list[TaskNode], list[tuple[str, str, float]]]:
    """One trial as the chain of its stages: training split at the pruner's rungs (the first rung
    also prepares and tokenises the data: the trial's own id, what the gateway dispatches), then
    scoring on the evaluators' pool. A negative `score_seconds` is a trial the pruner stops after
    its last rung here: it is never scored. Edges carry no transfer time (a rung resumes from the
    checkpoint on the shared volume)."""
    per_rung = train_seconds / max(1, rungs)
    tasks = [TaskNode(trial_id, per_rung + prepare_share * train_seconds, memory_mb, "train")]
    tasks += [TaskNode(f"{trial_id}#r{r + 1}", per_rung, memory_mb, "train") for r in range(1, max(1, rungs))]
    if score_seconds >= 0:
        tasks.append(TaskNode(f"{trial_id}#score", score_seconds, 0.0, "evaluate", pool=POOL_EVALUATOR))
    edges = [(a.id, b.id, 0.0) for a, b in zip(tasks, tasks[1:])]
    return tasks, edges


def study_job(rng: random.Random, job_id: str = "study") -> Job:
    """A tuning study as the mesh runs it: trials (chains of trial_stages) that share the study's
    model (so a similar cost per epoch and the same memory), some stopped by the pruner at an
    early rung, then the export of the best on a trainer slot once every trial has been scored.
    Sizes are heavy-tailed, as real tenants' are: mostly short studies, some long ones."""
    long = rng.random() < 0.3
    trials = rng.randint(6, 12) if long else rng.randint(2, 4)
    epochs = rng.randint(4, 10) if long else rng.randint(1, 3)
    epoch_seconds = rng.lognormvariate(0.5, 0.7)
    memory = rng.uniform(500, 3500)
    tasks: list[TaskNode] = []
    edges: list[tuple[str, str, float]] = []
    ends = []
    for i in range(trials):
        rungs = epochs if (i < 2 or rng.random() < 0.6) else rng.randint(1, epochs)  # pruned at a rung
        scored = rungs == epochs
        score = epoch_seconds * rng.uniform(0.3, 1.5) if scored else -1.0
        stages, chain = trial_stages(f"{job_id}/t{i}", epoch_seconds * rungs * rng.lognormvariate(0.0, 0.3), rungs,
                                     score, memory, prepare_share=0.1)
        tasks += stages
        edges += chain
        ends.append(stages[-1].id)
    export = TaskNode(f"{job_id}/export", epoch_seconds * rng.uniform(0.5, 2.0), memory, "export")
    tasks.append(export)
    edges += [(end, export.id, 0.0) for end in ends]
    return Job(job_id, tasks, edges)
