"""The search, with no gRPC in sight and no trial state of its own.

A study's prompt dimension is the list of its rendered prompts (prompts.py); hyper-parameters
are optuna distributions. Every question (propose, should-prune) comes with the study's trials
as the gateway records them: the search rebuilds an in-memory optuna study from them (warm-start
results first, then the trials in number order, each with the bookkeeping its sampler or pruner
left in `search_state`) and answers with a sampler seeded by the study's seed and the trial's
number (samplers.py). The same trials therefore always give the same answer, whichever replica
is asked and however often it restarted; nothing the search knows outlives a call except its
spec and render cache.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from openautoglm.common.spec.candidates import candidate_id
from openautoglm.common.spec.schema import HyperParameterModel, Scalar, StudySpecModel, is_active
from openautoglm.prompt_generator.policies import discretise
from openautoglm.prompt_generator.prompts import RenderCache, RenderedPrompt, prompt_key, render_all
from openautoglm.prompt_generator.samplers import PRIOR_ATTR, make_sampler

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
PROMPT_PARAM = "prompt"
# Consecutive repeated draws after which a space is taken as exhausted (conditional or continuous
# spaces, whose size is not known in advance).
MAX_DUPLICATE_DRAWS = 64
CANDIDATE_ATTR = "candidate_id"

RecordState = Literal["pending", "complete", "failed", "pruned"]
_STATES: dict[str, TrialState] = {
    "pending": TrialState.RUNNING, "complete": TrialState.COMPLETE, "failed": TrialState.FAIL, "pruned": TrialState.PRUNED,
}


class RecordError(ValueError):
    """A trial record that does not fit the study's search space; `index` is its position."""

    def __init__(self, index: int, message: str):
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class TrialRecord:
    """One trial of the study as its owner (the gateway) records it."""

    number: int
    template_id: str
    variables: Mapping[str, str]
    hyperparameters: Mapping[str, Scalar]
    state: RecordState = "pending"
    # The objective, then the extra objectives (complete trials).
    values: Sequence[float] = ()
    # step -> score, higher is better.
    intermediate: Mapping[int, float] = field(default_factory=dict)
    # The sampler's and pruner's bookkeeping for this trial, as the search last returned it.
    search_state: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ProposedCandidate:
    id: str
    number: int
    template_id: str
    variables: dict[str, str]
    prompt: str
    hyperparameters: dict[str, Scalar]
    # The sampler's bookkeeping for this trial (JSON-serialisable); hand it back in its record.
    search_state: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Prior:
    """A warm-start result (checked by warm_start.prior_params)."""

    template_id: str
    variables: Mapping[str, str]
    hyperparameters: Mapping[str, Scalar]
    value: float


def _distribution_size(hyperparameters: Mapping[str, HyperParameterModel]) -> int | None:
    """Number of distinct hyper-parameter settings, or None if any is continuous."""
    size = 1
    if any(hp.when for hp in hyperparameters.values()):
        return None  # conditional spaces: exhaustion shows as repeated draws instead
    for hp in hyperparameters.values():
        if hp.type == "choice":
            size *= len(hp.values)
        elif hp.type == "int":
            size *= len(hp.int_values())
        else:
            return None
    return size


