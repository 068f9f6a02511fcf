"""Scoring a trained trial: the trainer hands its held-out predictions to the evaluator itself,
so bulk predictions never travel through NATS or the gateway. An evaluator that is away is
waited for (retried with backoff): a trained result is never thrown away for a peer's absence.
Only a deliberate refusal (a bad request, a failing scorer) ends in ScoringRefused."""
from __future__ import annotations

import asyncio
import logging

import grpc

from openautoglm.trainer.core import TrialResult
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc, trainer_pb2

log = logging.getLogger(__name__)
EVALUATE_DEADLINE = 120.0
# Backoff between tries while the evaluator is unreachable: from the first to the largest pause.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})


class ScoringRefused(Exception):
    """The evaluator refused to score the trial (the reason is the message): fail the trial."""


class Scorer:
    def __init__(self, channel: grpc.aio.Channel):
        self._stub = evaluator_pb2_grpc.EvaluatorStub(channel)

    async def score(self, job: trainer_pb2.TrainJob, result: TrialResult) -> evaluator_pb2.EvaluateResponse:
        request = evaluator_pb2.EvaluateRequest(
            study_id=job.study_id, trial_id=job.trial_id, task=job.task, predictions=result.predictions,
            references=result.references, objective=job.objective, candidate_id=job.candidate.id,
            model_metrics=result.model_metrics, extra_objectives=job.extra_objectives,
        )
        pause = RETRY_FIRST_SECONDS
        while True:
            try:
                reply: evaluator_pb2.EvaluateResponse = await self._stub.Evaluate(
                    request, timeout=EVALUATE_DEADLINE, wait_for_ready=True)
                return reply
            except grpc.aio.AioRpcError as err:
                if err.code() in REFUSALS:
                    raise ScoringRefused(f"evaluation refused: {err.details()}") from None
                log.warning("scoring trial %s waits for the evaluator (%s); retrying in %.1fs", job.trial_id,
                            err.code().name, pause, extra={"trial_id": job.trial_id})
                await asyncio.sleep(pause)
                pause = min(pause * 2, RETRY_MAX_SECONDS)
