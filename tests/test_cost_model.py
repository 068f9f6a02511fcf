"""The gateway's trial cost model: sensible before any trial finished, learns the cost law from
finished trials online, carries an uncertainty that shrinks with data, accounts for trainer
speeds, and reads a trial's shape from its spec; TrialCosts seeds itself from the store."""
import math
import random
import statistics

import pytest

from openautoglm.common.resources import estimate_params, model_shape
from openautoglm.gateway.cost_model import CostModel, TrialCosts, TrialShape, trial_shape
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2

TINY_PARAMS = float(estimate_params(model_shape("tiny", "")))


def _shape(rng: random.Random) -> TrialShape:
    return TrialShape(epochs=rng.choice([1, 2, 4, 8]), examples=rng.choice([60, 120, 400]), max_length=rng.choice([48, 96, 192]),
                      params=rng.choice([TINY_PARAMS, 22e6, 110e6]), batch_size=rng.choice([8, 16, 32]),
                      tuning=rng.choice(["full", "lora"]), precision=rng.choice(["fp32", "bf16"]),
                      task=rng.choice(["classification", "generation"]))


def _true_seconds(shape: TrialShape, rng: random.Random) -> float:
    """A made-up cost law the model does not know: per-token work, a LoRA and bf16 discount, a
    per-step overhead, and 10% noise."""
    tokens = shape.epochs * shape.examples * shape.max_length
    work = tokens * shape.params / 3e9 * (0.6 if shape.tuning == "lora" else 1.0) * (0.8 if shape.precision == "bf16" else 1.0)
    steps = shape.epochs * shape.examples / shape.batch_size
    return (work + 0.004 * steps) * math.exp(rng.gauss(0, 0.1))


def test_before_any_trial_the_prediction_follows_the_work():
    model = CostModel()
    base = TrialShape(epochs=2, examples=200, max_length=96, params=TINY_PARAMS, batch_size=16)
    double = TrialShape(epochs=4, examples=200, max_length=96, params=TINY_PARAMS, batch_size=16)
    ratio = model.predict(double).seconds / model.predict(base).seconds
    assert ratio == pytest.approx(2.0, rel=1e-6)
    assert model.predict(base).sd > 0


def test_it_learns_the_cost_law_online_and_grows_more_certain():
    rng = random.Random(0)
    model = CostModel()
    errors, spreads = [], []
    for _ in range(60):
        shape = _shape(rng)
        actual = _true_seconds(shape, rng)
        predicted = model.predict(shape)
        errors.append(abs(predicted.seconds - actual) / actual)
        spreads.append(predicted.sd / predicted.seconds)
        model.observe(shape, actual)
    assert statistics.median(errors[40:]) < 0.2 < statistics.median(errors[:5])
    assert statistics.median(spreads[40:]) < 0.5 * statistics.median(spreads[:5])


def test_speeds_scale_observations_and_predictions():
    shape = TrialShape(epochs=2, examples=200, max_length=96, params=TINY_PARAMS, batch_size=16)
    fast, reference = CostModel(), CostModel()
    for _ in range(10):
        fast.observe(shape, 5.0, speed=2.0)  # 5 s on a trainer twice the reference's speed
        reference.observe(shape, 10.0)
    assert fast.predict(shape).seconds == pytest.approx(reference.predict(shape).seconds)
    assert fast.predict(shape).on(2.0).seconds == pytest.approx(fast.predict(shape).seconds / 2)
    before = fast.observed
    fast.observe(shape, float("nan"))
    fast.observe(shape, 0.0)
    assert fast.observed == before  # nothing learnt from a trial with no duration


def test_a_trials_shape_is_read_from_the_spec_and_candidate():
    spec = common_pb2.StudySpec(task=common_pb2.TASK_TYPE_GENERATION,
                                dataset=common_pb2.DatasetSpec(builtin="piglatin-demo", max_examples=50),
                                model=common_pb2.ModelSpec(builtin="tiny", tuning="lora"),
                                training=common_pb2.TrainingOptions(precision="bf16", max_length=64))
    candidate = common_pb2.Candidate(hyperparameters={"epochs": common_pb2.ParamValue(integer=5)})
    shape = trial_shape(spec, candidate)
    assert (shape.epochs, shape.examples, shape.max_length, shape.tuning, shape.precision, shape.task) == \
        (5.0, 50, 64, "lora", "bf16", "generation")
    assert shape.batch_size == 16 and shape.params == TINY_PARAMS  # defaults and the model's size
    whole = trial_shape(common_pb2.StudySpec(dataset=common_pb2.DatasetSpec(builtin="sentiment-demo")), candidate)
    assert whole.examples > 50 and whole.task == "classification"


