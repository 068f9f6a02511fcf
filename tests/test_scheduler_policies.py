"""The online simulator's baselines do what the literature defines them to do (SJF-CP, fair and
weighted fair sharing, Tetris' packing), the placement rules differ as documented, and the
returns the policy gradient uses add up to the average job completion time."""
import random

import pytest

from openautoglm.gnn_scheduler import heuristics
from openautoglm.gnn_scheduler.dags import Job
from openautoglm.gnn_scheduler.graph import TaskNode, WorkerSlots
from openautoglm.gnn_scheduler.simulate import WAIT, StaticPriority, critical_path_priority, returns_at, simulate
from openautoglm.gnn_scheduler.workloads import CLUSTER, random_workload


def _job(job_id: str, seconds: list[float], memory: list[float] | None = None, arrival: float = 0.0) -> Job:
    memory = memory or [0.0] * len(seconds)
    return Job(job_id, [TaskNode(f"{job_id}/{i}", s, m) for i, (s, m) in enumerate(zip(seconds, memory))], [], arrival)


def test_sjf_cp_runs_the_smaller_job_first():
    one_slot = [WorkerSlots("w", 1, 0)]
    outcome = simulate([_job("big", [10, 10]), _job("small", [1])], one_slot, heuristics.make("sjf_cp"))
    assert outcome.jct == {"small": 1.0, "big": 21.0}


@pytest.mark.parametrize("name, alpha, small_jct", [
    ("fair", 0.0, 4.0),  # one slot each: the small job's four tasks run one after another
    ("weighted_fair", -2.0, 2.0),  # weight ~ work^-2: the small job gets both slots
    ("weighted_fair", 2.0, 22.0),  # weight ~ work^2: the big job gets both slots until it is done
])
def test_fair_and_weighted_fair_share_slots_by_the_jobs_weights(name, alpha, small_jct):
    two_slots = [WorkerSlots("w", 2, 0)]
    outcome = simulate([_job("big", [10] * 4), _job("small", [1] * 4)], two_slots, heuristics.make(name, alpha=alpha))
    assert outcome.jct["small"] == small_jct


def test_tetris_chooses_the_slot_that_packs_best():
    workers = [WorkerSlots("large", 1, 4000), WorkerSlots("small", 1, 1000)]
    job = _job("j", [6, 5], memory=[900, 3000])
    outcome = simulate([job], workers, heuristics.make("tetris"))
    assert outcome.where == {"j/0": "small", "j/1": "large"} and outcome.jct["j"] == 6.0
    # Ordering alone (critical path first, on the free slot where it finishes first) puts the
    # small task in the large slot, and the large one waits for it.
    ordered = simulate([job], workers, StaticPriority(critical_path_priority))
    assert ordered.where["j/0"] == "large" and ordered.jct["j"] == 11.0


def test_placement_rules_free_eft_and_lazy():
    workers = [WorkerSlots("fast", 1, 0, 2.0), WorkerSlots("slow", 1, 0, 0.5)]
    # Priority: a (4 s of work) > long (10 s) > short (1 s); all ready at 0.
    job = _job("j", [4, 10, 1])
    priority = StaticPriority(lambda j, w: {"j/0": 3.0, "j/1": 2.0, "j/2": 1.0})
    free = simulate([job], workers, priority, "free")
    assert free.where["j/1"] == "slow" and free.times["j/1"][1] == 20.0  # runs now, 4x slower
    eft = simulate([job], workers, StaticPriority(priority.priority), "eft")
    assert eft.where["j/1"] == "fast" and eft.times["j/1"] == (2.0, 7.0)  # queued behind a on the fast worker
    assert eft.where["j/2"] == "slow"
    lazy = simulate([job], workers, StaticPriority(priority.priority), "lazy")
    assert lazy.times["j/1"] == (2.0, 7.0) and lazy.where["j/2"] == "slow"  # waits uncommitted; short takes slow
    with pytest.raises(ValueError, match="placement"):
        simulate([job], workers, priority, "nowhere")


def test_a_policy_that_waits_with_nothing_running_is_refused():
    class AlwaysWait:
        def arrive(self, job, sim):
            pass

        def pick(self, sim, candidates):
            return WAIT, None

    with pytest.raises(RuntimeError, match="waited"):
        simulate([_job("j", [1])], [WorkerSlots("w", 1, 0)], AlwaysWait())


@pytest.mark.parametrize("arrivals", ["poisson", "batched"])
def test_returns_add_up_to_the_sum_of_job_completion_times(arrivals):
    load = random_workload(123, 6, arrivals)
    outcome = simulate(load, CLUSTER, heuristics.make("sjf_cp"))
    first = min(j.arrival for j in load)
    assert returns_at(outcome, [first])[0] == pytest.approx(-sum(outcome.jct.values()))
    assert returns_at(outcome, [1e12])[0] == 0.0
    later = returns_at(outcome, [first, outcome.makespan / 2, outcome.makespan])
    assert later[0] <= later[1] <= later[2] == pytest.approx(0.0, abs=1e-6)


def test_every_heuristic_finishes_every_job_on_a_heterogeneous_cluster():
    load = random_workload(random.Random(5).randint(0, 10**6), 6, "poisson")
    for name in heuristics.HEURISTICS:
        for placement in ("free", "eft", "lazy"):
            outcome = simulate(load, CLUSTER, heuristics.make(name, alpha=-1.0), placement)
            assert set(outcome.jct) == {j.id for j in load}
            for task_id, worker_id in outcome.where.items():  # memory respected
                worker = next(w for w in CLUSTER if w.id == worker_id)
                task = next(t for j in load for t in j.tasks if t.id == task_id)
                assert task.memory_mb <= worker.memory_mb
    with pytest.raises(ValueError, match="unknown heuristic"):
        heuristics.make("magic")


@pytest.mark.parametrize("policy", list(heuristics.HEURISTICS))
def test_study_stages_run_on_their_own_pool_in_order(policy):
    """A study's scoring stages run only on the evaluator pool and its training rungs only on
    trainers, each stage after the one before it, and the export after every trial is done."""
    from openautoglm.common.subjects import POOL_EVALUATOR
    from openautoglm.gnn_scheduler.workloads import STUDY_CLUSTER, study_workload

    load = study_workload(3, 6)
    outcome = simulate(load, STUDY_CLUSTER, heuristics.make(policy, alpha=-1.0))
    pool_of = {w.id: w.pool for w in STUDY_CLUSTER}
    tasks = {t.id: t for job in load for t in job.tasks}
    assert any(t.pool == POOL_EVALUATOR for t in tasks.values())
    for tid, task in tasks.items():
        assert pool_of[outcome.where[tid]] == task.pool, tid
    for job in load:
        for a, b, _ in job.edges:
            assert outcome.times[b][0] >= outcome.times[a][1] - 1e-9, (a, b)
        export = f"{job.id}/export"
        assert outcome.times[export][0] >= max(end for tid, (_, end) in outcome.times.items()
                                               if tid.startswith(job.id + "/") and tid != export) - 1e-9
