"""The study spec: one pydantic model that validates what users write (YAML/JSON) and what gRPC
clients send (`StudySpec` protos), with errors that name the offending field.

The CLI reads YAML (`load_spec_file`: errors name the file, line and field); the gateway
converts the proto (`spec_from_proto`: errors become INVALID_ARGUMENT naming the field). Both end
in the same `StudySpecModel`, so the two paths cannot disagree about what is valid.
"""
from __future__ import annotations

import hashlib
import json
import string
from pathlib import Path
from typing import Any, Literal, Union

import yaml
from importlib.metadata import entry_points

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from openautoglm.common import datasets
from openautoglm.v1 import common_pb2

STRATEGIES = ("grid", "random", "tpe", "cmaes", "bandit", "rl")
BUILTIN_MODELS = ("tiny", "minilm")
SCORER_ENTRY_POINTS = "openautoglm.scorers"
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
}
# What the trainer uses for a hyper-parameter the search space leaves out (the gateway's memory
# and cost estimates read the same values).
DEFAULT_HYPERPARAMETERS = {
    "learning_rate": 3e-3,
    "epochs": 3,
    "batch_size": 16,
    "weight_decay": 0.0,
    "warmup_ratio": 0.1,
    "few_shot": 0,
}
# Longest input in tokens when training.max_length is not given.
DEFAULT_MAX_LENGTH = 96
# Prompt dimensions the search adds to the template variables when instructions are given.
INSTRUCTION_DIMENSIONS = ("instruction_text", "instruction_position")
# Built-in metrics per task (the evaluator's registry must agree; a test checks it).
METRICS_BY_TASK = {
    "classification": ("accuracy", "macro_f1"),
    "generation": ("bleu", "chrf", "rouge_l", "exact_match", "perplexity", "embedding_similarity"),
}
# Measured by the trainer on the trained model, for any task (multi-objective trade-offs).
MODEL_COST_METRICS = ("params_m", "latency_ms")
METRICS_BY_TASK = {task: names + MODEL_COST_METRICS for task, names in METRICS_BY_TASK.items()}
DEFAULT_METRIC = {"classification": "accuracy", "generation": "rouge_l"}
INPUT_SLOT = "input"


