"""The Python SDK: `Client` over the gateway's public gRPC API, and the one-liner on top of it.

    from openautoglm import AutoTrainer
    best = AutoTrainer("study.yaml").search()     # submit, watch to the end, the best trial
    AutoTrainer("study.yaml").search().export("out/")   # or .deploy(), then .predict([...])

`Client` is asyncio (grpc.aio): upload a dataset or a base model, submit a spec, watch it,
register and download its best model (every file's digest checked), deploy it and predict.
It finds the gateway, the key and the CA the way the CLI does (common/credentials.py): explicit
arguments, else OPENAUTOGLM_GATEWAY / OPENAUTOGLM_API_KEY / OPENAUTOGLM_CA_CERT, else the stack
`openautoglm up` runs in the data dir.
"""
from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import tempfile
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import grpc

from openautoglm.common import artifact_files
from openautoglm.common.config import default_data_dir
from openautoglm.common.credentials import api_key as stored_api_key
from openautoglm.common.credentials import gateway_channel, gateway_credentials
from openautoglm.v1 import (
    artifacts_pb2,
    artifacts_pb2_grpc,
    common_pb2,
    models_pb2,
    models_pb2_grpc,
    studies_pb2,
    studies_pb2_grpc,
)

GATEWAY_VARIABLE = "OPENAUTOGLM_GATEWAY"
UPLOAD_CHUNK_BYTES = 1024 * 1024
TERMINAL = (common_pb2.STUDY_STATE_COMPLETED, common_pb2.STUDY_STATE_FAILED, common_pb2.STUDY_STATE_CANCELLED)


class ClientError(RuntimeError):
    """What the gateway refused, or a download whose digest does not match."""


def _ref(model: str | models_pb2.ModelRef, version: int = 0, alias: str = "") -> models_pb2.ModelRef:
    """"name", "name:3" or "name@production" (or a ModelRef) as a ModelRef."""
    if isinstance(model, models_pb2.ModelRef):
        return model
    if "@" in model:
        name, alias = model.split("@", 1)
    elif ":" in model:
        name, number = model.split(":", 1)
        version = int(number)
    else:
        name = model
    return models_pb2.ModelRef(name=name, version=version, alias=alias)


