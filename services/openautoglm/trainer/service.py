"""gRPC face of the trainer (`Trainer`: Train, GetCapacity, Export, ScoreTest) over the TrialRunner.

Train streams progress and ends with the trained result (scored by the evaluator when the job
names an objective); the runner's outcomes map to status codes: a trial that cannot run is FAILED_PRECONDITION, a stopping trainer UNAVAILABLE, a trial
stopped by its pruner ABORTED.
"""
from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from openautoglm.common import telemetry
from openautoglm.common.detached import run_detached
from openautoglm.common.sandbox import OutsideRoots
from openautoglm.common.spec.protos import task_name
from openautoglm.trainer.convert import job_from_proto, trained_message, worker_to_proto
from openautoglm.trainer.core import TrialError, TrialJob
from openautoglm.trainer.final_scores import predict_test_split
from openautoglm.trainer.export import ExportError, export
from openautoglm.trainer.loop import TrialInterrupted, TrialPruned
from openautoglm.trainer.model_server import publish_model
from openautoglm.trainer.serving import ServingError
from openautoglm.trainer.runner import TrialRunner
from openautoglm.trainer.scoring import ScoringRefused, Scorer
from openautoglm.v1 import trainer_pb2, trainer_pb2_grpc


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, runner: TrialRunner, scorer: Callable[[], Scorer],
                 bucket: Callable[[], Awaitable[Any]] | None = None,
                 fetch: Callable[[TrialJob], Awaitable[TrialJob]] | None = None):
        self.runner = runner
        self.scorer = scorer  # the app's evaluator client (available once the app has started)
        self.bucket = bucket  # the artifact store (PublishModel), opened on first use
        self.fetch = fetch  # a job's uploaded dataset and model as local paths (the app's cache)

    async def PublishModel(self, request, context):
        """Store one of this trainer's trials in the artifact store for the model registry."""
        if not request.artifact_path or not request.object_prefix:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "artifact_path and object_prefix: required")
        if self.bucket is None:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "this trainer has no artifact store")
        assert self.bucket is not None
        try:
            return await publish_model(await self.bucket(), self.runner.artifacts, request)
        except OutsideRoots as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"artifact_path: {err}")
        except (ServingError, ExportError, OSError) as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"artifact_path: {err}")

    async def Train(self, request, context):
        job = request.job
        if not task_name(job.task):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job.task: set TASK_TYPE_CLASSIFICATION or TASK_TYPE_GENERATION")
        if "{input}" not in job.candidate.prompt:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job.candidate.prompt: must contain the '{input}' slot")
        if bool(job.dataset.builtin) == bool(job.dataset.path):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job.dataset: give exactly one of builtin or path")
        queue: asyncio.Queue = asyncio.Queue()

        def on_progress(step, total, loss):
            queue.put_nowait(trainer_pb2.TrialProgress(study_id=job.study_id, trial_id=job.trial_id, step=step,
                                                       total_steps=total, loss=loss, trainer_id=self.runner.trainer_id))

        task = asyncio.create_task(self.runner.run(job_from_proto(job), on_progress))
        try:
            while not task.done() or not queue.empty():
                getter = asyncio.create_task(queue.get())
                await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield trainer_pb2.TrainResponse(progress=getter.result())
                else:
                    getter.cancel()
            result = task.result()
        except TrialError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except TrialInterrupted as err:
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"trainer stopping: {err}")
        except TrialPruned as err:
            await context.abort(grpc.StatusCode.ABORTED, f"trial stopped by its study's pruner: {err}")
        scores = None
        if job.objective.terms:
            try:
                scores = await self.scorer().score(job, result)
            except ScoringRefused as err:
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job.objective: {err}")
        yield trainer_pb2.TrainResponse(trained=trained_message(job, result, self.runner.trainer_id, scores))

    async def GetCapacity(self, request, context):
        capacity = self.runner.capacity()
        return trainer_pb2.GetCapacityResponse(worker=worker_to_proto(capacity), busy_slots=capacity.busy)

    async def Export(self, request, context):
        """Exports one of this trainer's trial artifacts into `<artifact>/export`: the source must
        lie inside the trainer's artifact root, and no client-supplied path is written to."""
        if not request.artifact_path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "artifact_path: required")
        if request.output_dir:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                "output_dir: not accepted; the export is written to <artifact_path>/export")
        try:
            source = self.runner.export_source(request.artifact_path)
        except OutsideRoots as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"artifact_path: {err}")
        try:
            with telemetry.tracer().start_as_current_span("export"):  # in a child process (export.py)
                files, diff = await run_detached(export, source)
        except ExportError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"artifact_path: {err}")
        return trainer_pb2.ExportResponse(files=[str(f) for f in files], onnx_max_abs_diff=diff)

    async def ScoreTest(self, request, context):
        """Scores one of this trainer's trial artifacts on its dataset's test split: the source
        must lie inside the trainer's artifact root, like Export's."""
        if not request.artifact_path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "artifact_path: required")
        if not task_name(request.job.task):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job.task: set TASK_TYPE_CLASSIFICATION or TASK_TYPE_GENERATION")
        if not request.job.objective.terms:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "job.objective: required (the test split is scored by it)")
        try:
            source = self.runner.export_source(request.artifact_path)
        except OutsideRoots as err:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"artifact_path: {err}")
        try:
            job = self.runner.check_paths(job_from_proto(request.job))
            if self.fetch is not None:
                job = await self.fetch(job)
            with telemetry.tracer().start_as_current_span("score_test"):
                result = await run_detached(predict_test_split, job, source)
                scores = await self.scorer().score(request.job, result)
        except TrialError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except ScoringRefused as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"job.objective: {err}")
        return trainer_pb2.ScoreTestResponse(metrics=dict(scores.metrics), objective_value=scores.objective_value,
                                             examples=len(result.references))
