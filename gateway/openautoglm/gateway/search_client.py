"""The prompt-generator as the gateway uses it: proposals and pruning decisions for a study,
asked with the study's trials (records.py). A replica that does not know the study yet (a new or
restarted one) answers NOT_FOUND and is asked again with the study's registration attached, so
no replica needs anything but the question."""
from __future__ import annotations

import logging
from typing import Any

from openautoglm.gateway.peers import PeerError, PeerRefused, Peers
from openautoglm.gateway.records import pruning_view, proposal_view
from openautoglm.gateway.store import StudyStore
from openautoglm.v1 import common_pb2, prompt_generator_pb2

log = logging.getLogger(__name__)
RPC_DEADLINE = 30.0
# A new study's check (the prompt-generator builds its search space once).
CHECK_DEADLINE = 10.0


class SearchClient:
    def __init__(self, peers: Peers, store: StudyStore):
        self.peers = peers
        self.store = store

    async def propose(self, study: common_pb2.Study, count: int,
                      known: dict[int, prompt_generator_pb2.TrialRecord] | None = None) -> prompt_generator_pb2.ProposeResponse:
        """Candidates for the study's next `count` trials (`known`: records.proposal_view's)."""
        number = len(study.trials)
        request = prompt_generator_pb2.ProposeRequest(study_id=study.id, count=count, next_number=number,
                                                      trials=proposal_view(study, number, known))
        reply: prompt_generator_pb2.ProposeResponse = await self._ask(study, "Propose", request)
        return reply

    async def should_prune(self, study: common_pb2.Study, trial: common_pb2.Trial, step: int
                           ) -> prompt_generator_pb2.ShouldPruneResponse:
        request = prompt_generator_pb2.ShouldPruneRequest(study_id=study.id, trial_number=trial.number, step=step,
                                                          trials=pruning_view(study))
        reply: prompt_generator_pb2.ShouldPruneResponse = await self._ask(study, "ShouldPrune", request)
        return reply

    async def refusal(self, spec: common_pb2.StudySpec, priors: common_pb2.PriorTrials) -> str:
        """Why the prompt-generator could not search a new study (model-written instructions and
        no prompt model configured, say), or "" when it can, or does not answer now: one that is
        away does not hold creation up, and the study's first proposal asks again."""
        request = prompt_generator_pb2.RegisterStudyRequest(spec=spec, prior_trials=priors.trials, validate_only=True)
        try:
            await self.peers.prompt_generator.RegisterStudy(request, timeout=CHECK_DEADLINE)
        except PeerError as err:
            if isinstance(err, PeerRefused) and err.code == "INVALID_ARGUMENT":
                return err.details
            log.warning("the prompt-generator did not check the new study (%s)", err)
        return ""

    async def _ask(self, study: common_pb2.Study, method: str, request: Any) -> Any:
        call = getattr(self.peers.prompt_generator, method)
        try:
            return await call(request, timeout=RPC_DEADLINE)
        except PeerRefused as err:
            if err.code != "NOT_FOUND":
                raise
        request.registration.CopyFrom(prompt_generator_pb2.RegisterStudyRequest(
            study_id=study.id, spec=study.spec, prior_trials=self.store.priors(study.id).trials))
        return await call(request, timeout=RPC_DEADLINE)
