"""The trainer and evaluator inside the mesh: a SIGKILLed trainer's job is redelivered and
resumes from its checkpoint; trials that cannot run fail with an `autoglm.trial.failed` event
that says why, and the study goes on; the best model exports to safetensors + ONNX."""
import asyncio
import signal

import grpc
import pytest

from helpers import run_study, small_spec
from openautoglm.common import events, subjects
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.stack import EmbeddedStack
from openautoglm.v1 import common_pb2, events_pb2, studies_pb2, studies_pb2_grpc, trainer_pb2


async def _failed_events(stack, study_id: str, count: int, timeout: float = 60) -> list[events_pb2.TrialFailedEvent]:
    """Read `autoglm.trial.failed` events of one study from the JetStream events stream."""
    nc = await stack.nats_connect("test-reader")
    try:
        js = nc.jetstream()
        sub = await js.subscribe(subjects.SUBJECT_FAILED, ordered_consumer=True)
        found = []
        deadline = asyncio.get_running_loop().time() + timeout
        while len(found) < count and asyncio.get_running_loop().time() < deadline:
            try:
                msg = await sub.next_msg(timeout=1)
            except Exception:
                continue
            event = events_pb2.TrialFailedEvent.FromString(msg.data)
            if event.meta.study_id == study_id:
                found.append(event)
        return found
    finally:
        await events.close(nc)


async def test_fp16_on_a_cpu_trainer_fails_trials_with_a_reason_event(stack):
    spec = small_spec(budget={"max_trials": 2}, training={"precision": "fp16"})
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_FAILED and study.error == "no trial succeeded"
    assert all("fp16 needs a CUDA device" in t.error for t in study.trials)
    failed = await _failed_events(stack, study.id, 2)
    assert {e.meta.trial_id for e in failed} == {t.id for t in study.trials}
    assert all("fp16 needs a CUDA device" in e.reason and e.trainer_id for e in failed)


async def test_a_job_naming_a_missing_model_directory_fails_with_a_reason_event(stack):
    """A job whose model exists where the gateway looked but not where the trainer runs."""
    nc = await stack.nats_connect("test-publisher")
    try:
        job = trainer_pb2.TrainJob(
            study_id="st-direct", trial_id="st-direct-t000", task=common_pb2.TASK_TYPE_CLASSIFICATION,
            dataset=common_pb2.DatasetSpec(builtin="sentiment-demo", max_examples=40),
            model=common_pb2.ModelSpec(path="/nowhere/model"),
            candidate=common_pb2.Candidate(prompt="{input}"),
        )
        await events.publish(nc.jetstream(), subjects.train_subject("trainer-0"), events_pb2.TrainJobEvent(
            meta=subjects.new_meta("test", job.study_id, job.trial_id, "train-st-direct-t000"), job=job))
    finally:
        await events.close(nc)
    (failed,) = await _failed_events(stack, "st-direct", 1)
    assert "model directory not found: /nowhere/model" in failed.reason


async def test_bf16_study_and_export_of_the_best_model(stack):
    spec = small_spec(budget={"max_trials": 2}, training={"precision": "bf16"})
    spec["search_space"]["templates"] = spec["search_space"]["templates"][:1]
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED
    assert all(t.precision == "bf16" and t.artifact_path for t in study.trials)
    async with stack.gateway_channel() as channel:
        stub = studies_pb2_grpc.StudiesStub(channel)
        reply = await stub.ExportBest(studies_pb2.ExportBestRequest(study_id=study.id), timeout=300)
        assert reply.trial_id == study.best_trial_id
        assert {f.rsplit("/", 1)[-1] for f in reply.files} >= {"model.onnx", "model.safetensors", "config.json"}
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await stub.ExportBest(studies_pb2.ExportBestRequest(study_id="st-missing"), timeout=30)
        assert info.value.code() == grpc.StatusCode.NOT_FOUND


