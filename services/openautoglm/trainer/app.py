"""The trainer service: pulls the jobs the scheduler placed on it from its own subject of the
JetStream work queue (`autoglm.trial.train.<trainer id>`, a durable consumer named after the
trainer, explicit ack), runs them with the TrialRunner, has the evaluator score each trained
model's predictions, and publishes progress / trained (with the scores) / failed / pruned events.
It holds one job waiting per slot beside the running ones (`--trainer-prefetch`), so a slot that
frees starts its next trial at once while the finished one is scored. It announces its capacity (slots, memory per slot) on
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
import time
import uuid
from dataclasses import replace

import grpc
from opentelemetry import trace

from openautoglm.common.metrics import PEER_RETRIES, TRAINER_TRIALS
from openautoglm.trainer.hardware import report_capacity
from openautoglm.common.tls import service_identity
from openautoglm.common import artifact_files, artifacts, events, sandbox, subjects, telemetry
from openautoglm.common.config import ConfigError, ServiceSettings
from openautoglm.common.net import advertised_address
from openautoglm.common.server import mesh_channel
from openautoglm.common.text_generation import GenerationError, LocalGenerator
from openautoglm.trainer.convert import job_from_proto, trained_message, worker_to_proto
from openautoglm.trainer.core import TrialError, TrialJob
from openautoglm.trainer.loop import TrialInterrupted, TrialPruned
from openautoglm.trainer.model_server import ModelServerServicer
from openautoglm.trainer.prompt_model import PromptModelServicer
from openautoglm.trainer.serving import Serving
from openautoglm.trainer.runner import TrialRunner
from openautoglm.trainer.scoring import ScoringRefused, Scorer
from openautoglm.trainer.service import TrainerServicer
from openautoglm.v1 import events_pb2, trainer_pb2, trainer_pb2_grpc

log = logging.getLogger(__name__)
HEARTBEAT_SECONDS = 2.0
# Step progress goes on NATS at most this often per trial (epoch scores and the start always do).
PROGRESS_REPORT_SECONDS = 2.0
# A result NATS cannot take now is published again after a pause that doubles up to the max.
RESULT_RETRY_FIRST_SECONDS = 0.5
RESULT_RETRY_MAX_SECONDS = 5.0


class TrainerApp:
    service_names = (trainer_pb2.DESCRIPTOR.services_by_name["Trainer"].full_name,
                     trainer_pb2.DESCRIPTOR.services_by_name["ModelServer"].full_name,
                     trainer_pb2.DESCRIPTOR.services_by_name["PromptModel"].full_name)

    def __init__(self, settings: ServiceSettings):
        self.settings = settings
        # Uploaded datasets and models this trainer fetched, kept by digest (a read root).
        cache_dir = settings.service_dir() / "cache"
        self.artifact_cache = artifacts.ArtifactCache(cache_dir, self._bucket, settings.artifact_max_bytes * 4)
        self._artifact_bucket = None
        self.runner = TrialRunner(
            trainer_id=subjects.subject_token(settings.trainer_id or f"trainer-{socket.gethostname()}-{os.getpid()}"),
            slots=settings.trainer_slots,
            memory_per_slot_mb=settings.trainer_memory_mb,
            processes=settings.trainer_processes,
            artifacts=settings.service_dir() / "artifacts",
            checkpoints=settings.service_dir() / "checkpoints",
            queue_slots=settings.trainer_slots * settings.trainer_prefetch,
            read_roots=(*sandbox.read_roots(settings.data_dir), cache_dir),
        )
        # Deployed model versions (serving.py), remembered on disk across restarts.
        self.serving = Serving(settings.service_dir() / "serving" / "deployed.json", settings.serving_max_batch,
                               settings.serving_max_wait_ms, settings.serving_cache_entries)
        self.model_server = ModelServerServicer(self.serving, self.artifact_cache, cache_dir / "served")
        # The instruction-writing model this trainer hosts for the prompt-generator, if any.
        try:
            generator = LocalGenerator(settings.prompt_model, settings.prompt_model_seconds) if settings.prompt_model else None
        except GenerationError as err:
            raise ConfigError(f"--prompt-model (or OPENAUTOGLM_PROMPT_MODEL): {err}") from None
        self.prompt_model = PromptModelServicer(generator)
        # Where the gateway reaches this trainer (set at start, once the port is bound).
        self.address = settings.advertise_addr
        self._reloading: asyncio.Task[None] | None = None
        self.bus: events.NatsBus | None = None
        self.evaluator: grpc.aio.Channel | None = None
        self.scorer: Scorer | None = None
        self.consumer: events.DurableConsumer | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._joining: asyncio.Task[None] | None = None

    @property
    def _bus(self) -> events.NatsBus:
        assert self.bus is not None, "NATS used before start()"
        return self.bus

    @property
    def _scorer(self) -> Scorer:
        assert self.scorer is not None, "scoring before start()"
        return self.scorer

    async def _bucket(self):
        """The artifact store (opened once; the gateway creates it)."""
        if self._artifact_bucket is None:
            self._artifact_bucket = await artifacts.open_bucket(self._bus.js)
        return self._artifact_bucket

    async def _fetch_artifacts(self, job: TrialJob) -> TrialJob:
        """The job with its uploaded dataset and model as local paths (fetched once per digest).
        An artifact that is gone or corrupt fails the trial; the store being away is transient
        (the exception naks the job and it comes back)."""
        try:
            if job.dataset_artifact:
                job = replace(job, dataset_path=str(await self.artifact_cache.dataset(job.dataset_artifact)))
            if job.model_artifact:
                job = replace(job, model_path=str(await self.artifact_cache.model_dir(job.model_artifact)), model_builtin="")
        except artifact_files.ArtifactError as err:
            field = "dataset.artifact" if job.dataset_artifact and not job.dataset_path else "model.artifact"
            raise TrialError(f"{field}: {err}") from None
        return job

    def register(self, server):
        trainer_pb2_grpc.add_TrainerServicer_to_server(
            TrainerServicer(self.runner, lambda: self._scorer, self._bucket, self._fetch_artifacts), server)
        trainer_pb2_grpc.add_ModelServerServicer_to_server(self.model_server, server)
        trainer_pb2_grpc.add_PromptModelServicer_to_server(self.prompt_model, server)

    async def _beat(self, leaving: bool = False) -> None:
        capacity = self.runner.capacity()
        report_capacity(capacity.slots, capacity.busy)
        beat = events_pb2.TrainerHeartbeat(
            meta=subjects.new_meta("trainer"), worker=worker_to_proto(capacity, self.address, self.serving.memory_mb()),
            busy_slots=capacity.busy, leaving=leaving,
            ping_subject=subjects.ping_subject(self.runner.trainer_id),
        )
        with contextlib.suppress(Exception):
            await self._bus.notify(subjects.SUBJECT_HEARTBEAT, beat)

    async def _heartbeat(self):
        while True:
            await self._beat()
            await asyncio.sleep(HEARTBEAT_SECONDS)

    async def _on_job(self, msg, ctx):
        job = events_pb2.TrainJobEvent.FromString(msg.data).job
        trainer_id = self.runner.trainer_id
        with telemetry.tracer().start_as_current_span("trainer.job", context=ctx) as span:
            span.set_attribute("openautoglm.study_id", job.study_id)
            span.set_attribute("openautoglm.trial_id", job.trial_id)
            log.info("trial %s received (delivery %d)", job.trial_id, msg.metadata.num_delivered,
                     extra={"study_id": job.study_id, "trial_id": job.trial_id})
            loop = asyncio.get_running_loop()
            last_report = 0.0

            def publish_progress(**fields):
                event = events_pb2.TrialProgressEvent(
                    meta=subjects.new_meta("trainer", job.study_id, job.trial_id),
                    progress=trainer_pb2.TrialProgress(study_id=job.study_id, trial_id=job.trial_id, trainer_id=trainer_id,
                                                       **fields),
                )
                loop.create_task(self._publish_progress(event))

            def on_start():  # "a trainer has it": the gateway marks the trial TRAINING
                log.info("training trial %s", job.trial_id, extra={"study_id": job.study_id, "trial_id": job.trial_id})
                publish_progress(step=0, total_steps=0, loss=0.0)

            def on_progress(step, total, loss):
                nonlocal last_report
                if time.monotonic() - last_report >= PROGRESS_REPORT_SECONDS:  # a watcher's pace, not every step
                    last_report = time.monotonic()
                    publish_progress(step=step, total_steps=total, loss=loss)

            def on_intermediate(epoch, value):
                publish_progress(epoch=epoch, has_intermediate=True, intermediate_value=value)

            try:
                trial_job = await self._fetch_artifacts(job_from_proto(job))
                result = await self.runner.run(trial_job, on_progress, on_intermediate, on_start)
            except TrialError as err:
                log.warning("trial %s failed: %s", job.trial_id, err, extra={"trial_id": job.trial_id})
                TRAINER_TRIALS.labels("failed").inc()
                await self._publish_failed(job, str(err))
                return
            except TrialInterrupted:
                TRAINER_TRIALS.labels("interrupted").inc()
                raise asyncio.CancelledError() from None  # the consumer naks: back to the queue
            except TrialPruned as err:
                log.info("trial %s pruned at step %d", job.trial_id, err.step, extra={"trial_id": job.trial_id})
                TRAINER_TRIALS.labels("pruned").inc()
                await self._publish_result(subjects.SUBJECT_PRUNED, events_pb2.TrialPrunedEvent(
                    meta=subjects.new_meta("trainer", job.study_id, job.trial_id, f"pruned-{job.trial_id}"),
                    trainer_id=trainer_id))
                return
            # The slot is free again (the next job is already waiting for it); score meanwhile.
            try:
                with telemetry.tracer().start_as_current_span("score"):
                    # While the evaluator is away the trial shows as EVALUATING, not TRAINING.
                    scoring_started = time.monotonic()
                    scores = await self._scorer.score(job, result, on_wait=lambda: publish_progress(awaiting_scores=True))
                    score_seconds = time.monotonic() - scoring_started
            except ScoringRefused as err:
                log.warning("trial %s: %s", job.trial_id, err, extra={"trial_id": job.trial_id})
                await self._publish_failed(job, str(err))
                return
            trained = events_pb2.TrialTrainedEvent(
                meta=subjects.new_meta("trainer", job.study_id, job.trial_id, f"trained-{job.trial_id}"),
                trained=trained_message(job, result, trainer_id, scores, outputs=False),
            )
            trained.trained.score_seconds = score_seconds  # the scoring stage, for the scheduler's costs
            await self._publish_result(subjects.SUBJECT_TRAINED, trained)
            TRAINER_TRIALS.labels("trained").inc()
            log.info("trial %s trained in %.1fs (loss %.4f), scored %.4f", job.trial_id, result.seconds, result.train_loss,
                     scores.objective_value, extra={"trial_id": job.trial_id})

    @staticmethod
    async def _on_ping(msg) -> None:
        with contextlib.suppress(Exception):
            await msg.respond(b"")

    async def _publish_progress(self, event: events_pb2.TrialProgressEvent) -> None:
        """Progress is a courtesy: one lost while NATS is away is not worth a retry."""
        try:
            await self._bus.publish(subjects.SUBJECT_PROGRESS, event)
        except subjects.BusUnavailable as err:
            log.info("progress of %s not published: %s", event.meta.trial_id, err)

    async def _publish_result(self, subject: str, event: subjects.Event) -> None:
        """A trial's result is the work itself: while NATS cannot take it, keep it and try again
        (the job stays in progress, so it is not redelivered meanwhile)."""
        pause = RESULT_RETRY_FIRST_SECONDS
        while True:
            try:
                await self._bus.publish(subject, event)
                return
            except subjects.BusUnavailable as err:
                log.warning("result of %s not published yet (%s); retrying in %.1fs", event.meta.trial_id, err, pause,
                            extra={"trial_id": event.meta.trial_id})
                PEER_RETRIES.labels("nats", "UNAVAILABLE").inc()
                trace.get_current_span().add_event("retry", {"peer": "nats", "subject": subject, "pause_seconds": pause})
                await asyncio.sleep(pause)
                pause = min(pause * 2, RESULT_RETRY_MAX_SECONDS)

    async def _on_stop_request(self, msg) -> None:
        request = events_pb2.TrialStopRequest.FromString(msg.data)
        log.info("stop requested for trial %s: %s", request.meta.trial_id, request.reason, extra={"trial_id": request.meta.trial_id})
        self.runner.request_stop(request.meta.trial_id)

    async def _publish_failed(self, job: trainer_pb2.TrainJob, reason: str) -> None:
        failed = events_pb2.TrialFailedEvent(
            meta=subjects.new_meta("trainer", job.study_id, job.trial_id, f"failed-{job.trial_id}"),
            reason=reason, trainer_id=self.runner.trainer_id,
        )
        await self._publish_result(subjects.SUBJECT_FAILED, failed)

    async def _give_up(self, msg, err: Exception) -> None:
        """A job that crashed every delivery (not a clean TrialError): fail its trial."""
        job = events_pb2.TrainJobEvent.FromString(msg.data).job
        await self._publish_failed(job, f"training crashed {msg.metadata.num_delivered} times; last error: {err!r}")

    async def start(self):
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        self.address = advertised_address(self.settings.host, self.settings.port, self.settings.advertise_addr)
        self.evaluator = mesh_channel(self.settings, self.settings.evaluator_addr, "evaluator")
        self.scorer = Scorer(self.evaluator)
        self.bus = await events.NatsBus.connect(self.settings.nats_url, f"trainer-{uuid.uuid4().hex[:6]}",
                                                service_identity(self.settings))
        await self.bus.wait_for_stream(events.JOBS_STREAM_NAME)
        await self.bus.nc.subscribe(subjects.SUBJECT_STOP, cb=self._on_stop_request)
        # What was deployed here before a restart serves again (before the warm-up: serving is
        # what callers are waiting for).
        self._reloading = asyncio.create_task(self.model_server.reload_saved())
        # SERVING now; the trainer joins the cluster (heartbeats, its jobs queue) once warm.
        self._joining = asyncio.create_task(self._warm_up_then_join())

    async def _warm_up_then_join(self) -> None:
        """Pay training's one-time costs on the training thread (the first trial then runs at
        full speed), then announce this trainer and take jobs. Done after SERVING, so a
        restarted trainer answers within seconds; a redelivered job waits for the warm-up."""
        await asyncio.wrap_future(self.runner.start_warm_up())
        # Answer the scheduler's liveness pings (while this connection lives, so does this trainer).
        await self._bus.nc.subscribe(subjects.ping_subject(self.runner.trainer_id), cb=self._on_ping)
        self._heartbeat_task = asyncio.create_task(self._heartbeat())
        self.consumer = events.DurableConsumer(
            self._bus.js, events.JOBS_STREAM_NAME, self.runner.trainer_id, [subjects.train_subject(self.runner.trainer_id)], self._on_job,
            ack_wait=self.settings.trainer_ack_wait, max_deliver=5,
            concurrency=self.runner.slots + self.runner.queue_slots,  # the waiting jobs are fetched too
            on_give_up=self._give_up,
        )
        await self.consumer.start()
        log.info("trainer %s warmed up and taking jobs", self.runner.trainer_id)

    async def stop(self):
        self.runner.stop_event.set()  # running training stops at its next step
        if self._joining is not None and not self._joining.done():
            self._joining.cancel()
        if self.consumer:
            await self.consumer.stop()
        if self._heartbeat_task:
            self._heartbeat_task.cancel()
            if self.bus is not None and not self.bus.nc.is_closed:
                await self._beat(leaving=True)  # the scheduler re-plans now, not after the timeout
        if self.bus is not None:
            await self.bus.close()
        if self.evaluator is not None:
            await self.evaluator.close()
        if self._reloading is not None:
            self._reloading.cancel()
        await self.serving.close()
        self.prompt_model.close()
        self.runner.close()

