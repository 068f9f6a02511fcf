"""The study spec: one pydantic model that validates what users write (YAML/JSON) and what gRPC
clients send (`StudySpec` protos, converted by `protos.spec_from_proto`), with errors that name the
offending field. Both paths end in the same `StudySpecModel`, so they cannot disagree about what
is valid.
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from openautoglm.common import artifact_files, datasets, sandbox
from openautoglm.common.catalogue import (
    BUILTIN_METRICS,
    BUILTIN_MODELS,
    DEFAULT_CHECKPOINT_EVERY_STEPS,
    DEFAULT_EVAL_FRACTION,
    DEFAULT_MAX_LENGTH,
    DEFAULT_METRIC,
    DEFAULT_MODEL,
    DEFAULT_PRUNER,
    DEFAULT_STRATEGY,
    DEFAULT_TEST_FRACTION,
    DEFAULT_TEXT_FIELD,
    EDIT_OPERATIONS,
    OFFLINE_EDIT_OPERATIONS,
    HYPERPARAMETER_NAMES,
    HYPERPARAMETER_RANGES,
    MAX_FINAL_REPEATS,
    MODEL_PARAM,
    MULTI_OBJECTIVE_STRATEGIES,
    STRATEGIES,
    TRAINER_HYPERPARAMETERS,
    WRITER_METHODS,
    known_metrics,
)
from openautoglm.common.spec.templates import INPUT_SLOT, INSTRUCTION_DIMENSIONS, template_fields


class SpecError(ValueError):
    """A spec problem: `field` is the dotted path of the offending field."""

    def __init__(self, field: str, message: str, line: int | None = None, file: str | None = None):
        self.field, self.message, self.line, self.file = field, message, line, file
        self.loc: tuple[str | int, ...] = ()
        where = f"{file}:{line}: " if file and line else (f"{file}: " if file else "")
        super().__init__(f"{where}{field}: {message}")


def _sandboxed(path: str, info: ValidationInfo, field: str = "") -> Path:
    """The path to look at: on a server (validation given `read_roots`), only inside those roots,
    checked before the file system is touched (sandbox.py); in a client, the user's own path.
    `field`: the path's field, when a whole-model validator asks."""
    roots = (info.context or {}).get("read_roots")
    if roots is None:
        return Path(path).expanduser()
    try:
        return sandbox.readable(path, roots)
    except sandbox.OutsideRoots as err:
        message = f"not readable here: {err}"
        raise (_FieldError((field,), message) if field else ValueError(message)) from None


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _artifact_id(value: str, prefix: str) -> str:
    """An uploaded artifact's id, checked for shape here (the gateway checks that it exists)."""
    if value and not (value.startswith(prefix) and artifact_files.ARTIFACT_ID.match(value)):
        raise ValueError(f"not an artifact id: expected {prefix} and 16 hex digits (Artifacts.UploadArtifact returns one)")
    return value


class DatasetModel(_Strict):
    builtin: str = ""
    path: str = ""
    # An uploaded dataset (Artifacts.UploadArtifact): "ds-" and 16 hex digits.
    artifact: str = ""
    text_field: str = DEFAULT_TEXT_FIELD
    label_field: str = ""
    eval_fraction: float = Field(DEFAULT_EVAL_FRACTION, gt=0.0, lt=1.0)
    # Kept back for the final test of the winner (never trained or selected on).
    test_fraction: float = Field(DEFAULT_TEST_FRACTION, gt=0.0, lt=1.0)
    max_examples: int = Field(0, ge=0)

    @model_validator(mode="after")
    def _one_source(self) -> "DatasetModel":
        if sum(map(bool, (self.builtin, self.path, self.artifact))) != 1:
            raise ValueError("give exactly one of 'builtin', 'path' or 'artifact'")
        if self.builtin and self.builtin not in datasets.BUILTIN:
            raise ValueError(
                f"unknown built-in dataset {self.builtin!r}; expected one of {', '.join(datasets.BUILTIN)}"
            )
        if self.builtin and self.test_fraction != DEFAULT_TEST_FRACTION:
            raise _FieldError(("test_fraction",),
                              f"the built-in sets have a fixed test split ({DEFAULT_TEST_FRACTION:g}); leave it out")
        return self

    @field_validator("path")
    @classmethod
    def _path_exists(cls, value: str, info: ValidationInfo) -> str:
        if value and not _sandboxed(value, info).is_file():
            raise ValueError(f"dataset file not found: {value}")
        return value

    @field_validator("artifact")
    @classmethod
    def _dataset_artifact(cls, value: str) -> str:
        return _artifact_id(value, artifact_files.DATASET_PREFIX)