class SpecError(ValueError):
    """A spec problem: `field` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str, line: int | None = None, file: str | None = None):
        self.field, self.message, self.line, self.file = field, message, line, file
        self.loc: tuple = ()
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{field}: {message}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DatasetModel(_Strict):
    builtin: str = ""
    path: str = ""
    text_field: str = "text"
    label_field: str = ""
    eval_fraction: float = Field(0.2, gt=0.0, lt=1.0)
    max_examples: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetModel":
        if bool(self.builtin) == bool(self.path):
            raise ValueError("give exactly one of 'builtin' or 'path'")
        if self.builtin and self.builtin not in datasets.BUILTIN:
            raise ValueError(
                f"unknown built-in dataset {self.builtin!r}; expected one of {', '.join(datasets.BUILTIN)}"
            )
        return self

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str) -> str:
        if value and not Path(value).expanduser().is_file():
            raise ValueError(f"dataset file not found: {value}")
        return value


class ModelModel(_Strict):
    builtin: str = ""
    path: str = ""
    tuning: Literal["full", "lora", "prompt_tuning"] = "full"

    @model_validator(mode="after")
    def _one_source(self) -> "ModelModel":
        if bool(self.builtin) == bool(self.path):
            raise ValueError("give exactly one of 'builtin' or 'path'")
        if self.builtin and self.builtin not in BUILTIN_MODELS:
            raise ValueError(f"unknown built-in model {self.builtin!r}; expected one of {', '.join(BUILTIN_MODELS)}")
        if self.path and not Path(self.path).expanduser().is_dir():
            raise ValueError(f"model directory not found: {self.path}")
        return self


Scalar = Union[bool, int, float, str]


class HyperParameterModel(_Strict):
    type: Literal["choice", "uniform", "loguniform", "int"]
    values: list[Scalar] = Field(default_factory=list)
    low: float | None = None
    high: float | None = None
    step: int | None = None
    # Conditional: {other_param: [values]}: searched only when other_param takes one of them.
    when: dict[str, list[Scalar]] | None = None

    @model_validator(mode="after")
    def _domain(self) -> "HyperParameterModel":
        if self.type == "choice":
            if not self.values:
                raise ValueError("a 'choice' needs a non-empty 'values' list")
            return self
        if self.low is None or self.high is None:
            raise ValueError(f"a '{self.type}' needs 'low' and 'high'")
        if self.low > self.high:
            raise ValueError(f"'low' ({self.low}) is above 'high' ({self.high})")
        if self.type == "loguniform" and self.low <= 0:
            raise ValueError("a 'loguniform' needs 'low' > 0")
        if self.type == "int":
            if self.low != int(self.low) or self.high != int(self.high):
                raise ValueError("an 'int' needs whole-number 'low' and 'high'")
            if self.step is not None and self.step <= 0:
                raise ValueError("'step' must be positive")
        return self


class TemplateModel(_Strict):
    id: str = Field(min_length=1)
    text: str = Field(min_length=1)

    @field_validator("text")
    @classmethod
    def _has_input_slot(cls, value: str) -> str:
        fields = template_fields(value)
        if INPUT_SLOT not in fields:
            raise ValueError("the template must contain the '{input}' slot for the example text")
        return value


class SearchSpaceModel(_Strict):
    templates: list[TemplateModel] = Field(default_factory=list)
    variables: dict[str, list[str]] = Field(default_factory=dict)
    hyperparameters: dict[str, HyperParameterModel] = Field(default_factory=dict)
    # Instructions tried before or after each rendered template (a searched dimension each).
    instructions: list[str] = Field(default_factory=list)
    instruction_position: list[Literal["before", "after"]] = Field(default_factory=lambda: ["before"])

    @field_validator("instruction_position")
    @classmethod
    def _positions(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("give at least one of 'before', 'after'")
        return list(dict.fromkeys(value))

    @field_validator("templates")
    @classmethod
    def _templates(cls, value: list[TemplateModel]) -> list[TemplateModel]:
        if not value:
            raise ValueError("the search space is empty: give at least one prompt template")
        ids = [t.id for t in value]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"template ids must be unique; repeated: {', '.join(dupes)}")
        return value

    @field_validator("variables")
    @classmethod
    def _variables(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for name, values in value.items():
            if not values:
                raise ValueError(f"variable {name!r} has no values")
            if name == INPUT_SLOT or name in INSTRUCTION_DIMENSIONS:
                raise ValueError(f"{name!r} is a reserved name")
        return value

    @field_validator("hyperparameters")
    @classmethod
    def _known_hyperparameters(cls, value: dict[str, HyperParameterModel]) -> dict[str, HyperParameterModel]:
        unknown = sorted(set(value) - set(TRAINER_HYPERPARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter(s) {', '.join(unknown)}; the trainer understands "
                f"{', '.join(sorted(TRAINER_HYPERPARAMETERS))}"
            )
        return value

    @model_validator(mode="after")
    def _conditions(self) -> "SearchSpaceModel":
        names = list(self.hyperparameters)
        for i, (name, hp) in enumerate(self.hyperparameters.items()):
            if hp.when is None:
                continue
            if len(hp.when) != 1:
                raise _FieldError(("hyperparameters", name, "when"), "name exactly one hyper-parameter")
            (parent, values), = hp.when.items()
            other = self.hyperparameters.get(parent)
            if other is None or names.index(parent) > i:
                raise _FieldError(("hyperparameters", name, "when"), f"{parent!r} must be a hyper-parameter declared before {name!r}")
            if other.type != "choice" or other.when is not None:
                raise _FieldError(("hyperparameters", name, "when"), f"{parent!r} must be an unconditional 'choice'")
            bad = [v for v in values if v not in other.values]
            if not values or bad:
                raise _FieldError(("hyperparameters", name, "when"), f"values {bad or values} are not choices of {parent!r}")
        return self

    @model_validator(mode="after")
    def _variables_defined(self) -> "SearchSpaceModel":
        for template in self.templates:
            missing = sorted(template_fields(template.text) - {INPUT_SLOT} - set(self.variables))
            if missing:
                raise ValueError(
                    f"template {template.id!r} uses undefined variable(s): {', '.join(missing)}"
                )
        return self


class ObjectiveModel(_Strict):
    metric: str = ""
    terms: dict[str, float] = Field(default_factory=dict)
    direction: Literal["maximize", "minimize"] = "maximize"

    @model_validator(mode="after")
    def _one_form(self) -> "ObjectiveModel":
        if self.metric and self.terms:
            raise ValueError("give either 'metric' or 'terms', not both")
        if self.metric:
            self.terms = {self.metric: 1.0}
            self.metric = ""
        return self


class TrainingModel(_Strict):
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    gradient_checkpointing: bool = False
    gradient_accumulation_steps: int = Field(1, ge=1, le=1024)
    checkpoint_every_steps: int = Field(20, ge=1)
    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=8, le=8192)
    # MiB one trial needs on a trainer slot; 0 = estimated (common/resources.py).
    memory_mb: float = Field(0.0, ge=0)


class WarmStartModel(_Strict):
    from_study_id: str = ""
    trials_path: str = ""

    @model_validator(mode="after")
    def _one_source(self) -> "WarmStartModel":
        if self.from_study_id and self.trials_path:
            raise ValueError("give either 'from_study_id' or 'trials_path', not both")
        if self.trials_path and not Path(self.trials_path).expanduser().is_file():
            raise ValueError(f"prior-trials file not found: {self.trials_path}")
        return self


class BudgetModel(_Strict):
    max_trials: int = Field(gt=0)
    max_wall_seconds: float = Field(0.0, ge=0.0)
    parallelism: int = Field(0, ge=0)


class StudySpecModel(_Strict):
    name: str = ""
    task: Literal["classification", "generation"]
    dataset: DatasetModel
    model: ModelModel = Field(default_factory=lambda: ModelModel(builtin="tiny"))
    search_space: SearchSpaceModel
    objective: ObjectiveModel = Field(default_factory=ObjectiveModel)
    strategy: str = "tpe"
    budget: BudgetModel
    seed: int = 0
    training: TrainingModel = Field(default_factory=TrainingModel)
    warm_start: WarmStartModel = Field(default_factory=WarmStartModel)
    pruner: Literal["none", "median", "successive_halving"] = "none"
    extra_objectives: list[ObjectiveModel] = Field(default_factory=list)

    @field_validator("strategy")
    @classmethod
    def _strategy(cls, value: str) -> str:
        if value not in STRATEGIES:
            raise ValueError(f"unknown strategy {value!r}; expected one of {', '.join(STRATEGIES)}")
        return value

    @model_validator(mode="after")
    def _cross_checks(self, info: ValidationInfo) -> "StudySpecModel":
        if not self.objective.terms:
            self.objective.terms = {DEFAULT_METRIC[self.task]: 1.0}
        known = (info.context or {}).get("metrics", {}).get(self.task) or known_metrics(self.task)
        if self.model.builtin == "minilm" and self.task != "classification":
            raise _FieldError(("model", "builtin"), "the MiniLM encoder does classification only")
        for i, extra in enumerate(self.extra_objectives):
            if not extra.terms:
                raise _FieldError(("extra_objectives", i, "terms"), "give 'metric' or 'terms'")
            for metric in extra.terms:
                if metric not in known:
                    raise _FieldError(("extra_objectives", i, "terms", metric),
                                      f"unknown metric {metric!r} for a {self.task} task; expected one of {', '.join(known)}")
        if self.extra_objectives:
            if self.strategy not in ("grid", "random", "tpe"):
                raise _FieldError(("strategy",), f"a multi-objective study needs grid, random or tpe, not {self.strategy!r}")
            if self.pruner != "none":
                raise _FieldError(("pruner",), "pruning is for single-objective studies")
            if self.warm_start.from_study_id or self.warm_start.trials_path:
                raise _FieldError(("warm_start",), "warm start is for single-objective studies")
        for metric in self.objective.terms:
            if metric not in known:
                raise _FieldError(
                    ("objective", "terms", metric),
                    f"unknown metric {metric!r} for a {self.task} task; expected one of {', '.join(known)}",
                )
        if self.strategy == "grid":
            for name, hp in self.search_space.hyperparameters.items():
                if hp.when is not None:
                    raise _FieldError(("search_space", "hyperparameters", name, "when"),
                                      "the grid strategy cannot search conditional parameters")
                if hp.type in ("uniform", "loguniform"):
                    raise _FieldError(
                        ("search_space", "hyperparameters", name, "type"),
                        f"the grid strategy needs discrete values; '{hp.type}' is continuous (use 'choice' or 'int')",
                    )
        return self


class _FieldError(ValueError):
    """Raised inside validators to point at a deeper field than the validator's own."""

    def __init__(self, loc: tuple, message: str):
        super().__init__(message)
        self.loc = loc


