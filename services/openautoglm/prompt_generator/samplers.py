"""Every strategy as an optuna sampler, built for one proposal from the study's seed and the
trial's number, so the same trials give the same proposal on any replica.

grid, random, TPE and CMA-ES are optuna's own samplers (TPE with the constant liar, so trials in
flight count as pending). The Thompson-sampling bandit and the PPO policy (policies.py)
run as `PolicySampler`, a BaseSampler whose state is rebuilt from the study's finished trials
each time it samples.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from openautoglm.prompt_generator.policies import Policy, Ppo, ThompsonBandit

# Trials a learning sampler samples at random before it models the results.
STARTUP_TRIALS = 4
# user_attrs key marking warm-start results: learnt from, never counted as the study's candidates.
PRIOR_ATTR = "prior"


def trial_seed(study_seed: int, number: int) -> int:
    """The seed of the proposal for trial `number`: fixed by the study's seed and the number alone."""
    return (study_seed * 1_000_003 + number) % 2**32


class PolicySampler(BaseSampler):
    """A bandit or RL policy as an optuna sampler. Each time it samples, the policy is rebuilt
    from the study's finished trials in number order (so it holds no state between proposals)
    and proposes its best joint assignment that no trial of the study has had; parameters outside
    its dimensions (a conditional one whose condition is off) fall back to random sampling."""

    def __init__(self, make_policy: Callable[[], Policy], space: Mapping[str, BaseDistribution], maximize: bool, seed: int):
        self._make_policy = make_policy
        self._space = dict(space)
        self._sign = 1.0 if maximize else -1.0
        self._fallback = optuna.samplers.RandomSampler(seed=seed)

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return dict(self._space)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        if not search_space:
            return {}
        policy = self.policy_for(study, exclude=trial.number)
        seen = [t.params for t in study.get_trials(deepcopy=False)
                if t.number != trial.number and t.params and not t.user_attrs.get(PRIOR_ATTR)]
        return {name: value for name, value in policy.propose(seen).items() if name in search_space}

    def policy_for(self, study: Study, exclude: int = -1) -> Policy:
        """The policy after observing every finished trial (warm-start results included)."""
        policy = self._make_policy()
        finished = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        for t in sorted(finished, key=lambda t: t.number):
            if t.number != exclude and t.value is not None:
                policy.observe(t.params, self._sign * t.value)
        return policy

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)


def make_sampler(strategy: str, study_seed: int, number: int, distributions: Mapping[str, BaseDistribution],
                 grid: Mapping[str, Sequence[Any]], policy_dims: Mapping[str, list[Any]], maximize: bool) -> BaseSampler:
    """The sampler of the proposal for trial `number`. `distributions` are the study's dimensions,
    `grid` their values for the grid strategy, `policy_dims` their finite values for bandit/RL."""
    if strategy == "grid":
        # The grid's order is a shuffle by the seed, and trials record grid ids in that order: one
        # seed for the whole study keeps every proposal's ids meaning the same points.
        return optuna.samplers.GridSampler(dict(grid), seed=study_seed)
    seed = trial_seed(study_seed, number)
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "cmaes":
        return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=STARTUP_TRIALS, warn_independent_sampling=False)
    if strategy in ("bandit", "rl"):
        policy_class = ThompsonBandit if strategy == "bandit" else Ppo
        dims = {name: list(values) for name, values in policy_dims.items()}
        return PolicySampler(lambda: policy_class(dims, seed), distributions, maximize, seed)
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=STARTUP_TRIALS, multivariate=True, constant_liar=True)
