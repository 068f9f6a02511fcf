"""A spec, its parameter values, objectives and task to and from their protobuf messages.

`spec_from_proto` validates a gRPC client's spec with the same pydantic model the CLI uses; a proto3
field left unset (zero) takes the model's default, so the defaults have one source.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from google.protobuf.message import Message

from openautoglm.common.catalogue import DEFAULT_MODEL, MODEL_PARAM
from openautoglm.common.spec.schema import ObjectiveModel, Scalar, SpecError, StudySpecModel, validate_dict
from openautoglm.v1 import common_pb2

_TASKS: dict[str, common_pb2.TaskType] = {
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


def model_key(model: common_pb2.ModelSpec) -> str:
    """How a candidate names a model of SearchSpace.models (schema.ModelModel.key)."""
    return model.builtin or model.path or model.artifact


def trial_model(spec: common_pb2.StudySpec, candidate: common_pb2.Candidate) -> common_pb2.ModelSpec:
    """The base model a candidate trains: its choice among the spec's models, else the spec's."""
    chosen = candidate.hyperparameters.get(MODEL_PARAM)
    if chosen is not None and spec.search_space.models:
        name = param_from_proto(chosen)
        for option in spec.search_space.models:
            if model_key(option) == name:
                return option
    return spec.model


def spec_models(spec: common_pb2.StudySpec) -> list[common_pb2.ModelSpec]:
    """Every base model a study may train: its choice of models, else its one model."""
    return list(spec.search_space.models) or [spec.model]


def numeric_hyperparameter(candidate: common_pb2.Candidate, name: str, default: float) -> float:
    """A candidate's numeric hyper-parameter, or `default` when it has none (or a non-number)."""
    value = candidate.hyperparameters.get(name)
    found = param_from_proto(value) if value is not None else None
    return float(found) if isinstance(found, (int, float)) and not isinstance(found, bool) else default


def params_from_proto(values: Mapping[str, common_pb2.ParamValue], field: str) -> dict[str, Scalar]:
    """Named parameter values (a candidate's hyper-parameters); one with no value set is refused
    as a SpecError naming `field`[name]."""
    out: dict[str, Scalar] = {}
    for name, value in values.items():
        scalar = param_from_proto(value)
        if scalar is None:
            raise SpecError(f"{field}[{name}]", "no value set")
        out[name] = scalar
    return out


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
            low, high = hp.bounds
            msg.int_range.CopyFrom(common_pb2.IntDomain(low=int(low), high=int(high), step=hp.step or 1))
        if hp.when:
            (parent, values), = hp.when.items()
            msg.when_param = parent
            msg.when_values.extend(param_to_proto(v) for v in values)
        hps.append(msg)
    return common_pb2.StudySpec(
        name=model.name,
        task=_TASKS[model.task],
        dataset=common_pb2.DatasetSpec(**model.dataset.model_dump()),
        # With a choice of models, the spec names none itself (each candidate names its own).
        model=common_pb2.ModelSpec(**model.model.model_dump()) if not space.models else None,
        search_space=common_pb2.SearchSpace(
            templates=[common_pb2.PromptTemplate(id=t.id, text=t.text) for t in space.templates],
            variables=[common_pb2.TemplateVariable(name=k, values=v) for k, v in space.variables.items()],
            hyperparameters=hps,
            instructions=space.instructions,
            instruction_positions=space.instruction_position,
            instruction_edits=(common_pb2.InstructionEdits(**space.instruction_edits.model_dump())
                               if space.instruction_edits is not None else None),
            instruction_writer=(common_pb2.InstructionWriter(**space.instruction_writer.model_dump())
                                if space.instruction_writer is not None else None),
            models=[common_pb2.ModelSpec(**m.model_dump()) for m in space.models],
        ),
        objective=_objective_to_proto(model.objective),
        strategy=model.strategy,
        budget=common_pb2.Budget(**model.budget.model_dump()),
        seed=model.seed,
        training=common_pb2.TrainingOptions(**model.training.model_dump()),
        warm_start=common_pb2.WarmStart(**model.warm_start.model_dump()),
        pruner=model.pruner,
        extra_objectives=[_objective_to_proto(o) for o in model.extra_objectives],
        final_repeats=model.final_repeats,
    )


