"""Online packing (gnn_scheduler/packing.py): every study's pending work onto free trainer slots."""
import random

import pytest

from openautoglm.gnn_scheduler.packing import fits, pack
from openautoglm.gnn_scheduler.graph import PlanError, TaskNode, WorkerSlots
from openautoglm.gnn_scheduler.planner import POLICIES


def test_never_places_a_task_where_it_does_not_fit_and_prefers_the_tightest_slot():
    workers = [WorkerSlots("big", 1, 8000), WorkerSlots("small", 2, 1000)]
    pending = [TaskNode("large", 10, 6000), TaskNode("a", 5, 500), TaskNode("b", 5, 500)]
    result = pack(pending, {}, workers, "critical_path")
    assert dict(result.placements) == {"large": "big", "a": "small", "b": "small"}
    assert result.free_slots == {"big": 0, "small": 0}


def test_slots_held_by_running_work_are_not_given_out_again():
    workers = [WorkerSlots("w", 2, 0)]
    result = pack([TaskNode("x", 1), TaskNode("y", 1)], {"r": "w"}, workers, "fifo")
    assert result.placements == [("x", "w")]
    assert result.free_slots == {"w": 0}


def test_work_on_a_worker_that_left_is_orphaned_and_its_slot_is_not_counted():
    workers = [WorkerSlots("w1", 1, 0)]
    result = pack([TaskNode("p", 1)], {"r1": "gone", "r2": "w1"}, workers, "fifo")
    assert result.orphaned == ["r1"]
    assert result.placements == []  # w1's one slot is held by r2


def test_a_task_larger_than_every_live_worker_waits_and_smaller_work_goes_ahead():
    workers = [WorkerSlots("w", 1, 1000)]
    result = pack([TaskNode("huge", 100, 5000), TaskNode("ok", 1, 100)], {}, workers, "critical_path")
    assert result.unfit == ["huge"]
    assert result.placements == [("ok", "w")]


def test_when_a_large_trainer_joins_the_waiting_task_is_placed_there():
    pending = [TaskNode("huge", 100, 5000)]
    assert pack(pending, {}, [WorkerSlots("w", 1, 1000)]).placements == []
    joined = pack(pending, {}, [WorkerSlots("w", 1, 1000), WorkerSlots("new", 1, 8000)])
    assert joined.placements == [("huge", "new")]


def test_policy_decides_who_goes_first_when_slots_are_short():
    workers = [WorkerSlots("w", 1, 0)]
    pending = [TaskNode("short", 1), TaskNode("long", 9)]
    assert pack(pending, {}, workers, "fifo").placements == [("short", "w")]
    assert pack(pending, {}, workers, "critical_path").placements == [("long", "w")]


def test_no_workers_places_nothing_and_everything_is_unfit():
    result = pack([TaskNode("a", 1, 10)], {}, [])
    assert result.placements == [] and result.unfit == ["a"]


@pytest.mark.parametrize("bad", [
    ([TaskNode("a", 1), TaskNode("a", 1)], {}),
    ([TaskNode("a", 1)], {"a": "w"}),
    ([TaskNode("a", -1)], {}),
])
def test_malformed_input_is_refused_naming_the_problem(bad):
    with pytest.raises(PlanError):
        pack(*bad, [WorkerSlots("w", 1, 0)])


