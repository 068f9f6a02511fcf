"""The search, with no gRPC in sight: rendering prompts and proposing candidates with optuna.

A study's prompt dimension is the list of its rendered prompts (each template with every
combination of the variables it uses, so a variable a template ignores cannot make duplicates);
hyper-parameters are optuna distributions. Strategies are optuna samplers driven by ask/tell:
grid (every combination once), random, and TPE. Trials live in optuna storage (SQLite under the
data dir by default), so a restarted prompt-generator picks a study up where it was.
Strategies: grid, random, TPE and CMA-ES are optuna samplers; the bandit (Thompson sampling)
and the RL policy (REINFORCE) live in policies.py and hand optuna their choices through
enqueue_trial, so every strategy's trials sit in the same storage the same way.
"""
from __future__ import annotations

import hashlib
import itertools
import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import optuna

from openautoglm.prompt_generator.policies import Reinforce, ThompsonBandit, discretise
from openautoglm.common.spec.candidates import candidate_id
from openautoglm.common.spec.schema import StudySpecModel, is_active
from openautoglm.common.spec.templates import render, template_fields, INPUT_SLOT

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
PROMPT_PARAM = "prompt"
# Consecutive duplicate proposals after which a non-grid study is taken as exhausted.
MAX_DUPLICATE_DRAWS = 64


@dataclass(frozen=True)
class RenderedPrompt:
    template_id: str
    variables: tuple[tuple[str, str], ...]
    prompt: str

    @property
    def key(self) -> str:
        return json.dumps([self.template_id, list(self.variables)])


@dataclass(frozen=True)
class ProposedCandidate:
    id: str
    template_id: str
    variables: dict[str, str]
    prompt: str
    hyperparameters: dict


class RenderCache:
    """Rendered prompts keyed by a hash of (template, variable values, model version)."""

    def __init__(self) -> None:
        self._cache: dict[str, str] = {}
        self._lock = threading.Lock()
        self.hits = 0
        self.lookups = 0

    def render(self, template: str, values: dict[str, str], model_version: str) -> str:
        key = hashlib.sha256(
            json.dumps([template, sorted(values.items()), model_version]).encode()
        ).hexdigest()
        with self._lock:
            self.lookups += 1
            if key in self._cache:
                self.hits += 1
                return self._cache[key]
        text = render(template, values)
        with self._lock:
            self._cache[key] = text
        return text


def render_all(
    templates: list[tuple[str, str]],
    variables: dict[str, list[str]],
    model_version: str,
    cache: RenderCache,
    instructions: Sequence[str] = (),
    positions: Sequence[str] = ("before",),
) -> list[RenderedPrompt]:
    """Every template x every combination of the values of the variables it uses
    (x every instruction x every position, when instructions are given)."""
    out = []
    for template_id, text in templates:
        used = sorted(template_fields(text) - {INPUT_SLOT})
        for combo in itertools.product(*(variables[name] for name in used)):
            values = dict(zip(used, combo))
            rendered = cache.render(text, values, model_version)
            if not instructions:
                out.append(RenderedPrompt(template_id, tuple(values.items()), rendered))
                continue
            for instruction, position in itertools.product(instructions, positions):
                prompt = f"{instruction} {rendered}" if position == "before" else f"{rendered} {instruction}"
                dims = (("instruction_text", instruction), ("instruction_position", position))
                out.append(RenderedPrompt(template_id, tuple(values.items()) + dims, prompt))
    return out


def _distribution_size(space) -> int | None:
    """Number of distinct hyper-parameter settings, or None if any is continuous."""
    size = 1
    if any(hp.when for hp in space.hyperparameters.values()):
        return None  # conditional spaces: exhaustion shows as repeated draws instead
    for hp in space.hyperparameters.values():
        if hp.type == "choice":
            size *= len(hp.values)
        elif hp.type == "int":
            size *= len(hp.int_values())
        else:
            return None
    return size


