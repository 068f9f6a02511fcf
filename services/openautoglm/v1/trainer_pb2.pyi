from openautoglm.v1 import common_pb2 as _common_pb2
from openautoglm.v1 import models_pb2 as _models_pb2
from openautoglm.v1 import scheduler_pb2 as _scheduler_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CompleteRequest(_message.Message):
    __slots__ = ("prompt", "seed", "max_seconds")
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    seed: int
    max_seconds: float
    def __init__(self, prompt: _Optional[str] = ..., seed: _Optional[int] = ..., max_seconds: _Optional[float] = ...) -> None: ...

class CompleteResponse(_message.Message):
    __slots__ = ("text", "device")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    text: str
    device: str
    def __init__(self, text: _Optional[str] = ..., device: _Optional[str] = ...) -> None: ...

class PublishModelRequest(_message.Message):
    __slots__ = ("study_id", "trial_id", "artifact_path", "object_prefix")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    OBJECT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_id: str
    artifact_path: str
    object_prefix: str
    def __init__(self, study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., artifact_path: _Optional[str] = ..., object_prefix: _Optional[str] = ...) -> None: ...

class PublishModelResponse(_message.Message):
    __slots__ = ("files", "max_input_tokens", "onnx_error")
    FILES_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    ONNX_ERROR_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedCompositeFieldContainer[_models_pb2.ModelFile]
    max_input_tokens: int
    onnx_error: str
    def __init__(self, files: _Optional[_Iterable[_Union[_models_pb2.ModelFile, _Mapping]]] = ..., max_input_tokens: _Optional[int] = ..., onnx_error: _Optional[str] = ...) -> None: ...

class ServedModel(_message.Message):
    __slots__ = ("key", "object_prefix", "files")
    KEY_FIELD_NUMBER: _ClassVar[int]
    OBJECT_PREFIX_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    key: str
    object_prefix: str
    files: _containers.RepeatedCompositeFieldContainer[_models_pb2.ModelFile]
    def __init__(self, key: _Optional[str] = ..., object_prefix: _Optional[str] = ..., files: _Optional[_Iterable[_Union[_models_pb2.ModelFile, _Mapping]]] = ...) -> None: ...

class LoadModelRequest(_message.Message):
    __slots__ = ("model", "max_batch", "max_wait_ms")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    model: ServedModel
    max_batch: int
    max_wait_ms: float
    def __init__(self, model: _Optional[_Union[ServedModel, _Mapping]] = ..., max_batch: _Optional[int] = ..., max_wait_ms: _Optional[float] = ...) -> None: ...

class LoadModelResponse(_message.Message):
    __slots__ = ("memory_mb", "max_input_tokens")
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    MAX_INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    memory_mb: float
    max_input_tokens: int
    def __init__(self, memory_mb: _Optional[float] = ..., max_input_tokens: _Optional[int] = ...) -> None: ...

class UnloadModelRequest(_message.Message):
    __slots__ = ("key",)
    KEY_FIELD_NUMBER: _ClassVar[int]
    key: str
    def __init__(self, key: _Optional[str] = ...) -> None: ...

class UnloadModelResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServePredictRequest(_message.Message):
    __slots__ = ("key", "inputs")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    key: str
    inputs: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, key: _Optional[str] = ..., inputs: _Optional[_Iterable[str]] = ...) -> None: ...

class ServePredictResponse(_message.Message):
    __slots__ = ("predictions",)
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    predictions: _containers.RepeatedCompositeFieldContainer[_models_pb2.Prediction]
    def __init__(self, predictions: _Optional[_Iterable[_Union[_models_pb2.Prediction, _Mapping]]] = ...) -> None: ...

class ServeGenerateResponse(_message.Message):
    __slots__ = ("text", "done", "full_text")
    TEXT_FIELD_NUMBER: _ClassVar[int]
    DONE_FIELD_NUMBER: _ClassVar[int]
    FULL_TEXT_FIELD_NUMBER: _ClassVar[int]
    text: str
    done: bool
    full_text: str
    def __init__(self, text: _Optional[str] = ..., done: _Optional[bool] = ..., full_text: _Optional[str] = ...) -> None: ...

class ServeGenerateRequest(_message.Message):
    __slots__ = ("key", "input", "max_new_tokens")
    KEY_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    MAX_NEW_TOKENS_FIELD_NUMBER: _ClassVar[int]
    key: str
    input: str
    max_new_tokens: int
    def __init__(self, key: _Optional[str] = ..., input: _Optional[str] = ..., max_new_tokens: _Optional[int] = ...) -> None: ...

class ExportRequest(_message.Message):
    __slots__ = ("artifact_path", "output_dir")
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_DIR_FIELD_NUMBER: _ClassVar[int]
    artifact_path: str
    output_dir: str
    def __init__(self, artifact_path: _Optional[str] = ..., output_dir: _Optional[str] = ...) -> None: ...

class ExportResponse(_message.Message):
    __slots__ = ("files", "onnx_max_abs_diff")
    FILES_FIELD_NUMBER: _ClassVar[int]
    ONNX_MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    files: _containers.RepeatedScalarFieldContainer[str]
    onnx_max_abs_diff: float
    def __init__(self, files: _Optional[_Iterable[str]] = ..., onnx_max_abs_diff: _Optional[float] = ...) -> None: ...

class ScoreTestRequest(_message.Message):
    __slots__ = ("job", "artifact_path")
    JOB_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    job: TrainJob
    artifact_path: str
    def __init__(self, job: _Optional[_Union[TrainJob, _Mapping]] = ..., artifact_path: _Optional[str] = ...) -> None: ...