class ModelModel(_Strict):
    builtin: str = ""
    path: str = ""
    tuning: Literal["full", "lora", "prompt_tuning"] = "full"
    # An uploaded base model (Artifacts.UploadArtifact): "m-" and 16 hex digits.
    artifact: str = ""

    @property
    def key(self) -> str:
        """How a candidate names this model when the search chooses among models."""
        return self.builtin or self.path or self.artifact

    @field_validator("artifact")
    @classmethod
    def _model_artifact(cls, value: str) -> str:
        return _artifact_id(value, artifact_files.MODEL_PREFIX)

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> "ModelModel":
        if sum(map(bool, (self.builtin, self.path, self.artifact))) != 1:
            raise ValueError("give exactly one of 'builtin', 'path' or 'artifact'")
        if self.builtin and self.builtin not in BUILTIN_MODELS:
            raise ValueError(f"unknown built-in model {self.builtin!r}; expected one of {', '.join(BUILTIN_MODELS)}")
        if self.path and not _sandboxed(self.path, info, "path").is_dir():
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

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of a numeric domain (validation guarantees both for every non-choice)."""
        if self.low is None or self.high is None:
            raise ValueError(f"a '{self.type}' hyper-parameter has no bounds")
        return self.low, self.high

    def int_values(self) -> list[int]:
        """Every value of an 'int' domain, low to high by step."""
        low, high = self.bounds
        return list(range(int(low), int(high) + 1, self.step or 1))

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


def _check_domain(name: str, hp: HyperParameterModel) -> None:
    """A named hyper-parameter (optimizer, lr_schedule) takes only names the trainer knows, as a
    'choice'; a bounded one (dropout, max_grad_norm, ...) stays inside its interval."""
    names = HYPERPARAMETER_NAMES.get(name)
    if names is not None:
        if hp.type != "choice":
            raise _FieldError((name, "type"), f"{name!r} takes names: use a 'choice' of {', '.join(names)}")
        unknown = [v for v in hp.values if v not in names]
        if unknown:
            raise _FieldError((name, "values"), f"unknown {name} {unknown[0]!r}; expected one of {', '.join(names)}")
        return
    if hp.type == "choice" and any(isinstance(v, (str, bool)) for v in hp.values):
        raise _FieldError((name, "values"), f"{name!r} takes numbers")
    bounds = HYPERPARAMETER_RANGES.get(name)
    if bounds is None:
        return
    low, high, low_allowed, high_allowed = bounds
    points = [float(v) for v in hp.values] if hp.type == "choice" else list(hp.bounds)
    for point in points:
        if point < low or point > high or (point == low and not low_allowed) or (point == high and not high_allowed):
            interval = f"{'[' if low_allowed else '('}{low:g}, {high:g}{']' if high_allowed else ')'}"
            where = "values" if hp.type == "choice" else ("low" if point == points[0] else "high")
            raise _FieldError((name, where), f"{name} must lie in {interval}; got {point:g}")


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


def _names_from(value: list[str], allowed: tuple[str, ...], what: str) -> list[str]:
    """A non-empty list of known names, de-duplicated; an unknown one is named by its index."""
    if not value:
        raise ValueError(f"give at least one of {', '.join(allowed)}")
    for i, name in enumerate(value):
        if name not in allowed:
            raise _FieldError((i,), f"unknown {what} {name!r}; expected one of {', '.join(allowed)}")
    return list(dict.fromkeys(value))


class InstructionEditsModel(_Strict):
    """GrIPS-style edits of the best instruction so far (prompt_generator/edits.py)."""

    operations: list[str] = Field(default_factory=lambda: list(OFFLINE_EDIT_OPERATIONS))
    phrase_pool: list[str] = Field(default_factory=list)
    edits_per_candidate: int = Field(1, ge=1, le=3)

    @field_validator("operations")
    @classmethod
    def _operations(cls, value: list[str]) -> list[str]:
        return _names_from(value, EDIT_OPERATIONS, "edit")

    @field_validator("phrase_pool")
    @classmethod
    def _phrases(cls, value: list[str]) -> list[str]:
        for i, phrase in enumerate(value):
            if not phrase.strip():
                raise _FieldError((i,), "an empty phrase")
            if "{" in phrase or "}" in phrase or len(phrase) > 200:
                raise _FieldError((i,), "a phrase has no '{' or '}' and at most 200 characters")
        return value


class InstructionWriterModel(_Strict):
    """A language model configured for the prompt-generator writes instructions (writer.py)."""

    methods: list[str] = Field(default_factory=lambda: list(WRITER_METHODS))
    # Input/output examples from the train split shown in each meta-prompt.
    examples: int = Field(5, ge=1, le=20)

    @field_validator("methods")
    @classmethod
    def _methods(cls, value: list[str]) -> list[str]:
        return _names_from(value, WRITER_METHODS, "method")


class SearchSpaceModel(_Strict):
    templates: list[TemplateModel] = Field(default_factory=list)
    variables: dict[str, list[str]] = Field(default_factory=dict)
    hyperparameters: dict[str, HyperParameterModel] = Field(default_factory=dict)
    # Instructions tried before or after each rendered template (a searched dimension each).
    instructions: list[str] = Field(default_factory=list)
    instruction_position: list[Literal["before", "after"]] = ["before"]
    # Let the search write instructions by editing its best so far (the "grips" strategy sets it).
    instruction_edits: InstructionEditsModel | None = None
    # Let a language model write instructions (needs one configured for the prompt-generator).
    instruction_writer: InstructionWriterModel | None = None
    # Base models the search chooses among (each candidate names one as its "model"); exclusive
    # with the spec's `model`.
    models: list[ModelModel] = Field(default_factory=list)

    @field_validator("models")
    @classmethod
    def _models(cls, value: list[ModelModel]) -> list[ModelModel]:
        if len(value) == 1:
            raise ValueError("give two or more models to choose among (or name one as the spec's `model`)")
        keys = [m.key for m in value]
        for i, key in enumerate(keys):
            if key in keys[:i]:
                raise _FieldError((i,), f"model {key!r} is listed twice")
        return value

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
        if MODEL_PARAM in value:
            raise ValueError(f"{MODEL_PARAM!r} is the choice of base model: list the models in search_space.models")
        unknown = sorted(set(value) - set(TRAINER_HYPERPARAMETERS))
        if unknown:
            raise ValueError(
                f"unknown hyper-parameter(s) {', '.join(unknown)}; the trainer understands "
                f"{', '.join(sorted(TRAINER_HYPERPARAMETERS))}"
            )
        for name, hp in value.items():
            _check_domain(name, hp)
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
    checkpoint_every_steps: int = Field(DEFAULT_CHECKPOINT_EVERY_STEPS, ge=1)
    max_length: int = Field(DEFAULT_MAX_LENGTH, ge=8, le=8192)
    # MiB one trial needs on a trainer slot; 0 = estimated (common/resources.py).
    memory_mb: float = Field(0.0, ge=0)


class WarmStartModel(_Strict):
    from_study_id: str = ""
    trials_path: str = ""

    @model_validator(mode="after")
    def _one_source(self, info: ValidationInfo) -> "WarmStartModel":
        if self.from_study_id and self.trials_path:
            raise ValueError("give either 'from_study_id' or 'trials_path', not both")
        if self.trials_path and not _sandboxed(self.trials_path, info, "trials_path").is_file():
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
    model: ModelModel = Field(default_factory=lambda: ModelModel(builtin=DEFAULT_MODEL))
    search_space: SearchSpaceModel
    objective: ObjectiveModel = Field(default_factory=ObjectiveModel)
    strategy: str = DEFAULT_STRATEGY
    budget: BudgetModel
    seed: int = 0
    training: TrainingModel = Field(default_factory=TrainingModel)
    warm_start: WarmStartModel = Field(default_factory=WarmStartModel)
    pruner: Literal["none", "median", "successive_halving"] = DEFAULT_PRUNER
    extra_objectives: list[ObjectiveModel] = Field(default_factory=list)
    # Train the winner again with this many more seeds and report each metric's spread.
    final_repeats: int = Field(0, ge=0, le=MAX_FINAL_REPEATS)

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
        if self.search_space.models:
            if "model" in self.model_fields_set and self.model != ModelModel(builtin=DEFAULT_MODEL):
                # (the default, written back by a dump of this model, is no conflict)
                raise _FieldError(("search_space", "models"), "give either the spec's `model` or search_space.models")
            for i, option in enumerate(self.search_space.models):
                if option.builtin == "minilm" and self.task != "classification":
                    raise _FieldError(("search_space", "models", i, "builtin"), "the MiniLM encoder does classification only")
        for i, extra in enumerate(self.extra_objectives):
            if not extra.terms:
                raise _FieldError(("extra_objectives", i, "terms"), "give 'metric' or 'terms'")
            for metric in extra.terms:
                if metric not in known:
                    raise _FieldError(("extra_objectives", i, "terms", metric),
                                      f"unknown metric {metric!r} for a {self.task} task; expected one of {', '.join(known)}")
        if self.extra_objectives:
            if self.strategy not in MULTI_OBJECTIVE_STRATEGIES:
                raise _FieldError(("strategy",), f"a multi-objective study needs grid, random or tpe, not {self.strategy!r}")
            if self.pruner != "none":
                raise _FieldError(("pruner",), "pruning is for single-objective studies")
            if self.warm_start.from_study_id or self.warm_start.trials_path:
                raise _FieldError(("warm_start",), "warm start is for single-objective studies")
            if self.final_repeats:
                raise _FieldError(("final_repeats",), "final repeats retrain one winner: single-objective studies only")
        for metric in self.objective.terms:
            if metric not in known:
                raise _FieldError(
                    ("objective", "terms", metric),
                    f"unknown metric {metric!r} for a {self.task} task; expected one of {', '.join(known)}",
                )
        for where, objective in (("objective",), self.objective), *((("extra_objectives", i), o) for i, o in enumerate(self.extra_objectives)):
            _check_bounded_mix(where, objective.terms)
        _instruction_search_checks(self)
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


def _check_bounded_mix(where: tuple[str | int, ...], terms: dict[str, float]) -> None:
    """Refuse a weighted sum that mixes an unbounded metric with others: its scale would swamp
    theirs (and a policy's reward would be unbounded). Alone, an unbounded metric is fine."""
    if len(terms) < 2:
        return
    for metric in terms:
        info = BUILTIN_METRICS.get(metric)
        if info is not None and not info.bounded:
            hint = ("use 'fluency' (exp(-mean NLL) = 1 / perplexity, in (0, 1]) instead" if metric == "perplexity"
                    else "make it an extra objective (a Pareto front) instead")
            raise _FieldError((*where, "terms", metric),
                              f"{metric} is unbounded, so it cannot be mixed with other metrics in one objective; {hint}")


def _instruction_search_checks(spec: "StudySpecModel") -> None:
    """Generated instructions need instructions to start from, one best to derive from (a single
    objective), and a space that may grow (not a grid)."""
    space = spec.search_space
    if spec.strategy == "grips" and space.instruction_edits is None:
        space.instruction_edits = InstructionEditsModel()
    for name, block in (("instruction_edits", space.instruction_edits), ("instruction_writer", space.instruction_writer)):
        if block is None:
            continue
        where = ("search_space", name)
        if not space.instructions:
            raise _FieldError(where, "generated instructions need search_space.instructions to start from")
        if spec.strategy == "grid":
            raise _FieldError(("strategy",), "the grid strategy cannot search generated instructions (its grid is fixed)")
        if spec.extra_objectives:
            raise _FieldError(where, "generated instructions derive from the best candidate so far: single-objective "
                                     "studies only")
    if space.instruction_writer is not None and spec.dataset.artifact:
        raise _FieldError(("search_space", "instruction_writer"),
                          "the prompt-generator reads the examples it shows the model: give a builtin or path dataset")


class _FieldError(ValueError):
    """Raised inside validators to point at a deeper field than the validator's own."""

    def __init__(self, loc: tuple[str | int, ...], message: str):
        super().__init__(message)
        self.loc = loc



# --- validation entry points ------------------------------------------------------------------


def validate_dict(data: Any, metrics: dict[str, list[str]] | None = None,
                  read_roots: Sequence[Path] | None = None) -> StudySpecModel:
    """Validate a plain dict (from YAML/JSON); raises SpecError naming the first bad field.

    `metrics` (task -> names) is what the evaluator serves; default: built-ins + local plugins.
    `read_roots`: on a server, the only folders that file paths in the spec may name.
    """
    if not isinstance(data, dict):
        raise SpecError("spec", "the spec must be a mapping (YAML/JSON object)")
    try:
        return StudySpecModel.model_validate(data, context={"metrics": metrics or {}, "read_roots": read_roots})
    except ValidationError as err:
        first = err.errors()[0]
        loc = tuple(first["loc"])
        ctx_err = first.get("ctx", {}).get("error")
        if isinstance(ctx_err, _FieldError):
            loc = loc + ctx_err.loc  # the validator's own place, then the field inside it
        message = first["msg"].removeprefix("Value error, ")
        raise _spec_error(loc, message) from None


def _spec_error(loc: tuple[str | int, ...], message: str) -> SpecError:
    error = SpecError(_dotted(loc) or "spec", message)
    error.loc = loc
    return error


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out



def is_active(hp: HyperParameterModel, chosen: dict[str, Scalar]) -> bool:
    """Whether a (possibly conditional) hyper-parameter applies, given the values chosen so far."""
    if not hp.when:
        return True
    (parent, values), = hp.when.items()
    return parent in chosen and chosen[parent] in values
