"""An honest answer: train / validation / test splits, the search selecting on validation only,
the winner scored once on the test split when its study completes, and `final_repeats`
retraining it with more seeds for each metric's mean and standard deviation."""
import statistics

import pytest

from helpers import run_study, small_spec
from openautoglm.common import datasets
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import SpecError, validate_dict
from openautoglm.gateway.records import proposal_view, proposals_due, pruning_view
from openautoglm.gateway.results import best_trial, final_report
from openautoglm.trainer.core import TrialError, TrialJob, run_trial
from openautoglm.trainer.final_scores import predict_test_split
from openautoglm.v1 import common_pb2

S = common_pb2


def _splits(seed, test_fraction=0.2, max_examples=0, builtin="sentiment-demo", task="classification"):
    return datasets.load_splits(builtin, "", task, max_examples=max_examples, seed=seed, test_fraction=test_fraction)


def test_the_test_split_is_fixed_by_the_data_and_never_overlaps():
    a, b = _splits(seed=1), _splits(seed=2)
    assert a.test == b.test  # the same test examples whatever the seed ...
    assert a.validation != b.validation  # ... while train and validation reshuffle
    for splits in (a, b):
        train, validation, test = map(set, (splits.train, splits.validation, splits.test))
        # The demo set repeats some examples: a repeat lands in the test split with its twin or not at all.
        assert not (train & test) and not (validation & test)
        assert len(splits.train) + len(splits.validation) + len(splits.test) == 600
    assert 0.15 < len(a.test) / 600 < 0.25
    # Without a test split, the old two-way split, example for example.
    old_train, old_held_out = datasets.load_split("sentiment-demo", "", "classification", seed=3)
    plain = _splits(seed=3, test_fraction=0.0)
    assert (plain.train, plain.validation, plain.test) == (old_train, old_held_out, [])
    # max_examples caps what is used and keeps the test split in proportion.
    capped = _splits(seed=1, max_examples=100)
    assert len(capped.train) + len(capped.validation) == 100 and len(capped.test) == 25
    assert set(capped.test) <= set(a.test)


def test_split_fractions_are_checked_and_builtins_keep_their_fixed_split(tmp_path):
    spec = small_spec()
    spec["dataset"] = {"builtin": "sentiment-demo", "test_fraction": 0.3}
    with pytest.raises(SpecError) as info:
        validate_dict(spec)
    assert info.value.field == "dataset.test_fraction" and "fixed test split" in info.value.message
    path = tmp_path / "data.jsonl"
    path.write_text("".join(f'{{"text": "t{i}", "label": "{i % 2}"}}\n' for i in range(50)))
    spec["dataset"] = {"path": str(path), "test_fraction": 1.0}
    with pytest.raises(SpecError) as info:
        validate_dict(spec)
    assert info.value.field == "dataset.test_fraction"
    spec["dataset"]["test_fraction"] = 0.3
    assert validate_dict(spec).dataset.test_fraction == 0.3
    with pytest.raises(SpecError) as info:
        validate_dict(small_spec(final_repeats=11))
    assert info.value.field == "final_repeats"
    with pytest.raises(SpecError) as info:
        validate_dict(small_spec(strategy="tpe", final_repeats=2,
                                 extra_objectives=[{"metric": "latency_ms", "direction": "minimize"}]))
    assert info.value.field == "final_repeats"
    model = validate_dict(small_spec(final_repeats=3))
    from openautoglm.common.spec.protos import spec_from_proto
    assert spec_from_proto(spec_to_proto(model)) == model and spec_to_proto(model).dataset.test_fraction == 0.2


def _job(**kw) -> TrialJob:
    base = dict(study_id="s", trial_id="t", task="classification", prompt="Review: {input} Sentiment:",
                hyperparameters={"epochs": 1, "learning_rate": 3e-3, "batch_size": 16},
                dataset_builtin="sentiment-demo", max_examples=160, seed=5, test_fraction=0.2)
    base.update(kw)
    return TrialJob(**base)


def test_a_trial_trains_without_the_test_split_and_its_saved_model_predicts_it(tmp_path):
    job = _job()
    result = run_trial(job, tmp_path)
    splits = _splits(seed=5, max_examples=160)
    assert result.references == [ex.label for ex in splits.validation]  # scored on validation
    tested = predict_test_split(job, tmp_path / "s" / "t")
    assert tested.references == [ex.label for ex in splits.test] and len(tested.predictions) == len(splits.test) == 40
    with pytest.raises(TrialError, match="no test split"):
        predict_test_split(_job(test_fraction=0.0), tmp_path / "s" / "t")


