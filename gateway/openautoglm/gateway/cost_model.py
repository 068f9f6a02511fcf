"""How long a trial will train, predicted before it runs from the trials that already finished.

The scheduler orders and places work by its cost, so a trial's cost must be a prediction, not a
constant. `CostModel` is a Bayesian linear regression of log(training seconds x the speed of
the trainer that ran it) on the trial's shape: tokens processed (epochs x examples x sequence
length), model size, batch size, tuning mode and precision. Its prior says what physics says
(time grows linearly with tokens and with parameters; a reference speed sets the scale, loosely),
so the first trials of a new deployment are predicted sensibly and each finished trial sharpens
the rest. Every prediction carries its uncertainty (the posterior predictive, log-normal).

Seconds are in "reference" units (a trainer of speed 1.0, as trainers measure and announce it);
divide by a trainer's speed for the time there. `CostModel` does no I/O; `TrialCosts` feeds it
from the gateway's store and its trial events, and each trial records its predicted and actual
seconds.
"""
from __future__ import annotations

import collections
import functools
import math
import statistics
from dataclasses import dataclass

import numpy as np

from openautoglm.common.catalogue import DEFAULT_HYPERPARAMETERS, DEFAULT_MAX_LENGTH, PRECISIONS, TUNING_MODES
from openautoglm.common.resources import estimate_params, model_shape
from openautoglm.common.spec.protos import numeric_hyperparameter, trial_model
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2

# A reference trainer (speed 1.0) processes this many (token x parameter) units per second in
# training (forward, backward and optimiser step). Only the prior's scale; data corrects it.
REFERENCE_TOKEN_PARAMS_PER_SECOND = 2e9
# Examples assumed when the gateway cannot know a dataset's size (a path only trainers read).
UNKNOWN_EXAMPLES = 200
CENTRE_TOKENS, CENTRE_PARAMS, CENTRE_BATCH = 1e5, 1e6, 16
FEATURES = ("bias", "log_tokens", "log_params", "log_batch", "log_max_length", "generation",
            *(f"tuning_{m}" for m in TUNING_MODES[1:]),
            *(f"precision_{p}" for p in PRECISIONS[1:]))


@dataclass(frozen=True)
class TrialShape:
    epochs: float
    examples: int
    max_length: int
    params: float
    batch_size: int
    tuning: str = "full"
    precision: str = "fp32"
    task: str = "classification"

    def vector(self) -> np.ndarray:
        """Features, centred on a typical small trial so the prior's slopes stay local."""
        tokens = max(self.epochs, 1e-3) * max(self.examples, 1) * max(self.max_length, 1)
        row = [1.0, math.log(tokens / CENTRE_TOKENS), math.log(max(self.params, 1.0) / CENTRE_PARAMS),
               math.log(max(self.batch_size, 1) / CENTRE_BATCH), math.log(max(self.max_length, 1) / DEFAULT_MAX_LENGTH),
               1.0 if self.task == "generation" else 0.0]
        row += [1.0 if self.tuning == m else 0.0 for m in TUNING_MODES[1:]]
        row += [1.0 if self.precision == p else 0.0 for p in PRECISIONS[1:]]
        return np.array(row)


@dataclass(frozen=True)
class Prediction:
    seconds: float  # median, on a reference trainer
    sd: float  # standard deviation

    def on(self, speed: float) -> Prediction:
        speed = speed if speed > 0 else 1.0
        return Prediction(self.seconds / speed, self.sd / speed)


class CostModel:
    """Conjugate Bayesian linear regression on log reference-seconds, noise estimated from the
    residuals once a few trials have finished."""

    def __init__(self, prior_noise_sd: float = 0.5):
        n = len(FEATURES)
        mean = np.zeros(n)
        mean[FEATURES.index("bias")] = math.log(CENTRE_TOKENS * CENTRE_PARAMS / REFERENCE_TOKEN_PARAMS_PER_SECOND)
        mean[FEATURES.index("log_tokens")] = 1.0
        mean[FEATURES.index("log_params")] = 1.0
        sd = np.full(n, 0.5)
        sd[FEATURES.index("bias")] = 2.0  # the scale is the least known
        self._prior_precision = np.diag(1.0 / sd**2)  # inverse covariance
        self._prior_weighted = self._prior_precision @ mean  # precision x mean
        self._prior_noise_var = prior_noise_sd**2
        self._rows: list[np.ndarray] = []
        self._targets: list[float] = []
        self._fit: tuple[np.ndarray, np.ndarray, float] | None = None

    @property
    def observed(self) -> int:
        return len(self._rows)

    def _solve(self, noise_var: float) -> tuple[np.ndarray, np.ndarray]:
        """Posterior (mean, covariance) of the coefficients for a given noise variance."""
        precision, weighted = self._prior_precision, self._prior_weighted
        if self._rows:
            rows, targets = np.array(self._rows), np.array(self._targets)
            precision = precision + rows.T @ rows / noise_var
            weighted = weighted + rows.T @ targets / noise_var
        covariance = np.linalg.inv(precision)
        return covariance @ weighted, covariance

    def _noise_var(self) -> float:
        """The prior's noise until five trials finished, then the residual variance of the fit
        (never below a 10% spread)."""
        if self.observed < 5:
            return self._prior_noise_var
        mean, _ = self._solve(self._prior_noise_var)
        residual = np.array(self._targets) - np.array(self._rows) @ mean
        return max(float(np.mean(residual**2)), 0.1**2)

    def observe(self, shape: TrialShape, seconds: float, speed: float = 1.0) -> None:
        """A trial of this shape trained for `seconds` on a trainer of `speed`."""
        if not (seconds > 0 and math.isfinite(seconds)):
            return
        self._rows.append(shape.vector())
        self._targets.append(math.log(seconds * (speed if speed > 0 else 1.0)))
        self._fit = None

    def predict(self, shape: TrialShape) -> Prediction:
        if self._fit is None:
            noise = self._noise_var()
            self._fit = (*self._solve(noise), noise)
        mean, covariance, noise = self._fit
        x = shape.vector()
        mu = float(x @ mean)
        var = float(x @ covariance @ x) + noise
        # The point prediction is the median, exp(mu): it minimises the expected absolute log
        # error (the percentage error both ways); the spread is the log-normal's.
        return Prediction(math.exp(mu), math.exp(mu + var / 2) * math.sqrt(math.expm1(var)))


