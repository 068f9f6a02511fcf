"""The learned scheduling policy (after Decima, Mao et al. SIGCOMM 2019): a GCN embeds every
job's task DAG when it arrives, and at every scheduling event a small network scores each ready
task, on the free slot where it would finish first, from that embedding and the live state, plus
a "wait" action that leaves the free slots idle until the next event (for a long task that
would finish sooner on a faster worker that is busy now).

- Static node features (FEATURES) describe the task (compute, memory), its place in the DAG
  (depth, degrees, the critical path to the exit and from the entry) and its job (total work,
  size), so the GCN can tell a critical task from one with slack.
- Dynamic features (DYNAMIC) describe the task's job now (unstarted work against the other
  jobs', its running tasks) and the slot it would take (its speed, the slowdown against the
  fastest worker, how much sooner it would finish by waiting), so the policy can learn both
  shortest-remaining-work-first and which tasks the slow slots should get.
- WAIT_FEATURES summarise the choice for the wait action.

Trained offline by train_gnn.py (imitation of a heuristic teacher, then PPO on average job
completion time); the small weights ship in weights/gnn_policy.pt. `scores`/`priority_order`
give a static order for planner.plan and for packing on the live path, from a third head fitted
on the final embeddings to a job-aware critical-path teacher.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots, cost, mean_cost, topological_order, upward_ranks

if TYPE_CHECKING:
    from openautoglm.gnn_scheduler.dags import Job
    from openautoglm.gnn_scheduler.simulate import Policy, Simulation, Slot

WEIGHTS = Path(__file__).parent / "weights" / "gnn_policy.pt"
FEATURES = (
    "compute_rel", "log_compute", "memory", "depth_rel", "out_degree", "in_degree",
    "bottom_level_rel", "bottom_level", "top_level_rel", "job_work", "log_job_work", "log_job_tasks",
)
# Times enter the features only relative to a scale (the mean task's compute time over every job
# seen so far), so a policy trained on seconds-long tasks reads hour-long workflows alike.
DYNAMIC = (
    "log_unstarted_vs_mean", "unstarted_frac", "running_share", "work_rank", "log_active_jobs", "log_candidates",
    "slot_speed_rel", "slowdown", "wait_gain", "log_cost_vs_candidates", "remaining_tasks_frac",
)
WAIT_FEATURES = ("log_candidates", "free_share", "min_wait_gain", "mean_slowdown", "log_active_jobs", "best_free_speed")
JOB_WORK_UNIT = 50.0  # mean tasks' worth of work per unit of the job_work feature
# The time scale a job is read at when scored alone with no workload around it (`scores`): the
# mean task of the generated training workloads, in seconds.
STATIC_SCALE = 4.0
# Static scores are fitted in units of 100 s of a critical path; sampling them (training) divides
# by this, so a few seconds' difference is a clear preference.
STATIC_TEMPERATURE = 0.05


def node_features(tasks: list[TaskNode], edges: list[tuple[str, str, float]], workers: list[WorkerSlots],
                  scale: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(x [n, len(FEATURES)], edge_index [2, 2E]) for one job; edges are used both ways. `scale`:
    seconds per unit of time (default: this job's mean task)."""
    order = topological_order(tasks, edges)
    index = {t.id: i for i, t in enumerate(tasks)}
    compute = [mean_cost(t, workers) for t in tasks]
    total = sum(compute) or 1.0
    mean = total / len(tasks)
    scale = scale or mean or 1.0
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
            compute[i] / mean, math.log1p(compute[i] / scale), t.memory_mb / 4000.0, depth[t.id] / max_depth,
            math.log1p(out_deg[i]), math.log1p(in_deg[i]), bottom[t.id] / critical, math.log1p(bottom[t.id] / scale),
            top[t.id] / critical, total / scale / JOB_WORK_UNIT, math.log1p(total / scale), math.log1p(len(tasks)),
        ])
    x = torch.tensor(rows, dtype=torch.float32)
    if edges:
        src = torch.tensor([index[a] for a, _, _ in edges])
        dst = torch.tensor([index[b] for _, b, _ in edges])
        edge_index = torch.stack([torch.cat([src, dst]), torch.cat([dst, src])])
    else:
        edge_index = torch.zeros(2, 0, dtype=torch.long)
    return x, edge_index


