"""From tuned to served, through the public API only: upload a dataset, run a study on it, find
its best trial registered as `<study name>` version 1, download it (every file's digest equal to
the manifest's), deploy it and call Predict: the answers equal the trainer's own predictions on
the evaluation split (shipped in the version as eval_predictions.jsonl). Then the serving
process is SIGKILLed: Predict answers UNAVAILABLE, and correctly again after its restart."""
from __future__ import annotations

import asyncio
import hashlib
import json

import grpc
import pytest

from helpers import small_spec
from openautoglm import Client, ClientError
from openautoglm.common.stack import EmbeddedStack
from openautoglm.v1 import common_pb2, models_pb2, models_pb2_grpc
from test_artifacts import _dataset


async def _registered(client: Client, study: common_pb2.Study, timeout: float = 180) -> models_pb2.ModelVersion:
    """The version the gateway registered for the study's best trial, once READY."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        for version in await client.list_models(study.spec.name):
            if version.study_id == study.id:
                return await client.wait_ready(models_pb2.ModelRef(name=version.name, version=version.version), timeout)
        await asyncio.sleep(0.5)
    raise AssertionError(f"no version registered for {study.id}")


async def _tuned_and_deployed(stack, tmp_path, name: str):
    """(client, study, version, downloaded folder) for a study on an uploaded dataset, deployed."""
    client = Client(channel=stack.gateway_channel())
    data = await client.upload_dataset(_dataset(tmp_path / "reviews.jsonl", rows=80))
    spec = small_spec(name=name, dataset={"artifact": data.id}, budget={"max_trials": 2})
    study = await client.wait((await client.submit(spec)).id)
    assert study.state == common_pb2.STUDY_STATE_COMPLETED, [t.error for t in study.trials]
    version = await _registered(client, study)
    assert (version.name, version.trial_id) == (name, study.best_trial_id)
    files = await client.download(models_pb2.ModelRef(name=name, version=version.version), tmp_path / "download")
    return client, study, version, files


async def test_upload_study_register_download_deploy_predict(stack, tmp_path):
    client, study, version, files = await _tuned_and_deployed(stack, tmp_path, "served-reviews")
    try:
        folder = tmp_path / "download"
        # Every file arrived whole: the digests equal the version's and the manifest's.
        assert {f.path for f in files} == {f.path for f in version.files}
        for f in version.files:
            assert hashlib.sha256((folder / f.path).read_bytes()).hexdigest() == f.sha256, f.path
        manifest = json.loads((folder / "manifest.json").read_text())
        assert {f["path"]: f["sha256"] for f in manifest["files"]} == {f.path: f.sha256 for f in version.files if f.path != "manifest.json"}
        assert manifest["trial_id"] == study.best_trial_id and manifest["seed"] == study.spec.seed
        assert manifest["candidate"]["prompt"] and manifest["packages"]["torch"] and manifest["source_revision"]
        for needed in ("model.safetensors", "config.json", "serving.json", "onnx/model.onnx", "eval_predictions.jsonl"):
            assert (folder / needed).is_file(), needed

        with pytest.raises(ClientError, match="FAILED_PRECONDITION.*not deployed"):
            await client.predict("served-reviews", ["nice"])
        with pytest.raises(ClientError, match="NOT_FOUND"):
            await client.predict("no-such-model", ["nice"])
        deployed = await client.deploy(models_pb2.ModelRef(name="served-reviews", version=version.version))
        assert deployed.deployment.trainer_id

        evaluated = [json.loads(line) for line in (folder / "eval_predictions.jsonl").read_text().splitlines()]
        answers = await client.predict("served-reviews", [row["input"] for row in evaluated])
        assert [a.label for a in answers] == [row["prediction"] for row in evaluated]
        assert all(abs(sum(a.scores.values()) - 1) < 1e-4 and a.scores[a.label] == max(a.scores.values()) for a in answers)
        assert not any(a.cached for a in answers)
        again = await client.predict("served-reviews", [evaluated[0]["input"]])  # a repeat: from the cache
        assert again[0].cached and again[0].label == answers[0].label

        with pytest.raises(ClientError, match="INVALID_ARGUMENT.*limit of 96.*max_input_tokens"):
            await client.predict("served-reviews", ["word " * 200])
        await client.set_alias(models_pb2.ModelRef(name="served-reviews", version=version.version), "production")
        by_alias = await client.predict("served-reviews@production", [evaluated[1]["input"]])
        assert by_alias[0].label == evaluated[1]["prediction"]
        with pytest.raises(ClientError, match="FAILED_PRECONDITION.*deployed"):
            await client.delete_model("served-reviews@production")
        await client.undeploy("served-reviews@production")
        # The downloaded model goes back in as a base model: a study fine-tunes it further.
        base = await client.upload_model(folder, name="served-reviews-v1")
        assert base.id.startswith("m-")
        follow_up = await client.wait((await client.submit(small_spec(
            name="from-uploaded-base", dataset={"artifact": study.spec.dataset.artifact}, model={"artifact": base.id},
            budget={"max_trials": 1}))).id)
        assert follow_up.state == common_pb2.STUDY_STATE_COMPLETED, [t.error for t in follow_up.trials]
        # The dataset it was tuned on is kept while the version exists, even once deleted.
        dataset = await client.delete_artifact(study.spec.dataset.artifact)
        assert f"served-reviews:{version.version}" in dataset.referenced_by
        deleted = await client.delete_model("served-reviews@production")
        assert deleted.version == version.version
        with pytest.raises(ClientError, match="NOT_FOUND"):
            await client.model(models_pb2.ModelRef(name="served-reviews", version=version.version))
    finally:
        await client.close()


def test_a_killed_serving_trainer_answers_unavailable_then_serves_again_after_its_restart(tmp_path, otlp_receiver):
    stack = EmbeddedStack(tmp_path / "stack", env={
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true"})

    async def run():
        await stack.start()
        client, _study, version, _files = await _tuned_and_deployed(stack, tmp_path, "restarted")
        try:
            ref = models_pb2.ModelRef(name="restarted", version=version.version)
            await client.deploy(ref)
            inputs = ["item 1 was great fine lovely", "item 2 was awful bad dull"]
            before = [a.label for a in await client.predict(ref, inputs)]
            stack.kill("trainer")
            async with stack.gateway_channel() as channel:
                with pytest.raises(grpc.aio.AioRpcError) as away:
                    await models_pb2_grpc.ModelsStub(channel).Predict(models_pb2.PredictRequest(model=ref, inputs=inputs), timeout=30)
            assert away.value.code() == grpc.StatusCode.UNAVAILABLE, away.value
            await stack.start_again("trainer", timeout=120)
            deadline = asyncio.get_running_loop().time() + 60
            while True:  # the restarted trainer reloads what was deployed on it
                try:
                    after = [a.label for a in await client.predict(ref, inputs)]
                    break
                except ClientError as err:
                    assert "UNAVAILABLE" in str(err), err
                    assert asyncio.get_running_loop().time() < deadline, err
                    await asyncio.sleep(0.5)
            assert after == before
        finally:
            await client.close()

    try:
        asyncio.run(run())
    finally:
        stack.stop()


async def test_a_generation_model_streams_its_continuation_and_predicts_as_its_trial_did(stack, tmp_path):
    spec = small_spec(name="served-piglatin", task="generation", dataset={"builtin": "piglatin-demo", "max_examples": 60},
                      objective={"terms": {"chrf": 1.0}}, budget={"max_trials": 1},
                      search_space={"templates": [{"id": "plain", "text": "English: {input} Pig latin:"}],
                                    "hyperparameters": {"epochs": {"type": "choice", "values": [1]}}})
    async with Client(channel=stack.gateway_channel()) as client:
        study = await client.wait((await client.submit(spec)).id)
        assert study.state == common_pb2.STUDY_STATE_COMPLETED, [t.error for t in study.trials]
        version = await _registered(client, study)
        assert version.task == common_pb2.TASK_TYPE_GENERATION
        files = await client.download(models_pb2.ModelRef(name=version.name, version=version.version), tmp_path / "gen")
        assert "onnx/model.onnx" in {f.path for f in files}
        evaluated = [json.loads(line) for line in (tmp_path / "gen" / "eval_predictions.jsonl").read_text().splitlines()]
        await client.deploy(models_pb2.ModelRef(name=version.name, version=version.version))
        answers = await client.predict(version.name, [row["input"] for row in evaluated[:4]])
        assert [a.text for a in answers] == [row["prediction"] for row in evaluated[:4]]
        pieces = [piece async for piece in client.generate(version.name, evaluated[0]["input"])]
        assert "".join(pieces).strip() == evaluated[0]["prediction"]
        async with stack.gateway_channel() as channel:
            last = [r async for r in models_pb2_grpc.ModelsStub(channel).Generate(
                models_pb2.GenerateRequest(model=models_pb2.ModelRef(name=version.name), input=evaluated[0]["input"]))][-1]
        assert last.done and last.full_text == evaluated[0]["prediction"]
        await client.undeploy(version.name)


def test_the_one_liner_searches_exports_deploys_and_predicts(stack, tmp_path):
    """`AutoTrainer("study.yaml").search()` then `.export(dir)`, `.deploy()` and `.predict()`."""
    from openautoglm import AutoTrainer

    spec_file = tmp_path / "study.yaml"
    spec_file.write_text("""name: one-liner
