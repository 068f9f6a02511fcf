"""The studies this prompt-generator replica searches: each one's StudySearch, set up from its
spec (and warm-start priors) on first use, or reloaded from the optuna storage. No gRPC here."""
from __future__ import annotations

import asyncio
from collections.abc import Sequence

from openautoglm.common.spec.protos import params_from_proto, spec_from_proto
from openautoglm.common.spec.schema import SpecError
from openautoglm.common.spec.warm_start import prior_params
from openautoglm.prompt_generator.search import RenderCache, StudySearch


class PromptGeneratorCore:
    """The studies this replica searches, created on first Propose (or reloaded from storage)."""

    def __init__(self, storage: str | None):
        self.storage = storage
        self.cache = RenderCache()
        self.studies: dict[str, StudySearch] = {}
        self._lock = asyncio.Lock()

    async def search_for(self, study_id: str, spec_proto, prior_trials=()) -> StudySearch:
        async with self._lock:
            search = self.studies.get(study_id)
            if search is None:
                spec = spec_from_proto(spec_proto)
                priors = []
                for i, prior in enumerate(prior_trials):
                    hps = params_from_proto(prior.hyperparameters, f"prior_trials[{i}].hyperparameters")
                    try:
                        params = prior_params(spec.search_space, prior.template_id, dict(prior.variables), hps)
                    except ValueError as err:
                        raise SpecError(f"prior_trials[{i}]", str(err)) from None
                    priors.append((prior.template_id, dict(prior.variables), params, prior.objective_value))
                search = await asyncio.to_thread(StudySearch, study_id, spec, self.storage, self.cache, priors)
                self.studies[study_id] = search
            return search

    async def feedback(self, study_id: str, candidate_id: str, value: float | None, pruned: bool = False,
                       extra: Sequence[float] = ()) -> bool:
        search = self.studies.get(study_id)
        if search is None:
            raise KeyError(study_id)
        return await asyncio.to_thread(search.feedback, candidate_id, value, pruned, list(extra))

    async def report(self, study_id: str, candidate_id: str, step: int, value: float) -> bool:
        search = self.studies.get(study_id)
        if search is None:
            raise KeyError(study_id)
        return await asyncio.to_thread(search.report, candidate_id, step, value)
