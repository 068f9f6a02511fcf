"""SIGTERM never loses accepted work: a trainer stopped mid-training hands its job back to the
JetStream queue, and another trainer replica finishes the trial."""
import asyncio
import os
import signal
import subprocess
import sys


from helpers import small_spec
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.net import free_port
from openautoglm.common.stack import EmbeddedStack
from openautoglm.common.server import wait_serving
from openautoglm.v1 import common_pb2, studies_pb2, studies_pb2_grpc


async def test_sigterm_mid_training_hands_the_job_to_another_trainer(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")
    await stack.start()
    second = None
    try:
        spec = small_spec(budget={"max_trials": 1}, dataset={"builtin": "sentiment-demo"})
        spec["search_space"]["templates"] = spec["search_space"]["templates"][:1]
        # Long enough (about 4,500 steps) to still be training once a second trainer has started.
        spec["search_space"]["hyperparameters"] = {"epochs": {"type": "choice", "values": [150]}}
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_to_proto(validate_dict(spec))))).study

            async def trial():
                return (await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=study.id))).study.trials

            for _ in range(300):  # until the first trainer is past step 0
                trials = await trial()
                if trials and trials[0].status == common_pb2.TRIAL_STATUS_TRAINING and trials[0].train_loss > 0:
                    break
                await asyncio.sleep(0.1)
            first_trainer = trials[0].trainer_id
            assert first_trainer

            # A second replica on the same queue, then SIGTERM the one holding the job.
            port = free_port()
            second = subprocess.Popen(
                [sys.executable, "-m", "openautoglm.cli", "serve", "trainer", "--port", str(port), "--trainer-id", "trainer-second"],
                env={**os.environ, "OPENAUTOGLM_NATS_URL": stack.nats_url, "OPENAUTOGLM_DATA_DIR": str(tmp_path / "second"),
                     "OPENAUTOGLM_EVALUATOR_ADDR": stack.address("evaluator"), "OPENAUTOGLM_TLS_DIR": str(stack.tls_dir)},
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            await wait_serving(f"127.0.0.1:{port}", 120, credentials=stack.operator.channel_credentials(), peer="trainer")
            stack.processes["trainer"].send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(stack.processes["trainer"].wait, 30) == 0

            final = None
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=240):
                final = update.study
        assert final.state == common_pb2.STUDY_STATE_COMPLETED, final.error
        (done,) = final.trials
        assert done.status == common_pb2.TRIAL_STATUS_SUCCEEDED
        assert done.trainer_id == "trainer-second" != first_trainer
        log = (stack.log_dir / "trainer.log").read_text()
        assert "trainer stopped" in log
    finally:
        if second is not None:
            second.send_signal(signal.SIGTERM)
            second.wait(30)
        stack.stop()


async def test_a_restarted_gateway_resumes_its_running_studies(tmp_path):
    stack = EmbeddedStack(tmp_path / "stack")
    await stack.start()
    try:
        spec = small_spec(budget={"max_trials": 4})
        spec["search_space"]["hyperparameters"]["epochs"] = {"type": "choice", "values": [6, 8]}
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            study = (await stub.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_to_proto(validate_dict(spec))))).study
            for _ in range(600):
                trials = (await stub.GetStudy(studies_pb2.GetStudyRequest(study_id=study.id))).study.trials
                if any(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in trials):
                    break
                await asyncio.sleep(0.1)
        gateway = stack.processes["gateway"]
        await stack.restart("gateway")  # SIGTERM mid-study, then a fresh process on the same port and DB
        assert gateway.returncode == 0
        async with stack.gateway_channel() as channel:
            stub = studies_pb2_grpc.StudiesStub(channel)
            final = None
            async for update in stub.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study.id), timeout=240):
                final = update.study
        assert final.state == common_pb2.STUDY_STATE_COMPLETED, final.error
        assert len(final.trials) == 4
        assert all(t.status == common_pb2.TRIAL_STATUS_SUCCEEDED for t in final.trials)
        assert "resuming study " + study.id in (stack.log_dir / "gateway.log").read_text()
    finally:
        stack.stop()
