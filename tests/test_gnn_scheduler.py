"""The learned scheduling policy: shipped weights load, plans are valid and fast enough to use,
training is reproducible, recorded decisions recompute to the probabilities they were sampled
with, and in the online simulator it beats HEFT and FIFO on average JCT."""
import random

import torch

from openautoglm.gnn_scheduler import gnn
from openautoglm.gnn_scheduler.dags import random_layered, wfcommons_job
from openautoglm.gnn_scheduler.graph import WorkerSlots
from openautoglm.gnn_scheduler.planner import plan
from openautoglm.gnn_scheduler.simulate import heft_priority, fifo_priority, poisson_arrivals, simulate
from openautoglm.gnn_scheduler.train_gnn import CLUSTER, train
from openautoglm.gnn_scheduler.workloads import random_workload


def test_shipped_weights_plan_a_valid_schedule():
    rng = random.Random(3)
    job = random_layered(rng, 200, "j")
    workers = [WorkerSlots("a", 2, 4000, 1.0), WorkerSlots("b", 1, 1500, 2.0)]
    order = gnn.priority_order(job.tasks, job.edges, workers)
    assert sorted(order) == sorted(t.id for t in job.tasks)
    result = plan(job.tasks, job.edges, workers, "gnn")
    at = {p.task_id: p for p in result.placements}
    assert len(at) == 200
    for src, dst, transfer in job.edges:
        gap = 0.0 if at[src].worker_id == at[dst].worker_id else transfer
        assert at[dst].start >= at[src].finish + gap - 1e-9
    for t in job.tasks:
        worker = next(w for w in workers if w.id == at[t.id].worker_id)
        assert t.memory_mb <= worker.memory_mb  # never placed where it cannot fit


def test_gnn_beats_heft_on_average_jct_with_jobs_arriving():
    rng = random.Random(77_777)  # not a training, validation or benchmark seed
    jobs = poisson_arrivals([random_layered(rng, rng.randint(8, 60), f"x{i}") for i in range(10)], 20.0, rng)

    def learned(job, workers):
        with torch.no_grad():
            return dict(zip((t.id for t in job.tasks), gnn.scores(gnn.load_default(), job.tasks, job.edges, workers).tolist()))

    assert simulate(jobs, CLUSTER, learned).avg_jct < 0.95 * simulate(jobs, CLUSTER, heft_priority).avg_jct
    assert simulate(jobs, CLUSTER, fifo_priority).makespan > 0


def test_wfcommons_recipes_give_dags():
    job = wfcommons_job("epigenomics", 60, seed=1)
    assert len(job.tasks) > 40 and job.edges
    assert all(t.compute_seconds > 0 for t in job.tasks)


def test_training_is_reproducible():
    a = train(episodes=2, seed=1, log=lambda *_: None, imitation_jobs=20, imitation_epochs=3)
    b = train(episodes=2, seed=1, log=lambda *_: None, imitation_jobs=20, imitation_epochs=3)
    for key, value in a["model"].state_dict().items():
        assert torch.equal(value, b["model"].state_dict()[key]), key


def test_recorded_decisions_recompute_to_the_probabilities_they_were_sampled_with():
    torch.manual_seed(0)
    model = gnn.PolicyGNN().eval()
    policy = gnn.LearnedPolicy(model, sample=True, generator=torch.Generator().manual_seed(0), record=True)
    outcome = simulate(random_workload(7, 4, "batched"), CLUSTER, policy)
    episode = policy.episode
    assert episode is not None and len(outcome.jct) == 4
    recomputed, entropy = gnn.decision_log_probs(model, episode)
    assert torch.allclose(recomputed, torch.tensor([d.log_prob for d in episode.decisions]), atol=1e-5)
    assert (entropy >= 0).all()
    # Waiting is offered while something runs, and an untrained policy takes it now and then.
    assert any(d.wait is not None for d in episode.decisions)
    assert any(d.action == len(d.rows) for d in episode.decisions)
    # The static head's policy (what Plan and packing order by) records and recomputes alike.
    static = gnn.LearnedPolicy(model, sample=True, generator=torch.Generator().manual_seed(0), record=True, static=True)
    simulate(random_workload(7, 4, "poisson"), CLUSTER, static)
    recomputed, _ = gnn.decision_log_probs(model, static.episode, static=True)
    assert torch.allclose(recomputed, torch.tensor([d.log_prob for d in static.episode.decisions]), atol=1e-5)
    assert all(d.wait is None for d in static.episode.decisions)


def test_the_shipped_online_policy_beats_fifo_and_heft_on_unseen_workloads():
    from openautoglm.gnn_scheduler import heuristics

    for arrivals in ("poisson", "batched"):
        load = random_workload(77_000, 10, arrivals)  # not a training, validation or benchmark seed
        learned = simulate(load, CLUSTER, gnn.LearnedPolicy(gnn.load_default())).avg_jct
        assert learned < simulate(load, CLUSTER, heuristics.make("fifo")).avg_jct
        assert learned < simulate(load, CLUSTER, heuristics.make("heft")).avg_jct


def test_the_shipped_weights_record_that_ppo_improved_on_imitation():
    meta = torch.load(gnn.WEIGHTS, map_location="cpu", weights_only=False)["meta"]
    assert meta["final_validation_jct_vs_sjf_cp"] < meta["imitation_validation_jct_vs_sjf_cp"]
