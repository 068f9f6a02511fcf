"""Scheduling policies side by side: average job completion time (JCT) and makespan of the
learned GNN against the baselines the literature uses (Decima, SIGCOMM 2019): FIFO, SJF-CP,
fair sharing, tuned weighted fair, a Tetris packing score, critical path and HEFT.

    python benchmarks/scheduler.py [--quick] [--json] [--workflows DIR]

Held-out sets, each with continuous (Poisson, 80% load) and batched (all at once) arrivals, on
one heterogeneous cluster (workloads.CLUSTER; for `studies` the same trainers plus an evaluator
pool, workloads.STUDY_CLUSTER):
- `random_layered`: random layered DAGs;
- `wfcommons`: workflow DAGs generated from WfCommons recipes (Montage, Epigenomics, ...);
- `real_workflows`: real execution traces (WfFormat 1.5), every JSON file of `--workflows DIR`
  (default: the nine instances in benchmarks/data/wfinstances, SOURCES.md there). The GNN trains
  on generated DAGs only and the heuristics are tuned on generated DAGs only, so real traces are
  never trained, validated or tuned on;
- `studies`: tuning studies in the shape the live mesh gives the scheduler (dags.study_job):
  trials as chains of stages (training split at the pruner's rungs, scoring on the evaluator
  pool), some pruned early, then the export of the best; mostly short studies, some long.
Every policy's parameters are swept on training workloads (generated, training seeds) per
arrival mode and per family (real traces: the best over both generated DAG families), and the
best is reported and used: the placement rule (simulate.PLACEMENTS: free
slots only, HEFT's earliest finish over all slots, or waiting for a faster slot without
committing), weighted fair's alpha, and Tetris' weight. Every policy runs the same workloads in
the same simulator (services/openautoglm/gnn_scheduler/simulate.py).

Also: the trial cost model's prediction error on real trials trained here (median absolute
percentage error, `cost_prediction_mape`), the learning report (validation JCT relative to SJF-CP after imitation and after PPO, per
training seed, and the shipped weights' own record), the median time to plan one 1,000-node
DAG with the GNN (features + GCN + placement), and HEFT's schedule length on the paper's own
example (Topcuoglu et al. 2002: 80).
"""
from __future__ import annotations

import argparse
import json
import random
import statistics
import tempfile
import time
from pathlib import Path

import torch

from openautoglm.gnn_scheduler import gnn, heuristics, train_gnn
from openautoglm.gnn_scheduler.dags import random_layered
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots
from openautoglm.gnn_scheduler.planner import plan
from openautoglm.gnn_scheduler.simulate import PLACEMENTS, simulate
from openautoglm.gnn_scheduler.workflows import load_directory
from openautoglm.gnn_scheduler.workloads import (
    ARRIVALS, TEST_SEEDS, TRAIN_SEEDS, cluster_for, random_workload, study_workload, trace_workload, wfcommons_workload,
)

ROOT = Path(__file__).resolve().parent.parent
PAPER = ROOT / "tests" / "fixtures" / "heft_topcuoglu2002_example.json"
REAL_WORKFLOWS = ROOT / "benchmarks" / "data" / "wfinstances"
POLICIES = (*heuristics.HEURISTICS, "gnn")


def make_policy(name: str, params: dict):
    if name == "gnn":
        return gnn.LearnedPolicy(gnn.load_default())
    return heuristics.make(name, alpha=params.get("alpha", 0.0), tetris_weight=params.get("tetris_weight", 1.0))


def settings(name: str) -> list[dict]:
    """The parameters swept for a policy: the placement rule for all, alpha and the weight too."""
    grid = [{"placement": p} for p in PLACEMENTS]
    if name == "weighted_fair":
        grid = [{**g, "alpha": a} for g in grid for a in heuristics.ALPHAS]
    if name == "tetris":  # Tetris picks its slot itself, among the free ones
        grid = [{"placement": "free", "tetris_weight": w} for w in heuristics.TETRIS_WEIGHTS]
    if name == "gnn":  # the learned policy picks the slot, or waits for a faster one, itself
        grid = [{"placement": "free"}]
    return grid


def run(name: str, params: dict, load: list):
    return simulate(load, cluster_for(load), make_policy(name, params), params["placement"])


# What each held-out family is tuned on: its own generator's training seeds; real traces, which
# are never tuned on, take the parameters best over both generated DAG families.
TUNING_FAMILIES = {"random_layered": ("random_layered",), "wfcommons": ("wfcommons",), "studies": ("studies",),
                   "real_workflows": ("random_layered", "wfcommons")}


