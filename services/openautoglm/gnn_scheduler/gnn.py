"""The learned scheduling policy: a GCN over a job's task DAG that scores every task's priority.

Node features describe the task (compute, memory), its place in the DAG (depth, degrees, the
critical path to the exit and from the entry) and its job (total work, size), so scores are
comparable across jobs: the model can learn, as Decima does, that finishing small jobs first
shortens the average job completion time. Trained offline by train_gnn.py (imitation of a
teacher, then policy gradient on JCT); the small weights ship in weights/gnn_policy.pt.
"""
from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn

from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots, mean_cost, topological_order, upward_ranks

WEIGHTS = Path(__file__).parent / "weights" / "gnn_policy.pt"
FEATURES = (
    "compute_rel", "log_compute", "memory", "depth_rel", "out_degree", "in_degree",
    "bottom_level_rel", "bottom_level", "top_level_rel", "job_work", "log_job_work", "log_job_tasks",
)
SCALE = 100.0  # seconds per unit of the absolute-time features


def node_features(tasks: list[TaskNode], edges: list[tuple[str, str, float]],
                  workers: list[WorkerSlots]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [n, len(FEATURES)], edge_index [2, 2E]) for one job; edges are used both ways."""
    order = topological_order(tasks, edges)
    index = {t.id: i for i, t in enumerate(tasks)}
    compute = [mean_cost(t, workers) for t in tasks]
    total = sum(compute) or 1.0
    mean = total / len(tasks)
    bottom = upward_ranks(tasks, edges, workers, True, order)
    preds: dict[str, list[tuple[str, float]]] = {t.id: [] for t in tasks}
    out_deg = [0] * len(tasks)
    in_deg = [0] * len(tasks)
    for a, b, c in edges:
        preds[b].append((a, c))
        out_deg[index[a]] += 1
        in_deg[index[b]] += 1
    depth: dict[str, int] = {}
    top: dict[str, float] = {}
    for tid in order:
        depth[tid] = max((depth[p] + 1 for p, _ in preds[tid]), default=0)
        top[tid] = max((top[p] + compute[index[p]] + c for p, c in preds[tid]), default=0.0)
    max_depth = max(depth.values()) or 1
    critical = max(bottom.values()) or 1.0
    rows = []
    for i, t in enumerate(tasks):
        rows.append([
            compute[i] / mean, math.log1p(compute[i]), t.memory_mb / 4000.0, depth[t.id] / max_depth,
            math.log1p(out_deg[i]), math.log1p(in_deg[i]), bottom[t.id] / critical, bottom[t.id] / SCALE,
            top[t.id] / critical, total / SCALE, math.log1p(total), math.log1p(len(tasks)),
        ])
    x = torch.tensor(rows, dtype=torch.float32)
    if edges:
        src = torch.tensor([index[a] for a, _, _ in edges])
        dst = torch.tensor([index[b] for _, b, _ in edges])
        edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    else:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
    return x, edge_index


class PriorityGNN(nn.Module):
    """Two GCN layers, a job embedding (mean over the job's nodes), and a priority head."""

    def __init__(self, features: int = len(FEATURES), hidden: int = 32):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.norm = nn.LayerNorm(features)
        self.conv1 = GCNConv(features, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden + features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        h = self.norm(x)
        h = torch.relu(self.conv1(h, edge_index))
        h = torch.relu(self.conv2(h, edge_index))
        job = h.mean(dim=0, keepdim=True).expand_as(h)
        out: torch.Tensor = self.head(torch.cat([h, job, x], dim=1)).squeeze(-1)
        return out


def scores(model: PriorityGNN, tasks: list[TaskNode], edges: list[tuple[str, str, float]],
           workers: list[WorkerSlots]) -> torch.Tensor:
    x, edge_index = node_features(tasks, edges, workers)
    out: torch.Tensor = model(x, edge_index)
    return out


@lru_cache(maxsize=1)
def load_default() -> PriorityGNN:
    """The shipped policy (raises FileNotFoundError if the weights were never built)."""
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=False)
    model = PriorityGNN(hidden=state["hidden"])
    model.load_state_dict(state["model"])
    return model.eval()


def priority_order(tasks: list[TaskNode], edges: list[tuple[str, str, float]], workers: list[WorkerSlots],
                   model: PriorityGNN | None = None) -> list[str]:
    """Task ids by decreasing learned priority (for planner.plan)."""
    model = model or load_default()
    with torch.no_grad():
        values = scores(model, tasks, edges, workers).tolist()
    ranked = sorted(range(len(tasks)), key=lambda i: -values[i])
    return [tasks[i].id for i in ranked]
