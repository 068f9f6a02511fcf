"""The prompt-generator's protobuf edge: trial records and priors in, candidates out."""
from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from openautoglm.common.spec.protos import param_to_proto, params_from_proto
from openautoglm.common.spec.schema import SpecError
from openautoglm.prompt_generator.search import Lineage, Prior, ProposedCandidate, RecordState, TrialRecord
from openautoglm.v1 import common_pb2, prompt_generator_pb2

_STATE: dict[int, RecordState] = {
    common_pb2.TRIAL_STATUS_SUCCEEDED: "complete",
    common_pb2.TRIAL_STATUS_FAILED: "failed",
    common_pb2.TRIAL_STATUS_CANCELLED: "failed",
    common_pb2.TRIAL_STATUS_PRUNED: "pruned",
}


def search_state_from_json(text: str, field: str) -> dict[str, Any]:
    if not text:
        return {}
    try:
        state = json.loads(text)
    except json.JSONDecodeError as err:
        raise SpecError(field, f"not a JSON object ({err.msg})") from None
    if not isinstance(state, dict):
        raise SpecError(field, "not a JSON object")
    return state


def records_from_proto(trials: Sequence[prompt_generator_pb2.TrialRecord]) -> list[TrialRecord]:
    """The request's trials; a malformed one is a SpecError naming trials[i]."""
    out = []
    for i, trial in enumerate(trials):
        field = f"trials[{i}]"
        state = _STATE.get(trial.status, "pending")
        if state == "complete" and not trial.values:
            raise SpecError(f"{field}.values", "a succeeded trial needs its objective value")
        out.append(TrialRecord(
            number=trial.number,
            template_id=trial.candidate.template_id,
            variables=dict(trial.candidate.variables),
            hyperparameters=params_from_proto(trial.candidate.hyperparameters, f"{field}.candidate.hyperparameters"),
            state=state,
            values=tuple(trial.values) if state == "complete" else (),
            intermediate=dict(trial.intermediate_values),
            search_state=search_state_from_json(trial.candidate.search_state, f"{field}.candidate.search_state"),
            lineage=lineage_from_proto(trial.candidate),
        ))
    return out


def lineage_from_proto(candidate: common_pb2.Candidate) -> Lineage | None:
    """A candidate's lineage; None for one the user wrote (the search checks the rest)."""
    if not candidate.HasField("lineage") or not candidate.lineage.source:
        return None
    lineage = candidate.lineage
    return Lineage(lineage.source, lineage.parent_candidate_id, tuple(lineage.edits))


def priors_from_proto(priors: Sequence[common_pb2.PriorTrial]) -> list[Prior]:
    return [Prior(p.template_id, dict(p.variables), params_from_proto(p.hyperparameters, f"prior_trials[{i}].hyperparameters"),
                  p.objective_value) for i, p in enumerate(priors)]


def candidate_to_proto(candidate: ProposedCandidate) -> common_pb2.Candidate:
    return common_pb2.Candidate(
        id=candidate.id,
        template_id=candidate.template_id,
        variables=candidate.variables,
        prompt=candidate.prompt,
        hyperparameters={k: param_to_proto(v) for k, v in candidate.hyperparameters.items()},
        search_state=json.dumps(candidate.search_state, sort_keys=True) if candidate.search_state else "",
        lineage=(common_pb2.CandidateLineage(source=candidate.lineage.source,
                                             parent_candidate_id=candidate.lineage.parent_id,
                                             edits=list(candidate.lineage.edits))
                 if candidate.lineage is not None else None),
    )
