"""The trainer service: pulls the jobs the scheduler placed on it from its own subject of the
JetStream work queue (`autoglm.trial.train.<trainer id>`, a durable consumer named after the
trainer, explicit ack), runs them with core.run_trial in a worker thread, and publishes
progress / trained / failed events. It announces its capacity (slots, memory per slot) on
`autoglm.trainer.heartbeat` every few seconds; the scheduler packs work onto it from those.

On SIGTERM the running job is interrupted between two optimiser steps and nak'ed, and a last
heartbeat marked `leaving` tells the scheduler at once, so the gateway places the trial on
another trainer (a trainer restarted under the same id resumes its own queue): accepted work
is never lost. The trainer id must therefore be stable across restarts of one replica (the pod
name, the compose service's hostname, `trainer-0` in the embedded stack).
A job that cannot run (bad model dir, malformed dataset) fails its trial instead of retrying.
"""
from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import threading
import uuid

import grpc

from openautoglm.common import events, telemetry
from openautoglm.common.config import ServiceSettings
from openautoglm.common.spec import DEFAULT_MAX_LENGTH, param_from_proto, task_name
from openautoglm.trainer.core import TrialError, TrialInterrupted, TrialJob, TrialPruned, TrialResult, run_trial
from openautoglm.v1 import events_pb2, scheduler_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0


def job_from_proto(job: trainer_pb2.TrainJob) -> TrialJob:
    return TrialJob(
        study_id=job.study_id,
        trial_id=job.trial_id,
        task=task_name(job.task),
        prompt=job.candidate.prompt,
        hyperparameters={k: param_from_proto(v) for k, v in job.candidate.hyperparameters.items()},
        dataset_builtin=job.dataset.builtin,
        dataset_path=job.dataset.path,
        text_field=job.dataset.text_field,
        label_field=job.dataset.label_field,
        eval_fraction=job.dataset.eval_fraction or 0.2,
        max_examples=job.dataset.max_examples,
        model_builtin=job.model.builtin,
        model_path=job.model.path,
        tuning=job.model.tuning or "full",
        precision=job.training.precision or "fp32",
        gradient_checkpointing=job.training.gradient_checkpointing,
        gradient_accumulation_steps=job.training.gradient_accumulation_steps or 1,
        checkpoint_every_steps=job.training.checkpoint_every_steps or 20,
        max_length=job.training.max_length or DEFAULT_MAX_LENGTH,
        seed=job.seed,
        report_intermediate=job.report_intermediate,
    )


def trained_message(job: trainer_pb2.TrainJob, result: TrialResult, trainer_id: str) -> trainer_pb2.TrialTrained:
    return trainer_pb2.TrialTrained(
        study_id=job.study_id,
        trial_id=job.trial_id,
        trainer_id=trainer_id,
        task=job.task,
        predictions=result.predictions,
        references=result.references,
        train_loss=result.train_loss,
        train_seconds=result.seconds,
        steps=result.steps,
        artifact_path=result.artifact_path,
        model_metrics=result.model_metrics,
        skipped_steps=result.skipped_steps,
        resumed_from_step=result.resumed_from_step,
        precision=result.precision,
    )


def free_memory_mb() -> float:
    import torch

    if torch.cuda.is_available():
        return torch.cuda.mem_get_info()[0] / 2**20
    return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20


