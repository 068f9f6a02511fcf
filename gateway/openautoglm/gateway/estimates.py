"""What the gateway knows of a trial before it runs: the memory it needs (its cost in time is
cost_model.py's)."""
from __future__ import annotations

from openautoglm.common.resources import estimate_trial_memory_mb
from openautoglm.common.spec.protos import numeric_hyperparameter, param_from_proto, spec_models, trial_model
from openautoglm.v1 import common_pb2


def trial_memory_mb(spec: common_pb2.StudySpec, candidate: common_pb2.Candidate) -> float:
    """What one trial needs on its trainer: the study's statement, else the estimate."""
    if spec.training.memory_mb > 0:
        return spec.training.memory_mb
    batch_size = int(numeric_hyperparameter(candidate, "batch_size", 0))
    model = trial_model(spec, candidate)  # the candidate's own, when the study chooses among models
    return estimate_trial_memory_mb(model.builtin, model.path, model.tuning, batch_size, spec.training.max_length)


def largest_trial_memory_mb(spec: common_pb2.StudySpec) -> float:
    """The need of the study's largest trial (its largest batch size, on its largest model)."""
    largest = 0
    for hp in spec.search_space.hyperparameters:
        if hp.name == "batch_size":
            if hp.WhichOneof("domain") == "choice":
                largest = max(int(param_from_proto(v) or 0) for v in hp.choice.values)
            elif hp.WhichOneof("domain") == "int_range":
                largest = int(hp.int_range.high)
    if spec.training.memory_mb > 0:
        return spec.training.memory_mb
    return max(estimate_trial_memory_mb(model.builtin, model.path, model.tuning, largest, spec.training.max_length)
               for model in spec_models(spec))
