"""Search policies that optuna does not provide: a Thompson-sampling bandit and a REINFORCE
policy over the discrete slots of the space (the prompt, then each hyper-parameter).

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


class Reinforce(Policy):
    """REINFORCE with a moving-average baseline over independent softmax slots: the reward is
    the study's objective; each slot's logits move along (reward - baseline) * grad log pi."""

    def __init__(self, dims: dict[str, list[Any]], seed: int, learning_rate: float = 1.0, baseline_decay: float = 0.8):
        super().__init__(dims, seed)
        self.logits = {name: np.zeros(len(v)) for name, v in dims.items()}
        self.learning_rate, self.decay = learning_rate, baseline_decay
        self.baseline: float | None = None
        self.scale = 1.0

    def _probs(self, name: str) -> np.ndarray:
        z = self.logits[name] - self.logits[name].max()
        p: np.ndarray = np.exp(z)
        out: np.ndarray = p / p.sum()
        return out

    def value_scores(self) -> dict[str, np.ndarray]:
        """Gumbel-perturbed log-probabilities: their argmax is a draw from the policy."""
        return {name: np.log(self._probs(name) + 1e-12) + self.rng.gumbel(size=len(values))
                for name, values in self.dims.items()}

    def observe(self, params: dict[str, Any], value: float) -> None:
        if self.baseline is None:
            self.baseline = value
            return
        advantage = value - self.baseline
        self.scale = self.decay * self.scale + (1 - self.decay) * abs(advantage) + 1e-8
        step = self.learning_rate * advantage / self.scale
        for name, v in params.items():
            i = self._index(name, v) if name in self.dims else None
            if i is None:
                continue
            grad = -self._probs(name)
            grad[i] += 1.0
            self.logits[name] += step * grad
        self.baseline = self.decay * self.baseline + (1 - self.decay) * value
