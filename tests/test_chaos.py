"""Kill anything, lose nothing: one process of the mesh is SIGKILLed in the middle of a 12-trial
study, while trials are training and being scored, left down for a while and started again with
the same command. The study completes, every trial number appears exactly once, no trial fails
because of the outage, the best trial is recorded, the process serves again within 10 s of its
restart and a trial succeeds within 15 s of it.

Each case runs on its own embedded stack (a real NATS server with its JetStream file store, the
five services as processes; two trainers when a trainer is the victim, whose job must move to
the other at once), so one victim's aftermath cannot leak into the next case. Every victim is
down for 3 s in one case and 90 s in another (the prompt-generator's and gnn-scheduler's 90 s cases
are `slow`: see LONG_OUTAGE_IN_CI); one case kills the gateway and the evaluator together.
"""
from __future__ import annotations

import asyncio
import os
import time

import pytest

from helpers import chaos_spec, poll_study, succeeded
from openautoglm.common.stack import EmbeddedStack
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc

S = common_pb2
TRIALS = 12
# Serving again, and a trial succeeding, within these many seconds of the restart.
SERVING_WITHIN = 10.0
NEXT_TRIAL_WITHIN = 15.0
# With a second trainer live, a killed trainer's job is placed on it within these many seconds.
MOVED_WITHIN = 10.0


# A trainer victim must die mid-training: one-epoch trials (about 0.1 s) can finish between the
# poll that sees TRAINING and the kill, so its trials train long enough (about 2 s) not to.
TRAINER_VICTIM_EPOCHS = 20


async def _run(stack: EmbeddedStack, victims: tuple[str, ...], down: float) -> dict:
    """Kill `victims` while a trial trains (`trainer` means the trainer process training it),
    keep them down for `down` seconds, start them again and follow the study to its end."""
    await stack.start()
    spec = chaos_spec(epochs=TRAINER_VICTIM_EPOCHS if "trainer" in victims else 1)
    async with stack.gateway_channel() as channel:
        study = (await studies_pb2_grpc.StudiesStub(channel).CreateStudy(
            studies_pb2.CreateStudyRequest(spec=spec), timeout=60)).study
    # Busy: two trials done, one training (the trainer mid-training; scoring follows at once).
    busy = await poll_study(stack, study.id, lambda s: succeeded(s) >= 2 and any(
        t.status == S.TRIAL_STATUS_TRAINING and t.trainer_id for t in s.trials), 240)
    training = next(t for t in busy.trials if t.status == S.TRIAL_STATUS_TRAINING and t.trainer_id)
    processes = [stack.trainer_process(training.trainer_id) if v == "trainer" else v for v in victims]
    before = succeeded(busy)
    killed = time.monotonic()
    for process in processes:
        stack.kill(process)
    moved_after = None
    if "trainer" in victims and stack.trainers > 1:
        # Its job moves to a live trainer at once, without waiting for the restart.
        moved = await poll_study(stack, study.id, lambda s: any(
            t.id == training.id and t.assigned_worker_id not in ("", training.trainer_id) for t in s.trials), down + 30)
        moved_after = time.monotonic() - killed
        assert next(t for t in moved.trials if t.id == training.id).attempt >= 1
    await asyncio.sleep(max(0.0, down - (time.monotonic() - killed)))
    restarted = time.monotonic()
    for process in processes:
        await stack.start_again(process, timeout=60)
    serving_after = time.monotonic() - restarted
    after_restart = await poll_study(stack, study.id, lambda s: succeeded(s) > before or s.state != S.STUDY_STATE_RUNNING, 120)
    next_trial_after = time.monotonic() - restarted
    final = await poll_study(stack, study.id, lambda s: s.state != S.STUDY_STATE_RUNNING, 600)
    return {"final": final, "serving_after": serving_after, "next_trial_after": next_trial_after,
            "progressed": succeeded(after_restart) > before, "moved_after": moved_after, "processes": processes}


def _check(outcome: dict) -> None:
    final = outcome["final"]
    assert final.state == S.STUDY_STATE_COMPLETED, final.error
    assert sorted(t.number for t in final.trials) == list(range(TRIALS))  # each number exactly once
    failed = [f"{t.id}: {t.error}" for t in final.trials if t.status == S.TRIAL_STATUS_FAILED]
    assert not failed, failed
    assert final.best_trial_id in {t.id for t in final.trials if t.status == S.TRIAL_STATUS_SUCCEEDED}
    assert outcome["serving_after"] <= SERVING_WITHIN, outcome["serving_after"]
    assert outcome["progressed"] and outcome["next_trial_after"] <= NEXT_TRIAL_WITHIN, outcome["next_trial_after"]
    if outcome["moved_after"] is not None:
        assert outcome["moved_after"] <= MOVED_WITHIN, outcome["moved_after"]


def _chaos(tmp_path, otlp_receiver, victims: tuple[str, ...], down: float) -> None:
    # Two trainers when one is the victim: its job must move to the other at once.
    stack = EmbeddedStack(tmp_path / "stack", trainers=2 if "trainer" in victims else 1, env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
        "OPENAUTOGLM_DATA_ROOTS": os.fspath(tmp_path)})
    try:
        outcome = asyncio.run(_run(stack, victims, down))
    finally:
        stack.stop()
    moved = f", its job moved after {outcome['moved_after']:.1f}s" if outcome["moved_after"] is not None else ""
    print(f"chaos {'+'.join(outcome['processes'])} down {down:.0f}s: serving again after {outcome['serving_after']:.1f}s, "
          f"a trial succeeded {outcome['next_trial_after']:.1f}s after the restart{moved}; "
          f"{sum(t.status == S.TRIAL_STATUS_SUCCEEDED for t in outcome['final'].trials)}/{TRIALS} trials succeeded")
    _check(outcome)


# `nats` is killed while a trainer is mid-trial (every case's moment), so its case is also the
# "NATS restarted while a trainer trains" one.
VICTIMS = [("gateway",), ("prompt-generator",), ("gnn-scheduler",), ("evaluator",), ("trainer",), ("nats",)]


@pytest.mark.parametrize("victims", VICTIMS, ids=lambda v: "+".join(v))
def test_a_process_killed_mid_study_and_back_after_3s_costs_no_trial(tmp_path, victims, otlp_receiver):
    _chaos(tmp_path, otlp_receiver, victims, down=3.0)


# The 90 s matrix does not fit CI's 45 minutes beside the rest of the suite (each case takes
# 105-130 s there): as issue 11 allows, CI runs the gateway, evaluator, trainer and NATS cases and
# `pytest -m slow` adds the prompt-generator and gnn-scheduler ones (their 3 s cases run in CI).
LONG_OUTAGE_IN_CI = ("gateway", "evaluator", "trainer", "nats")
LONG_OUTAGE_VICTIMS = [v if v[0] in LONG_OUTAGE_IN_CI else pytest.param(v, marks=pytest.mark.slow) for v in VICTIMS]


@pytest.mark.parametrize("victims", LONG_OUTAGE_VICTIMS, ids=lambda v: "+".join(v))
def test_a_process_killed_mid_study_and_back_after_90s_costs_no_trial(tmp_path, victims, otlp_receiver):
    _chaos(tmp_path, otlp_receiver, victims, down=90.0)


def test_two_processes_killed_at_once_mid_study_cost_no_trial(tmp_path, otlp_receiver):
    _chaos(tmp_path, otlp_receiver, ("gateway", "evaluator"), down=3.0)
