"""Study-spec validation: the same rules for YAML files (CLI) and protos (gRPC)."""
import pytest

from helpers import small_spec
from openautoglm.common.spec.files import load_spec_file
from openautoglm.common.spec.protos import spec_from_proto, spec_to_proto
from openautoglm.common.spec.schema import SpecError, validate_dict
from openautoglm.common.spec.templates import render, template_fields
from openautoglm.v1 import common_pb2


def test_valid_spec_round_trips_through_the_proto():
    model = validate_dict(small_spec())
    again = spec_from_proto(spec_to_proto(model))
    assert again == model
    assert again.objective.terms == {"accuracy": 0.5, "macro_f1": 0.5}


def test_defaults_fill_objective_and_model():
    spec = small_spec()
    del spec["objective"]
    model = validate_dict(spec)
    assert model.objective.terms == {"accuracy": 1.0}
    assert model.model.builtin == "tiny"


BAD = [
    ("strategy", {"strategy": "annealing"}, "unknown strategy"),
    ("search_space.templates", {"search_space": {"templates": []}}, "search space is empty"),
    ("budget.max_trials", {"budget": {"max_trials": -1}}, "greater than 0"),
    ("dataset.path", {"dataset": {"path": "/no/such/file.jsonl"}}, "not found"),
    ("dataset", {"dataset": {"text_field": "text"}}, "exactly one"),
    ("objective.terms.bleu", {"objective": {"metric": "bleu"}}, "unknown metric"),
    ("search_space.templates[0].text", {"search_space": {"templates": [{"id": "a", "text": "no slot"}]}}, "{input}"),
    ("search_space.hyperparameters", {"search_space": {"templates": [{"id": "a", "text": "{input}"}],
                                                       "hyperparameters": {"label_smoothing": {"type": "choice", "values": [0.1]}}}}, "unknown hyper-parameter"),
    ("search_space.hyperparameters.optimizer.values",
     {"search_space": {"templates": [{"id": "a", "text": "{input}"}],
                       "hyperparameters": {"optimizer": {"type": "choice", "values": ["adamw", "lion"]}}}}, "unknown optimizer 'lion'"),
    ("search_space.hyperparameters.lr_schedule.type",
     {"search_space": {"templates": [{"id": "a", "text": "{input}"}],
                       "hyperparameters": {"lr_schedule": {"type": "uniform", "low": 0, "high": 1}}}}, "takes names"),
    ("search_space.hyperparameters.dropout.high",
     {"search_space": {"templates": [{"id": "a", "text": "{input}"}],
                       "hyperparameters": {"dropout": {"type": "uniform", "low": 0.0, "high": 1.0}}}}, "must lie in [0, 1)"),
    ("search_space.hyperparameters.max_grad_norm.values",
     {"search_space": {"templates": [{"id": "a", "text": "{input}"}],
                       "hyperparameters": {"max_grad_norm": {"type": "choice", "values": [1.0, 0]}}}}, "must lie in (0, inf)"),
    ("search_space", {"search_space": {"templates": [{"id": "a", "text": "{tone} {input}"}]}}, "undefined variable"),
]


@pytest.mark.parametrize("field,override,message", BAD, ids=[b[0] for b in BAD])
def test_bad_specs_name_the_field(field, override, message):
    with pytest.raises(SpecError) as info:
        validate_dict(small_spec(**override))
    assert info.value.field == field
    assert message in info.value.message


def test_the_new_training_knobs_are_searchable():
    spec = small_spec()
    spec["search_space"]["hyperparameters"].update({
        "dropout": {"type": "uniform", "low": 0.0, "high": 0.3},
        "max_grad_norm": {"type": "choice", "values": [0.5, 1.0]},
        "lr_schedule": {"type": "choice", "values": ["linear", "cosine", "constant_with_warmup"]},
        "optimizer": {"type": "choice", "values": ["adamw", "adafactor", "sgd"]},
    })
    spec["strategy"] = "tpe"
    model = validate_dict(spec)
    assert spec_from_proto(spec_to_proto(model)) == model


def test_grid_refuses_continuous_hyperparameters():
    spec = small_spec()
    spec["search_space"]["hyperparameters"]["learning_rate"] = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
    with pytest.raises(SpecError) as info:
        validate_dict(spec)
    assert info.value.field == "search_space.hyperparameters.learning_rate.type"


def test_yaml_errors_name_file_line_and_field(tmp_path):
    path = tmp_path / "study.yaml"
    path.write_text(
        "task: classification\n"
        "dataset: {builtin: sentiment-demo}\n"
        "search_space:\n"
        "  templates:\n"
        "    - {id: a, text: 'Review: {input}'}\n"
        "strategy: annealing\n"
        "budget: {max_trials: 2}\n"
    )
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert str(info.value).startswith(f"{path}:6: strategy: unknown strategy 'annealing'")


def test_yaml_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("task: classification\nbudget: {max_trials: 2\n")
    with pytest.raises(SpecError) as info:
        load_spec_file(path)
    assert info.value.file == str(path) and info.value.line is not None


def test_proto_errors_carry_the_spec_prefix():
    spec = spec_to_proto(validate_dict(small_spec()))
    spec.budget.max_trials = 0
    with pytest.raises(SpecError) as info:
        spec_from_proto(spec)
    assert info.value.field == "spec.budget.max_trials"
    spec.task = common_pb2.TASK_TYPE_UNSPECIFIED
    with pytest.raises(SpecError) as info:
        spec_from_proto(spec)
    assert info.value.field == "spec.task"


def test_render_keeps_the_input_slot():
    assert template_fields("{a} x {input} {{literal}}") == {"a", "input"}
    assert render("{a}: {input}", {"a": "Tone"}) == "Tone: {input}"


def test_shipped_example_specs_are_valid():
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    specs = [*root.glob("examples/*.yaml"), root / "services" / "openautoglm" / "common" / "examples" / "demo.yaml"]
    assert len(specs) >= 3
    for path in specs:
        load_spec_file(path)


def test_an_objective_may_not_mix_an_unbounded_metric():
    spec = small_spec(task="generation", dataset={"builtin": "piglatin-demo"},
                      objective={"terms": {"rouge_l": 0.6, "perplexity": -0.4}})
    with pytest.raises(SpecError) as info:
        validate_dict(spec)
    assert info.value.field == "objective.terms.perplexity"
    assert "use 'fluency'" in info.value.message
    spec["objective"] = {"terms": {"accuracy": 1.0}}
    spec["task"], spec["dataset"] = "classification", {"builtin": "sentiment-demo"}
    spec["extra_objectives"] = [{"terms": {"accuracy": 1.0, "latency_ms": -0.01}}]
    spec["strategy"] = "tpe"
    with pytest.raises(SpecError) as info:
        validate_dict(spec)
    assert info.value.field == "extra_objectives[0].terms.latency_ms"
    # Bounded mixes, and an unbounded metric alone, are fine.
    validate_dict(small_spec(task="generation", dataset={"builtin": "piglatin-demo"},
                             objective={"terms": {"rouge_l": 0.6, "fluency": 0.4}}))
    validate_dict(small_spec(task="generation", dataset={"builtin": "piglatin-demo"},
                             objective={"metric": "perplexity", "direction": "minimize"}))
