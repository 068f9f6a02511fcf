"""The scheduler's policy on the live path: one mixed load of studies (two long, two short, the
long ones submitted first) through the real mesh, once with FIFO and once with the learned
policy as the scheduler's default, on one trainer with one slot and no prefetch so every start
is the scheduler's choice. Trial costs are the gateway's predictions (cost_model.py) and the
trainer's measured speed; the learned policy sees each study as one job, each queued trial the
chain of its stages (training, then scoring on the evaluators). It must order the
trials differently and lower the average study completion time. (Each completed study's best is
registered, and its export runs on the trainer that holds the model: it holds that trainer's
place until it ends, under both policies.)"""
import asyncio
import statistics

from helpers import small_spec
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.stack import EmbeddedStack
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc


def _spec(name: str, epochs: int, trials: int, examples: int) -> common_pb2.StudySpec:
    spec = small_spec(name=name, strategy="random", budget={"max_trials": trials}, seed=len(name),
                      dataset={"builtin": "sentiment-demo", "max_examples": examples})
    spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [epochs]},
                                               "learning_rate": {"type": "loguniform", "low": 0.001, "high": 0.01}}
    return spec_to_proto(validate_dict(spec))


LOAD = [("long-a", 12, 3, 200), ("long-b", 12, 3, 200), ("short-a", 1, 2, 40), ("short-b", 1, 2, 40)]


async def _run_load(data_dir, policy: str) -> tuple[float, list[str]]:
    """(mean seconds from submission to completion over the studies, the studies in the order
    their trials finished)."""
    stack = EmbeddedStack(data_dir, trainer_threads=1,
                          env={"OPENAUTOGLM_SCHEDULER_POLICY": policy, "OPENAUTOGLM_TRAINER_PREFETCH": "0"})
    await stack.start()
    try:
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            ids = []
            for name, epochs, trials, examples in LOAD:
                created = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=_spec(name, epochs, trials, examples)),
                                                  timeout=30)).study
                ids.append(created.id)
            studies = []
            for study_id in ids:
                async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study_id), timeout=400):
                    study = update.study
                studies.append(study)
    finally:
        await asyncio.to_thread(stack.stop)
    assert all(s.state == common_pb2.STUDY_STATE_COMPLETED for s in studies), [s.error for s in studies]
    # Every trial's scoring stage was timed: what the next Pack predicts the evaluator stage from.
    assert all(t.score_seconds > 0 for s in studies for t in s.trials)
    completion = [max(t.finished_at.ToMicroseconds() for t in s.trials) / 1e6 - s.created_at.ToMicroseconds() / 1e6
                  for s in studies]
    finished = sorted((t.finished_at.ToMicroseconds(), s.spec.name) for s in studies for t in s.trials)
    print(f"\n{policy}: " + ", ".join(f"{s.spec.name} {c:.1f} s" for s, c in zip(studies, completion)))
    return statistics.mean(completion), [name for _, name in finished]


def test_the_learned_policy_lowers_average_study_completion_time_against_fifo(tmp_path):
    fifo_mean, fifo_order = asyncio.run(_run_load(tmp_path / "fifo", "fifo"))
    learned_mean, learned_order = asyncio.run(_run_load(tmp_path / "gnn", "gnn"))
    print(f"\nmean study completion: fifo {fifo_mean:.1f} s ({' '.join(fifo_order)}), "
          f"gnn {learned_mean:.1f} s ({' '.join(learned_order)})")
    assert learned_order != fifo_order  # the policy changed which trials started when
    # FIFO finishes the long studies first (they were submitted first); the learned policy
    # starts the short studies' trials as soon as the slot frees.
    assert fifo_order[:3] == ["long-a"] * 3
    assert set(learned_order[1:5]) == {"short-a", "short-b"}
    assert learned_mean < fifo_mean
