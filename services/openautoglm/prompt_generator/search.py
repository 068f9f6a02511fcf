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
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial, TrialState

from openautoglm.common.spec.candidates import candidate_id
from openautoglm.common.catalogue import MODEL_PARAM
from openautoglm.common import datasets, sandbox
from openautoglm.common.catalogue import WRITER_METHODS
from openautoglm.common.datasets import Example
from openautoglm.common.spec.schema import HyperParameterModel, Scalar, SpecError, StudySpecModel, is_active
from openautoglm.common.spec.templates import INPUT_SLOT, clean_instruction, is_clean_instruction, template_fields
from openautoglm.prompt_generator import edits
from openautoglm.prompt_generator.policies import discretise
from openautoglm.prompt_generator.prompts import RenderCache, RenderedPrompt, prompt_key, render_all, with_instruction
from openautoglm.prompt_generator.samplers import PRIOR_ATTR, STARTUP_TRIALS, make_sampler, trial_seed
from openautoglm.prompt_generator.writer import InstructionWriter, WriterError

log = logging.getLogger(__name__)
optuna.logging.set_verbosity(optuna.logging.WARNING)
PROMPT_PARAM = "prompt"
# The searched dimension "how is this trial's instruction made": "none" (a prompt of the space as
# it stands) or an edit operation applied to the best candidate so far.
INSTRUCTION_OP_PARAM = "instruction_op"
NO_OP = "none"
# Where a generated instruction came from (CandidateLineage.source).
GENERATED_SOURCES = ("edit", "ape", "opro")
# Draws of an edit tried before a proposal gives up editing (every draw made a candidate it had).
EDIT_ATTEMPTS = 16
# Scored instructions an OPRO meta-prompt shows (the best ones; OPRO's own setting).
OPRO_HISTORY = 20
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
class Lineage:
    """How the search wrote a candidate's instruction (CandidateLineage in the protos)."""

    source: str  # one of GENERATED_SOURCES
    parent_id: str = ""  # the trained candidate it derives from
    edits: tuple[str, ...] = ()  # what was done, in order ("delete 'of this review'", ...)

    @property
    def operation(self) -> str:
        """The value of the instruction_op dimension this lineage stands for."""
        if self.source == "edit":
            return self.edits[0].split(" ", 1)[0] if self.edits else NO_OP
        return self.source  # "ape" / "opro": the writer's method


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
    # Set when the search wrote the trial's instruction.
    lineage: Lineage | None = None


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
    lineage: Lineage | None = None

    def record(self, **changes: Any) -> TrialRecord:
        """This candidate as its trial's record (pending unless `changes` say otherwise)."""
        return TrialRecord(self.number, self.template_id, self.variables, self.hyperparameters,
                           search_state=self.search_state, lineage=self.lineage, **changes)