class ScoreTestResponse(_message.Message):
    __slots__ = ("metrics", "objective_value", "examples")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, float]
    objective_value: float
    examples: int
    def __init__(self, metrics: _Optional[_Mapping[str, float]] = ..., objective_value: _Optional[float] = ..., examples: _Optional[int] = ...) -> None: ...

class TrainJob(_message.Message):
    __slots__ = ("study_id", "trial_id", "task", "dataset", "model", "candidate", "seed", "training", "report_intermediate", "objective", "extra_objectives")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    REPORT_INTERMEDIATE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_id: str
    task: _common_pb2.TaskType
    dataset: _common_pb2.DatasetSpec
    model: _common_pb2.ModelSpec
    candidate: _common_pb2.Candidate
    seed: int
    training: _common_pb2.TrainingOptions
    report_intermediate: bool
    objective: _common_pb2.Objective
    extra_objectives: _containers.RepeatedCompositeFieldContainer[_common_pb2.Objective]
    def __init__(self, study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.TaskType, str]] = ..., dataset: _Optional[_Union[_common_pb2.DatasetSpec, _Mapping]] = ..., model: _Optional[_Union[_common_pb2.ModelSpec, _Mapping]] = ..., candidate: _Optional[_Union[_common_pb2.Candidate, _Mapping]] = ..., seed: _Optional[int] = ..., training: _Optional[_Union[_common_pb2.TrainingOptions, _Mapping]] = ..., report_intermediate: _Optional[bool] = ..., objective: _Optional[_Union[_common_pb2.Objective, _Mapping]] = ..., extra_objectives: _Optional[_Iterable[_Union[_common_pb2.Objective, _Mapping]]] = ...) -> None: ...

class GetCapacityRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetCapacityResponse(_message.Message):
    __slots__ = ("worker", "busy_slots")
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    worker: _scheduler_pb2.Worker
    busy_slots: int
    def __init__(self, worker: _Optional[_Union[_scheduler_pb2.Worker, _Mapping]] = ..., busy_slots: _Optional[int] = ...) -> None: ...

class TrainRequest(_message.Message):
    __slots__ = ("job",)
    JOB_FIELD_NUMBER: _ClassVar[int]
    job: TrainJob
    def __init__(self, job: _Optional[_Union[TrainJob, _Mapping]] = ...) -> None: ...

class TrainResponse(_message.Message):
    __slots__ = ("progress", "trained")
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    progress: TrialProgress
    trained: TrialTrained
    def __init__(self, progress: _Optional[_Union[TrialProgress, _Mapping]] = ..., trained: _Optional[_Union[TrialTrained, _Mapping]] = ...) -> None: ...

class TrialProgress(_message.Message):
    __slots__ = ("study_id", "trial_id", "step", "total_steps", "loss", "trainer_id", "epoch", "has_intermediate", "intermediate_value", "awaiting_scores")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TOTAL_STEPS_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    HAS_INTERMEDIATE_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUE_FIELD_NUMBER: _ClassVar[int]
    AWAITING_SCORES_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_id: str
    step: int
    total_steps: int
    loss: float
    trainer_id: str
    epoch: int
    has_intermediate: bool
    intermediate_value: float
    awaiting_scores: bool
    def __init__(self, study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., step: _Optional[int] = ..., total_steps: _Optional[int] = ..., loss: _Optional[float] = ..., trainer_id: _Optional[str] = ..., epoch: _Optional[int] = ..., has_intermediate: _Optional[bool] = ..., intermediate_value: _Optional[float] = ..., awaiting_scores: _Optional[bool] = ...) -> None: ...

class TrialTrained(_message.Message):
    __slots__ = ("study_id", "trial_id", "trainer_id", "task", "predictions", "references", "train_loss", "train_seconds", "steps", "artifact_path", "model_metrics", "skipped_steps", "resumed_from_step", "precision", "metrics", "objective_value", "extra_objective_values", "score_seconds")
    class ModelMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    TRAIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    MODEL_METRICS_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_STEPS_FIELD_NUMBER: _ClassVar[int]
    RESUMED_FROM_STEP_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVE_VALUES_FIELD_NUMBER: _ClassVar[int]
    SCORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_id: str
    trainer_id: str
    task: _common_pb2.TaskType
    predictions: _containers.RepeatedScalarFieldContainer[str]
    references: _containers.RepeatedScalarFieldContainer[str]
    train_loss: float
    train_seconds: float
    steps: int
    artifact_path: str
    model_metrics: _containers.ScalarMap[str, float]
    skipped_steps: int
    resumed_from_step: int
    precision: str
    metrics: _containers.ScalarMap[str, float]
    objective_value: float
    extra_objective_values: _containers.RepeatedScalarFieldContainer[float]
    score_seconds: float
    def __init__(self, study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., trainer_id: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.TaskType, str]] = ..., predictions: _Optional[_Iterable[str]] = ..., references: _Optional[_Iterable[str]] = ..., train_loss: _Optional[float] = ..., train_seconds: _Optional[float] = ..., steps: _Optional[int] = ..., artifact_path: _Optional[str] = ..., model_metrics: _Optional[_Mapping[str, float]] = ..., skipped_steps: _Optional[int] = ..., resumed_from_step: _Optional[int] = ..., precision: _Optional[str] = ..., metrics: _Optional[_Mapping[str, float]] = ..., objective_value: _Optional[float] = ..., extra_objective_values: _Optional[_Iterable[float]] = ..., score_seconds: _Optional[float] = ...) -> None: ...
