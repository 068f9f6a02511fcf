"""The prompt model a trainer hosts (trainer/prompt_model.py, `PromptModel.Complete`) and the
prompt-generator's client for it (prompt_generator/trainer_model.py): generation where the GPUs
are. The session stack's trainer hosts the suite's small model; its prompt-generator runs with
OPENAUTOGLM_PROMPT_MODEL_ON=trainer."""
import asyncio
import math

import grpc
import pytest

from helpers import small_spec
from openautoglm.common.config import ConfigError, ServiceSettings
from openautoglm.common.net import free_port
from openautoglm.common.spec.protos import spec_to_proto
from openautoglm.common.spec.schema import validate_dict
from openautoglm.common.stack import EmbeddedStack
from openautoglm.common.text_generation import GenerationError
from openautoglm.common.tls import MeshIdentity
from openautoglm.prompt_generator.replay import LocalStudy
from openautoglm.prompt_generator.trainer_model import TrainerGenerator
from openautoglm.prompt_generator.writer import InstructionWriter
from openautoglm.trainer.prompt_model import MAX_PROMPT_CHARS, PromptModelServicer
from openautoglm.v1 import studies_pb2, studies_pb2_grpc, trainer_pb2, trainer_pb2_grpc

PROMPT = "I gave a friend an instruction and some inputs.\n\nInput: the film was great\nOutput: positive\n\nThe instruction was:"


async def _complete(stack, identity: str, **fields) -> trainer_pb2.CompleteResponse:
    async with stack.service_channel("trainer", MeshIdentity(stack.tls_dir, identity)) as channel:
        return await trainer_pb2_grpc.PromptModelStub(channel).Complete(trainer_pb2.CompleteRequest(**fields), timeout=120)


async def _code(call) -> grpc.StatusCode:
    try:
        await call
        return grpc.StatusCode.OK
    except grpc.aio.AioRpcError as err:
        return err.code()


async def test_the_trainer_writes_for_the_prompt_generator_and_no_one_else(stack):
    first = await _complete(stack, "prompt-generator", prompt=PROMPT, seed=7, max_seconds=30)
    again = await _complete(stack, "prompt-generator", prompt=PROMPT, seed=7, max_seconds=30)
    assert first.text and first.text == again.text and first.device == "cpu"  # the seed makes the sample
    assert {(await _complete(stack, "prompt-generator", prompt=PROMPT, seed=seed)).text for seed in range(6)} != {first.text}
    denied = grpc.StatusCode.PERMISSION_DENIED
    assert await _code(_complete(stack, "gateway", prompt=PROMPT, seed=1)) == denied
    assert await _code(_complete(stack, "evaluator", prompt=PROMPT, seed=1)) == denied
    # The prompt-generator's certificate opens the prompt model only, not the trainer's jobs.
    async with stack.service_channel("trainer", MeshIdentity(stack.tls_dir, "prompt-generator")) as channel:
        assert await _code(trainer_pb2_grpc.TrainerStub(channel).GetCapacity(trainer_pb2.GetCapacityRequest(),
                                                                             timeout=10)) == denied


@pytest.mark.parametrize("fields, field", [
    ({"prompt": "   "}, "prompt"),
    ({"prompt": "x" * (MAX_PROMPT_CHARS + 1)}, "prompt"),
    ({"prompt": PROMPT, "max_seconds": -1.0}, "max_seconds"),
    ({"prompt": PROMPT, "max_seconds": math.nan}, "max_seconds"),
])
async def test_bad_questions_are_refused_naming_the_field(stack, fields, field):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await _complete(stack, "prompt-generator", **fields)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and info.value.details().startswith(f"{field}:")


def test_a_trainer_without_a_prompt_model_says_so_and_the_client_does_not_retry_it():
    """An in-process server, plaintext on loopback: the servicer as a trainer without
    OPENAUTOGLM_PROMPT_MODEL runs it."""
    async def serve() -> tuple[grpc.aio.Server, int]:
        server = grpc.aio.server()
        trainer_pb2_grpc.add_PromptModelServicer_to_server(PromptModelServicer(None), server)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    loop = asyncio.new_event_loop()
    try:
        server, port = loop.run_until_complete(serve())
        client = TrainerGenerator(f"127.0.0.1:{port}", None, seconds=5)
        with pytest.raises(GenerationError, match="FAILED_PRECONDITION.*OPENAUTOGLM_PROMPT_MODEL"):
            loop.run_until_complete(asyncio.to_thread(client.complete, PROMPT, 1))
        client.close()
        loop.run_until_complete(server.stop(None))
    finally:
        loop.close()


def test_a_trainer_that_is_away_leaves_proposals_unwritten_never_failed():
    away = TrainerGenerator(f"127.0.0.1:{free_port()}", None, seconds=1)
    writer = InstructionWriter(away)
    spec = small_spec(strategy="random", budget={"max_trials": 4})
    spec["search_space"]["instructions"] = ["Classify the sentiment of this review."]
    spec["search_space"]["instruction_writer"] = {"methods": ["ape"], "examples": 2}
    study = LocalStudy(validate_dict(spec), writer=writer)
    candidates = []
    for _ in range(4):
        (candidate,), _ = study.propose(1)
        study.feedback(candidate.id, 0.5)
        candidates.append(candidate)
    assert len({c.id for c in candidates}) == 4 and not any(c.lineage for c in candidates)
    assert writer.generations == 0
    with pytest.raises(GenerationError, match="is away"):  # retried once, then no more asking for a while
        away.complete(PROMPT, 1)
    away.close()


def test_asking_a_trainer_needs_its_address():
    with pytest.raises(ConfigError, match="OPENAUTOGLM_TRAINER_ADDR"):
        ServiceSettings(service="prompt-generator", prompt_model_on="trainer").check_required()
    ServiceSettings(service="prompt-generator", prompt_model_on="trainer", trainer_addr="trainer:50051").check_required()


def test_creation_refuses_what_the_prompt_generator_cannot_search_and_never_waits_for_one_away(tmp_path):
    """A stack whose prompt-generator has no prompt model: a study that asks for model-written
    instructions is refused at CreateStudy, naming the field, and nothing is created. With the
    prompt-generator down, creation goes on (its first proposal is a retry)."""
    spec = small_spec(strategy="random", budget={"max_trials": 2})
    spec["search_space"]["instructions"] = ["Classify the sentiment of this review."]
    spec["search_space"]["instruction_writer"] = {"methods": ["ape"], "examples": 2}

    async def run():
        stack = EmbeddedStack(tmp_path / "stack")
        await stack.start()
        try:
            async with stack.gateway_channel() as channel:
                studies = studies_pb2_grpc.StudiesStub(channel)
                with pytest.raises(grpc.aio.AioRpcError) as info:
                    await studies.CreateStudy(studies_pb2.CreateStudyRequest(spec=spec_to_proto(validate_dict(spec))),
                                              timeout=30)
                assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
                assert info.value.details().startswith("search_space.instruction_writer:")
                assert "OPENAUTOGLM_PROMPT_MODEL" in info.value.details()
                assert not (await studies.ListStudies(studies_pb2.ListStudiesRequest(), timeout=10)).studies
                stack.kill("prompt-generator")
                plain = spec_to_proto(validate_dict(small_spec(budget={"max_trials": 1})))
                created = (await studies.CreateStudy(studies_pb2.CreateStudyRequest(spec=plain), timeout=60)).study
                assert created.id
                await studies.CancelStudy(studies_pb2.CancelStudyRequest(study_id=created.id), timeout=10)
        finally:
            stack.stop()

    asyncio.run(run())