def test_trial_costs_seed_from_the_trials_the_store_recorded(tmp_path):
    store = StudyStore(tmp_path / "gateway.sqlite")
    spec = common_pb2.StudySpec(dataset=common_pb2.DatasetSpec(builtin="sentiment-demo"))
    store.insert_study(common_pb2.Study(id="s1", spec=spec, state=common_pb2.STUDY_STATE_COMPLETED), "", "")
    candidate = common_pb2.Candidate(hyperparameters={"epochs": common_pb2.ParamValue(integer=2)})
    for number in range(8):
        store.insert_trial(common_pb2.Trial(id=f"s1-t{number}", study_id="s1", number=number, candidate=candidate,
                                            status=common_pb2.TRIAL_STATUS_SUCCEEDED, actual_seconds=30.0, worker_speed=1.0))
    store.insert_trial(common_pb2.Trial(id="s1-t9", study_id="s1", number=9, candidate=candidate,
                                        status=common_pb2.TRIAL_STATUS_FAILED, actual_seconds=1.0))
    assert len(store.trained_trials(100)) == 8
    seeded = TrialCosts(store).predict(spec, candidate).seconds
    assert seeded == pytest.approx(30.0, rel=0.1)
    assert CostModel().predict(trial_shape(spec, candidate)).seconds != pytest.approx(30.0, rel=0.1)


def test_scoring_seconds_come_from_the_studys_own_trials_then_everyones(tmp_path):
    from openautoglm.gateway.cost_model import DEFAULT_SCORE_SECONDS

    store = StudyStore(tmp_path / "gateway.sqlite")
    spec = common_pb2.StudySpec(dataset=common_pb2.DatasetSpec(builtin="sentiment-demo"))
    store.insert_study(common_pb2.Study(id="s1", spec=spec, state=common_pb2.STUDY_STATE_COMPLETED), "", "")
    for number, seconds in enumerate([4.0, 5.0, 60.0]):
        store.insert_trial(common_pb2.Trial(id=f"s1-t{number}", study_id="s1", number=number, status=common_pb2.TRIAL_STATUS_SUCCEEDED,
                                            actual_seconds=30.0, worker_speed=1.0, score_seconds=seconds))
    costs = TrialCosts(store)
    assert costs.scoring_seconds("s1") == 5.0  # the median: one slow scoring does not set it
    assert costs.scoring_seconds("s2") == 5.0  # no history of its own: every study's
    costs.record(spec, common_pb2.Trial(id="s2-t0", study_id="s2", actual_seconds=10.0, score_seconds=0.5))
    assert costs.scoring_seconds("s2") == 0.5
    assert TrialCosts(StudyStore(tmp_path / "empty.sqlite")).scoring_seconds("s1") == DEFAULT_SCORE_SECONDS


@pytest.mark.parametrize("pruner, rungs", [("", 1), ("median", 3)])
def test_a_queued_trial_goes_to_the_scheduler_as_the_chain_of_its_stages(pruner, rungs):
    from openautoglm.gateway.placement import trial_stages

    spec = common_pb2.StudySpec(pruner=pruner)
    trial = common_pb2.Trial(id="s-t1", study_id="s", memory_mb=900, candidate=common_pb2.Candidate(
        hyperparameters={"epochs": common_pb2.ParamValue(integer=3)}))
    tasks, edges = trial_stages(trial, spec, 30.0, 2.0)
    assert [t.kind for t in tasks] == ["train"] * rungs + ["evaluate"]
    assert tasks[0].id == "s-t1"  # the stage a placement dispatches is the trial itself
    assert sum(t.compute_seconds for t in tasks[:-1]) == pytest.approx(30.0)
    assert tasks[-1].pool == "evaluator" and tasks[-1].compute_seconds == 2.0 and tasks[-1].memory_mb == 0
    assert all(t.memory_mb == 900 for t in tasks[:-1]) and {t.study_id for t in tasks} == {"s"}
    assert [(e.from_task, e.to_task) for e in edges] == [(a.id, b.id) for a, b in zip(tasks, tasks[1:])]