@dataclass(frozen=True)
class PromptSpace:
    """The prompt dimension as one question sees it: the user's rendered prompts, then the
    generated ones its records hold (in trial order), and each one's optuna distribution."""

    prompts: list[RenderedPrompt]
    by_key: dict[str, RenderedPrompt]
    distributions: dict[str, BaseDistribution]
    # A generated prompt's key -> (the trial that wrote it, its lineage): a later trial that picks
    # the prompt again inherits the lineage, but did not edit.
    origins: dict[str, tuple[int, Lineage]] = field(default_factory=dict)
    # Each record with a generated instruction (by trial number) -> its prompt, resolved once per
    # question: the study's rebuild and an edit's parent reuse it.
    resolved: dict[int, RenderedPrompt] = field(default_factory=dict)

    @property
    def keys(self) -> list[str]:
        return [p.key for p in self.prompts]


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

    def __init__(self, spec: StudySpecModel, cache: RenderCache, priors: Sequence[Prior] = (),
                 writer: InstructionWriter | None = None, read_roots: Sequence[Path] | None = None):
        self.spec = spec
        space = spec.search_space
        self._model_version = spec.model.builtin or spec.model.path
        self._cache = cache
        self.prompts = render_all([(t.id, t.text) for t in space.templates], space.variables, self._model_version,
                                  cache, space.instructions, space.instruction_position)
        self._by_key: dict[str, RenderedPrompt] = {p.key: p for p in self.prompts}
        self._templates = {t.id: t.text for t in space.templates}
        for prior in priors:  # instructions an earlier search wrote join the space they warm-start
            text = prior.variables.get("instruction_text")
            if text and text not in space.instructions:
                written = self._generated(prior.template_id, prior.variables, text,
                                          prior.variables.get("instruction_position", "before"))
                if written.key not in self._by_key:
                    self.prompts.append(written)
                    self._by_key[written.key] = written
        self.edits = space.instruction_edits
        self.writing = space.instruction_writer
        needs_model = self.writing is not None or (self.edits is not None and "paraphrase" in self.edits.operations)
        if needs_model and writer is None:
            field = "instruction_writer" if self.writing is not None else "instruction_edits.operations"
            raise SpecError(f"search_space.{field}", "a language model writes these instructions, and none is configured "
                            "for the prompt-generator (OPENAUTOGLM_PROMPT_MODEL)")
        self._writer = writer
        self._read_roots = read_roots
        self._train_examples: list[Example] | None = None
        # The instruction_op dimension: how a proposal may make its instruction.
        self._ops = [*(self.edits.operations if self.edits else ()), *(self.writing.methods if self.writing else ())]
        self._pool = edits.pool_from(space.instructions, self.edits.phrase_pool) if self.edits is not None else []
        # The searched hyper-parameters, with the choice of base model as one more when the space
        # has several (candidates name theirs in hyperparameters["model"]).
        self.hyperparameters: dict[str, HyperParameterModel] = {
            **({MODEL_PARAM: HyperParameterModel(type="choice", values=[m.key for m in space.models])}
               if space.models else {}),
            **space.hyperparameters}
        hp_size = _distribution_size(self.hyperparameters)
        # Generated instructions make the space open-ended: exhaustion shows as repeated draws.
        self.space_size = None if hp_size is None or self._ops else hp_size * len(self.prompts)
        self._user_space = self._prompt_space([])
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
            records.append(candidate.record())
            number += 1
        return out, self.space_size is not None and self._exhausted(len({self.candidate_of(r).id for r in records}))

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

    def candidate_of(self, record: TrialRecord, space: PromptSpace | None = None) -> ProposedCandidate:
        """The candidate a record stands for, its prompt as `space` resolved it when given (the one
        place a record's candidate id is computed; RecordError-free: records come from proposals)."""
        prompt = self._prompt_in(space, record) if space is not None else self._prompt_of(record)
        params = dict(record.hyperparameters)
        return ProposedCandidate(candidate_id(prompt.prompt, params), record.number, prompt.template_id,
                                 dict(prompt.variables), prompt.prompt, params, lineage=record.lineage)

    # --- building the study ------------------------------------------------------------------
    def _propose_one(self, records: list[TrialRecord], number: int) -> ProposedCandidate | None:
        space = self.prompt_space(records)
        study = self.rebuild(records, space)
        seen = {t.user_attrs[CANDIDATE_ATTR] for t in study.get_trials(deepcopy=False) if CANDIDATE_ATTR in t.user_attrs}
        if self._exhausted(len(seen)):
            return None
        study.sampler = self.sampler_for(number, space)
        parent = self._best_record(records)
        for attempt in range(MAX_DUPLICATE_DRAWS):
            trial = study.ask()
            candidate = self._suggest(trial, number, space, parent, seen, attempt, records)
            if candidate.id in seen:
                # Already had: record the draw as pruned so the sampler moves on.
                try:
                    study.tell(trial, state=TrialState.PRUNED)
                except RuntimeError:
                    return None  # the grid sampler stops its study (Study.stop) when no point is left
                continue
            attrs = study.get_trials(deepcopy=False)[trial.number].system_attrs
            return ProposedCandidate(candidate.id, number, candidate.template_id, candidate.variables, candidate.prompt,
                                     candidate.hyperparameters, _json_safe(attrs), candidate.lineage)
        return None

    def rebuild(self, records: Sequence[TrialRecord], space: PromptSpace | None = None) -> optuna.Study:
        """An in-memory optuna study holding the warm-start results, then every record."""
        space = space or self.prompt_space(records)
        study = optuna.create_study(
            sampler=optuna.samplers.RandomSampler(seed=self.spec.seed),  # replaced before any ask
            pruner=self._pruner(),
            directions=[o.direction for o in (self.spec.objective, *self.spec.extra_objectives)],
        )
        for prior in self.priors:
            params = {PROMPT_PARAM: self._key(prior.template_id, prior.variables), **self._op_params(None),
                      **prior.hyperparameters}
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions={k: space.distributions[k] for k in params}, value=prior.value,
                user_attrs={PRIOR_ATTR: True}))
        for index, record in enumerate(sorted(records, key=lambda r: r.number)):
            study.add_trial(self._frozen(index, record, space))
        return study

    def _frozen(self, index: int, record: TrialRecord, space: PromptSpace) -> FrozenTrial:
        try:
            prompt = self._prompt_in(space, record)
            origin = space.origins.get(prompt.key)
            wrote = origin is not None and origin[0] == record.number  # this trial wrote its instruction
            params: dict[str, Any] = {PROMPT_PARAM: prompt.key, **self._op_params(record.lineage if wrote else None),
                                      **record.hyperparameters}
            values = list(record.values) if record.state == "complete" else None
            return optuna.trial.create_trial(
                state=_STATES[record.state], params=params,
                distributions={k: space.distributions[k] for k in params},
                values=values, intermediate_values={int(k): self._oriented(v) for k, v in record.intermediate.items()},
                system_attrs=dict(record.search_state),
                # candidate_of's id, from the prompt resolved above (this runs for every record
                # on every proposal: no second lookup, no candidate object).
                user_attrs={CANDIDATE_ATTR: candidate_id(prompt.prompt, dict(record.hyperparameters)),
                            "number": record.number},
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

    def _prompt_in(self, space: PromptSpace, record: TrialRecord) -> RenderedPrompt:
        """A record's prompt as this question resolved it (_prompt_of when it did not)."""
        resolved = space.resolved.get(record.number)
        return resolved if resolved is not None else self._prompt_of(record)

    def _prompt_of(self, record: TrialRecord) -> RenderedPrompt:
        """The rendered prompt of a record: one of the user's, or (with a lineage) one the search
        wrote, checked to be what a proposal could have made: the user's template and variables
        and a clean instruction in a position the space allows."""
        if record.lineage is None:
            return self._by_key[self._key(record.template_id, record.variables)]
        if record.lineage.source not in GENERATED_SOURCES or record.lineage.operation not in self._ops:
            raise KeyError(f"an instruction written by {record.lineage.operation!r}, which this study does not do")
        instruction = record.variables.get("instruction_text", "")
        position = record.variables.get("instruction_position", "")
        if not is_clean_instruction(instruction) or position not in self.spec.search_space.instruction_position:
            raise KeyError("not an instruction the search could have written")
        return self._generated(record.template_id, record.variables, instruction, position)

    def _generated(self, template_id: str, variables: Mapping[str, str], instruction: str, position: str) -> RenderedPrompt:
        text = self._templates.get(template_id)
        if text is None:
            raise KeyError(f"unknown template {template_id!r}")
        used = sorted(template_fields(text) - {INPUT_SLOT})
        values = {name: variables[name] for name in used}
        for name, value in values.items():
            if value not in self.spec.search_space.variables[name]:
                raise KeyError(f"{value!r} is not a value of variable {name!r}")
        rendered = self._cache.render(text, values, self._model_version)
        return with_instruction(template_id, values, rendered, instruction, position)

    def _oriented(self, score: float) -> float:
        """An intermediate score (higher is better) in the study's direction, as its pruner compares them."""
        return float(score) if self.spec.objective.direction == "maximize" else -float(score)

    def _exhausted(self, seen: int) -> bool:
        return self.space_size is not None and seen >= self.space_size

    # --- the space ---------------------------------------------------------------------------
    def prompt_space(self, records: Sequence[TrialRecord]) -> PromptSpace:
        """The prompt dimension for a question about these records."""
        if not self._ops or not any(r.lineage for r in records):
            return self._user_space
        generated: dict[str, RenderedPrompt] = {}
        origins: dict[str, tuple[int, Lineage]] = {}
        resolved: dict[int, RenderedPrompt] = {}
        for record in sorted(records, key=lambda r: r.number):
            if record.lineage is not None:
                try:
                    prompt = resolved[record.number] = self._prompt_of(record)
                except KeyError:
                    continue  # _frozen names the bad record
                if prompt.key not in self._by_key and prompt.key not in generated:
                    generated[prompt.key] = prompt
                    origins[prompt.key] = (record.number, record.lineage)
        return self._prompt_space(list(generated.values()), origins, resolved)

    def _prompt_space(self, generated: list[RenderedPrompt], origins: dict[str, tuple[int, Lineage]] | None = None,
                      resolved: dict[int, RenderedPrompt] | None = None) -> PromptSpace:
        prompts = self.prompts + generated
        by_key = {**self._by_key, **{p.key: p for p in generated}}
        return PromptSpace(prompts, by_key, self._distributions([p.key for p in prompts]), origins or {}, resolved or {})

    def _operations(self) -> list[str]:
        return [NO_OP, *self._ops] if self._ops else []

    def _op_params(self, lineage: Lineage | None) -> dict[str, str]:
        """The instruction_op value of a trial (none when the study writes no instructions)."""
        if not self._ops:
            return {}
        return {INSTRUCTION_OP_PARAM: lineage.operation if lineage is not None else NO_OP}

    def _distributions(self, prompt_keys: list[str]) -> dict[str, BaseDistribution]:
        """The optuna distribution of every dimension, exactly as _suggest asks for them."""
        dists: dict[str, BaseDistribution] = {PROMPT_PARAM: optuna.distributions.CategoricalDistribution(prompt_keys)}
        if self._ops:
            dists[INSTRUCTION_OP_PARAM] = optuna.distributions.CategoricalDistribution(self._operations())
        for name, hp in self.hyperparameters.items():
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
        for name, hp in self.hyperparameters.items():
            grid[name] = list(hp.values) if hp.type == "choice" else list(hp.int_values())
        return grid

    def sampler_for(self, number: int, space: PromptSpace | None = None) -> BaseSampler:
        """The strategy's sampler for trial `number` (seeded by the study's seed and the number)."""
        space = space or self._user_space
        return make_sampler(self.spec.strategy, self.spec.seed, number, space.distributions,
                            self._grid(), self._policy_dims(space), self.spec.objective.direction == "maximize")

    def _policy_dims(self, space: PromptSpace) -> dict[str, list[Any]]:
        if self.spec.strategy not in ("bandit", "rl"):
            return {}
        dims: dict[str, list[Any]] = {PROMPT_PARAM: space.keys}
        if self._ops:
            dims[INSTRUCTION_OP_PARAM] = self._operations()
        dims.update({name: discretise(hp) for name, hp in self.hyperparameters.items()})
        return dims

    def _pruner(self) -> optuna.pruners.BasePruner:
        if self.spec.pruner == "median":
            return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
        if self.spec.pruner == "successive_halving":
            return optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2)
        return optuna.pruners.NopPruner()

    # --- proposing ---------------------------------------------------------------------------
    def _best_record(self, records: Sequence[TrialRecord]) -> TrialRecord | None:
        """The complete trial with the best objective (the lowest number among equals)."""
        complete = [r for r in records if r.state == "complete" and r.values]
        if not complete:
            return None
        sign = 1.0 if self.spec.objective.direction == "maximize" else -1.0
        return max(sorted(complete, key=lambda r: r.number), key=lambda r: sign * r.values[0])

    def _suggest(self, trial: optuna.Trial, number: int, space: PromptSpace, parent: TrialRecord | None,
                 seen: set[str], attempt: int, records: Sequence[TrialRecord] = ()) -> ProposedCandidate:
        operation = NO_OP
        if self._ops:
            operation = str(trial.suggest_categorical(INSTRUCTION_OP_PARAM, self._operations()))
        prompt = space.by_key[trial.suggest_categorical(PROMPT_PARAM, space.keys)]
        params: dict[str, Scalar] = {}
        for name, hp in self.hyperparameters.items():
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
        if self.spec.strategy == "grips":
            # GrIPS: random candidates of the space first (while they are new); then every
            # proposal edits the best candidate's instruction and keeps everything else of it.
            assert self.edits is not None  # the grips strategy always edits (schema.py)
            operation = NO_OP
            starting = self._completed(trial) < STARTUP_TRIALS and candidate_id(prompt.prompt, params) not in seen
            if parent is not None and not starting:
                operation = random.Random(trial_seed(self.spec.seed, number) + attempt).choice(list(self.edits.operations))
        if operation in WRITER_METHODS and (parent is not None or operation == "ape"):
            written = self._write(operation, parent, prompt, params, number, seen, attempt, records, space)
            if written is not None:
                return written
        elif operation != NO_OP and parent is not None:
            kept = dict(parent.hyperparameters) if self.spec.strategy == "grips" else params
            edited = self._edit(parent, operation, kept, number, seen, attempt, space)
            if edited is not None:
                return edited
        origin = space.origins.get(prompt.key)  # a prompt an earlier trial wrote keeps its lineage
        return ProposedCandidate(candidate_id(prompt.prompt, params), number, prompt.template_id, dict(prompt.variables),
                                 prompt.prompt, params, lineage=origin[1] if origin else None)

    @staticmethod
    def _completed(trial: optuna.Trial) -> int:
        return len(trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)))

    def _edit(self, parent: TrialRecord, operation: str, params: dict[str, Scalar], number: int, seen: set[str],
              attempt: int, space: PromptSpace) -> ProposedCandidate | None:
        """A new instruction: the parent's after `operation` (then edits_per_candidate - 1 more,
        drawn from the study's operations), seeded by the study and the trial; None when no draw
        gives a candidate the study has not had."""
        assert self.edits is not None
        parent_prompt = self._prompt_in(space, parent)
        variables = dict(parent_prompt.variables)
        rng = random.Random(trial_seed(self.spec.seed, number) * 31 + attempt)
        writer = self._writer
        paraphrase = (lambda phrase: writer.paraphrase(phrase, rng.randrange(2**31))) if writer is not None else None
        for _ in range(EDIT_ATTEMPTS):
            text, done = variables["instruction_text"], []
            try:
                for k in range(self.edits.edits_per_candidate):
                    op = operation if k == 0 else rng.choice(list(self.edits.operations))
                    text, applied = edits.apply(text, op, rng, self._pool, paraphrase)
                    done.append(applied.description)
            except edits.EditImpossible:
                operation = rng.choice(list(self.edits.operations))  # this one cannot apply here: try another
                continue
            text = clean_instruction(text)
            if not text:
                continue
            prompt = self._generated(parent_prompt.template_id, variables, text, variables["instruction_position"])
            cid = candidate_id(prompt.prompt, params)
            if cid in seen or prompt.key in self._by_key:
                continue  # had already, or edited back into one of the user's instructions
            lineage = Lineage("edit", self.candidate_of(parent, space).id, tuple(done))
            return ProposedCandidate(cid, number, prompt.template_id, dict(prompt.variables), prompt.prompt, dict(params),
                                     lineage=lineage)
        return None


    def _write(self, method: str, parent: TrialRecord | None, prompt: RenderedPrompt, params: dict[str, Scalar],
               number: int, seen: set[str], attempt: int, records: Sequence[TrialRecord], space: PromptSpace
               ) -> ProposedCandidate | None:
        """An instruction the language model writes: APE from train examples (in the proposal's
        template), OPRO from the scored instructions so far (in the best candidate's); None when
        it writes nothing new."""
        assert self._writer is not None and self.writing is not None
        rng = random.Random(trial_seed(self.spec.seed, number) * 37 + attempt)
        train = self._examples()
        examples = rng.sample(train, min(self.writing.examples, len(train)))
        base = self._prompt_in(space, parent) if method == "opro" and parent is not None else prompt
        variables = dict(base.variables)
        if "instruction_text" not in variables:
            return None
        try:
            if method == "ape":
                text = self._writer.ape(examples, rng.randrange(2**31))
            else:
                text = self._writer.opro(self._scored_instructions(records), examples, rng.randrange(2**31))
        except WriterError as err:
            log.warning("the prompt model wrote nothing: %s", err)
            return None
        if not is_clean_instruction(text):
            return None
        written = self._generated(base.template_id, variables, text, variables["instruction_position"])
        cid = candidate_id(written.prompt, params)
        if cid in seen or written.key in self._by_key:
            return None
        parent_id = self.candidate_of(parent, space).id if method == "opro" and parent is not None else ""
        return ProposedCandidate(cid, number, written.template_id, dict(written.variables), written.prompt, dict(params),
                                 lineage=Lineage(method, parent_id, (f"{method}: {text!r}",)))

    def _scored_instructions(self, records: Sequence[TrialRecord]) -> list[tuple[str, float]]:
        """OPRO's history: each instruction tried with its best validation objective, the top
        OPRO_HISTORY of them, scores scaled to 0..1 over those shown (higher is better)."""
        sign = 1.0 if self.spec.objective.direction == "maximize" else -1.0
        best: dict[str, float] = {}
        for record in records:
            text = record.variables.get("instruction_text")
            if record.state == "complete" and record.values and text:
                best[text] = max(best.get(text, -float("inf")), sign * record.values[0])
        top = sorted(best.items(), key=lambda item: item[1], reverse=True)[:OPRO_HISTORY]
        if not top:
            return []
        low, high = min(v for _, v in top), max(v for _, v in top)
        return [(text, (v - low) / (high - low) if high > low else 1.0) for text, v in top]

    def _examples(self) -> list[Example]:
        """Train-split examples for the model's meta-prompts (never validation or test ones)."""
        if self._train_examples is None:
            data = self.spec.dataset
            path = data.path
            if path and self._read_roots is not None:
                path = str(sandbox.readable(path, self._read_roots))
            splits = datasets.load_splits(data.builtin, path, self.spec.task, data.text_field, data.label_field,
                                          data.eval_fraction, data.max_examples, self.spec.seed, data.test_fraction)
            self._train_examples = splits.train
        return self._train_examples

def _json_safe(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """A sampler's system attributes as JSON will carry them (optuna's RDB storage keeps them as
    JSON too, so every sampler writes JSON-serialisable values)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(attrs)))
    return out