class TrainerCore:
    """Runs jobs in worker threads, one per slot, and remembers what it is doing."""

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.trainer_id = events.subject_token(settings.trainer_id or f"trainer-{socket.gethostname()}-{os.getpid()}")
        # Announced per slot and held steady, so packing does not chase this trainer's own usage.
        self.memory_per_slot_mb = settings.trainer_memory_mb or free_memory_mb() / settings.trainer_slots
        self.artifacts = settings.service_dir() / "artifacts"
        # On the shared data volume, so a job redelivered to another replica resumes too.
        self.checkpoints = settings.service_dir() / "checkpoints"
        self.stop_event = threading.Event()
        self.busy = 0
        # Running trials' prune flags: set when the study's pruner asks to stop one.
        self.prune_flags: dict[str, threading.Event] = {}
        # Trials asked to stop before they started here (most recent last, bounded).
        self.stop_early: dict[str, None] = {}

    def request_stop(self, trial_id: str) -> None:
        flag = self.prune_flags.get(trial_id)
        if flag is not None:
            flag.set()
            return
        self.stop_early[trial_id] = None
        while len(self.stop_early) > 1024:
            self.stop_early.pop(next(iter(self.stop_early)))

    @property
    def processes(self) -> int:
        """Data-parallel processes per trial: every local GPU by default (DDP via torchrun)."""
        import torch

        return self.settings.trainer_processes or max(1, torch.cuda.device_count())

    async def _run_distributed(self, job: TrialJob, on_progress) -> TrialResult:
        """Run the trial under torchrun (ddp.py): rank 0 streams progress lines on stdout."""
        import json
        import sys
        import tempfile
        from dataclasses import asdict

        from openautoglm.common.stack import free_port

        log.info("trial %s: data-parallel over %d processes (torchrun)", job.trial_id, self.processes,
                 extra={"trial_id": job.trial_id})
        with tempfile.TemporaryDirectory(prefix="autoglm-ddp-") as tmp:
            job_file, result_file = f"{tmp}/job.json", f"{tmp}/result.json"
            with open(job_file, "w") as handle:
                json.dump(asdict(job), handle)
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={self.processes}",
                f"--master_port={free_port()}", "-m", "openautoglm.trainer.ddp", job_file, result_file,
                str(self.artifacts), str(self.checkpoints),
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )
            try:
                async for line in proc.stdout:
                    if line.startswith(b"{"):
                        step = json.loads(line)
                        on_progress(step["step"], step["total"], step["loss"])
                stderr = (await proc.stderr.read()).decode(errors="replace")
                code = await proc.wait()
            except asyncio.CancelledError:
                proc.terminate()  # ranks stop; the checkpoint stays for the redelivered job
                await proc.wait()
                raise
            if code != 0:
                errors = [ln for ln in stderr.splitlines() if "TrialError" in ln]
                if errors:
                    raise TrialError(errors[-1].split("TrialError:", 1)[-1].strip())
                raise RuntimeError(f"torchrun exited with {code}: {stderr[-2000:]}")
            with open(result_file) as handle:
                return TrialResult(**json.load(handle))

    def worker(self) -> scheduler_pb2.Worker:
        import torch

        kind = "cuda" if torch.cuda.is_available() else "cpu"
        return scheduler_pb2.Worker(
            id=self.trainer_id, slots=self.settings.trainer_slots,
            memory_mb=self.memory_per_slot_mb, speed=1.0, device_kind=kind,
        )

    async def run(self, job: trainer_pb2.TrainJob, on_progress, on_intermediate=None) -> TrialResult:
        """Train one job in a thread; on_progress(step, total, loss) and
        on_intermediate(epoch, score) are called on the event loop."""
        loop = asyncio.get_running_loop()

        def progress(step, total, loss):
            loop.call_soon_threadsafe(on_progress, step, total, loss)

        def intermediate(epoch, value):
            if on_intermediate is not None:
                loop.call_soon_threadsafe(on_intermediate, epoch, value)

        prune = self.prune_flags.setdefault(job.trial_id, threading.Event())
        if job.trial_id in self.stop_early:  # stopped while it still waited in this trainer's queue
            prune.set()
        self.busy += 1
        try:
            with telemetry.tracer().start_as_current_span("train") as span:
                span.set_attribute("openautoglm.trial_id", job.trial_id)
                span.set_attribute("openautoglm.processes", self.processes)
                if self.processes > 1:
                    result = await self._run_distributed(job_from_proto(job), on_progress)
                else:
                    result = await asyncio.to_thread(
                        run_trial, job_from_proto(job), self.artifacts, progress, self.stop_event, self.checkpoints,
                        min(free_memory_mb() / self.settings.trainer_slots, self.memory_per_slot_mb), intermediate, prune,
                    )
                if result.resumed_from_step:
                    log.info("trial %s resumed from its checkpoint at step %d", job.trial_id, result.resumed_from_step,
                             extra={"trial_id": job.trial_id})
                span.set_attribute("openautoglm.resumed_from_step", result.resumed_from_step)
                span.set_attribute("openautoglm.skipped_steps", result.skipped_steps)
                span.set_attribute("openautoglm.steps", result.steps)
                span.set_attribute("openautoglm.train_loss", result.train_loss)
                return result
        finally:
            self.busy -= 1
            self.prune_flags.pop(job.trial_id, None)


class TrainerServicer(trainer_pb2_grpc.TrainerServicer):
    def __init__(self, core: TrainerCore):
        self.core = core

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
                                                       total_steps=total, loss=loss, trainer_id=self.core.trainer_id))

        task = asyncio.create_task(self.core.run(job, on_progress))
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
        yield trainer_pb2.TrainResponse(trained=trained_message(job, result, self.core.trainer_id))

    async def GetCapacity(self, request, context):
        return trainer_pb2.GetCapacityResponse(worker=self.core.worker(), busy_slots=self.core.busy)

    async def Export(self, request, context):
        from openautoglm.trainer.export import ExportError, export

        if not request.artifact_path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "artifact_path: required")
        try:
            with telemetry.tracer().start_as_current_span("export"):
                files, diff = await asyncio.to_thread(export, request.artifact_path, request.output_dir or None)
        except ExportError as err:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"artifact_path: {err}")
        return trainer_pb2.ExportResponse(files=[str(f) for f in files], onnx_max_abs_diff=diff)


