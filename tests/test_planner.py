"""The scheduler's planning core: critical-path list scheduling onto slots."""
import json
from pathlib import Path

import pytest

from openautoglm.gnn_scheduler.graph import PlanError, TaskNode, WorkerSlots, upward_ranks
from openautoglm.gnn_scheduler.planner import plan


def _chain_and_fan():
    tasks = [TaskNode("prep", 1), TaskNode("long", 10), TaskNode("short1", 2), TaskNode("short2", 2), TaskNode("tail", 1)]
    edges = [("prep", "long", 0), ("prep", "short1", 0), ("prep", "short2", 0), ("long", "tail", 0)]
    return tasks, edges


def test_critical_path_starts_the_longest_chain_first():
    tasks, edges = _chain_and_fan()
    ranks = upward_ranks(tasks, edges, [WorkerSlots("w", 1, 0)])
    assert ranks["prep"] == 12 and ranks["long"] == 11
    result = plan(tasks, edges, [WorkerSlots("w", 1, 0)], "critical_path")
    order = [p.task_id for p in result.placements]
    assert order.index("long") < order.index("short1")
    fifo = plan(tasks, edges, [WorkerSlots("w", 1, 0)], "fifo")
    assert result.makespan == fifo.makespan == 16  # one slot: total work either way


def test_packing_respects_dependencies_slots_and_memory():
    tasks, edges = _chain_and_fan()
    tasks.append(TaskNode("big", 3, memory_mb=900))
    workers = [WorkerSlots("small", 2, 500), WorkerSlots("large", 1, 1000)]
    result = plan(tasks, edges, workers)
    at = {p.task_id: p for p in result.placements}
    assert at["big"].worker_id == "large"
    for src, dst, _ in edges:
        assert at[dst].start >= at[src].finish
    by_slot = {}
    for p in result.placements:
        by_slot.setdefault((p.worker_id, p.slot), []).append(p)
    for placements in by_slot.values():
        placements.sort(key=lambda p: p.start)
        for a, b in zip(placements, placements[1:]):
            assert b.start >= a.finish
    assert result.makespan < 16  # three slots beat one


@pytest.mark.parametrize(
    "tasks,edges,workers,message",
    [
        ([TaskNode("a", 1), TaskNode("b", 1)], [("a", "b", 0), ("b", "a", 0)], [WorkerSlots("w", 1, 0)], "cycle"),
        ([TaskNode("a", 1)], [("a", "ghost", 0)], [WorkerSlots("w", 1, 0)], "unknown task"),
        ([TaskNode("a", 1, memory_mb=2000)], [], [WorkerSlots("w", 2, 1000)], "largest slot"),
        ([TaskNode("a", 1)], [], [], "no worker capacity"),
        ([TaskNode("a", 1), TaskNode("a", 2)], [], [WorkerSlots("w", 1, 0)], "duplicate"),
    ],
)
def test_unplannable_graphs_are_refused(tasks, edges, workers, message):
    with pytest.raises(PlanError, match=message):
        plan(tasks, edges, workers)


def _heft_paper_example():
    data = json.loads((Path(__file__).parent / "fixtures" / "heft_topcuoglu2002_example.json").read_text())
    workers = [WorkerSlots(f"p{i + 1}", 1, 0) for i in range(data["processors"])]
    tasks = [TaskNode(tid, 0.0, cost_by_worker={f"p{i + 1}": c for i, c in enumerate(costs)})
             for tid, costs in data["computation_cost"].items()]
    edges = [(str(a), str(b), float(c)) for a, b, c in data["edges"]]
    return tasks, edges, workers, data["expected_heft_schedule_length"]


def test_heft_reproduces_the_papers_schedule_length():
    tasks, edges, workers, expected = _heft_paper_example()
    result = plan(tasks, edges, workers, "heft")
    assert result.makespan == expected == 80
    ranks = upward_ranks(tasks, edges, workers)
    assert round(ranks["1"], 3) == 108.0  # rank_u(n1) in the paper's Table
    order = [t for t, _ in sorted(ranks.items(), key=lambda kv: (-round(kv[1], 9), int(kv[0])))]
    assert order == ["1", "3", "4", "2", "5", "6", "9", "7", "8", "10"]  # the paper's priority list


def test_baselines_on_the_paper_example_are_valid_schedules():
    tasks, edges, workers, _ = _heft_paper_example()
    for policy in ("fifo", "critical_path", "heft"):
        result = plan(tasks, edges, workers, policy)
        at = {p.task_id: p for p in result.placements}
        for src, dst, transfer in edges:
            gap = 0.0 if at[src].worker_id == at[dst].worker_id else transfer
            assert at[dst].start >= at[src].finish + gap - 1e-9, policy
        assert len(result.placements) == 10 and result.makespan > 0
