"""The trainer's fine-tuning core on CPU: it really learns, saves, stops and fails clearly."""
import json
import threading

import pytest
from safetensors.torch import load_file

from openautoglm.evaluator.metrics import evaluate
from openautoglm.trainer.core import TrialError, TrialJob, run_trial
from openautoglm.trainer.loop import TrialInterrupted


def _job(**kw):
    base = dict(study_id="s", trial_id="t", task="classification", prompt="Review: {input} Sentiment:",
                hyperparameters={"epochs": 3, "learning_rate": 3e-3}, dataset_builtin="sentiment-demo", seed=1)
    base.update(kw)
    return TrialJob(**base)


def test_classification_learns_well_above_chance(tmp_path):
    result = run_trial(_job(), tmp_path)
    values, _ = evaluate("classification", result.predictions, result.references)
    assert values["accuracy"] > 0.7  # 3 balanced labels: chance is ~0.33
    assert result.losses[-1] < result.losses[0]
    weights = load_file(tmp_path / "s" / "t" / "model.safetensors")
    assert weights and (tmp_path / "s" / "t" / "tokenizer.json").exists()


def test_training_is_reproducible_with_a_seed(tmp_path):
    a = run_trial(_job(hyperparameters={"epochs": 1}), tmp_path / "a")
    b = run_trial(_job(hyperparameters={"epochs": 1}), tmp_path / "b")
    assert a.losses == pytest.approx(b.losses, abs=1e-6)
    assert a.predictions == b.predictions


def test_generation_trains_and_generates(tmp_path):
    result = run_trial(_job(task="generation", prompt="Pig latin: {input}", dataset_builtin="piglatin-demo",
                            max_examples=80, hyperparameters={"epochs": 2, "batch_size": 8}), tmp_path)
    assert len(result.predictions) == len(result.references) == 16
    assert result.losses[-1] < result.losses[0]
    values, _ = evaluate("generation", result.predictions, result.references)
    assert 0.0 <= values["bleu"] <= 1.0


def test_a_stop_request_interrupts_between_steps(tmp_path):
    stop = threading.Event()
    stop.set()
    with pytest.raises(TrialInterrupted):
        run_trial(_job(), tmp_path, stop=stop)


def test_malformed_jsonl_fails_naming_file_and_line(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "fine", "label": "a"}) + "\n{not json\n")
    with pytest.raises(TrialError, match=rf"{data}:2: not valid JSON"):
        run_trial(_job(dataset_builtin="", dataset_path=str(data)), tmp_path)


def test_missing_field_and_bad_model_dir_fail_clearly(tmp_path):
    data = tmp_path / "data.jsonl"
    data.write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps({"text": "b"}) + "\n")
    with pytest.raises(TrialError, match=r":2: missing field 'label'"):
        run_trial(_job(dataset_builtin="", dataset_path=str(data)), tmp_path)
    with pytest.raises(TrialError, match="no config.json"):
        run_trial(_job(model_builtin="", model_path=str(tmp_path)), tmp_path)


def test_a_local_hugging_face_directory_is_fine_tuned(tmp_path):
    """Round trip: a trial's saved artifact is itself a valid local model directory."""
    first = run_trial(_job(hyperparameters={"epochs": 1}), tmp_path / "a")
    again = run_trial(_job(model_builtin="", model_path=first.artifact_path, hyperparameters={"epochs": 1}), tmp_path / "b")
    assert len(again.predictions) == len(first.predictions)


def test_the_startup_benchmark_measures_tokens_per_second_for_each_precision_the_device_runs():
    from openautoglm.trainer.core import measure_throughput
    from openautoglm.trainer.runner import Capacity

    measured = measure_throughput(seconds=0.05)
    assert set(measured) == {"fp32", "bf16"}  # fp16 needs CUDA
    assert all(value > 0 for value in measured.values())
    capacity = Capacity("t", 1, 0, 100.0, "cpu", 0, measured)
    assert capacity.speed == pytest.approx(measured["fp32"] / 10_000.0)
    assert Capacity("t", 1, 0, 100.0, "cpu", 0).speed == 1.0  # not measured yet