def known_metrics(task: str) -> tuple[str, ...]:
    """Built-in metrics of a task plus the user scorers installed here (entry-point names)."""
    plugins = tuple(ep.name for ep in entry_points(group=SCORER_ENTRY_POINTS))
    return METRICS_BY_TASK[task] + plugins


def template_fields(text: str) -> set[str]:
    """The `{names}` a template uses (format-string syntax; `{{` escapes a brace)."""
    try:
        return {name for _, name, _, _ in string.Formatter().parse(text) if name}
    except ValueError as err:
        raise ValueError(f"malformed template: {err}") from None


def render(text: str, values: dict[str, str], keep_input: bool = True) -> str:
    """Fill a template's variables; with keep_input the '{input}' slot stays for the example."""
    mapping = dict(values)
    if keep_input:
        mapping[INPUT_SLOT] = "{" + INPUT_SLOT + "}"
    return text.format_map(mapping)


def fill_input(prompt: str, text: str) -> str:
    """Put one example's text into a rendered prompt's '{input}' slot (nothing else is parsed)."""
    return prompt.replace("{" + INPUT_SLOT + "}", text)


# --- validation entry points ------------------------------------------------------------------


def validate_dict(data: Any, metrics: dict[str, list[str]] | None = None) -> StudySpecModel:
    """Validate a plain dict (from YAML/JSON); raises SpecError naming the first bad field.

    `metrics` (task -> names) is what the evaluator serves; default: built-ins + local plugins.
    """
    if not isinstance(data, dict):
        raise SpecError("spec", "the spec must be a mapping (YAML/JSON object)")
    try:
        return StudySpecModel.model_validate(data, context={"metrics": metrics or {}})
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        ctx_err = first.get("ctx", {}).get("error")
        if isinstance(ctx_err, _FieldError):
            loc = loc + ctx_err.loc  # the validator's own place, then the field inside it
        message = first["msg"].removeprefix("Value error, ")
        raise _spec_error(loc, message) from None


