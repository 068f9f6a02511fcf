"""What the gateway knows of a trial before it runs: the memory it needs (its cost in time is
cost_model.py's)."""
from __future__ import annotations

from openautoglm.common.resources import estimate_trial_memory_mb
from openautoglm.common.spec.protos import numeric_hyperparameter, param_from_proto
from openautoglm.v1 import common_pb2


def trial_memory_mb(spec: common_pb2.StudySpec, candidate: common_pb2.Candidate) -> float:
    """What one trial needs on its trainer: the study's statement, else the estimate."""
    if spec.training.memory_mb > 0:
        return spec.training.memory_mb
    batch_size = int(numeric_hyperparameter(candidate, "batch_size", 0))
    return estimate_trial_memory_mb(spec.model.builtin, spec.model.path, spec.model.tuning, batch_size,
                                    spec.training.max_length)


def largest_trial_memory_mb(spec: common_pb2.StudySpec) -> float:
    """The need of the study's largest trial (its largest batch size)."""
    largest = 0
    for hp in spec.search_space.hyperparameters:
        if hp.name == "batch_size":
            if hp.WhichOneof("domain") == "choice":
                largest = max(int(param_from_proto(v) or 0) for v in hp.choice.values)
            elif hp.WhichOneof("domain") == "int_range":
                largest = int(hp.int_range.high)
    return trial_memory_mb(spec, common_pb2.Candidate(hyperparameters={"batch_size": common_pb2.ParamValue(integer=largest)}))
