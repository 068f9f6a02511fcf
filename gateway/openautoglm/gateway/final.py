"""The study's final answer: its winner retrained with more seeds (StudySpec.final_repeats) and
scored once on the test split, by the trainer that holds each trial's saved model.

The search selected the winner on validation scores, so its validation score is optimistic; the
test split (never trained or selected on) gives the estimate to quote. Each trial's test scores
are asked for once and stored with the trial. A trainer that is away is waited for (a peer that
is down is a retry): up to TEST_PATIENCE_SECONDS while it is live but not answering, and up to
NOT_LIVE_PATIENCE_SECONDS while it is not live at all (a restarting trainer is back within it; one
that is gone took the model with it). Then the report says why it has no test scores rather than
holding back or failing a study whose search succeeded.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from openautoglm.gateway.peers import PeerRefused, PeerUnavailable
from openautoglm.v1 import common_pb2, scheduler_pb2, trainer_pb2

log = logging.getLogger(__name__)
# How long the final scoring waits for a trainer before the report goes without its test scores:
# one that is live but does not answer, and one that is not live at all.
TEST_PATIENCE_SECONDS = 120.0
NOT_LIVE_PATIENCE_SECONDS = 20.0
SCORE_TEST_DEADLINE = 600.0


class TestScoresUnavailable(Exception):
    """No test scores for a trial: the reason is the message (it goes in the report)."""


class FinalScorer:
    """Asks a trial's own trainer for its test scores (Trainer.ScoreTest). No gRPC here: the
    trainer is a peer client (clients.PeerClient) raising PeerRefused / PeerUnavailable."""

    def __init__(self, workers: Callable[[], Awaitable[list[scheduler_pb2.Worker]]],
                 trainer: Callable[[str], Any], patience: float = TEST_PATIENCE_SECONDS):
        self.workers = workers  # async () -> the live trainers
        self.trainer = trainer  # (address) -> the trainer's peer client
        self.patience = patience

    async def score(self, study: common_pb2.Study, trial: common_pb2.Trial,
                    job: trainer_pb2.TrainJob) -> trainer_pb2.ScoreTestResponse:
        if not trial.artifact_path:
            raise TestScoresUnavailable("the trial saved no model")
        started = time.monotonic()
        pause = 0.5
        while True:
            patience = self.patience
            try:
                worker = next((w for w in await self.workers() if w.id == trial.trainer_id and w.address), None)
                if worker is None:
                    raise LookupError(f"trainer {trial.trainer_id} (which holds the trial's model) is not live")
                reply: trainer_pb2.ScoreTestResponse = await self.trainer(worker.address).ScoreTest(
                    trainer_pb2.ScoreTestRequest(job=job, artifact_path=trial.artifact_path),
                    timeout=SCORE_TEST_DEADLINE, wait_for_ready=False)
                return reply
            except PeerRefused as err:
                raise TestScoresUnavailable(f"{err.code}: {err.details}") from None
            except PeerUnavailable as err:
                reason = f"the trainer is away ({err.code})"
            except LookupError as err:
                reason = str(err)
                patience = min(self.patience, NOT_LIVE_PATIENCE_SECONDS)
            except Exception as err:  # the scheduler's worker list away: the same wait
                reason = f"no trainer list ({err})"
            if time.monotonic() - started > patience:
                raise TestScoresUnavailable(f"gave up after {patience:.0f}s: {reason}")
            log.info("test scores of %s wait: %s", trial.id, reason, extra={"study_id": study.id})
            await asyncio.sleep(pause)
            pause = min(pause * 2, 10.0)
