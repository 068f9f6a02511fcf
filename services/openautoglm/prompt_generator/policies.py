"""Search policies that optuna does not provide: a Thompson-sampling bandit and a PPO policy
over the discrete slots of the space (the prompt, then each hyper-parameter).

Both see the space as named dimensions with a finite list of values each (continuous
hyper-parameters are discretised into a few points). They propose a full assignment and learn
from the objective value of each evaluated assignment. A study never trains a candidate twice,
so a proposal is the best-scoring assignment the study has *not* had yet: each policy scores
every value of every dimension (a posterior draw, or perturbed log-probabilities), and the
proposal maximises the sum of its values' scores over the unseen joint assignments (enumerated
while the joint space is small; beyond that, the per-dimension best). Their state is a pure function of the
observations, so a restarted prompt-generator rebuilds it by replaying the study's trials.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from openautoglm.common.spec.schema import HyperParameterModel

# Points a continuous hyper-parameter is discretised into for the bandit and the RL policy.
CONTINUOUS_POINTS = 5
# Dual-clip PPO's bound (Ye et al., 2020): with a negative advantage, a ratio above it adds no
# gradient, so an action the policy has moved far towards cannot drive an unbounded step.
DUAL_CLIP = 3.0
# Largest joint space scored assignment by assignment when excluding seen candidates.
ENUMERATE_LIMIT = 250_000


def discretise(hp: HyperParameterModel) -> list[Any]:
    """The finite values a bandit/RL policy chooses from for one hyper-parameter spec."""
    if hp.type == "choice":
        return list(hp.values)
    if hp.type == "int":
        return hp.int_values()
    low, high = hp.bounds
    if hp.type == "loguniform":
        points = np.exp(np.linspace(math.log(low), math.log(high), CONTINUOUS_POINTS))
    else:
        points = np.linspace(low, high, CONTINUOUS_POINTS)
    return [float(min(max(p, low), high)) for p in points]


class Policy:
    """Base: `dims` maps a dimension name to its values; higher observed values are better."""

    def __init__(self, dims: dict[str, list[Any]], seed: int):
        self.dims = dims
        self.rng = np.random.default_rng(seed)

    def value_scores(self) -> dict[str, np.ndarray]:
        """A random score per value of each dimension; higher = propose it."""
        raise NotImplementedError

    def propose(self, seen: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
        """The assignment with the highest total score among those not in `seen`."""
        scores = self.value_scores()
        names = list(self.dims)
        best = tuple(int(np.argmax(scores[n])) for n in names)
        seen_idx = {idx for idx in (self._indices(names, params) for params in seen) if idx is not None}
        size = math.prod(len(self.dims[n]) for n in names)
        if best in seen_idx and len(seen_idx) < size and size <= ENUMERATE_LIMIT:
            total = np.zeros(())
            for n in names:  # total[i, j, ...] = scores[name0][i] + scores[name1][j] + ...
                total = np.add.outer(total, scores[n])
            for idx in seen_idx:
                total[idx] = -np.inf
            best = tuple(int(i) for i in np.unravel_index(int(np.argmax(total)), total.shape))
        return {n: self.dims[n][int(i)] for n, i in zip(names, best)}

    def _indices(self, names: list[str], params: dict[str, Any]) -> tuple[int, ...] | None:
        idx = [self._index(n, params[n]) if n in params else None for n in names]
        return None if None in idx else tuple(i for i in idx if i is not None)

    def observe(self, params: dict[str, Any], value: float) -> None:
        raise NotImplementedError

    def _index(self, name: str, value: Any) -> int | None:
        values = self.dims[name]
        for i, v in enumerate(values):
            if v == value or (isinstance(v, float) and isinstance(value, float) and math.isclose(v, value, rel_tol=1e-9)):
                return i
        return None


class ThompsonBandit(Policy):
    """Per-dimension Gaussian Thompson sampling: each value is an arm whose mean reward has a
    normal posterior around its observed mean (prior: the mean over all observations)."""

    def __init__(self, dims: dict[str, list[Any]], seed: int):
        super().__init__(dims, seed)
        self.sums = {name: np.zeros(len(v)) for name, v in dims.items()}
        self.counts = {name: np.zeros(len(v)) for name, v in dims.items()}
        self.values: list[float] = []

    def value_scores(self) -> dict[str, np.ndarray]:
        prior = float(np.mean(self.values)) if self.values else 0.0
        spread = float(np.std(self.values)) if len(self.values) > 1 else 1.0
        spread = max(spread, 1e-3)
        out = {}
        for name in self.dims:
            n = self.counts[name]
            mean = np.where(n > 0, self.sums[name] / np.maximum(n, 1), prior)
            out[name] = self.rng.normal(mean, spread / np.sqrt(n + 1))
        return out

    def observe(self, params: dict[str, Any], value: float) -> None:
        self.values.append(value)
        for name, v in params.items():
            i = self._index(name, v) if name in self.dims else None
            if i is not None:
                self.sums[name][i] += value
                self.counts[name][i] += 1


class Ppo(Policy):
    """PPO (Schulman et al., 2017) over independent softmax slots, one per dimension: the joint
    action's log-probability is the sum of its slots'. The state is constant (every proposal
    chooses from the same space), so the value baseline is one learned number.

    Rewards are normalised by the mean and standard deviation of every reward so far. Every
    `batch_size` rewards, the policy that was current before the batch is frozen as pi_old and
    the logits take `epochs` gradient-ascent steps on the clipped surrogate
    mean(min(r A, clip(r, 1 - clip, 1 + clip) A)) + entropy_coef * H, with r = pi / pi_old and
    A the normalised reward minus the baseline (dual-clipped for negative A), while the baseline
    regresses on the normalised rewards. Rewards not yet filling a batch are used at once when
    the policy proposes, so a proposal sees every result; the replay from the study's trials is
    the same either way.

    The step size is large for PPO (a search has tens of rewards, not millions), so the clip
    stops a batch's push once its ratio leaves [1 - clip, 1 + clip] but does not bound the first
    step: tests/test_search.py measures both effects."""

    def __init__(self, dims: dict[str, list[Any]], seed: int, learning_rate: float = 2.0, batch_size: int = 2,
                 epochs: int = 8, clip: float = 0.2, entropy_coef: float = 0.01, value_rate: float = 0.5):
        super().__init__(dims, seed)
        self.logits = {name: np.zeros(len(v)) for name, v in dims.items()}
        self.learning_rate, self.batch_size, self.epochs = learning_rate, batch_size, epochs
        self.clip, self.entropy_coef, self.value_rate = clip, entropy_coef, value_rate
        self.baseline = 0.0
        self.rewards: list[float] = []  # every reward so far (for the normalisation)
        self.pending: list[tuple[dict[str, int], float]] = []  # (action, reward) not yet learnt from
        self.updates = 0

    def _probs(self, name: str) -> np.ndarray:
        z = self.logits[name] - self.logits[name].max()
        p: np.ndarray = np.exp(z)
        out: np.ndarray = p / p.sum()
        return out

    def value_scores(self) -> dict[str, np.ndarray]:
        """Gumbel-perturbed log-probabilities: their argmax is a draw from the policy."""
        self.learn(flush=True)
        return {name: np.log(self._probs(name) + 1e-12) + self.rng.gumbel(size=len(values))
                for name, values in self.dims.items()}

    def observe(self, params: dict[str, Any], value: float) -> None:
        action = {name: i for name in self.dims if name in params and (i := self._index(name, params[name])) is not None}
        self.rewards.append(float(value))
        self.pending.append((action, float(value)))
        if len(self.pending) >= self.batch_size:
            self.learn()

    def learn(self, flush: bool = False) -> None:
        """One PPO update on the pending rewards (a full batch, or any with `flush`)."""
        if not self.pending or (len(self.pending) < self.batch_size and not flush):
            return
        batch, self.pending = self.pending, []
        mean = float(np.mean(self.rewards))
        spread = float(np.std(self.rewards)) if len(self.rewards) > 1 else 1.0
        returns = np.array([(reward - mean) / max(spread, 1e-8) for _, reward in batch])
        old = {name: np.log(self._probs(name) + 1e-12) for name in self.dims}
        old_logp = np.array([sum(old[n][i] for n, i in action.items()) for action, _ in batch])
        for _ in range(self.epochs):
            advantages = returns - self.baseline
            grads = {name: np.zeros(len(values)) for name, values in self.dims.items()}
            probs = {name: self._probs(name) for name in self.dims}
            for (action, _), advantage, logp_old in zip(batch, advantages, old_logp):
                log_ratio = sum(math.log(probs[n][i] + 1e-12) for n, i in action.items()) - logp_old
                ratio = math.exp(min(log_ratio, math.log(DUAL_CLIP)))
                if (advantage > 0 and ratio > 1 + self.clip) or (advantage < 0 and ratio < 1 - self.clip):
                    continue  # the clipped term is the minimum: no gradient
                if advantage < 0 and log_ratio >= math.log(DUAL_CLIP):
                    continue  # dual clip: a negative advantage's term is bounded below by DUAL_CLIP * A
                for name, i in action.items():  # d(ratio)/d(logits) = ratio * (onehot(i) - pi)
                    step = -probs[name] * ratio * advantage
                    step[i] += ratio * advantage
                    grads[name] += step / len(batch)
            for name, p in probs.items():  # dH/d(logits) = -pi * (log pi + H)
                logp = np.log(p + 1e-12)
                grads[name] += self.entropy_coef * -p * (logp + float(-(p * logp).sum()))
                self.logits[name] += self.learning_rate * grads[name]
            self.baseline += self.value_rate * float(np.mean(returns - self.baseline))
        self.updates += 1