def tune(arrivals: str, workloads: int, jobs: int) -> dict[str, dict[str, dict]]:
    """Per held-out family, each policy's parameters with the lowest JCT (relative to FIFO's on
    the same workload) on training workloads of that family (training seeds only), so every
    baseline gets its best setting for the kind of work it is scored on."""
    generators = {"random_layered": random_workload, "wfcommons": wfcommons_workload, "studies": study_workload}
    loads = {family: [make(TRAIN_SEEDS + w, jobs, arrivals) for w in range(workloads)] for family, make in generators.items()}
    relative: dict[tuple[str, str], dict[str, list[float]]] = {}  # (policy, params) -> family -> JCT / FIFO's
    fifo = {family: [run("fifo", {"placement": "free"}, load).avg_jct for load in batch] for family, batch in loads.items()}
    for name in POLICIES:
        for params in settings(name):
            relative[(name, json.dumps(params, sort_keys=True))] = {
                family: [run(name, params, load).avg_jct / base for load, base in zip(batch, fifo[family])]
                for family, batch in loads.items()}
    tuned: dict[str, dict[str, dict]] = {}
    for family, sources in TUNING_FAMILIES.items():
        tuned[family] = {}
        for name in POLICIES:
            best = min(settings(name), key=lambda params: statistics.mean(
                r for source in sources for r in relative[(name, json.dumps(params, sort_keys=True))][source]))
            tuned[family][name] = best
    return tuned


def family_of(set_name: str) -> str:
    return set_name.removesuffix("_batched")


def learning_report(seeds: list[int], quick: bool, episodes: int) -> dict:
    """Validation JCT (relative to SJF-CP) after imitation and after PPO, per training seed, and
    what the shipped weights recorded when they were trained."""
    budget = {"imitation_jobs": 32, "imitation_epochs": 10, "validate_every": 5} if quick else {}
    runs = {}
    for seed in seeds:
        started = time.monotonic()
        result = train_gnn.train(episodes, seed, log=lambda *_: None, **budget)
        runs[str(seed)] = {"imitation": round(result["imitation_validation_jct"], 4),
                           "ppo": round(result["final_validation_jct"], 4),
                           "seconds": round(time.monotonic() - started, 1)}
    shipped = torch.load(gnn.WEIGHTS, map_location="cpu", weights_only=False)["meta"]
    return {"episodes": episodes, "validation_jct_vs_sjf_cp": runs, "shipped_weights": shipped}


def cost_prediction(trials: int, seed: int = 0) -> dict:
    """Train `trials` real trials of varied shapes (the trainer's core, the built-in tiny model,
    both built-in datasets) and replay them in order through the gateway's cost model, each
    predicted before it is observed: the median absolute percentage error once 5 trials have
    finished (and of the first 5, predicted from the prior alone), and how often the actual time
    fell within the predicted mean +/- one standard deviation."""
    from openautoglm.gateway.cost_model import CostModel, trial_shape
    from openautoglm.trainer.core import TrialJob, run_trial, warm_up
    from openautoglm.v1 import common_pb2

    rng = random.Random(seed)
    model, errors, within = CostModel(), [], []
    with tempfile.TemporaryDirectory() as scratch:
        warm_up(Path(scratch))  # as a trainer does when it starts: one-time costs are not a trial's
        for i in range(trials):
            dataset, task = rng.choice([("sentiment-demo", "classification"), ("piglatin-demo", "generation")])
            epochs, batch, examples = rng.choice([1, 2, 3]), rng.choice([8, 16]), rng.choice([60, 120, 200])
            max_length, tuning, precision = rng.choice([48, 96]), rng.choice(["full", "lora"]), rng.choice(["fp32", "bf16"])
            spec = common_pb2.StudySpec(
                task=common_pb2.TASK_TYPE_CLASSIFICATION if task == "classification" else common_pb2.TASK_TYPE_GENERATION,
                dataset=common_pb2.DatasetSpec(builtin=dataset, max_examples=examples),
                model=common_pb2.ModelSpec(builtin="tiny", tuning=tuning),
                training=common_pb2.TrainingOptions(precision=precision, max_length=max_length))
            candidate = common_pb2.Candidate(hyperparameters={"epochs": common_pb2.ParamValue(integer=epochs),
                                                              "batch_size": common_pb2.ParamValue(integer=batch)})
            shape = trial_shape(spec, candidate)
            predicted = model.predict(shape)
            result = run_trial(TrialJob(study_id="cost", trial_id=f"t{i}", task=task, prompt="{input}",
                                        hyperparameters={"epochs": epochs, "batch_size": batch}, dataset_builtin=dataset,
                                        max_examples=examples, max_length=max_length, tuning=tuning, precision=precision,
                                        seed=i), Path(scratch))
            errors.append(abs(predicted.seconds - result.seconds) / result.seconds)
            within.append(abs(predicted.seconds - result.seconds) <= predicted.sd)
            model.observe(shape, result.seconds)
    return {"trials": trials, "mape_after_5": round(statistics.median(errors[5:]), 4),
            "mape_first_5": round(statistics.median(errors[:5]), 4),
            "within_one_sd_after_5": round(sum(within[5:]) / max(1, len(within[5:])), 3)}