def _spec_error(loc: tuple, message: str) -> SpecError:
    error = SpecError(_dotted(loc) or "spec", message)
    error.loc = loc
    return error


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_spec_file(path: str | Path) -> StudySpecModel:
    """Read a YAML or JSON spec; errors name the file, the line and the field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise SpecError("spec", f"cannot read spec file: {err.strerror}", file=str(path)) from None
    try:
        root = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise SpecError(
            "spec", f"not valid YAML/JSON: {getattr(err, 'problem', err)}",
            line=mark.line + 1 if mark else None, file=str(path),
        ) from None
    try:
        return validate_dict(data)
    except SpecError as err:
        err.file = str(path)
        err.line = _line_of(root, getattr(err, "loc", ()))
        err.args = (str(SpecError(err.field, err.message, err.line, err.file)),)
        raise


def _line_of(node, loc: tuple) -> int | None:
    """1-based line of the deepest YAML node along `loc` that exists."""
    line = node.start_mark.line + 1 if node is not None else None
    for key in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == str(key)), None)
            key_node = next((k for k, v in node.value if k.value == str(key)), None)
            if match is None:
                break
            line, node = key_node.start_mark.line + 1, match
        elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
            node = node.value[key]
            line = node.start_mark.line + 1
        else:
            break
    return line


# --- proto conversion -------------------------------------------------------------------------

_TASKS = {
    "classification": common_pb2.TASK_TYPE_CLASSIFICATION,
    "generation": common_pb2.TASK_TYPE_GENERATION,
}
_DIRECTIONS = {"maximize": common_pb2.DIRECTION_MAXIMIZE, "minimize": common_pb2.DIRECTION_MINIMIZE}


def param_to_proto(value: Scalar) -> common_pb2.ParamValue:
    if isinstance(value, bool):
        return common_pb2.ParamValue(flag=value)
    if isinstance(value, int):
        return common_pb2.ParamValue(integer=value)
    if isinstance(value, float):
        return common_pb2.ParamValue(number=value)
    return common_pb2.ParamValue(text=str(value))


def param_from_proto(value: common_pb2.ParamValue) -> Scalar | None:
    kind = value.WhichOneof("kind")
    return getattr(value, kind) if kind else None


def spec_to_proto(model: StudySpecModel) -> common_pb2.StudySpec:
    space = model.search_space
    hps = []
    for name, hp in space.hyperparameters.items():
        msg = common_pb2.HyperParameter(name=name)
        if hp.type == "choice":
            msg.choice.values.extend(param_to_proto(v) for v in hp.values)
        elif hp.type == "uniform":
            msg.uniform.CopyFrom(common_pb2.RealDomain(low=hp.low, high=hp.high))
        elif hp.type == "loguniform":
            msg.log_uniform.CopyFrom(common_pb2.RealDomain(low=hp.low, high=hp.high))
        else:
            msg.int_range.CopyFrom(common_pb2.IntDomain(low=int(hp.low), high=int(hp.high), step=hp.step or 1))
        if hp.when:
            (parent, values), = hp.when.items()
            msg.when_param = parent
            msg.when_values.extend(param_to_proto(v) for v in values)
        hps.append(msg)
    return common_pb2.StudySpec(
        name=model.name,
        task=_TASKS[model.task],
        dataset=common_pb2.DatasetSpec(**model.dataset.model_dump()),
        model=common_pb2.ModelSpec(**model.model.model_dump()),
        search_space=common_pb2.SearchSpace(
            templates=[common_pb2.PromptTemplate(id=t.id, text=t.text) for t in space.templates],
            variables=[common_pb2.TemplateVariable(name=k, values=v) for k, v in space.variables.items()],
            hyperparameters=hps,
            instructions=space.instructions,
            instruction_positions=space.instruction_position,
        ),
        objective=_objective_to_proto(model.objective),
        strategy=model.strategy,
        budget=common_pb2.Budget(**model.budget.model_dump()),
        seed=model.seed,
        training=common_pb2.TrainingOptions(**model.training.model_dump()),
        warm_start=common_pb2.WarmStart(**model.warm_start.model_dump()),
        pruner=model.pruner,
        extra_objectives=[_objective_to_proto(o) for o in model.extra_objectives],
    )


def _objective_to_proto(objective: "ObjectiveModel") -> common_pb2.Objective:
    return common_pb2.Objective(
        terms=[common_pb2.ObjectiveTerm(metric=m, weight=w) for m, w in objective.terms.items()],
        direction=_DIRECTIONS[objective.direction],
    )


def _objective_from_proto(objective: common_pb2.Objective) -> dict:
    """The inverse of _objective_to_proto (an unset direction means maximize)."""
    direction = {v: k for k, v in _DIRECTIONS.items()}.get(objective.direction, "maximize")
    return {"terms": objective_terms(objective), "direction": direction}


def spec_from_proto(spec: common_pb2.StudySpec, metrics: dict[str, list[str]] | None = None) -> StudySpecModel:
    """Validate a gRPC client's spec; raises SpecError with the proto field path."""
    task = task_name(spec.task)
    if not task:
        raise SpecError("spec.task", "set task to TASK_TYPE_CLASSIFICATION or TASK_TYPE_GENERATION")
    hps: dict[str, Any] = {}
    for i, hp in enumerate(spec.search_space.hyperparameters):
        kind = hp.WhichOneof("domain")
        if not hp.name:
            raise SpecError(f"spec.search_space.hyperparameters[{i}].name", "a hyper-parameter needs a name")
        if kind is None:
            raise SpecError(f"spec.search_space.hyperparameters[{i}]", "set one of choice, uniform, log_uniform, int_range")
        if kind == "choice":
            hps[hp.name] = {"type": "choice", "values": [param_from_proto(v) for v in hp.choice.values]}
        elif kind == "int_range":
            hps[hp.name] = {"type": "int", "low": hp.int_range.low, "high": hp.int_range.high, "step": hp.int_range.step or 1}
        else:
            domain = getattr(hp, kind)
            hps[hp.name] = {"type": "uniform" if kind == "uniform" else "loguniform", "low": domain.low, "high": domain.high}
        if hp.when_param:
            hps[hp.name]["when"] = {hp.when_param: [param_from_proto(v) for v in hp.when_values]}
    budget = spec.budget
    data = {
        "name": spec.name,
        "task": task,
        "dataset": {k: v for k, v in {
            "builtin": spec.dataset.builtin, "path": spec.dataset.path,
            "text_field": spec.dataset.text_field or "text", "label_field": spec.dataset.label_field,
            "eval_fraction": spec.dataset.eval_fraction or 0.2, "max_examples": spec.dataset.max_examples,
        }.items()},
        "model": {"builtin": spec.model.builtin, "path": spec.model.path, "tuning": spec.model.tuning or "full"}
        if (spec.model.builtin or spec.model.path) else {"builtin": "tiny", "tuning": spec.model.tuning or "full"},
        "search_space": {
            "templates": [{"id": t.id, "text": t.text} for t in spec.search_space.templates],
            "variables": {v.name: list(v.values) for v in spec.search_space.variables},
            "hyperparameters": hps,
            "instructions": list(spec.search_space.instructions),
            "instruction_position": list(spec.search_space.instruction_positions) or ["before"],
        },
        "objective": _objective_from_proto(spec.objective),
        "strategy": spec.strategy or "tpe",
        "budget": {"max_trials": budget.max_trials, "max_wall_seconds": budget.max_wall_seconds, "parallelism": budget.parallelism},
        "seed": spec.seed,
        "training": {
            "precision": spec.training.precision or "fp32",
            "gradient_checkpointing": spec.training.gradient_checkpointing,
            "gradient_accumulation_steps": spec.training.gradient_accumulation_steps or 1,
            "checkpoint_every_steps": spec.training.checkpoint_every_steps or 20,
            "max_length": spec.training.max_length or DEFAULT_MAX_LENGTH,
            "memory_mb": spec.training.memory_mb,
        },
        "warm_start": {"from_study_id": spec.warm_start.from_study_id, "trials_path": spec.warm_start.trials_path},
        "pruner": spec.pruner or "none",
        "extra_objectives": [_objective_from_proto(o) for o in spec.extra_objectives],
    }
    try:
        return validate_dict(data, metrics)
    except SpecError as err:
        raise SpecError("spec." + err.field, err.message) from None


