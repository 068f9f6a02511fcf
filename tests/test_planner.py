"""The scheduler's planning core: critical-path list scheduling onto slots."""
import pytest

from openautoglm.gnn_scheduler.planner import PlanError, TaskNode, WorkerSlots, plan, upward_ranks


def _chain_and_fan():
    tasks = [TaskNode("prep", 1), TaskNode("long", 10), TaskNode("short1", 2), TaskNode("short2", 2), TaskNode("tail", 1)]
    edges = [("prep", "long", 0), ("prep", "short1", 0), ("prep", "short2", 0), ("long", "tail", 0)]
    return tasks, edges


def test_critical_path_starts_the_longest_chain_first():
    tasks, edges = _chain_and_fan()
    ranks = upward_ranks(tasks, edges, 1.0)
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
