"""A peer that is down is a retry, never a failed trial: a trained trial whose evaluator is away
stays EVALUATING and is scored when the evaluator returns, and every retry shows on its trace."""
from __future__ import annotations

import asyncio
import time

from helpers import spec_proto
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

S = common_pb2


def test_a_trained_trial_waits_evaluating_while_the_evaluator_is_down_and_is_scored_when_it_returns(stack, otlp_receiver):
    async def run():
        stack.kill("evaluator")
        restarted = False
        try:
            async with stack.gateway_channel() as channel:
                stub = studies_pb2_grpc.StudiesStub(channel)
                study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(
                    spec=spec_proto(budget={"max_trials": 2})), timeout=60)).study
                waiting = None
                async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=240):
                    waiting = next((t for t in update.study.trials if t.status == S.TRIAL_STATUS_EVALUATING), None)
                    if waiting is not None:
                        break
                assert waiting is not None
                await asyncio.sleep(4)  # the evaluator stays away; the trial waits, it does not fail
                held = (await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=study.id), timeout=30)).study
                await stack.start_again("evaluator")
                restarted = True
                back_at = time.monotonic()
                final = None
                async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=240):
                    final = update.study
                    scored = next(t for t in final.trials if t.id == waiting.id)
                    if scored.status == S.TRIAL_STATUS_SUCCEEDED and not hasattr(run, "scored_after"):
                        run.scored_after = time.monotonic() - back_at
                return waiting.id, held, final
        finally:
            if not restarted:
                await stack.start_again("evaluator")

    waiting_id, held, final = asyncio.run(run())
    assert next(t for t in held.trials if t.id == waiting_id).status == S.TRIAL_STATUS_EVALUATING
    assert held.state == S.STUDY_STATE_RUNNING and not any(t.status == S.TRIAL_STATUS_FAILED for t in held.trials)
    assert final.state == S.STUDY_STATE_COMPLETED
    assert [t.status for t in final.trials] == [S.TRIAL_STATUS_SUCCEEDED] * 2 and final.best_trial_id
    assert run.scored_after < 15  # scored within seconds of the evaluator's return

    # The trainer's scoring span for that trial holds one event per retry.
    deadline = time.monotonic() + 30
    retries: list[dict] = []
    while time.monotonic() < deadline and not retries:
        spans = otlp_receiver.for_trace(final.trace_id)
        job = next((s for s in spans if s["name"] == "trainer.job" and s["attributes"].get("openautoglm.trial_id") == waiting_id
                    and any(c["name"] == "score" and c["parent_id"] == s["span_id"] for c in spans)), None)
        if job is not None:
            score = next(c for c in spans if c["name"] == "score" and c["parent_id"] == job["span_id"])
            retries = [e for e in score["events"] if e["name"] == "retry"]
        time.sleep(0.5)
    assert len(retries) >= 2, retries
    assert all(e["attributes"]["peer"] == "evaluator" and e["attributes"]["code"] in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
               for e in retries)
    assert [e["attributes"]["attempt"] for e in retries] == list(range(1, len(retries) + 1))
