"""The gateway owns trial state: the prompt-generator only answers questions about the trials it
is sent. Two replicas behind one gateway (client-side round-robin, as behind a Kubernetes
headless Service) therefore run a study exactly as one replica does: the same candidates in the
same order, none twice, and the same best."""
import pytest

from helpers import run_study, small_spec
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.stack import EmbeddedStack
from openautoglm.v1 import common_pb2


def _spec():
    spec = small_spec(strategy="tpe", budget={"max_trials": 8}, seed=5, dataset={"builtin": "sentiment-demo", "max_examples": 160})
    spec["search_space"]["variables"]["question"] = ["How does this feel?", "What is the tone?"]
    spec["search_space"]["hyperparameters"] = {"learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1e-2},
                                               "epochs": {"type": "choice", "values": [1, 2]}}
    return spec_to_proto(validate_dict(spec))


async def _run(tmp_path, replicas: int):
    stack = EmbeddedStack(tmp_path / f"stack-{replicas}", prompt_generator_replicas=replicas)
    await stack.start()
    try:
        study = await run_study(stack, _spec())
        logs = [(stack.log_dir / f"{name}.log").read_text() for name in stack.process_names() if name.startswith("prompt-generator")]
    finally:
        stack.stop()
    return study, logs


@pytest.mark.timeout(400)
async def test_two_prompt_generator_replicas_propose_what_one_would(tmp_path):
    one, _ = await _run(tmp_path, 1)
    two, logs = await _run(tmp_path, 2)
    # One replica registered the study (stored for all); the other set it up from that registration.
    assert len(logs) == 2 and all(f"study {two.id} " in log for log in logs), "both replicas must have served the study"
    assert sum(f"study {two.id} registered" in log for log in logs) == 1
    for study in (one, two):
        assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
        ids = [t.candidate.id for t in study.trials]
        assert len(ids) == len(set(ids)) == 8
    assert [t.candidate.id for t in one.trials] == [t.candidate.id for t in two.trials]
    best = {s.id: next(t for t in s.trials if t.id == s.best_trial_id) for s in (one, two)}
    assert best[one.id].candidate.id == best[two.id].candidate.id
    assert best[one.id].objective_value == pytest.approx(best[two.id].objective_value, abs=1e-9)