class Client:
    """One connection to the gateway. Use `async with Client() as client:` (or `await close()`)."""

    def __init__(self, address: str | None = None, api_key: str | None = None, *, data_dir: Path | None = None,
                 channel: grpc.aio.Channel | None = None):
        if channel is None:
            data_dir = data_dir or default_data_dir()
            address = address or os.environ.get(GATEWAY_VARIABLE) or _running_gateway(data_dir)
            if not address:
                raise ClientError(f"no gateway: pass an address, set {GATEWAY_VARIABLE}, or run `openautoglm up`")
            channel = gateway_channel(address, api_key or stored_api_key(data_dir), gateway_credentials(data_dir))
        self.channel = channel
        self.studies = studies_pb2_grpc.StudiesStub(channel)
        self.artifacts = artifacts_pb2_grpc.ArtifactsStub(channel)
        self.models = models_pb2_grpc.ModelsStub(channel)

    async def __aenter__(self) -> "Client":
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.channel.close()

    # --- artifacts -----------------------------------------------------------------------------

    async def upload_dataset(self, path: str | Path, name: str = "") -> artifacts_pb2.Artifact:
        """Upload a JSONL dataset; its id goes in a spec as `dataset: {artifact: ...}`."""
        path = Path(path)
        return await self._upload(path, artifacts_pb2.ARTIFACT_KIND_DATASET, name or path.name)

    async def upload_model(self, directory: str | Path, name: str = "") -> artifacts_pb2.Artifact:
        """Upload a Hugging Face model directory; its id goes in a spec as `model: {artifact: ...}`."""
        directory = Path(directory)
        with tempfile.TemporaryDirectory(prefix="openautoglm-upload-") as scratch:
            archive = artifact_files.pack_model_dir(directory, Path(scratch) / "model.tar")
            return await self._upload(archive, artifacts_pb2.ARTIFACT_KIND_MODEL, name or directory.name)

    async def _upload(self, path: Path, kind: artifacts_pb2.ArtifactKind, name: str) -> artifacts_pb2.Artifact:
        header = artifacts_pb2.UploadArtifactHeader(kind=kind, name=name[:128], sha256=artifact_files.sha256_file(path),
                                                    size_bytes=path.stat().st_size)

        async def parts() -> AsyncIterator[artifacts_pb2.UploadArtifactRequest]:
            yield artifacts_pb2.UploadArtifactRequest(header=header)
            with path.open("rb") as handle:
                while chunk := handle.read(UPLOAD_CHUNK_BYTES):
                    yield artifacts_pb2.UploadArtifactRequest(chunk=chunk)

        reply = await self._call(self.artifacts.UploadArtifact(parts(), timeout=3600))
        return reply.artifact

    async def list_artifacts(self) -> list[artifacts_pb2.Artifact]:
        return list((await self._call(self.artifacts.ListArtifacts(artifacts_pb2.ListArtifactsRequest(page_size=500)))).artifacts)

    async def delete_artifact(self, artifact_id: str) -> artifacts_pb2.Artifact:
        reply = await self._call(self.artifacts.DeleteArtifact(artifacts_pb2.DeleteArtifactRequest(artifact_id=artifact_id)))
        return reply.artifact

    # --- studies -------------------------------------------------------------------------------

    async def submit(self, spec: common_pb2.StudySpec | dict | str | Path) -> common_pb2.Study:
        """Create a study from a StudySpec, a spec dict, or a YAML/JSON spec file."""
        reply = await self._call(self.studies.CreateStudy(studies_pb2.CreateStudyRequest(spec=_spec(spec)), timeout=60))
        return reply.study

    async def watch(self, study_id: str) -> AsyncIterator[common_pb2.Study]:
        """The study after every change, until it ends."""
        try:
            async for update in self.studies.WatchStudy(studies_pb2.WatchStudyRequest(study_id=study_id)):
                yield update.study
        except grpc.aio.AioRpcError as err:
            raise ClientError(f"{err.code().name}: {err.details()}") from None

    async def wait(self, study_id: str) -> common_pb2.Study:
        """Follow the study to its end (reconnecting if the stream breaks); the final study."""
        while True:
            study = None
            try:
                async for update in self.watch(study_id):
                    study = update
            except ClientError:
                await asyncio.sleep(1.0)
            if study is not None and study.state in TERMINAL:
                return study
            await asyncio.sleep(0.5)

    async def get(self, study_id: str) -> common_pb2.Study:
        return (await self._call(self.studies.GetStudy(studies_pb2.GetStudyRequest(study_id=study_id)))).study

    async def best(self, study_id: str) -> common_pb2.Trial | None:
        study = await self.get(study_id)
        return next((t for t in study.trials if t.id == study.best_trial_id), None)

    # --- models --------------------------------------------------------------------------------

    async def register(self, study_id: str, trial_id: str = "", name: str = "", timeout: float = 600) -> models_pb2.ModelVersion:
        """Register a trial (default: the study's best) and wait until its files are stored."""
        reply = await self._call(self.models.RegisterModel(
            models_pb2.RegisterModelRequest(study_id=study_id, trial_id=trial_id, name=name), timeout=60))
        return await self.wait_ready(models_pb2.ModelRef(name=reply.model.name, version=reply.model.version), timeout)

    async def wait_ready(self, model: str | models_pb2.ModelRef, timeout: float = 600) -> models_pb2.ModelVersion:
        """The version once it is READY; ClientError if its registration failed."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            version = await self.model(model)
            if version.state == models_pb2.MODEL_VERSION_STATE_READY:
                return version
            if version.state == models_pb2.MODEL_VERSION_STATE_FAILED:
                raise ClientError(f"{version.name} version {version.version}: registration failed: {version.error}")
            if asyncio.get_running_loop().time() > deadline:
                raise ClientError(f"{version.name} version {version.version}: not ready after {timeout:.0f}s")
            await asyncio.sleep(0.5)

    async def model(self, model: str | models_pb2.ModelRef) -> models_pb2.ModelVersion:
        return (await self._call(self.models.GetModel(models_pb2.GetModelRequest(model=_ref(model))))).model

    async def list_models(self, name: str = "") -> list[models_pb2.ModelVersion]:
        return list((await self._call(self.models.ListModels(models_pb2.ListModelsRequest(name=name, page_size=500)))).models)

    async def set_alias(self, model: str | models_pb2.ModelRef, alias: str) -> models_pb2.ModelVersion:
        return (await self._call(self.models.SetAlias(models_pb2.SetAliasRequest(model=_ref(model), alias=alias)))).model

    async def delete_model(self, model: str | models_pb2.ModelRef) -> models_pb2.ModelVersion:
        return (await self._call(self.models.DeleteModel(models_pb2.DeleteModelRequest(model=_ref(model))))).model

    async def download(self, model: str | models_pb2.ModelRef, directory: str | Path) -> list[models_pb2.ModelFile]:
        """Write the version's files under `directory`, checking each file's size and sha256
        against what the stream announced (ClientError on a mismatch; nothing half-written is
        left under its own name)."""
        directory = Path(directory)
        files: list[models_pb2.ModelFile] = []
        current: tuple[models_pb2.ModelFile, Path, Any, Any] | None = None

        def finish() -> None:
            if current is None:
                return
            meta, partial, handle, digest = current
            handle.close()
            if digest.hexdigest() != meta.sha256 or partial.stat().st_size != meta.size_bytes:
                partial.unlink(missing_ok=True)
                raise ClientError(f"{meta.path}: digest or size differs from the manifest")
            partial.replace(directory / meta.path)
            files.append(meta)

        try:
            async for part in self.models.DownloadModel(models_pb2.DownloadModelRequest(model=_ref(model))):
                if part.HasField("file"):
                    finish()
                    target = directory / _relative(part.file.path)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    partial = target.with_name(f".{target.name}.part-{secrets.token_hex(4)}")
                    current = (part.file, partial, partial.open("wb"), hashlib.sha256())
                elif current is not None:
                    current[2].write(part.chunk)
                    current[3].update(part.chunk)
            finish()
            current = None
        except grpc.aio.AioRpcError as err:
            raise ClientError(f"DownloadModel: {err.code().name}: {err.details()}") from None
        finally:
            if current is not None:
                current[2].close()
                current[1].unlink(missing_ok=True)
        return files

    async def deploy(self, model: str | models_pb2.ModelRef) -> models_pb2.ModelVersion:
        return (await self._call(self.models.Deploy(models_pb2.DeployRequest(model=_ref(model)), timeout=600))).model

    async def undeploy(self, model: str | models_pb2.ModelRef) -> models_pb2.ModelVersion:
        return (await self._call(self.models.Undeploy(models_pb2.UndeployRequest(model=_ref(model)), timeout=60))).model

    async def predict(self, model: str | models_pb2.ModelRef, inputs: Iterable[str]) -> list[models_pb2.Prediction]:
        reply = await self._call(self.models.Predict(models_pb2.PredictRequest(model=_ref(model), inputs=list(inputs)), timeout=120))
        return list(reply.predictions)

    async def generate(self, model: str | models_pb2.ModelRef, text: str, max_new_tokens: int = 0) -> AsyncIterator[str]:
        """The generated text, a piece per token."""
        try:
            async for part in self.models.Generate(models_pb2.GenerateRequest(model=_ref(model), input=text,
                                                                              max_new_tokens=max_new_tokens), timeout=600):
                if not part.done:
                    yield part.text
        except grpc.aio.AioRpcError as err:
            raise ClientError(f"Generate: {err.code().name}: {err.details()}") from None

    @staticmethod
    async def _call(call: Any) -> Any:
        try:
            return await call
        except grpc.aio.AioRpcError as err:
            raise ClientError(f"{err.code().name}: {err.details()}") from None


def _relative(path: str) -> Path:
    """A file path from the server, refused unless it stays inside the download folder."""
    parts = Path(path).parts
    if not parts or Path(path).is_absolute() or ".." in parts:
        raise ClientError(f"refusing the file path {path!r} from the server")
    return Path(*parts)


def _running_gateway(data_dir: Path) -> str | None:
    from openautoglm.common.stack import running_stack_gateway

    return running_stack_gateway(data_dir)


def _spec(spec: common_pb2.StudySpec | dict | str | Path) -> common_pb2.StudySpec:
    from openautoglm.common.spec.files import load_spec_file
    from openautoglm.common.spec.protos import spec_to_proto
    from openautoglm.common.spec.schema import validate_dict

    if isinstance(spec, common_pb2.StudySpec):
        return spec
    return spec_to_proto(validate_dict(spec) if isinstance(spec, dict) else load_spec_file(Path(spec)))


class AutoTrainer:
    """The one-liner: `AutoTrainer("study.yaml").search()` runs the study to its end, then
    `.export(dir)` downloads the registered best model, `.deploy()` serves it and `.predict()`
    calls it. Synchronous (each call runs its own event loop); `Client` is the async API."""

    def __init__(self, spec: common_pb2.StudySpec | dict | str | Path, address: str | None = None,
                 api_key: str | None = None, data_dir: Path | None = None):
        self.spec = spec
        self._connect = dict(address=address, api_key=api_key, data_dir=data_dir)
        self.study: common_pb2.Study | None = None
        self.model: models_pb2.ModelVersion | None = None

    def _run(self, work):
        async def run():
            async with Client(**self._connect) as client:  # type: ignore[arg-type]
                return await work(client)

        return asyncio.run(run())

    def search(self) -> "AutoTrainer":
        """Submit the spec and follow the study to its end; the best trial is `best`."""
        async def work(client: Client) -> common_pb2.Study:
            study = await client.submit(self.spec)
            return await client.wait(study.id)

        self.study = self._run(work)
        if self.study.state != common_pb2.STUDY_STATE_COMPLETED:
            raise ClientError(f"study {self.study.id} ended {common_pb2.StudyState.Name(self.study.state)}: {self.study.error}")
        return self

    @property
    def best(self) -> common_pb2.Trial | None:
        if self.study is None:
            return None
        return next((t for t in self.study.trials if t.id == self.study.best_trial_id), None)

    def registered(self) -> models_pb2.ModelVersion:
        """The study's registered best model (the gateway registers it when the study completes)."""
        if self.study is None:
            raise ClientError("search() first")
        study = self.study

        async def work(client: Client) -> models_pb2.ModelVersion:
            for version in await client.list_models(study.spec.name):
                if version.study_id == study.id and version.trial_id == study.best_trial_id:
                    return await client.wait_ready(models_pb2.ModelRef(name=version.name, version=version.version))
            return await client.register(study.id)

        self.model = self._run(work)
        return self.model

    def export(self, directory: str | Path) -> Path:
        """Download the best model's files (digests checked) into `directory`."""
        model = self.model or self.registered()
        ref = models_pb2.ModelRef(name=model.name, version=model.version)
        self._run(lambda client: client.download(ref, directory))
        return Path(directory)

    def deploy(self) -> models_pb2.ModelVersion:
        model = self.model or self.registered()
        ref = models_pb2.ModelRef(name=model.name, version=model.version)
        self.model = self._run(lambda client: client.deploy(ref))
        return self.model

    def predict(self, inputs: Iterable[str]) -> list[models_pb2.Prediction]:
        model = self.model or self.registered()
        ref = models_pb2.ModelRef(name=model.name, version=model.version)
        items = list(inputs)
        return self._run(lambda client: client.predict(ref, items))
