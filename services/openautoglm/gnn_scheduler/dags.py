"""Task DAGs for training and benchmarking the scheduler: seeded random layered DAGs, and
scientific workflows generated from WfCommons recipes (Montage, Epigenomics, ...)."""
from __future__ import annotations

import random
from dataclasses import dataclass

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