class PolicyGNN(nn.Module):
    """Two GCN layers and a job embedding (mean over the job's nodes) per task; a head that
    scores (task embedding, dynamic features), and one that scores waiting."""

    def __init__(self, features: int = len(FEATURES), hidden: int = 32, dynamic: int = len(DYNAMIC),
                 wait_features: int = len(WAIT_FEATURES)):
        super().__init__()
        from torch_geometric.nn import GCNConv

        self.norm = nn.LayerNorm(features)
        self.conv1 = GCNConv(features, hidden)
        self.conv2 = GCNConv(hidden, hidden)
        self.head = nn.Sequential(nn.Linear(2 * hidden + features + dynamic, hidden), nn.ReLU(),
                                  nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        self.wait_head = nn.Sequential(nn.Linear(wait_features, hidden), nn.ReLU(), nn.Linear(hidden, 1))
        # Static priorities (Plan, packing): a task's score from its embedding alone.
        self.static_head = nn.Sequential(nn.Linear(2 * hidden + features, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def embed(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """[n, 2 * hidden + features]: each task's embedding, its job's, and its raw features."""
        h = self.norm(x)
        h = torch.relu(self.conv1(h, edge_index))
        h = torch.relu(self.conv2(h, edge_index))
        job = h.mean(dim=0, keepdim=True).expand_as(h)
        return torch.cat([h, job, x], dim=1)

    def task_logits(self, rows: torch.Tensor, dynamic: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.head(torch.cat([rows, dynamic], dim=-1)).squeeze(-1)
        return out

    def wait_logit(self, wait_features: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.wait_head(wait_features).squeeze(-1)
        return out

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        """Static scores (higher first), comparable across jobs scored at one time scale."""
        out: torch.Tensor = self.static_head(self.embed(x, edge_index)).squeeze(-1)
        return out


def scores(model: PolicyGNN, tasks: list[TaskNode], edges: list[tuple[str, str, float]],
           workers: list[WorkerSlots], scale: float = STATIC_SCALE) -> torch.Tensor:
    """Static scores; `scale` (seconds per time unit) is the workload's typical task when the
    caller knows it, else STATIC_SCALE, so scores of separately scored jobs compare."""
    x, edge_index = node_features(tasks, edges, workers, scale)
    out: torch.Tensor = model(x, edge_index)
    return out


@lru_cache(maxsize=1)
def load_default() -> PolicyGNN:
    """The shipped policy (raises FileNotFoundError if the weights were never built)."""
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=False)
    model = PolicyGNN(hidden=state["hidden"])
    model.load_state_dict(state["model"])
    return model.eval()


def priority_order(tasks: list[TaskNode], edges: list[tuple[str, str, float]], workers: list[WorkerSlots],
                   model: PolicyGNN | None = None) -> list[str]:
    """Task ids by decreasing learned priority (for planner.plan: one graph, read at the scale
    of its own mean task)."""
    model = model or load_default()
    mean = sum(t.compute_seconds for t in tasks) / max(1, len(tasks))
    with torch.no_grad():
        values = scores(model, tasks, edges, workers, mean or STATIC_SCALE).tolist()
    ranked = sorted(range(len(tasks)), key=lambda i: -values[i])
    return [tasks[i].id for i in ranked]


@dataclass
class Decision:
    """One scheduling event as the policy saw it (for training: the logits are recomputed from
    these with gradients)."""
    time: float
    rows: list[int]  # each candidate's row in the episode's stacked task embeddings
    dynamic: torch.Tensor  # [k, len(DYNAMIC)]
    wait: torch.Tensor | None  # [len(WAIT_FEATURES)], None when waiting was not allowed
    action: int  # candidate index, or k for wait
    log_prob: float = 0.0


@dataclass
class Episode:
    """What a recording LearnedPolicy saw in one simulation."""
    graphs: list[tuple[torch.Tensor, torch.Tensor]] = field(default_factory=list)
    decisions: list[Decision] = field(default_factory=list)


class LearnedPolicy:
    """The GNN as a simulate.Policy: greedy (argmax), or sampling (training) with `sample`; with
    `teacher` (another policy) it records the teacher's choices for imitation instead. With
    `static` it orders by the static head alone (what Plan and packing use), read at
    STATIC_SCALE, never waits, and samples at STATIC_TEMPERATURE."""

    def __init__(self, model: PolicyGNN, sample: bool = False, generator: torch.Generator | None = None,
                 record: bool = False, teacher: Policy | None = None, static: bool = False):
        self.model = model
        self.static = static
        self.sample = sample
        self.generator = generator
        self.teacher = teacher
        self.episode = Episode() if (record or teacher is not None) else None
        self.rows: dict[str, torch.Tensor] = {}  # job id -> its embedded rows
        self.offset: dict[str, int] = {}  # task id -> row in the episode's stacked embeddings
        self.local: dict[str, int] = {}  # task id -> row in its job's embeddings
        self.next_row = 0
        self.seen_compute, self.seen_tasks = 0.0, 0  # for the time scale

    def arrive(self, job: Job, sim: Simulation) -> None:
        self.seen_compute += sum(t.compute_seconds for t in job.tasks)
        self.seen_tasks += len(job.tasks)
        scale = STATIC_SCALE if self.static else self.seen_compute / self.seen_tasks
        x, edge_index = node_features(job.tasks, job.edges, sim.workers, scale)
        with torch.no_grad():
            self.rows[job.id] = self.model.embed(x, edge_index)
        for i, t in enumerate(job.tasks):
            self.local[t.id] = i
            self.offset[t.id] = self.next_row + i
        self.next_row += len(job.tasks)
        if self.teacher is not None:
            self.teacher.arrive(job, sim)
        if self.episode is not None:
            self.episode.graphs.append((x, edge_index))

    def pick(self, sim: Simulation, candidates: list[str]) -> tuple[int, Slot | None]:
        if self.static:
            return self._pick_static(sim, candidates)
        dynamic, wait, slots = features(sim, candidates)
        if self.teacher is not None:
            index, _ = self.teacher.pick(sim, candidates)
            action = len(candidates) if index < 0 else index
        else:
            with torch.no_grad():
                rows = torch.stack([self.rows[sim.job_of[t]][self.local[t]] for t in candidates])
                logits = self.model.task_logits(rows, dynamic)
                if wait is not None:
                    logits = torch.cat([logits, self.model.wait_logit(wait).reshape(1)])
                if self.sample:
                    probs = torch.softmax(logits, dim=0)
                    action = int(torch.multinomial(probs, 1, generator=self.generator))
                else:
                    action = int(torch.argmax(logits))
                log_prob = float(torch.log_softmax(logits, dim=0)[action])
        if self.episode is not None:
            self.episode.decisions.append(Decision(sim.now, [self.offset[t] for t in candidates], dynamic, wait, action,
                                                   0.0 if self.teacher is not None else log_prob))
        if action == len(candidates):
            return -1, None
        return action, slots[action]

    def _pick_static(self, sim: Simulation, candidates: list[str]) -> tuple[int, Slot | None]:
        with torch.no_grad():
            rows = torch.stack([self.rows[sim.job_of[t]][self.local[t]] for t in candidates])
            logits = self.model.static_head(rows).squeeze(-1) / STATIC_TEMPERATURE
            if self.sample:
                action = int(torch.multinomial(torch.softmax(logits, dim=0), 1, generator=self.generator))
            else:
                action = int(torch.argmax(logits))
            log_prob = float(torch.log_softmax(logits, dim=0)[action])
        if self.episode is not None:
            self.episode.decisions.append(Decision(sim.now, [self.offset[t] for t in candidates],
                                                   torch.zeros(len(candidates), len(DYNAMIC)), None, action, log_prob))
        return action, None


def features(sim: Simulation, candidates: list[str]) -> tuple[torch.Tensor, torch.Tensor | None, list[Slot]]:
    """(dynamic [k, len(DYNAMIC)], wait features or None when waiting is not allowed, each
    candidate's best free slot)."""
    active = sim.active
    unstarted = sorted(s.unstarted_work for s in active.values())
    mean_unstarted = (sum(unstarted) / len(unstarted)) or 1.0
    n_active = len(active)
    fastest = sim.max_speed
    rows, slots, costs = [], [], []
    for tid in candidates:
        end_free, slot = sim.earliest_end(tid, sim.free)
        end_any, _ = sim.earliest_end(tid, sim.slots)
        assert slot is not None
        worker = slot[0]
        task = sim.task[tid]
        here = cost(task, worker)
        costs.append(here)
        slots.append(slot)
        state = sim.jobs[sim.job_of[tid]]
        rank = _rank(unstarted, state.unstarted_work) / max(1, n_active - 1)
        rows.append([
            math.log(max(state.unstarted_work, 1e-6) / mean_unstarted), state.unstarted_work / (state.total_work or 1.0),
            state.running / sim.total_slots, rank, math.log1p(n_active), math.log1p(len(candidates)),
            worker.speed / fastest, fastest / worker.speed, (end_free - end_any) / (here or 1e-6), 0.0,
            state.remaining_tasks / len(state.job.tasks),
        ])
    mean_cost = (sum(costs) / len(costs)) or 1.0
    col = DYNAMIC.index("log_cost_vs_candidates")
    for row, c in zip(rows, costs):
        row[col] = math.log(max(c, 1e-6) / mean_cost)
    dynamic = torch.tensor(rows, dtype=torch.float32)
    wait = None
    if sim.can_wait:
        gain, slowdown = DYNAMIC.index("wait_gain"), DYNAMIC.index("slowdown")
        wait = torch.tensor([
            math.log1p(len(candidates)), len(sim.free) / sim.total_slots, min(r[gain] for r in rows),
            sum(r[slowdown] for r in rows) / len(rows), math.log1p(n_active),
            max(w.speed for w, _ in sim.free) / fastest,
        ], dtype=torch.float32)
    return dynamic, wait, slots


def _rank(sorted_values: list[float], value: float) -> int:
    """How many values are smaller (0 for the smallest)."""
    lo, hi = 0, len(sorted_values)
    while lo < hi:
        mid = (lo + hi) // 2
        if sorted_values[mid] < value:
            lo = mid + 1
        else:
            hi = mid
    return lo


def decision_log_probs(model: PolicyGNN, episode: Episode, static: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probability of each recorded action, entropy of each decision), with gradients,
    computed in one padded batch; `static`: of an episode played by the static head."""
    rows = torch.cat([model.embed(x, edge_index) for x, edge_index in episode.graphs])
    decisions = episode.decisions
    width = max(len(d.rows) for d in decisions) + 1
    index = torch.zeros(len(decisions), width - 1, dtype=torch.long)
    mask = torch.zeros(len(decisions), width, dtype=torch.bool)
    dynamic = torch.zeros(len(decisions), width - 1, len(DYNAMIC))
    wait = torch.zeros(len(decisions), len(WAIT_FEATURES))
    for i, d in enumerate(decisions):
        k = len(d.rows)
        index[i, :k] = torch.tensor(d.rows)
        mask[i, :k] = True
        dynamic[i, :k] = d.dynamic
        if d.wait is not None:
            mask[i, -1] = True
            wait[i] = d.wait
    if static:
        task_logits = model.static_head(rows[index]).squeeze(-1) / STATIC_TEMPERATURE
    else:
        task_logits = model.task_logits(rows[index], dynamic)
    logits = torch.cat([task_logits, model.wait_logit(wait).unsqueeze(1)], dim=1)
    logits = logits.masked_fill(~mask, float("-inf"))
    log_probs = torch.log_softmax(logits, dim=1)
    actions = torch.tensor([len(d.rows) if d.action == len(d.rows) else d.action for d in decisions])
    # The wait column is the last one, whatever the candidate count.
    column = torch.where(actions == torch.tensor([len(d.rows) for d in decisions]), torch.full_like(actions, width - 1), actions)
    chosen = log_probs.gather(1, column.unsqueeze(1)).squeeze(1)
    probs = log_probs.exp()
    entropy = -(probs * log_probs.masked_fill(~mask, 0.0)).sum(dim=1)
    return chosen, entropy