def held_out_sets(workloads: int, jobs: int, workflows_dir: Path) -> dict[str, list]:
    traces = load_directory(workflows_dir)
    sets = {}
    for arrivals in ARRIVALS:
        suffix = "" if arrivals == "poisson" else "_batched"
        sets[f"random_layered{suffix}"] = [random_workload(TEST_SEEDS + w, jobs, arrivals) for w in range(workloads)]
        sets[f"wfcommons{suffix}"] = [wfcommons_workload(TEST_SEEDS + w, jobs, arrivals) for w in range(workloads)]
        sets[f"real_workflows{suffix}"] = [trace_workload(traces, TEST_SEEDS + w, jobs, arrivals) for w in range(workloads)]
        sets[f"studies{suffix}"] = [study_workload(TEST_SEEDS + w, jobs, arrivals) for w in range(workloads)]
    return sets


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
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer and smaller workloads (about a minute)")
    parser.add_argument("--json", action="store_true", help="print one JSON summary last")
    parser.add_argument("--learning-episodes", type=int, default=None,
                        help="PPO episodes per seed for the learning report (default: 10 with --quick, else 100)")
    parser.add_argument("--workflows", type=Path, default=REAL_WORKFLOWS, metavar="DIR",
                        help="directory of WfFormat 1.5 execution traces (every *.json file) for the real_workflows set")
    args = parser.parse_args()
    workloads, jobs = (2, 8) if args.quick else (8, 16)
    tuning_workloads = 1 if args.quick else 6
    report: dict = {"avg_jct": {}, "makespan": {}, "best_heuristic": {}, "gnn_vs_best_heuristic": {}, "tuned": {},
                    "workloads": workloads, "jobs_per_workload": jobs, "workflows_dir": str(args.workflows)}
    for arrivals in ARRIVALS:
        report["tuned"][arrivals] = tune(arrivals, tuning_workloads, jobs)
        for family, chosen in report["tuned"][arrivals].items():
            print(f"tuned on {family} training workloads ({arrivals}): " + "; ".join(
                f"{name} " + ", ".join(f"{k} {v}" for k, v in params.items()) for name, params in chosen.items()))
    for name, loads in held_out_sets(workloads, jobs, args.workflows).items():
        tuned = report["tuned"]["batched" if name.endswith("_batched") else "poisson"][family_of(name)]
        report["avg_jct"][name], report["makespan"][name] = {}, {}
        for policy in POLICIES:
            outcomes = [run(policy, tuned[policy], load) for load in loads]
            report["avg_jct"][name][policy] = round(statistics.mean(o.avg_jct for o in outcomes), 3)
            report["makespan"][name][policy] = round(statistics.mean(o.makespan for o in outcomes), 3)
        jct = report["avg_jct"][name]
        best = min(heuristics.HEURISTICS, key=lambda p: jct[p])
        report["best_heuristic"][name] = best
        report["gnn_vs_best_heuristic"][name] = round(jct["gnn"] / jct[best], 3)
        print(f"{name} ({workloads} workloads x {jobs} jobs):")
        for policy in POLICIES:
            print(f"  {policy:<14} avg JCT {jct[policy]:10.2f}   makespan {report['makespan'][name][policy]:10.2f}")
        print(f"  gnn / best heuristic ({best}) avg JCT: {report['gnn_vs_best_heuristic'][name]:.3f} (goal <= 0.90)")
    seeds = [0, 1] if args.quick else [0, 1, 2]
    episodes = args.learning_episodes or (10 if args.quick else 100)
    report["learning"] = learning_report(seeds, args.quick, episodes)
    for seed, runs in report["learning"]["validation_jct_vs_sjf_cp"].items():
        print(f"learning, seed {seed} ({episodes} PPO episodes): validation JCT / SJF-CP after imitation "
              f"{runs['imitation']:.4f}, after PPO {runs['ppo']:.4f}")
    shipped = report["learning"]["shipped_weights"]
    print(f"shipped weights (seed {shipped.get('seed')}, {shipped.get('episodes')} episodes): after imitation "
          f"{shipped.get('imitation_validation_jct_vs_sjf_cp')}, after PPO {shipped.get('final_validation_jct_vs_sjf_cp')}")
    costs = cost_prediction(12 if args.quick else 40)
    report["cost_prediction"] = costs
    report["cost_prediction_mape"] = costs["mape_after_5"]
    print(f"trial cost prediction over {costs['trials']} real trials: median absolute percentage error "
          f"{100 * costs['mape_after_5']:.1f}% once 5 had finished ({100 * costs['mape_first_5']:.1f}% for the first 5, "
          f"from the prior alone); {100 * costs['within_one_sd_after_5']:.0f}% within one predicted SD")
    gnn_ms, heft_ms = plan_ms_1000()
    report["plan_ms_1000_nodes"] = round(gnn_ms, 2)
    report["heft_plan_ms_1000_nodes"] = round(heft_ms, 2)
    report["heft_paper_example"] = heft_paper()
    print(f"plan a 1,000-node DAG (median): gnn {gnn_ms:.1f} ms (goal <= 50), heft {heft_ms:.1f} ms")
    print(f"HEFT on the paper's example: schedule length {report['heft_paper_example']:.0f} (paper: 80)")
    if args.json:
        print(json.dumps(report))


if __name__ == "__main__":
    main()