def _objective_to_proto(objective: "ObjectiveModel") -> common_pb2.Objective:
    return common_pb2.Objective(
        terms=[common_pb2.ObjectiveTerm(metric=m, weight=w) for m, w in objective.terms.items()],
        direction=_DIRECTIONS[objective.direction],
    )


def _objective_from_proto(objective: common_pb2.Objective) -> dict[str, Any]:
    """The inverse of _objective_to_proto (an unset direction means maximize)."""
    direction = {v: k for k, v in _DIRECTIONS.items()}.get(objective.direction, "maximize")
    return {"terms": objective_terms(objective), "direction": direction}


def spec_from_proto(spec: common_pb2.StudySpec, metrics: dict[str, list[str]] | None = None,
                    read_roots: Sequence[Path] | None = None) -> StudySpecModel:
    """Validate a gRPC client's spec; raises SpecError with the proto field path. `read_roots`:
    the folders the spec's file paths may name (sandbox.py)."""
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
    model = set_fields(spec.model)
    if not (model.get("builtin") or model.get("path") or model.get("artifact")):
        model = {} if spec.search_space.models else {"builtin": DEFAULT_MODEL}
    data = {
        **set_fields(spec, ("name", "strategy", "seed", "pruner", "final_repeats")),
        "task": task,
        "dataset": set_fields(spec.dataset),
        **({"model": model} if model else {}),
        "search_space": {
            "templates": [{"id": t.id, "text": t.text} for t in spec.search_space.templates],
            "variables": {v.name: list(v.values) for v in spec.search_space.variables},
            "hyperparameters": hps,
            "instructions": list(spec.search_space.instructions),
            **({"instruction_position": list(spec.search_space.instruction_positions)}
               if spec.search_space.instruction_positions else {}),
            **({"instruction_edits": _edits_from_proto(spec.search_space.instruction_edits)}
               if spec.search_space.HasField("instruction_edits") else {}),
            **({"instruction_writer": _writer_from_proto(spec.search_space.instruction_writer)}
               if spec.search_space.HasField("instruction_writer") else {}),
            "models": [set_fields(m) for m in spec.search_space.models],
        },
        "objective": _objective_from_proto(spec.objective),
        # Always given, so a zero max_trials reads "greater than 0" rather than "required".
        "budget": {"max_trials": budget.max_trials, "max_wall_seconds": budget.max_wall_seconds, "parallelism": budget.parallelism},
        "training": set_fields(spec.training),
        "warm_start": set_fields(spec.warm_start),
        "extra_objectives": [_objective_from_proto(o) for o in spec.extra_objectives],
    }
    try:
        return validate_dict(data, metrics, read_roots)
    except SpecError as err:
        raise SpecError("spec." + err.field, err.message) from None


def _edits_from_proto(edits: common_pb2.InstructionEdits) -> dict[str, Any]:
    """The instruction_edits block; unset fields take the model's defaults."""
    out: dict[str, Any] = set_fields(edits, ("edits_per_candidate",))
    if edits.operations:
        out["operations"] = list(edits.operations)
    out["phrase_pool"] = list(edits.phrase_pool)
    return out


def _writer_from_proto(writer: common_pb2.InstructionWriter) -> dict[str, Any]:
    """The instruction_writer block; unset fields take the model's defaults."""
    out: dict[str, Any] = set_fields(writer, ("examples",))
    if writer.methods:
        out["methods"] = list(writer.methods)
    return out


def set_fields(message: Message, names: tuple[str, ...] = ()) -> dict[str, Any]:
    """The scalar fields a proto3 message sets (non-zero), optionally only `names`: what is left
    out takes the pydantic model's default, the one source of every default."""
    return {f.name: v for f, v in message.ListFields() if not names or f.name in names}


def task_name(task: int) -> str:
    """'classification' / 'generation' for a TaskType value ('' when unspecified)."""
    names: dict[int, str] = {v: k for k, v in _TASKS.items()}
    return names.get(task, "")


def task_enum(name: str) -> common_pb2.TaskType:
    """The TaskType value of 'classification' / 'generation'."""
    return _TASKS[name]


def objective_terms(objective: common_pb2.Objective) -> dict[str, float]:
    return {t.metric: t.weight for t in objective.terms}


def maximize(objective: common_pb2.Objective) -> bool:
    return objective.direction != common_pb2.DIRECTION_MINIMIZE