def test_a_generation_trials_test_scores_include_its_bounded_fluency(tmp_path):
    job = _job(task="generation", prompt="Pig latin: {input}", dataset_builtin="piglatin-demo", max_examples=60,
               hyperparameters={"epochs": 1, "batch_size": 8})
    run_trial(job, tmp_path)
    tested = predict_test_split(job, tmp_path / "s" / "t")
    assert len(tested.predictions) == 15 and 0 < tested.model_metrics["fluency"] <= 1
    assert tested.model_metrics["fluency"] == pytest.approx(1 / tested.model_metrics["perplexity"])


def _trial(number, value, status=S.TRIAL_STATUS_SUCCEEDED, repeat_of="", test=None, **metrics):
    trial = S.Trial(id=f"t{number}", number=number, status=status, objective_value=value, repeat_of=repeat_of,
                    metrics={"accuracy": value, **metrics}, candidate=S.Candidate(id=f"c{number}"))
    if test is not None:
        trial.test_metrics.update({"accuracy": test})
        trial.test_objective_value = test
        trial.test_examples = 40
    return trial


def test_the_final_report_sets_validation_beside_test_with_the_spread_over_seeds():
    study = S.Study(spec=S.StudySpec(objective=S.Objective(direction=S.DIRECTION_MAXIMIZE), final_repeats=2))
    study.trials.extend([_trial(0, 0.70), _trial(1, 0.90, test=0.80), _trial(2, 0.60),
                         # repeats score higher, but never compete for the win
                         _trial(3, 0.95, repeat_of="t1", test=0.84), _trial(4, 0.85, repeat_of="t1", test=0.76)])
    assert best_trial(study).id == "t1"
    report = final_report(study)
    assert report.best_trial_id == "t1" and report.seeds == 3 and report.test_examples == 40
    assert report.validation_metrics["accuracy"] == 0.90 and report.test_metrics["accuracy"] == 0.80
    assert report.validation_spread["accuracy"].mean == pytest.approx(statistics.fmean([0.90, 0.95, 0.85]))
    assert report.validation_spread["accuracy"].sd == pytest.approx(statistics.stdev([0.90, 0.95, 0.85]))
    assert report.test_spread["objective"].mean == pytest.approx(0.80)
    assert report.test_spread["accuracy"].sd == pytest.approx(0.04)
    # A failed repeat is left out of the spread; a missing test score leaves the test spread out.
    study.trials[4].status = S.TRIAL_STATUS_FAILED
    study.trials[3].ClearField("test_metrics")
    report = final_report(study, "t3: gave up")
    assert report.seeds == 2 and "accuracy" in report.validation_spread and not report.test_spread
    assert report.error == "t3: gave up"


def test_the_search_never_sees_the_final_repeats():
    study = S.Study(window=2, spec=S.StudySpec(budget=S.Budget(max_trials=3), final_repeats=1))
    study.trials.extend([_trial(0, 0.5), _trial(1, 0.6), _trial(2, 0.4)])
    assert [r.number for r in proposal_view(study, 3)] == [0, 1, 2]
    study.trials.append(_trial(3, 0.7, status=S.TRIAL_STATUS_QUEUED, repeat_of="t1"))
    assert [r.number for r in proposal_view(study, 4)] == [0, 1, 2]
    assert [r.number for r in pruning_view(study)] == [0, 1, 2]
    assert proposals_due(study) == 0


async def test_a_study_reports_its_winners_test_metrics_and_their_spread_over_seeds(stack):
    spec = small_spec(strategy="random", budget={"max_trials": 3}, seed=5, final_repeats=2)
    spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [1, 2]},
                                               "learning_rate": {"type": "choice", "values": [0.003]}}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == S.STUDY_STATE_COMPLETED, study.error
    searched = [t for t in study.trials if not t.repeat_of]
    repeats = [t for t in study.trials if t.repeat_of]
    assert len(searched) == 3 and len(repeats) == 2
    best = max((t for t in searched if t.status == S.TRIAL_STATUS_SUCCEEDED), key=lambda t: t.objective_value)
    assert study.best_trial_id == best.id
    assert {t.repeat_of for t in repeats} == {best.id} and sorted(t.seed_offset for t in repeats) == [1, 2]
    assert all(t.candidate.id == best.candidate.id and t.status == S.TRIAL_STATUS_SUCCEEDED for t in repeats)
    final = study.final
    assert final.best_trial_id == best.id and final.seeds == 3 and not final.error, final.error
    assert dict(final.validation_metrics) == dict(best.metrics)
    assert set(final.test_metrics) >= {"accuracy", "macro_f1"} and final.test_examples > 0
    assert final.test_objective == best.test_objective_value
    for spread in (final.validation_spread, final.test_spread):
        assert 0 <= spread["accuracy"].mean <= 1 and spread["accuracy"].sd >= 0
    # Test scores exist only for the winner and its repeats: the search never had them.
    assert all(not t.test_metrics for t in searched if t.id != best.id)
    assert all(t.test_metrics for t in [best, *repeats])
