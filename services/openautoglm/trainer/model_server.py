"""gRPC face of a trainer's model work for the registry and serving (the gateway calls it):
`Trainer.PublishModel` stores a trained trial's files in the artifact store, and `ModelServer`
loads registered versions from there and answers Predict / Generate through serving.py.

Object names and model keys come from the gateway, never from a public client; the only path a
request names (a trial's artifact_path) must lie inside this trainer's artifact root.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import grpc

from openautoglm.common import artifact_files, artifacts, sandbox, telemetry
from openautoglm.common.detached import run_detached
from openautoglm.trainer import core, export
from openautoglm.trainer.serving import InputTooLong, Serving, ServingError
from openautoglm.v1 import models_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
# Files of a trial's folder the registry never ships (training leftovers, earlier exports).
SKIPPED = ("export",)
MAX_INPUTS = 256


def trial_files(source: Path) -> list[tuple[str, Path]]:
    """(relative path, file) of a trial's saved model, with its ONNX export as onnx/model.onnx."""
    files = [(p.relative_to(source).as_posix(), p) for p in sorted(source.rglob("*"))
             if p.is_file() and p.relative_to(source).parts[0] not in SKIPPED]
    onnx = source / "export" / "model.onnx"
    if onnx.is_file():
        files.append(("onnx/model.onnx", onnx))
    return files


# Registrations of one trainer take turns, so the second of one trial finds the first's export
# (export.py itself runs one export at a time in the process).
_EXPORTING = asyncio.Lock()


async def publish_model(bucket: Any, artifact_root: Path, request: trainer_pb2.PublishModelRequest) -> trainer_pb2.PublishModelResponse:
    """Export the trial to ONNX (once), then store each file as `<object_prefix>/<path>`. An
    architecture torch cannot export is registered without ONNX, saying why."""
    source = sandbox.inside(request.artifact_path, artifact_root)
    if not (source / core.SERVING_RECIPE).is_file():
        raise ServingError(f"{request.trial_id}: its saved model has no {core.SERVING_RECIPE} (trained before serving existed)")
    reply = trainer_pb2.PublishModelResponse()
    async with _EXPORTING:
        if not (source / "export" / "model.onnx").is_file():
            try:  # in a child process (export.py), waited on from a daemon thread
                with telemetry.tracer().start_as_current_span("export"):
                    await run_detached(export.export, source)
            except Exception as err:  # torch.export's own errors are many kinds
                reply.onnx_error = f"{type(err).__name__}: {str(err).splitlines()[0][:500]}"
                log.warning("trial %s: no ONNX export: %s", request.trial_id, reply.onnx_error)
    for relative, path in trial_files(source):
        digest, size = await artifacts.put_file(bucket, f"{request.object_prefix}/{relative}", path)
        reply.files.add(path=relative, size_bytes=size, sha256=digest)
    reply.max_input_tokens = json.loads((source / core.SERVING_RECIPE).read_text())["max_length"]
    return reply


class ModelServerServicer(trainer_pb2_grpc.ModelServerServicer):
    def __init__(self, serving: Serving, cache: artifacts.ArtifactCache, models_dir: Path):
        self.serving = serving
        self.cache = cache
        self.models_dir = models_dir

    async def assemble(self, model: trainer_pb2.ServedModel) -> Path:
        """The version's files as one folder (hard links to the blobs fetched by digest)."""
        target = self.models_dir / hashlib.sha256(model.key.encode()).hexdigest()[:24]
        if (target / core.SERVING_RECIPE).is_file():
            return target
        staging = target.with_name(f".{target.name}.part")
        shutil.rmtree(staging, ignore_errors=True)
        for f in model.files:
            blob = await self.cache.file(f"{model.object_prefix}/{f.path}", f.sha256)
            place = staging / artifact_files.safe_relative_path(f.path)
            place.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(blob, place)
            except OSError:
                shutil.copyfile(blob, place)
        shutil.rmtree(target, ignore_errors=True)
        os.replace(staging, target)
        return target

    async def load(self, model: trainer_pb2.ServedModel, max_batch: int = 0, max_wait_ms: float = 0):
        directory = await self.assemble(model)
        record = {"key": model.key, "object_prefix": model.object_prefix,
                  "files": [{"path": f.path, "size_bytes": f.size_bytes, "sha256": f.sha256} for f in model.files]}
        return await self.serving.load(model.key, directory, record, max_batch, max_wait_ms)

    async def reload_saved(self) -> None:
        """Load again what was deployed here before this process started."""
        for record in self.serving.saved_records():
            model = trainer_pb2.ServedModel(key=record["key"], object_prefix=record["object_prefix"],
                                            files=[models_pb2.ModelFile(**f) for f in record["files"]])
            try:
                await self.load(model, record.get("max_batch", 0), record.get("max_wait_ms", 0))
            except Exception as err:  # the store away: the gateway's Deploy retry loads it later
                log.warning("could not reload %s after the restart: %r", record["key"], err)

    async def LoadModel(self, request, context):
        if not request.model.key or not request.model.files:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "model: key and files required")
        try:
            model = await self.load(request.model, request.max_batch, request.max_wait_ms)
        except artifacts.ArtifactMissing as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model.files: {err}")
        except (ServingError, OSError, ValueError) as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"model: {err}")
        return trainer_pb2.LoadModelResponse(memory_mb=model.memory_mb, max_input_tokens=model.max_input_tokens)

    async def UnloadModel(self, request, context):
        await self.serving.unload(request.key)
        return trainer_pb2.UnloadModelResponse()

    async def ServePredict(self, request, context):
        if not request.inputs or len(request.inputs) > MAX_INPUTS:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"inputs: 1 to {MAX_INPUTS} per call")
        try:
            answers = await self.serving.predict(request.key, list(request.inputs))
        except InputTooLong as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
        except ServingError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        reply = trainer_pb2.ServePredictResponse()
        task = self.serving.model(request.key).model.task
        for (value, scores), cached in answers:
            if task == "classification":
                reply.predictions.add(label=value, scores=scores, cached=cached)
            else:
                reply.predictions.add(text=value, cached=cached)
        return reply

    async def ServeGenerate(self, request, context):
        try:
            deployed = self.serving.model(request.key)
            deployed.model.check([request.input])
        except InputTooLong as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err).replace("inputs[0]", "input"))
        except ServingError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        if deployed.model.task != "generation":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{request.key} is a classification model: use Predict")
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue[str | None] = asyncio.Queue()

        def on_text(text: str) -> None:
            loop.call_soon_threadsafe(pieces.put_nowait, text)

        work = loop.run_in_executor(self.serving.executor, deployed.model.generate, request.input, request.max_new_tokens, on_text)
        work.add_done_callback(lambda _: loop.call_soon_threadsafe(pieces.put_nowait, None))
        while (piece := await pieces.get()) is not None:
            yield trainer_pb2.ServeGenerateResponse(text=piece)
        yield trainer_pb2.ServeGenerateResponse(done=True, full_text=await work)
