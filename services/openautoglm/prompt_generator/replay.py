"""A study's trial records kept in one process, for running a search without the mesh (the
search benchmarks and tests): the bookkeeping the gateway does for a real study, in miniature.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

from openautoglm.common.spec.schema import StudySpecModel
from openautoglm.prompt_generator.policies import Policy
from openautoglm.prompt_generator.prompts import RenderCache
from openautoglm.prompt_generator.samplers import PolicySampler
from openautoglm.prompt_generator.search import Prior, ProposedCandidate, StudySearch, TrialRecord
from openautoglm.prompt_generator.writer import InstructionWriter


class LocalStudy:
    """Proposes with a StudySearch and records results the way the gateway does."""

    def __init__(self, spec: StudySpecModel, priors: Sequence[Prior] = (), cache: RenderCache | None = None,
                 records: Sequence[TrialRecord] = (), writer: InstructionWriter | None = None):
        self.search = StudySearch(spec, cache or RenderCache(), priors, writer)
        self.records: list[TrialRecord] = list(records)

    def propose(self, count: int) -> tuple[list[ProposedCandidate], bool]:
        candidates, exhausted = self.search.propose(self.records, count, len(self.records))
        self.records += [c.record() for c in candidates]
        return candidates, exhausted

    def feedback(self, candidate_id: str, value: float | None, pruned: bool = False, extra: Sequence[float] = ()) -> bool:
        """Record a result (None = failed); False when the trial had one already, KeyError if unknown."""
        index = self._index(candidate_id)
        record = self.records[index]
        if record.state != "pending":
            return False
        if pruned:
            self.records[index] = replace(record, state="pruned")
        elif value is None:
            self.records[index] = replace(record, state="failed")
        else:
            expected = len(self.search.spec.extra_objectives)
            if len(extra) != expected:
                raise ValueError(f"expected {expected} extra objective values, got {len(extra)}")
            self.records[index] = replace(record, state="complete", values=(value, *extra))
        return True

    def report(self, candidate_id: str, step: int, value: float) -> bool:
        """Record a running trial's intermediate score (higher is better); True = prune it."""
        index = self._index(candidate_id)
        record = self.records[index]
        if record.state != "pending":
            return False
        record = replace(record, intermediate={**record.intermediate, step: value})
        prune, state = self.search.should_prune(self.records[:index] + [record] + self.records[index + 1:], record.number, step)
        self.records[index] = replace(record, search_state=state)
        return prune

    def policy(self) -> Policy:
        """The bandit / RL policy as the next proposal will rebuild it from the records."""
        sampler = self.search.sampler_for(len(self.records))
        if not isinstance(sampler, PolicySampler):
            raise TypeError(f"the {self.search.spec.strategy!r} strategy has no policy")
        return sampler.policy_for(self.search.rebuild(self.records))

    def _index(self, candidate_id: str) -> int:
        for index, record in enumerate(self.records):
            if self.search.candidate_of(record).id == candidate_id:
                return index
        raise KeyError(candidate_id)
