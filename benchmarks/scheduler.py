"""Scheduler policies side by side: average job completion time (JCT) and makespan for FIFO,
critical path, HEFT and the learned GNN, with jobs arriving over time onto a bounded cluster.

    python benchmarks/scheduler.py [--quick] [--json]

Held-out sets (seeds the GNN never trained or validated on): random layered DAGs, and workflow
DAGs generated from WfCommons recipes (Montage, Epigenomics, Seismology, Cycles). Every policy
runs the same workloads in the same simulator (services/openautoglm/gnn_scheduler/simulate.py); they
differ only in which ready task they start first. Also: the median time to plan one
1,000-node DAG with the GNN (features + GCN + placement) and HEFT's schedule length on the
paper's own example (Topcuoglu et al. 2002: 80).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

import torch

from openautoglm.gnn_scheduler import gnn
from openautoglm.gnn_scheduler.dags import WFCOMMONS_RECIPES, WFCOMMONS_SIZES, random_layered, wfcommons_job
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots
from openautoglm.gnn_scheduler.planner import plan
from openautoglm.gnn_scheduler.simulate import (
    critical_path_priority, fifo_priority, heft_priority, poisson_arrivals, simulate,
)
from openautoglm.gnn_scheduler.train_gnn import CLUSTER

PAPER = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "heft_topcuoglu2002_example.json"
CAPACITY = sum(w.slots * w.speed for w in CLUSTER)
UTILISATION = 0.8


def gnn_priority(job, workers):
    with torch.no_grad():
        values = gnn.scores(gnn.load_default(), job.tasks, job.edges, workers).tolist()
    return {t.id: v for t, v in zip(job.tasks, values)}


POLICIES = {"fifo": fifo_priority, "critical_path": critical_path_priority, "heft": heft_priority, "gnn": gnn_priority}


def with_arrivals(jobs, rng):
    mean_work = statistics.mean(sum(t.compute_seconds for t in j.tasks) for j in jobs)
    return poisson_arrivals(jobs, mean_work / (CAPACITY * UTILISATION), rng)


def random_set(workloads: int, jobs: int) -> list:
    out = []
    for w in range(workloads):
        rng = random.Random(50_000 + w)
        out.append(with_arrivals([random_layered(rng, rng.randint(8, 60), f"r{w}j{i}") for i in range(jobs)], rng))
    return out


def wfcommons_set(workloads: int, jobs: int) -> list:
    out = []
    for w in range(workloads):
        rng = random.Random(60_000 + w)
        recipes = [WFCOMMONS_RECIPES[(w + i) % len(WFCOMMONS_RECIPES)] for i in range(jobs)]
        batch = [wfcommons_job(r, rng.randint(*WFCOMMONS_SIZES[r]), 60_000 + 100 * w + i, f"w{w}j{i}") for i, r in enumerate(recipes)]
        out.append(with_arrivals(batch, rng))
    return out


def plan_ms_1000() -> tuple[float, float]:
    rng = random.Random(7)
    job = random_layered(rng, 1000, "big")
    workers = [WorkerSlots(f"w{k}", 2, 4000, rng.uniform(0.5, 2)) for k in range(8)]
    gnn.load_default()
    times = {}
    for policy in ("gnn", "heft"):
        samples = []
        for _ in range(9):
            start = time.perf_counter()
            plan(job.tasks, job.edges, workers, policy)
            samples.append((time.perf_counter() - start) * 1000)
        times[policy] = statistics.median(samples)
    return times["gnn"], times["heft"]


def heft_paper() -> float:
    data = json.loads(PAPER.read_text())
    workers = [WorkerSlots(f"p{i + 1}", 1, 0) for i in range(data["processors"])]
    tasks = [TaskNode(t, 0.0, cost_by_worker={f"p{i + 1}": c for i, c in enumerate(cs)}) for t, cs in data["computation_cost"].items()]
    return plan(tasks, workers=workers, edges=[(str(a), str(b), float(c)) for a, b, c in data["edges"]], policy="heft").makespan


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer workloads (under a minute)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    workloads, jobs = (2, 8) if args.quick else (8, 16)
    sets = {"random_layered": random_set(workloads, jobs), "wfcommons": wfcommons_set(workloads, jobs)}
    report: dict = {"avg_jct": {}, "makespan": {}, "gnn_vs_heft_jct": {}, "workloads": workloads, "jobs_per_workload": jobs}
    for name, loads in sets.items():
        report["avg_jct"][name], report["makespan"][name] = {}, {}
        for policy, priority in POLICIES.items():
            outcomes = [simulate(load, CLUSTER, priority) for load in loads]
            report["avg_jct"][name][policy] = round(statistics.mean(o.avg_jct for o in outcomes), 3)
            report["makespan"][name][policy] = round(statistics.mean(o.makespan for o in outcomes), 3)
        report["gnn_vs_heft_jct"][name] = round(report["avg_jct"][name]["gnn"] / report["avg_jct"][name]["heft"], 3)
        print(f"{name} ({workloads} workloads x {jobs} jobs):")
        for policy in POLICIES:
            print(f"  {policy:<13} avg JCT {report['avg_jct'][name][policy]:10.2f}   makespan {report['makespan'][name][policy]:10.2f}")
        print(f"  gnn / heft avg JCT: {report['gnn_vs_heft_jct'][name]:.3f}")
    gnn_ms, heft_ms = plan_ms_1000()
    report["plan_ms_1000_nodes"] = round(gnn_ms, 2)
    report["heft_plan_ms_1000_nodes"] = round(heft_ms, 2)
    report["heft_paper_example"] = heft_paper()
    print(f"plan a 1,000-node DAG (median): gnn {gnn_ms:.1f} ms, heft {heft_ms:.1f} ms")
    print(f"HEFT on the paper's example: schedule length {report['heft_paper_example']:.0f} (paper: 80)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
