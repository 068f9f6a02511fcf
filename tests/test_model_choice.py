"""A study that chooses among base models (search_space.models): the spec's checks, the search's
model dimension, the gateway's per-model memory and cost estimates and jobs, and a real study
on the mesh that trains both models."""
import json
from pathlib import Path

import pytest

from helpers import run_study, small_spec
from openautoglm.common.spec.protos import spec_from_proto, spec_to_proto, trial_model
from openautoglm.common.spec.schema import SpecError, validate_dict
from openautoglm.common.spec.warm_start import prior_params
from openautoglm.gateway.cost_model import trial_shape
from openautoglm.gateway.estimates import largest_trial_memory_mb, trial_memory_mb
from openautoglm.gateway.placement import job_for
from openautoglm.prompt_generator.replay import LocalStudy
from openautoglm.v1 import common_pb2

MODELS = [{"builtin": "tiny"}, {"builtin": "minilm"}]


def _spec(strategy="grid", **overrides):
    spec = small_spec(strategy=strategy, **overrides)
    spec["search_space"]["models"] = list(MODELS)
    return spec


def test_a_choice_of_models_round_trips_and_is_checked():
    model = validate_dict(_spec())
    assert [m.key for m in model.search_space.models] == ["tiny", "minilm"]
    proto = spec_to_proto(model)
    assert not proto.model.builtin and [m.builtin for m in proto.search_space.models] == ["tiny", "minilm"]
    assert spec_from_proto(proto) == model
    bad = [
        (_spec(model={"builtin": "minilm"}), "search_space.models", "either"),
        ({**small_spec(), "search_space": {**small_spec()["search_space"], "models": [{"builtin": "tiny"}]}},
         "search_space.models", "two or more"),
        ({**small_spec(), "search_space": {**small_spec()["search_space"], "models": MODELS + [{"builtin": "tiny"}]}},
         "search_space.models[2]", "twice"),
        ({**_spec(), "task": "generation", "dataset": {"builtin": "piglatin-demo"}, "objective": {"metric": "rouge_l"}},
         "search_space.models[1].builtin", "classification only"),
        ({**small_spec(), "search_space": {**small_spec()["search_space"],
                                           "hyperparameters": {"model": {"type": "choice", "values": ["tiny"]}}}},
         "search_space.hyperparameters", "search_space.models"),
    ]
    for spec, field, message in bad:
        with pytest.raises(SpecError) as info:
            validate_dict(spec)
        assert info.value.field == field and message in info.value.message


def test_the_search_chooses_the_model_like_any_other_dimension():
    spec = validate_dict(_spec())
    study = LocalStudy(spec)
    assert study.search.space_size == 2 * 2 * 2  # templates x epochs x models
    candidates, exhausted = study.propose(8)
    assert exhausted and {c.hyperparameters["model"] for c in candidates} == {"tiny", "minilm"}
    assert len({c.id for c in candidates}) == 8
    for strategy in ("tpe", "bandit", "rl", "random"):
        batch, _ = LocalStudy(validate_dict(_spec(strategy))).propose(4)
        assert all(c.hyperparameters["model"] in ("tiny", "minilm") for c in batch)
    # Warm-start results name their model too.
    assert prior_params(spec.search_space, "plain", {}, {"epochs": 1, "learning_rate": 0.003, "model": "minilm"})["model"] == "minilm"
    with pytest.raises(ValueError, match="not one of the search space's models"):
        prior_params(spec.search_space, "plain", {}, {"epochs": 1, "learning_rate": 0.003, "model": "gpt"})


def test_memory_cost_and_job_follow_each_candidates_model():
    spec = spec_to_proto(validate_dict(_spec()))

    def candidate(model):
        return common_pb2.Candidate(hyperparameters={"model": common_pb2.ParamValue(text=model),
                                                     "batch_size": common_pb2.ParamValue(integer=16)})

    tiny, minilm = candidate("tiny"), candidate("minilm")
    assert trial_model(spec, tiny).builtin == "tiny" and trial_model(spec, minilm).builtin == "minilm"
    assert trial_memory_mb(spec, minilm) > 3 * trial_memory_mb(spec, tiny)  # 22M parameters against 0.6M
    assert largest_trial_memory_mb(spec) == pytest.approx(trial_memory_mb(spec, minilm))
    assert trial_shape(spec, minilm).params > 10 * trial_shape(spec, tiny).params
    study = common_pb2.Study(id="s", spec=spec)
    assert job_for(study, common_pb2.Trial(id="t", candidate=minilm)).model.builtin == "minilm"


async def test_a_study_on_the_mesh_trains_each_model_it_chose(stack):
    spec = _spec(budget={"max_trials": 4}, seed=1)
    spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [1]},
                                               "learning_rate": {"type": "choice", "values": [0.0005]}}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    by_model = {}
    for trial in study.trials:
        assert trial.status == common_pb2.TRIAL_STATUS_SUCCEEDED, trial.error
        model = trial.candidate.hyperparameters["model"].text
        config = json.loads((Path(trial.artifact_path) / "config.json").read_text())
        by_model.setdefault(model, set()).add(config["model_type"])
        by_model.setdefault(f"{model} memory", set()).add(trial.memory_mb)
    assert by_model["tiny"] == {"glm"} and by_model["minilm"] == {"bert"}
    assert max(by_model["tiny memory"]) < min(by_model["minilm memory"])