def candidate_id(prompt: str, hyperparameters: dict[str, Scalar]) -> str:
    """Content hash of a candidate: equal prompts and hyper-parameters give equal ids."""
    payload = json.dumps({"prompt": prompt, "hp": hyperparameters}, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]



def task_name(task: int) -> str:
    """'classification' / 'generation' for a TaskType value ('' when unspecified)."""
    return {v: k for k, v in _TASKS.items()}.get(task, "")


def objective_terms(objective: common_pb2.Objective) -> dict[str, float]:
    return {t.metric: t.weight for t in objective.terms}


def maximize(objective: common_pb2.Objective) -> bool:
    return objective.direction != common_pb2.DIRECTION_MINIMIZE


# --- warm start -------------------------------------------------------------------------------


def prior_params(space: SearchSpaceModel, template_id: str, variables: dict, hyperparameters: dict) -> dict:
    """Check one earlier trial against a search space; returns its hyper-parameters as the
    space types them. Raises ValueError saying what does not match."""
    template = next((t for t in space.templates if t.id == template_id), None)
    if template is None:
        raise ValueError(f"template {template_id!r} is not in the search space")
    for name in sorted(template_fields(template.text) - {INPUT_SLOT}):
        value = variables.get(name)
        if value not in space.variables.get(name, []):
            raise ValueError(f"variable {name!r} = {value!r} is not one of its values in the search space")
    if space.instructions:
        if variables.get("instruction_text") not in space.instructions:
            raise ValueError(f"instruction {variables.get('instruction_text')!r} is not in the search space")
        if variables.get("instruction_position") not in space.instruction_position:
            raise ValueError(f"instruction position {variables.get('instruction_position')!r} is not in the search space")
    unknown = sorted(set(hyperparameters) - set(space.hyperparameters))
    if unknown:
        raise ValueError(f"hyper-parameter(s) {', '.join(unknown)} are not in the search space")
    out = {}
    for name, hp in space.hyperparameters.items():
        if not is_active(hp, out):
            if name in hyperparameters:
                raise ValueError(f"hyper-parameter {name!r} is set but its condition {hp.when} does not hold")
            continue
        if name not in hyperparameters:
            raise ValueError(f"hyper-parameter {name!r} is missing")
        value = hyperparameters[name]
        if hp.type == "choice":
            if value not in hp.values:
                raise ValueError(f"hyper-parameter {name!r} = {value!r} is not one of {hp.values}")
        else:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not hp.low <= value <= hp.high:
                raise ValueError(f"hyper-parameter {name!r} = {value!r} is outside [{hp.low}, {hp.high}]")
            if hp.type == "int":
                step = hp.step or 1
                if value != int(value) or (int(value) - int(hp.low)) % step:
                    raise ValueError(f"hyper-parameter {name!r} = {value!r} is not on the int grid")
                value = int(value)
        out[name] = value
    return out