class StudySearch:
    """One study's search state: its rendered prompts, its optuna study and what was proposed."""

    def __init__(self, study_id: str, spec: StudySpecModel, storage: str | None, cache: RenderCache,
                 priors: Sequence[tuple[str, dict[str, str], dict[str, Any], float]] = ()):
        self.study_id = study_id
        self.spec = spec
        space = spec.search_space
        model_version = spec.model.builtin or spec.model.path
        self.prompts = render_all([(t.id, t.text) for t in space.templates], space.variables, model_version, cache,
                                  space.instructions, space.instruction_position)
        self._by_key = {p.key: p for p in self.prompts}
        hp_size = _distribution_size(space)
        self.space_size = None if hp_size is None else hp_size * len(self.prompts)
        self.study = optuna.create_study(
            study_name=study_id,
            storage=storage,
            sampler=self._sampler(),
            pruner=self._pruner(),
            directions=[o.direction for o in (spec.objective, *spec.extra_objectives)],
            load_if_exists=True,
        )
        existing = self.study.get_trials(deepcopy=False)
        if priors and not any(t.user_attrs.get("prior") for t in existing):
            self._add_priors(priors)
        # candidate id -> optuna trial number, rebuilt from storage after a restart.
        self.trial_of: dict[str, int] = {}
        for trial in self.study.get_trials(deepcopy=False):
            if trial.user_attrs.get("prior"):
                continue  # known results to learn from, not candidates this study has had
            cid = trial.user_attrs.get("candidate_id")
            if cid and trial.state != optuna.trial.TrialState.PRUNED:
                self.trial_of.setdefault(cid, trial.number)
        self.lock = threading.Lock()
        self.policy = self._policy()
        if self.policy is not None:  # replay what the study has learnt so far
            for trial in self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)):
                assert trial.value is not None  # a complete single-objective trial has its value
                self.policy.observe(trial.params, self._reward(trial.value))

    def distributions(self) -> dict[str, optuna.distributions.BaseDistribution]:
        """The optuna distribution of every dimension, exactly as _suggest asks for them."""
        dists: dict[str, optuna.distributions.BaseDistribution] = {
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

    def _add_priors(self, priors) -> None:
        """Record earlier results (already checked by spec.prior_params) as finished trials."""
        dists = self.distributions()
        for template_id, variables, hyperparameters, value in priors:
            template = next(t for t in self.spec.search_space.templates if t.id == template_id)
            used = sorted(template_fields(template.text) - {INPUT_SLOT})
            dims = [(n, variables[n]) for n in used]
            if self.spec.search_space.instructions:
                dims += [(n, variables[n]) for n in ("instruction_text", "instruction_position")]
            key = RenderedPrompt(template_id, tuple(dims), "").key
            params = {PROMPT_PARAM: key, **hyperparameters}
            self.study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: dists[k] for k in params}, value=value, user_attrs={"prior": True}))

    def _pruner(self) -> optuna.pruners.BasePruner:
        if self.spec.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if self.spec.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
        return optuna.pruners.NopPruner()

    def report(self, candidate_id: str, step: int, value: float) -> bool:
        """Record a running trial's intermediate score (higher is better); True = prune it."""
        with self.lock:
            number = self.trial_of.get(candidate_id)
            if number is None:
                raise KeyError(candidate_id)
            frozen = self.study.get_trials(deepcopy=False)[number]
            if frozen.state.is_finished():
                return False
            trial = optuna.trial.Trial(self.study, frozen._trial_id)
            trial.report(self._reward(value), step)
            return bool(trial.should_prune())

    def _policy(self):
        if self.spec.strategy not in ("bandit", "rl"):
            return None
        dims = {PROMPT_PARAM: [p.key for p in self.prompts]}
        dims.update({name: discretise(hp) for name, hp in self.spec.search_space.hyperparameters.items()})
        return (ThompsonBandit if self.spec.strategy == "bandit" else Reinforce)(dims, self.spec.seed)

    def _reward(self, value: float) -> float:
        return value if self.spec.objective.direction == "maximize" else -value

    def _sampler(self) -> optuna.samplers.BaseSampler:
        seed = self.spec.seed
        if self.spec.strategy == "grid":
            grid: dict[str, list] = {PROMPT_PARAM: [p.key for p in self.prompts]}
            for name, hp in self.spec.search_space.hyperparameters.items():
                if hp.type == "choice":
                    grid[name] = list(hp.values)
                else:
                    grid[name] = hp.int_values()
            return optuna.samplers.GridSampler(grid, seed=seed)
        if self.spec.strategy in ("random", "bandit", "rl"):  # bandit/rl enqueue their own choices
            return optuna.samplers.RandomSampler(seed=seed)
        if self.spec.strategy == "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, n_startup_trials=4, warn_independent_sampling=False)
        return optuna.samplers.TPESampler(seed=seed, n_startup_trials=4, multivariate=True)

    def _suggest(self, trial: optuna.Trial) -> ProposedCandidate:
        prompt = self._by_key[trial.suggest_categorical(PROMPT_PARAM, [p.key for p in self.prompts])]
        params: dict = {}
        for name, hp in self.spec.search_space.hyperparameters.items():
            if not is_active(hp, params):
                continue  # a conditional parameter whose condition does not hold
            if hp.type == "choice":
                params[name] = trial.suggest_categorical(name, list(hp.values))
            elif hp.type == "uniform":
                params[name] = trial.suggest_float(name, *hp.bounds)
            elif hp.type == "loguniform":
                params[name] = trial.suggest_float(name, *hp.bounds, log=True)
            else:
                low, high = hp.bounds
                params[name] = trial.suggest_int(name, int(low), int(high), step=hp.step or 1)
        return ProposedCandidate(
            id=candidate_id(prompt.prompt, params),
            template_id=prompt.template_id,
            variables=dict(prompt.variables),
            prompt=prompt.prompt,
            hyperparameters=params,
        )

    @property
    def exhausted(self) -> bool:
        return self.space_size is not None and len(self.trial_of) >= self.space_size

    def _candidate_of(self, trial: optuna.trial.FrozenTrial) -> ProposedCandidate:
        prompt = self._by_key[trial.params[PROMPT_PARAM]]
        params = {k: v for k, v in trial.params.items() if k != PROMPT_PARAM}
        return ProposedCandidate(candidate_id(prompt.prompt, params), prompt.template_id, dict(prompt.variables),
                                 prompt.prompt, params)

    def propose(self, count: int, known: set[str] | None = None) -> tuple[list[ProposedCandidate], bool]:
        """Up to `count` candidates never proposed before in this study; (candidates, exhausted).

        With `known` (the candidates the caller has recorded), candidates proposed before but
        still unfinished and unknown to the caller come first: a caller that crashed between
        Propose and recording its answer gets them back.
        """
        out: list[ProposedCandidate] = []
        with self.lock:
            if known is not None:
                trials = self.study.get_trials(deepcopy=False)
                for cid, number in self.trial_of.items():
                    if len(out) >= count:
                        break
                    if cid not in known and not trials[number].state.is_finished():
                        out.append(self._candidate_of(trials[number]))
            duplicates = 0
            while len(out) < count and not self.exhausted and duplicates < MAX_DUPLICATE_DRAWS:
                if self.policy is not None and duplicates < 3:
                    # The policy's best candidate the study has not had; if that still repeats
                    # one (a conditional space), the random sampler explores after a few tries.
                    trials = self.study.get_trials(deepcopy=False)
                    seen = [trials[number].params for number in self.trial_of.values()]
                    self.study.enqueue_trial(self.policy.propose(seen), skip_if_exists=False)
                trial = self.study.ask()
                candidate = self._suggest(trial)
                if candidate.id in self.trial_of:
                    # Already had: record the draw as pruned so the sampler moves on.
                    self.study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                    duplicates += 1
                    continue
                trial.set_user_attr("candidate_id", candidate.id)
                self.trial_of[candidate.id] = trial.number
                out.append(candidate)
                duplicates = 0
            exhausted = self.exhausted or duplicates >= MAX_DUPLICATE_DRAWS
        return out, exhausted

    def feedback(self, candidate_id: str, value: float | None, pruned: bool = False, extra: Sequence[float] = ()) -> bool:
        """Record a candidate's objective value (None = failed); False if already recorded."""
        with self.lock:
            number = self.trial_of.get(candidate_id)
            if number is None:
                raise KeyError(candidate_id)
            if self.study.get_trials(deepcopy=False)[number].state.is_finished():
                return False
            if pruned:
                self.study.tell(number, state=optuna.trial.TrialState.PRUNED)
            elif value is None:
                self.study.tell(number, state=optuna.trial.TrialState.FAIL)
            else:
                if len(extra) != len(self.spec.extra_objectives):
                    raise ValueError(f"expected {len(self.spec.extra_objectives)} extra objective values, got {len(extra)}")
                self.study.tell(number, [value, *extra] if extra else value)
                if self.policy is not None:
                    self.policy.observe(self.study.get_trials(deepcopy=False)[number].params, self._reward(value))
            return True