class TrainerApp:
    service_names = (trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name,)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        self.core = TrainerCore(settings)
        self.nc = None
        self.js = None
        self.consumer = None
        self._heartbeat_task = None

    def register(self, server):
        trainer_pb2_grpc.add_TrainerServicer_to_server(TrainerServicer(self.core), server)

    async def _beat(self, leaving: bool = False) -> None:
        beat = events_pb2.TrainerHeartbeat(
            meta=events.new_meta("trainer"), worker=self.core.worker(), busy_slots=self.core.busy, leaving=leaving
        )
        with contextlib.suppress(Exception):
            await self.nc.publish(events.SUBJECT_HEARTBEAT, beat.SerializeToString())

    async def _heartbeat(self):
        while True:
            await self._beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _on_job(self, msg, ctx):
        job = events_pb2.TrainJobEvent.FromString(msg.data).job
        trainer_id = self.core.trainer_id
        with telemetry.tracer().start_as_current_span("trainer.job", context=ctx) as span:
            span.set_attribute("openautoglm.study_id", job.study_id)
            span.set_attribute("openautoglm.trial_id", job.trial_id)
            log.info("training trial %s (delivery %d)", job.trial_id, msg.metadata.num_delivered,
                     extra={"study_id": job.study_id, "trial_id": job.trial_id})
            loop = asyncio.get_running_loop()

            def publish_progress(**fields):
                event = events_pb2.TrialProgressEvent(
                    meta=events.new_meta("trainer", job.study_id, job.trial_id),
                    progress=trainer_pb2.TrialProgress(study_id=job.study_id, trial_id=job.trial_id, trainer_id=trainer_id,
                                                       **fields),
                )
                loop.create_task(events.publish(self.js, events.SUBJECT_PROGRESS, event))

            def on_progress(step, total, loss):
                publish_progress(step=step, total_steps=total, loss=loss)

            def on_intermediate(epoch, value):
                publish_progress(epoch=epoch, has_intermediate=True, intermediate_value=value)

            on_progress(0, 0, 0.0)  # "a trainer has it": the gateway marks the trial TRAINING
            try:
                result = await self.core.run(job, on_progress, on_intermediate)
            except TrialError as err:
                log.warning("trial %s failed: %s", job.trial_id, err, extra={"trial_id": job.trial_id})
                await self._publish_failed(job, str(err))
                return
            except TrialInterrupted:
                raise asyncio.CancelledError() from None  # the consumer naks: back to the queue
            except TrialPruned as err:
                log.info("trial %s pruned at step %d", job.trial_id, err.step, extra={"trial_id": job.trial_id})
                await events.publish(self.js, events.SUBJECT_PRUNED, events_pb2.TrialPrunedEvent(
                    meta=events.new_meta("trainer", job.study_id, job.trial_id, f"pruned-{job.trial_id}"),
                    trainer_id=trainer_id))
                return
            trained = events_pb2.TrialTrainedEvent(
                meta=events.new_meta("trainer", job.study_id, job.trial_id, f"trained-{job.trial_id}"),
                trained=trained_message(job, result, trainer_id),
            )
            await events.publish(self.js, events.SUBJECT_TRAINED, trained)
            log.info("trial %s trained in %.1fs (loss %.4f)", job.trial_id, result.seconds, result.train_loss,
                     extra={"trial_id": job.trial_id})

    async def _on_stop_request(self, msg) -> None:
        request = events_pb2.TrialStopRequest.FromString(msg.data)
        log.info("stop requested for trial %s: %s", request.meta.trial_id, request.reason, extra={"trial_id": request.meta.trial_id})
        self.core.request_stop(request.meta.trial_id)

    async def _publish_failed(self, job: trainer_pb2.TrainJob, reason: str) -> None:
        failed = events_pb2.TrialFailedEvent(
            meta=events.new_meta("trainer", job.study_id, job.trial_id, f"failed-{job.trial_id}"),
            reason=reason, trainer_id=self.core.trainer_id,
        )
        await events.publish(self.js, events.SUBJECT_FAILED, failed)

    async def _give_up(self, msg, err: Exception) -> None:
        """A job that crashed every delivery (not a clean TrialError): fail its trial."""
        job = events_pb2.TrainJobEvent.FromString(msg.data).job
        await self._publish_failed(job, f"training crashed {msg.metadata.num_delivered} times; last error: {err!r}")

    async def start(self):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.nc = await events.connect(self.settings.nats_url, f"trainer-{uuid.uuid4().hex[:6]}")
        self.js = self.nc.jetstream()
        await events.ensure_streams(self.js)
        self._heartbeat_task = asyncio.create_task(self._heartbeat())
        await self.nc.subscribe(events.SUBJECT_STOP, cb=self._on_stop_request)
        self.consumer = events.DurableConsumer(
            self.js, events.JOBS_STREAM.name, self.core.trainer_id, [events.train_subject(self.core.trainer_id)], self._on_job,
            ack_wait=self.settings.trainer_ack_wait, max_deliver=5, concurrency=self.settings.trainer_slots,
            on_give_up=self._give_up,
        )
        await self.consumer.start()

    async def stop(self):
        self.core.stop_event.set()  # running training stops at its next step
        if self.consumer:
            await self.consumer.stop()
        if self._heartbeat_task:
            self._heartbeat_task.cancel()
            if self.nc is not None and not self.nc.is_closed:
                await self._beat(leaving=True)  # the scheduler re-plans now, not after the timeout
        await events.close(self.nc)
