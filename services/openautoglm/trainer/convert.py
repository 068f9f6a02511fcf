"""The trainer's protobuf edge: jobs in, results and capacity out (no logic of their own)."""
from __future__ import annotations

from openautoglm.common.catalogue import (
    DEFAULT_CHECKPOINT_EVERY_STEPS,
    DEFAULT_EVAL_FRACTION,
    DEFAULT_MAX_LENGTH,
    DEFAULT_PRECISION,
    DEFAULT_TUNING,
)
from openautoglm.common.spec.protos import param_from_proto, task_name
from openautoglm.trainer.core import TrialJob, TrialResult
from openautoglm.trainer.runner import Capacity
from openautoglm.v1 import evaluator_pb2, scheduler_pb2, trainer_pb2


def job_from_proto(job: trainer_pb2.TrainJob) -> TrialJob:
    """A TrainJob as the runner takes it; proto3 fields left unset take the catalogue's defaults."""
    return TrialJob(
        study_id=job.study_id,
        trial_id=job.trial_id,
        task=task_name(job.task),
        prompt=job.candidate.prompt,
        hyperparameters={k: param_from_proto(v) for k, v in job.candidate.hyperparameters.items()},
        dataset_builtin=job.dataset.builtin,
        dataset_path=job.dataset.path,
        dataset_artifact=job.dataset.artifact,
        text_field=job.dataset.text_field,
        label_field=job.dataset.label_field,
        eval_fraction=job.dataset.eval_fraction or DEFAULT_EVAL_FRACTION,
        test_fraction=job.dataset.test_fraction,
        max_examples=job.dataset.max_examples,
        model_builtin=job.model.builtin,
        model_path=job.model.path,
        model_artifact=job.model.artifact,
        tuning=job.model.tuning or DEFAULT_TUNING,
        precision=job.training.precision or DEFAULT_PRECISION,
        gradient_checkpointing=job.training.gradient_checkpointing,
        gradient_accumulation_steps=job.training.gradient_accumulation_steps or 1,
        checkpoint_every_steps=job.training.checkpoint_every_steps or DEFAULT_CHECKPOINT_EVERY_STEPS,
        max_length=job.training.max_length or DEFAULT_MAX_LENGTH,
        seed=job.seed,
        report_intermediate=job.report_intermediate,
    )


def trained_message(job: trainer_pb2.TrainJob, result: TrialResult, trainer_id: str,
                    scores: evaluator_pb2.EvaluateResponse | None = None, outputs: bool = True) -> trainer_pb2.TrialTrained:
    """A trained trial with its scores; `outputs` adds the held-out predictions and references
    (the Train RPC's answer; never an event: bulk data stays off NATS)."""
    trained = trainer_pb2.TrialTrained(
        study_id=job.study_id,
        trial_id=job.trial_id,
        trainer_id=trainer_id,
        task=job.task,
        train_loss=result.train_loss,
        train_seconds=result.seconds,
        steps=result.steps,
        artifact_path=result.artifact_path,
        model_metrics=result.model_metrics,
        skipped_steps=result.skipped_steps,
        resumed_from_step=result.resumed_from_step,
        precision=result.precision,
    )
    if outputs:
        trained.predictions.extend(result.predictions)
        trained.references.extend(result.references)
    if scores is not None:
        trained.metrics.update(scores.metrics)
        trained.objective_value = scores.objective_value
        trained.extra_objective_values.extend(scores.extra_objective_values)
    return trained


def worker_to_proto(capacity: Capacity, address: str = "", serving_memory_mb: float = 0.0) -> scheduler_pb2.Worker:
    return scheduler_pb2.Worker(
        id=capacity.trainer_id, slots=capacity.slots, memory_mb=capacity.memory_per_slot_mb, speed=capacity.speed,
        tokens_per_second=capacity.tokens_per_second,
        device_kind=capacity.device_kind, queue_slots=capacity.queue_slots, address=address,
        serving_memory_mb=serving_memory_mb,
    )