async def test_generation_study_reports_perplexity_and_text_metrics(stack):
    spec = {
        "task": "generation", "dataset": {"builtin": "piglatin-demo", "max_examples": 60},
        "search_space": {"templates": [{"id": "t", "text": "Pig latin: {input}"}],
                         "hyperparameters": {"epochs": {"type": "choice", "values": [2]}}},
        "objective": {"terms": {"rouge_l": 0.7, "embedding_similarity": 0.3}}, "strategy": "grid",
        "budget": {"max_trials": 1}, "model": {"builtin": "tiny", "tuning": "lora"},
    }
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, [t.error for t in study.trials]
    (trial,) = study.trials
    assert {"bleu", "chrf", "rouge_l", "exact_match", "perplexity", "embedding_similarity"} <= set(trial.metrics)
    assert trial.objective_value == pytest.approx(0.7 * trial.metrics["rouge_l"] + 0.3 * trial.metrics["embedding_similarity"])


async def test_sigkilled_trainer_resumes_the_redelivered_job_from_its_checkpoint(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack", env={"OPENAUTOGLM_TRAINER_ACK_WAIT": "3"})
    await stack.start()
    try:
        spec = small_spec(budget={"max_trials": 1}, training={"checkpoint_every_steps": 10})
        spec["search_space"]["templates"] = spec["search_space"]["templates"][:1]
        spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [30]}}
        spec["dataset"] = {"builtin": "sentiment-demo", "max_examples": 200}
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_to_proto(validate_dict(spec))))).study
            checkpoints = stack.data_dir / "trainer" / "checkpoints" / study.id
            for _ in range(600):
                if list(checkpoints.glob("*/checkpoint.pt")):
                    break
                await asyncio.sleep(0.1)
            assert list(checkpoints.glob("*/checkpoint.pt")), "no checkpoint appeared"
            stack.processes["trainer"].send_signal(signal.SIGKILL)
            await asyncio.to_thread(stack.processes["trainer"].wait, 10)
            await stack.restart("trainer")
            final = None
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=300):
                final = update.study
        assert final.state == common_pb2.STUDY_STATE_COMPLETED, final.error
        assert final.trials[0].status == common_pb2.TRIAL_STATUS_SUCCEEDED
        log = (stack.log_dir / "trainer.log").read_text()
        assert "resumed from its checkpoint at step" in log
    finally:
        stack.stop()


async def test_a_trainer_runs_trials_data_parallel_under_torchrun(tmp_path):
    """Two gloo processes on CPU stand in for a multi-GPU trainer (the same torchrun path)."""
    stack = EmbeddedStack(tmp_path / "stack", env={"OPENAUTOGLM_TRAINER_PROCESSES": "2", "OMP_NUM_THREADS": "1"})
    await stack.start()
    try:
        spec = small_spec(budget={"max_trials": 1})
        spec["search_space"]["templates"] = spec["search_space"]["templates"][:1]
        study = await run_study(stack, spec_to_proto(validate_dict(spec)))
        assert study.state == common_pb2.STUDY_STATE_COMPLETED, [t.error for t in study.trials]
        assert study.trials[0].metrics["accuracy"] > 0
        assert "data-parallel over 2 processes" in (stack.log_dir / "trainer.log").read_text()
    finally:
        stack.stop()


async def test_the_median_pruner_stops_hopeless_trials_through_the_mesh(stack):
    spec = small_spec(strategy="grid", budget={"max_trials": 4}, pruner="median", seed=4,
                      dataset={"builtin": "sentiment-demo", "max_examples": 160})
    spec["search_space"]["templates"] = spec["search_space"]["templates"][:1]
    spec["search_space"]["hyperparameters"] = {"learning_rate": {"type": "choice", "values": [0.003, 0.004, 1e-7, 2e-7]},
                                               "epochs": {"type": "choice", "values": [15]}}
    study = await run_study(stack, spec_to_proto(validate_dict(spec)))
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, study.error
    pruned = [t for t in study.trials if t.status == common_pb2.TRIAL_STATUS_PRUNED]
    succeeded = [t for t in study.trials if t.status == common_pb2.TRIAL_STATUS_SUCCEEDED]
    print("\n", [(t.number, t.candidate.hyperparameters["learning_rate"].number, common_pb2.TrialStatus.Name(t.status),
                  round(t.metrics.get("intermediate_score", -1), 3)) for t in study.trials])
    assert pruned, "no trial was pruned"
    assert all(t.candidate.hyperparameters["learning_rate"].number < 1e-6 for t in pruned)
    assert study.best_trial_id in {t.id for t in succeeded}
    assert "pruning trial" in (stack.log_dir / "gateway.log").read_text()