class StudySearch:
    """One study's search: its rendered prompts, distributions, strategy and pruner."""

    def __init__(self, spec: StudySpecModel, cache: RenderCache, priors: Sequence[Prior] = ()):
        self.spec = spec
        space = spec.search_space
        model_version = spec.model.builtin or spec.model.path
        self.prompts = render_all([(t.id, t.text) for t in space.templates], space.variables, model_version, cache,
                                  space.instructions, space.instruction_position)
        self._by_key: dict[str, RenderedPrompt] = {p.key: p for p in self.prompts}
        self._templates = {t.id: t.text for t in space.templates}
        hp_size = _distribution_size(space.hyperparameters)
        self.space_size = None if hp_size is None else hp_size * len(self.prompts)
        self.distributions = self._distributions()
        self.priors = list(priors)

    # --- the questions ----------------------------------------------------------------------
    def propose(self, records: Sequence[TrialRecord], count: int, next_number: int | None = None
                ) -> tuple[list[ProposedCandidate], bool]:
        """Up to `count` candidates for trials next_number, next_number + 1, ..., none of them one
        the records already have; (candidates, exhausted). Proposing k at once gives exactly what
        k calls of one would, each seeing the earlier ones in flight."""
        records = list(records)
        number = next_number if next_number is not None else max((r.number for r in records), default=-1) + 1
        out: list[ProposedCandidate] = []
        for _ in range(count):
            candidate = self._propose_one(records, number)
            if candidate is None:
                return out, True
            out.append(candidate)
            records.append(TrialRecord(number, candidate.template_id, candidate.variables, candidate.hyperparameters,
                                       search_state=candidate.search_state))
            number += 1
        return out, self._exhausted(len({self.candidate_of(r).id for r in records}))

    def should_prune(self, records: Sequence[TrialRecord], number: int, step: int) -> tuple[bool, dict[str, Any]]:
        """Whether the pruner stops trial `number` after `step` (its record carries the scores);
        returns the trial's search state after the pruner's bookkeeping too."""
        study = self.rebuild(records)
        trial = next((t for t in study.get_trials(deepcopy=False) if t.user_attrs.get("number") == number), None)
        if trial is None:
            raise KeyError(number)
        if trial.state != TrialState.RUNNING:
            return False, dict(trial.system_attrs)
        if step not in trial.intermediate_values:
            raise KeyError(f"trial {number} has no score for step {step}")
        prune = bool(study.pruner.prune(study, trial))
        return prune, dict(study.get_trials(deepcopy=False)[trial.number].system_attrs)

    def candidate_of(self, record: TrialRecord) -> ProposedCandidate:
        """The candidate a record stands for (RecordError-free: records come from proposals)."""
        prompt = self._by_key[self._key(record.template_id, record.variables)]
        params = dict(record.hyperparameters)
        return ProposedCandidate(candidate_id(prompt.prompt, params), record.number, prompt.template_id,
                                 dict(prompt.variables), prompt.prompt, params)

    # --- building the study ------------------------------------------------------------------
    def _propose_one(self, records: list[TrialRecord], number: int) -> ProposedCandidate | None:
        study = self.rebuild(records)
        seen = {t.user_attrs[CANDIDATE_ATTR] for t in study.get_trials(deepcopy=False) if CANDIDATE_ATTR in t.user_attrs}
        if self._exhausted(len(seen)):
            return None
        study.sampler = self.sampler_for(number)
        for _ in range(MAX_DUPLICATE_DRAWS):
            trial = study.ask()
            candidate = self._suggest(trial, number)
            if candidate.id in seen:
                # Already had: record the draw as pruned so the sampler moves on.
                try:
                    study.tell(trial, state=TrialState.PRUNED)
                except RuntimeError:
                    return None  # the grid sampler stops its study (Study.stop) when no point is left
                continue
            attrs = study.get_trials(deepcopy=False)[trial.number].system_attrs
            return ProposedCandidate(candidate.id, number, candidate.template_id, candidate.variables, candidate.prompt,
                                     candidate.hyperparameters, _json_safe(attrs))
        return None

    def rebuild(self, records: Sequence[TrialRecord]) -> optuna.Study:
        """An in-memory optuna study holding the warm-start results, then every record."""
        study = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=self.spec.seed),  # replaced before any ask
            pruner=self._pruner(),
            directions=[o.direction for o in (self.spec.objective, *self.spec.extra_objectives)],
        )
        for prior in self.priors:
            params = {PROMPT_PARAM: self._key(prior.template_id, prior.variables), **prior.hyperparameters}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: self.distributions[k] for k in params}, value=prior.value,
                user_attrs={PRIOR_ATTR: True}))
        for index, record in enumerate(sorted(records, key=lambda r: r.number)):
            study.add_trial(self._frozen(index, record))
        return study

    def _frozen(self, index: int, record: TrialRecord) -> FrozenTrial:
        try:
            params: dict[str, Any] = {PROMPT_PARAM: self._key(record.template_id, record.variables), **record.hyperparameters}
            candidate = self.candidate_of(record)
            values = list(record.values) if record.state == "complete" else None
            return optuna.trial.create_trial(
                state=_STATES[record.state], params=params,
                distributions={k: self.distributions[k] for k in params},
                values=values, intermediate_values={int(k): self._oriented(v) for k, v in record.intermediate.items()},
                system_attrs=dict(record.search_state),
                user_attrs={CANDIDATE_ATTR: candidate.id, "number": record.number},
            )
        except (KeyError, ValueError) as err:
            raise RecordError(index, f"trial {record.number} does not fit the study's search space: {err}") from None

    def _key(self, template_id: str, variables: Mapping[str, str]) -> str:
        text = self._templates.get(template_id)
        if text is None:
            raise KeyError(f"unknown template {template_id!r}")
        key = prompt_key(text, template_id, variables, bool(self.spec.search_space.instructions))
        if key not in self._by_key:
            raise KeyError(f"variables {dict(variables)} are not a rendered prompt of template {template_id!r}")
        return key

    def _oriented(self, score: float) -> float:
        """An intermediate score (higher is better) in the study's direction, as its pruner compares them."""
        return float(score) if self.spec.objective.direction == "maximize" else -float(score)

    def _exhausted(self, seen: int) -> bool:
        return self.space_size is not None and seen >= self.space_size

    # --- the space ---------------------------------------------------------------------------
    def _distributions(self) -> dict[str, BaseDistribution]:
        """The optuna distribution of every dimension, exactly as _suggest asks for them."""
        dists: dict[str, BaseDistribution] = {
            PROMPT_PARAM: optuna.distributions.CategoricalDistribution([p.key for p in self.prompts])}
        for name, hp in self.spec.search_space.hyperparameters.items():
            if hp.type == "choice":
                dists[name] = optuna.distributions.CategoricalDistribution(list(hp.values))
            elif hp.type == "int":
                low, high = hp.bounds
                dists[name] = optuna.distributions.IntDistribution(int(low), int(high), step=hp.step or 1)
            else:
                dists[name] = optuna.distributions.FloatDistribution(*hp.bounds, log=hp.type == "loguniform")
        return dists

    def _grid(self) -> dict[str, list[Any]]:
        if self.spec.strategy != "grid":
            return {}
        grid: dict[str, list[Any]] = {PROMPT_PARAM: [p.key for p in self.prompts]}
        for name, hp in self.spec.search_space.hyperparameters.items():
            grid[name] = list(hp.values) if hp.type == "choice" else list(hp.int_values())
        return grid

    def sampler_for(self, number: int) -> BaseSampler:
        """The strategy's sampler for trial `number` (seeded by the study's seed and the number)."""
        return make_sampler(self.spec.strategy, self.spec.seed, number, self.distributions,
                            self._grid(), self._policy_dims(), self.spec.objective.direction == "maximize")

    def _policy_dims(self) -> dict[str, list[Any]]:
        if self.spec.strategy not in ("bandit", "rl"):
            return {}
        dims: dict[str, list[Any]] = {PROMPT_PARAM: [p.key for p in self.prompts]}
        dims.update({name: discretise(hp) for name, hp in self.spec.search_space.hyperparameters.items()})
        return dims

    def _pruner(self) -> optuna.pruners.BasePruner:
        if self.spec.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if self.spec.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
        return optuna.pruners.NopPruner()

    def _suggest(self, trial: optuna.Trial, number: int) -> ProposedCandidate:
        prompt = self._by_key[trial.suggest_categorical(PROMPT_PARAM, [p.key for p in self.prompts])]
        params: dict[str, Scalar] = {}
        for name, hp in self.spec.search_space.hyperparameters.items():
            if not is_active(hp, params):
                continue  # a conditional parameter whose condition does not hold
            if hp.type == "choice":
                params[name] = cast(Scalar, trial.suggest_categorical(name, list(hp.values)))  # spec choices are never None
            elif hp.type == "uniform":
                params[name] = trial.suggest_float(name, *hp.bounds)
            elif hp.type == "loguniform":
                params[name] = trial.suggest_float(name, *hp.bounds, log=True)
            else:
                low, high = hp.bounds
                params[name] = trial.suggest_int(name, int(low), int(high), step=hp.step or 1)
        return ProposedCandidate(candidate_id(prompt.prompt, params), number, prompt.template_id, dict(prompt.variables),
                                 prompt.prompt, params)


def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A sampler's system attributes as JSON will carry them (optuna's RDB storage keeps them as
    JSON too, so every sampler writes JSON-serialisable values)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(attrs)))
    return out