@functools.lru_cache(maxsize=64)
def _builtin_examples(builtin: str) -> int:
    from openautoglm.common import datasets

    if builtin not in datasets.BUILTIN:
        return UNKNOWN_EXAMPLES
    with open(datasets.DATA_DIR / datasets.BUILTIN[builtin][0], "rb") as f:
        return sum(1 for line in f if line.strip())


def trial_shape(spec: common_pb2.StudySpec, candidate: common_pb2.Candidate) -> TrialShape:
    """A trial's shape as the gateway knows it from the study's spec and the candidate."""
    def hyperparameter(name: str) -> float:
        return numeric_hyperparameter(candidate, name, float(DEFAULT_HYPERPARAMETERS[name]))

    dataset = spec.dataset
    examples = dataset.max_examples or (_builtin_examples(dataset.builtin) if dataset.builtin else UNKNOWN_EXAMPLES)
    if dataset.builtin and dataset.max_examples:
        examples = min(dataset.max_examples, _builtin_examples(dataset.builtin))
    model = trial_model(spec, candidate)  # the candidate's own, when the study chooses among models
    params = estimate_params(model_shape(model.builtin, model.path))
    return TrialShape(epochs=hyperparameter("epochs"), examples=int(examples),
                      max_length=spec.training.max_length or DEFAULT_MAX_LENGTH, params=float(params),
                      batch_size=int(hyperparameter("batch_size")), tuning=model.tuning or "full",
                      precision=spec.training.precision or "fp32",
                      task="generation" if spec.task == common_pb2.TASK_TYPE_GENERATION else "classification")


# A trial's scoring stage before any trial has been scored here, in seconds.
DEFAULT_SCORE_SECONDS = 1.0
# Recent scoring times kept per study and overall (their median is the prediction).
SCORE_HISTORY = 50


class TrialCosts:
    """The gateway's cost model over its store: seeded with the trials that finished before this
    process started (the most recent, bounded), then fed each trial as it trains. Also each
    study's scoring time (the evaluator's stage): the median of its recent trials' (a study scores
    the same held-out set with the same metrics every time), else of every study's recent ones."""

    SEED_LIMIT = 2000

    def __init__(self, store: StudyStore):
        self.store = store
        self.model = CostModel()
        self._seeded = False
        self._scoring: dict[str, collections.deque[float]] = {}
        self._recent_scoring: collections.deque[float] = collections.deque(maxlen=SCORE_HISTORY)

    def _seed(self) -> None:
        if self._seeded:
            return
        self._seeded = True
        for spec, trial in reversed(self.store.trained_trials(self.SEED_LIMIT)):  # oldest first
            self.model.observe(trial_shape(spec, trial.candidate), trial.actual_seconds, trial.worker_speed or 1.0)
            self._observe_scoring(trial)

    def _observe_scoring(self, trial: common_pb2.Trial) -> None:
        if trial.score_seconds > 0:
            self._scoring.setdefault(trial.study_id, collections.deque(maxlen=SCORE_HISTORY)).append(trial.score_seconds)
            self._recent_scoring.append(trial.score_seconds)

    def scoring_seconds(self, study_id: str) -> float:
        """Predicted seconds of one of the study's trials on the evaluator."""
        self._seed()
        history = self._scoring.get(study_id) or self._recent_scoring
        return statistics.median(history) if history else DEFAULT_SCORE_SECONDS

    def predict(self, spec: common_pb2.StudySpec, candidate: common_pb2.Candidate, speed: float = 1.0) -> Prediction:
        """Seconds on a trainer of `speed` (1.0: the reference)."""
        self._seed()
        return self.model.predict(trial_shape(spec, candidate)).on(speed)

    def record(self, spec: common_pb2.StudySpec, trial: common_pb2.Trial) -> None:
        """A trial trained (its actual_seconds, score_seconds and worker_speed set)."""
        self._seed()
        self.model.observe(trial_shape(spec, trial.candidate), trial.actual_seconds, trial.worker_speed or 1.0)
        self._observe_scoring(trial)
