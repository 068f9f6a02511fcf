"""Scoring a trained trial: the trainer hands its held-out predictions to the evaluator itself,
so bulk predictions never travel through NATS or the gateway. An evaluator that is away is
waited for (retried with backoff): a trained result is never thrown away for a peer's absence.
Only a deliberate refusal (a bad request, a failing scorer) ends in ScoringRefused."""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import grpc
from opentelemetry import trace

from openautoglm.common.metrics import PEER_RETRIES
from openautoglm.trainer.core import TrialResult
from openautoglm.v1 import evaluator_pb2, evaluator_pb2_grpc, trainer_pb2

log = logging.getLogger(__name__)
EVALUATE_DEADLINE = 120.0
# Backoff between tries while the evaluator is unreachable: from the first to the largest pause.
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 5.0
# How long one try waits for a connection to an evaluator before it counts as a retry.
CONNECT_WAIT_SECONDS = 2.0
REFUSALS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION})


class ScoringRefused(Exception):
    """The evaluator refused to score the trial (the reason is the message): fail the trial."""


class Scorer:
    def __init__(self, channel: grpc.aio.Channel):
        self._channel = channel
        self._stub = evaluator_pb2_grpc.EvaluatorStub(channel)

    async def score(self, job: trainer_pb2.TrainJob, result: TrialResult,
                    on_wait: Callable[[], None] | None = None) -> evaluator_pb2.EvaluateResponse:
        """The evaluator's scores for a trained trial, however long the evaluator is away.
        `on_wait` is called once, when the first try fails for a transient reason (the trial is
        then EVALUATING); every retry is an event on the current span."""
        request = evaluator_pb2.EvaluateRequest(
            study_id=job.study_id, trial_id=job.trial_id, task=job.task, predictions=result.predictions,
            references=result.references, objective=job.objective, candidate_id=job.candidate.id,
            model_metrics=result.model_metrics, extra_objectives=job.extra_objectives,
        )
        pause = RETRY_FIRST_SECONDS
        attempt = 0
        while True:
            attempt += 1
            try:
                # A connection first, for a short while: a blind wait_for_ready call would sit out
                # its whole deadline before the trial showed as waiting.
                await asyncio.wait_for(self._channel.channel_ready(), timeout=CONNECT_WAIT_SECONDS)
                reply: evaluator_pb2.EvaluateResponse = await self._stub.Evaluate(
                    request, timeout=EVALUATE_DEADLINE, wait_for_ready=True)
                return reply
            except asyncio.TimeoutError:
                code = "UNAVAILABLE"  # no connection to any evaluator yet
            except grpc.aio.AioRpcError as err:
                if err.code() in REFUSALS:
                    raise ScoringRefused(f"evaluation refused: {err.details()}") from None
                code = err.code().name
            log.warning("scoring trial %s waits for the evaluator (%s); retrying in %.1fs", job.trial_id,
                        code, pause, extra={"trial_id": job.trial_id})
            trace.get_current_span().add_event("retry", {
                "peer": "evaluator", "code": code, "attempt": attempt, "pause_seconds": pause})
            PEER_RETRIES.labels("evaluator", code).inc()
            if attempt == 1 and on_wait is not None:
                on_wait()
            await asyncio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX_SECONDS)