def is_active(hp: HyperParameterModel, chosen: dict) -> bool:
    """Whether a (possibly conditional) hyper-parameter applies, given the values chosen so far."""
    if not hp.when:
        return True
    (parent, values), = hp.when.items()
    return parent in chosen and chosen[parent] in values


def load_prior_trials(path: str | Path) -> list[dict]:
    """Prior trials from a file: JSON lines of {template_id, variables, hyperparameters,
    objective}, or a JSON object with a "trials" list as `openautoglm demo --json` prints
    (failed trials skipped). Each row gets its source "line". Raises SpecError naming the line."""
    path = Path(path).expanduser()
    text = path.read_text(encoding="utf-8")
    field = "warm_start.trials_path"
    rows = []
    stripped = text.lstrip()
    if stripped.startswith("{") and '"trials"' in stripped[:10000] and "\n{" not in stripped:
        try:
            document = json.loads(text)
        except json.JSONDecodeError as err:
            raise SpecError(field, f"not valid JSON ({err.msg})", line=err.lineno, file=str(path)) from None
        for i, trial in enumerate(document.get("trials", [])):
            if trial.get("objective") is None:
                continue
            candidate = trial.get("candidate", {})
            rows.append({"line": i + 1, "template_id": candidate.get("template_id", ""),
                         "variables": candidate.get("variables", {}), "hyperparameters": candidate.get("hyperparameters", {}),
                         "objective": trial["objective"]})
        return rows
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SpecError(field, f"not valid JSON ({err.msg})", line=number, file=str(path)) from None
        if not isinstance(row, dict) or "template_id" not in row or not isinstance(row.get("objective"), (int, float)):
            raise SpecError(field, "each line needs template_id and a numeric objective", line=number, file=str(path))
        rows.append({"line": number, "template_id": row["template_id"], "variables": row.get("variables", {}),
                     "hyperparameters": row.get("hyperparameters", {}), "objective": float(row["objective"])})
    return rows
