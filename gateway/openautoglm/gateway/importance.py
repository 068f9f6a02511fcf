"""Parameter importance of a study (GetParameterImportance): how much of the objective's variance
each searched dimension explains, by optuna's fANOVA evaluator over the succeeded search trials.

The trials are rebuilt as an in-memory optuna study from the spec's search space, so the figures
are optuna's own whatever the study's strategy was (grid, bandit and PPO studies included).
Dimensions: "prompt" (the rendered prompt the trial used) and every hyper-parameter; a dimension a
trial did not set (a conditional hyper-parameter) is left to optuna, which weighs only the
dimensions every trial has.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from openautoglm.common.spec.protos import maximize, param_from_proto
from openautoglm.gateway.results import search_trials
from openautoglm.v1 import common_pb2

PROMPT_DIMENSION = "prompt"
EVALUATOR_NAME = "FanovaImportanceEvaluator"


@dataclass(frozen=True)
class Importances:
    values: list[tuple[str, float]]  # highest first
    trials: int


def _hyperparameter_distribution(hp: common_pb2.HyperParameter) -> BaseDistribution:
    domain = hp.WhichOneof("domain")
    if domain == "choice":
        return CategoricalDistribution([param_from_proto(v) for v in hp.choice.values])
    if domain == "int_range":
        return IntDistribution(hp.int_range.low, hp.int_range.high, step=hp.int_range.step or 1)
    bounds = hp.uniform if domain == "uniform" else hp.log_uniform
    return FloatDistribution(bounds.low, bounds.high, log=domain == "log_uniform")


def _within(distribution: BaseDistribution, value: object) -> bool:
    try:
        return distribution._contains(distribution.to_internal_repr(value))
    except (ValueError, TypeError):
        return False


def parameter_importance(study: common_pb2.Study, objective_index: int = 0) -> Importances:
    """fANOVA importances of the study's dimensions for one objective (0 = the primary one,
    i = extra_objectives[i - 1]). Empty below two succeeded trials or when no dimension varies."""
    objectives = [study.spec.objective, *study.spec.extra_objectives]
    if not 0 <= objective_index < len(objectives):
        raise ValueError(f"objective_index: the study has objectives 0 to {len(objectives) - 1}")
    done = [t for t in search_trials(study) if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED]
    hyperparameters = {hp.name: _hyperparameter_distribution(hp) for hp in study.spec.search_space.hyperparameters}
    prompts = sorted({t.candidate.prompt for t in done})
    rebuilt = optuna.create_study(direction="maximize" if maximize(objectives[objective_index]) else "minimize")
    for trial in done:
        value = trial.objective_value if objective_index == 0 else (
            trial.extra_objective_values[objective_index - 1]
            if len(trial.extra_objective_values) >= objective_index else math.nan)
        if not math.isfinite(value):
            continue
        params: dict[str, object] = {PROMPT_DIMENSION: trial.candidate.prompt}
        distributions: dict[str, BaseDistribution] = {PROMPT_DIMENSION: CategoricalDistribution(prompts)}
        for name, proto_value in trial.candidate.hyperparameters.items():
            distribution = hyperparameters.get(name)
            value_of = param_from_proto(proto_value)
            if distribution is None or not _within(distribution, value_of):
                continue  # outside the spec's space (a warm start's old value): not weighed
            params[name], distributions[name] = value_of, distribution
        rebuilt.add_trial(optuna.trial.create_trial(params=params, distributions=distributions, value=value))
    trials = len(rebuilt.trials)
    if trials < 2:
        return Importances([], trials)
    try:
        found = optuna.importance.get_param_importances(
            rebuilt, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    except (ValueError, RuntimeError):  # no dimension varies across the trials
        return Importances([], trials)
    return Importances(sorted(found.items(), key=lambda kv: -kv[1]), trials)
