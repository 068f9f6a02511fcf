"""The trainer's gRPC-free runner: the torchrun (DDP) path behaves like the in-process one.

Two gloo processes on CPU stand in for a multi-GPU trainer: the same `torch.distributed.run`
launch, the same ddp.py, the same per-step agreement between ranks.
"""
import pytest

from openautoglm.trainer.core import TrialError, TrialJob
from openautoglm.trainer.loop import TrialPruned
from openautoglm.trainer.runner import TrialRunner


def _job(**kw):
    base = dict(study_id="s", trial_id="t", task="classification", prompt="Review: {input} Sentiment:",
                hyperparameters={"epochs": 4, "learning_rate": 3e-3, "batch_size": 16}, dataset_builtin="sentiment-demo",
                max_examples=160, seed=3, report_intermediate=True)
    base.update(kw)
    return TrialJob(**base)


def _runner(tmp_path, processes: int, memory_mb: float = 1e6) -> TrialRunner:
    return TrialRunner("trainer-test", slots=1, memory_per_slot_mb=memory_mb, processes=processes,
                       artifacts=tmp_path / "artifacts", checkpoints=tmp_path / "checkpoints")


@pytest.mark.parametrize("processes", [1, 2])
async def test_intermediate_scores_reach_the_caller_and_a_stop_request_prunes(tmp_path, monkeypatch, processes):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runner = _runner(tmp_path, processes)
    scores: list[tuple[int, float]] = []

    def on_intermediate(epoch: int, value: float) -> None:
        scores.append((epoch, value))
        runner.request_stop("t")  # the pruner's answer after the first epoch

    with pytest.raises(TrialPruned) as pruned:
        await runner.run(_job(), lambda *_: None, on_intermediate)
    assert scores and scores[0][0] == 1 and 0.0 <= scores[0][1] <= 1.0
    steps_per_epoch = 128 // 16  # 160 examples, 20% held out, batch 16
    assert steps_per_epoch <= pruned.value.step < 4 * steps_per_epoch
    assert runner.busy == 0 and not runner.prune_flags


@pytest.mark.parametrize("processes", [1, 2])
async def test_a_trial_larger_than_the_memory_budget_fails_before_training(tmp_path, monkeypatch, processes):
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    runner = _runner(tmp_path, processes, memory_mb=1.0)
    with pytest.raises(TrialError, match="MiB but this trainer has"):
        await runner.run(_job(), lambda *_: None)


async def test_a_stop_request_before_the_trial_starts_prunes_it_at_once(tmp_path):
    runner = _runner(tmp_path, 1)
    runner.request_stop("t")
    with pytest.raises(TrialPruned) as pruned:
        await runner.run(_job(), lambda *_: None)
    assert pruned.value.step == 0


def test_a_stop_during_the_warm_up_ends_it_without_measuring(tmp_path):
    # The interpreter joins the training thread before a stopped trainer's process can exit: a
    # warm-up that ran on after the stop kept the process alive past its grace (seen under load).
    runner = _runner(tmp_path, 1)
    runner.stop_event.set()
    runner.start_warm_up().result(timeout=120)
    assert runner.tokens_per_second == {}  # it left at its first training step
    runner.close()
