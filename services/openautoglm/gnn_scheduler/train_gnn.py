"""Train the GNN scheduling policy offline and write weights/gnn_policy.pt (reproducible).

    python -m openautoglm.gnn_scheduler.train_gnn [--episodes N]

1. Imitation: regress the scores of a strong teacher, the HEFT upward rank made job-aware
   (minus the job's total work, so small jobs go first: shortest-remaining-work thinking),
   on generated random layered DAGs.
2. Policy gradient (REINFORCE, as Decima): sample scheduling decisions from a softmax over the
   ready tasks' scores in the online simulator, reward = -average job completion time. Each
   episode rolls the same arrival sequence out several times and uses their mean reward as the
   baseline (Decima's input-dependent baseline: the job sequence, not the policy, explains most
   of the variance in JCT). The fine-tuned weights are kept only if they beat the imitation
   weights on a validation workload (separate from the benchmark's held-out sets).
"""
from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch

from openautoglm.gnn_scheduler import gnn
from openautoglm.gnn_scheduler.dags import Job, random_layered
from openautoglm.gnn_scheduler.graph import WorkerSlots, upward_ranks
from openautoglm.gnn_scheduler.simulate import poisson_arrivals, simulate

CLUSTER = [WorkerSlots("a", 2, 4000, 1.0), WorkerSlots("b", 2, 4000, 2.0), WorkerSlots("c", 2, 1500, 0.5)]
TEACHER_JOB_WEIGHT = 2.0


def teacher_scores(job: Job, workers) -> dict[str, float]:
    ranks = upward_ranks(job.tasks, job.edges, workers)
    total = sum(t.compute_seconds for t in job.tasks)
    return {tid: (r - TEACHER_JOB_WEIGHT * total) / gnn.SCALE for tid, r in ranks.items()}


def workload(seed: int, jobs: int, gap: float = 20.0) -> list[Job]:
    rng = random.Random(seed)
    return poisson_arrivals([random_layered(rng, rng.randint(8, 60), f"s{seed}j{i}") for i in range(jobs)], gap, rng)


def greedy_jct(model, workloads) -> float:
    def priority(job, workers):
        with torch.no_grad():
            values = gnn.scores(model, job.tasks, job.edges, workers).tolist()
        return {t.id: v for t, v in zip(job.tasks, values)}

    return sum(simulate(w, CLUSTER, priority).avg_jct for w in workloads) / len(workloads)


def train(episodes: int, seed: int = 0, log=print, imitation_jobs: int = 300, imitation_epochs: int = 60,
          rollouts: int = 4, learning_rate: float = 3e-4, temperature: float = 0.05) -> dict:
    torch.manual_seed(seed)
    random.seed(seed)
    model = gnn.PriorityGNN()
    # 1. Imitation.
    rng = random.Random(seed)
    data = []
    for i in range(imitation_jobs):
        job = random_layered(rng, rng.randint(5, 80), f"imit{i}")
        x, edge_index = gnn.node_features(job.tasks, job.edges, CLUSTER)
        target = teacher_scores(job, CLUSTER)
        data.append((x, edge_index, torch.tensor([target[t.id] for t in job.tasks])))
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for epoch in range(imitation_epochs):
        total = 0.0
        for x, edge_index, y in data:
            loss = torch.nn.functional.mse_loss(model(x, edge_index), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach())
        if epoch % 20 == 19:
            log(f"imitation epoch {epoch + 1}: mse {total / len(data):.4f}")
    validation = [workload(10_000 + i, 12) for i in range(4)]
    imitation_jct = greedy_jct(model, validation)
    log(f"validation avg JCT after imitation: {imitation_jct:.2f}")
    best_state = {k: v.clone() for k, v in model.state_dict().items()}
    best_jct = imitation_jct
    # 2. Policy gradient on job completion time.
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    for episode in range(episodes):
        jobs = workload(20_000 + episode, 8)
        outcomes = [simulate(jobs, CLUSTER, sample_scores=lambda job: gnn.scores(model, job.tasks, job.edges, CLUSTER) / temperature)
                    for _ in range(rollouts)]
        rewards = torch.tensor([-o.avg_jct for o in outcomes])
        advantages = (rewards - rewards.mean()) / (rewards.std() + 1e-6)
        weighted = (a * torch.stack(o.log_probs or []).mean() for a, o in zip(advantages.tolist(), outcomes))
        loss = -sum(weighted, torch.zeros(())) / rollouts
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if episode % 10 == 9:
            jct = greedy_jct(model, validation)
            log(f"policy-gradient episode {episode + 1}: validation avg JCT {jct:.2f}")
            if jct < best_jct:
                best_jct, best_state = jct, {k: v.clone() for k, v in model.state_dict().items()}
    model.load_state_dict(best_state)
    return {"model": model, "imitation_validation_jct": imitation_jct, "final_validation_jct": best_jct}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--episodes", type=int, default=60)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--rollouts", type=int, default=4, help="rollouts of each episode's job sequence")
    parser.add_argument("--out", default=str(gnn.WEIGHTS))
    args = parser.parse_args()
    started = time.monotonic()
    result = train(args.episodes, args.seed, rollouts=args.rollouts)
    out = Path(args.out)
    out.parent.mkdir(exist_ok=True)
    meta = {"features": list(gnn.FEATURES), "episodes": args.episodes, "seed": args.seed, "rollouts": args.rollouts,
            "imitation_validation_jct": round(result["imitation_validation_jct"], 3),
            "final_validation_jct": round(result["final_validation_jct"], 3),
            "teacher_job_weight": TEACHER_JOB_WEIGHT, "train_seconds": round(time.monotonic() - started, 1)}
    torch.save({"model": result["model"].state_dict(), "hidden": 32, "meta": meta}, out)
    print(json.dumps(meta))


if __name__ == "__main__":
    main()