@pytest.mark.parametrize("policy", POLICIES)
def test_random_snapshots_respect_memory_and_slots_under_every_policy(policy):
    rng = random.Random(7)
    for snapshot in range(60):
        workers = [WorkerSlots(f"w{i}", rng.randint(0, 3), rng.choice([0, 500, 2000, 8000]), rng.choice([1.0, 2.0]))
                   for i in range(rng.randint(1, 4))]
        pending = [TaskNode(f"t{i}", rng.uniform(1, 20), rng.choice([0, 100, 1000, 4000, 9000])) for i in range(rng.randint(0, 12))]
        running = {f"r{i}": rng.choice([w.id for w in workers] + ["gone"]) for i in range(rng.randint(0, 4))}
        # Half the snapshots name each task's study (the learned policy then decides online).
        study_of = {tid: f"s{rng.randint(0, 2)}" for tid in [t.id for t in pending] + list(running)} if snapshot % 2 else None
        result = pack(pending, running, workers, policy, study_of=study_of,
                      running_work=[TaskNode(tid, rng.uniform(1, 20)) for tid in running])
        by_worker = {w.id: w for w in workers}
        tasks = {t.id: t for t in pending}
        for task_id, worker_id in result.placements:
            assert fits(tasks[task_id], by_worker[worker_id])
        for w in workers:
            held = sum(1 for wid in running.values() if wid == w.id) + sum(1 for _, wid in result.placements if wid == w.id)
            assert held <= max(w.slots, sum(1 for wid in running.values() if wid == w.id))
            assert result.free_slots.get(w.id, 0) >= 0
        assert set(result.orphaned) == {tid for tid, wid in running.items() if wid == "gone"}
        placed = {tid for tid, _ in result.placements}
        # Work conserving: a task left waiting fits no slot that is still free.
        for task in pending:
            if task.id not in placed and task.id not in result.unfit:
                assert not any(fits(task, by_worker[wid]) for wid, free in result.free_slots.items() if free > 0)


def test_the_learned_policy_starts_the_study_with_the_least_work_left_first():
    """Each study is one job: with one free slot, a trial of the study that can finish soonest
    starts, where the critical-path order (longest task first) would start the long one."""
    pending = [TaskNode(f"long{i}", 100.0, 100) for i in range(3)] + [TaskNode(f"short{i}", 5.0, 100) for i in range(3)]
    study_of = {t.id: ("long-study" if t.id.startswith("long") else "short-study") for t in pending}
    workers = [WorkerSlots("w", 1, 4000, 1.0)]
    learned = pack(pending, {}, workers, "gnn", study_of=study_of)
    assert learned.placements[0][0].startswith("short")
    ordered = pack(pending, {}, workers, "critical_path", study_of=study_of)
    assert ordered.placements[0][0].startswith("long")


def _trial(trial_id: str, first: float, later: list[float], score: float, study: str):
    """A trial as the gateway sends it: its first stage, later rungs and scoring (placement.trial_stages)."""
    from openautoglm.common.subjects import POOL_EVALUATOR

    tasks = [TaskNode(trial_id, first, 100)] + [TaskNode(f"{trial_id}#r{i + 2}", s, 100) for i, s in enumerate(later)]
    tasks.append(TaskNode(f"{trial_id}#score", score, 0, "evaluate", pool=POOL_EVALUATOR))
    return tasks, [(a.id, b.id, 0.0) for a, b in zip(tasks, tasks[1:])], {t.id: study for t in tasks}


@pytest.mark.parametrize("policy", POLICIES)
def test_only_a_trials_first_stage_is_placed_and_its_later_stages_shape_the_order(policy):
    """Stages with a predecessor are never placed; with one free slot, critical path starts the
    trial whose later rungs make its chain the longest, though its first stage is the shorter."""
    long_tasks, long_edges, long_of = _trial("long", 2.0, [20.0, 20.0], 1.0, "s1")
    short_tasks, short_edges, short_of = _trial("short", 5.0, [], 1.0, "s2")
    workers = [WorkerSlots("w", 1, 4000, 1.0)]
    result = pack(long_tasks + short_tasks, {}, workers, policy, study_of={**long_of, **short_of},
                  edges=long_edges + short_edges)
    assert len(result.placements) == 1 and result.placements[0][0] in {"long", "short"}
    assert result.unfit == []  # the scoring stages wait on their trials: never called unfit
    if policy == "critical_path":
        assert result.placements == [("long", "w")]
        flat = pack([TaskNode("long", 2.0, 100), TaskNode("short", 5.0, 100)], {}, workers, policy)
        assert flat.placements == [("short", "w")]  # without the stages it sees only the first


def test_a_stage_after_running_work_waits_and_bad_edges_are_refused():
    workers = [WorkerSlots("w", 2, 0)]
    result = pack([TaskNode("t#score", 1.0)], {"t": "w"}, workers, "fifo", edges=[("t", "t#score", 0.0)])
    assert result.placements == [] and result.free_slots == {"w": 1}
    with pytest.raises(PlanError, match=r"dependencies\[0\].to_task"):
        pack([TaskNode("a", 1.0)], {"t": "w"}, workers, "fifo", edges=[("a", "t", 0.0)])