task: classification
dataset: {builtin: sentiment-demo, max_examples: 120}
search_space:
  templates: [{id: plain, text: "Review: {input} Sentiment:"}]
  hyperparameters: {epochs: {type: choice, values: [1]}, learning_rate: {type: choice, values: [0.003, 0.001]}}
objective: {terms: {accuracy: 1.0}}
strategy: grid
budget: {max_trials: 2}
""")
    tuned = AutoTrainer(spec_file, address=stack.address("gateway"), api_key=stack.api_key, data_dir=stack.data_dir).search()
    assert tuned.study.state == common_pb2.STUDY_STATE_COMPLETED and tuned.best is not None
    out = tuned.export(tmp_path / "exported")
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["trial_id"] == tuned.best.id
    for f in manifest["files"]:
        assert hashlib.sha256((out / f["path"]).read_bytes()).hexdigest() == f["sha256"]
    deployed = tuned.deploy()
    assert deployed.deployment.trainer_id
    evaluated = [json.loads(line) for line in (out / "eval_predictions.jsonl").read_text().splitlines()]
    answers = tuned.predict([row["input"] for row in evaluated])
    assert [a.label for a in answers] == [row["prediction"] for row in evaluated]
    asyncio.run(_undeploy(stack, deployed))


async def _undeploy(stack, version: models_pb2.ModelVersion) -> None:
    async with Client(channel=stack.gateway_channel()) as client:
        await client.undeploy(models_pb2.ModelRef(name=version.name, version=version.version))
