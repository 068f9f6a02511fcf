import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class TaskType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TASK_TYPE_UNSPECIFIED: _ClassVar[TaskType]
    TASK_TYPE_CLASSIFICATION: _ClassVar[TaskType]
    TASK_TYPE_GENERATION: _ClassVar[TaskType]

class Direction(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DIRECTION_UNSPECIFIED: _ClassVar[Direction]
    DIRECTION_MAXIMIZE: _ClassVar[Direction]
    DIRECTION_MINIMIZE: _ClassVar[Direction]

class StudyState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    STUDY_STATE_UNSPECIFIED: _ClassVar[StudyState]
    STUDY_STATE_PENDING: _ClassVar[StudyState]
    STUDY_STATE_RUNNING: _ClassVar[StudyState]
    STUDY_STATE_COMPLETED: _ClassVar[StudyState]
    STUDY_STATE_FAILED: _ClassVar[StudyState]
    STUDY_STATE_CANCELLED: _ClassVar[StudyState]

class TrialStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    TRIAL_STATUS_UNSPECIFIED: _ClassVar[TrialStatus]
    TRIAL_STATUS_QUEUED: _ClassVar[TrialStatus]
    TRIAL_STATUS_TRAINING: _ClassVar[TrialStatus]
    TRIAL_STATUS_EVALUATING: _ClassVar[TrialStatus]
    TRIAL_STATUS_SUCCEEDED: _ClassVar[TrialStatus]
    TRIAL_STATUS_FAILED: _ClassVar[TrialStatus]
    TRIAL_STATUS_CANCELLED: _ClassVar[TrialStatus]
    TRIAL_STATUS_PRUNED: _ClassVar[TrialStatus]
TASK_TYPE_UNSPECIFIED: TaskType
TASK_TYPE_CLASSIFICATION: TaskType
TASK_TYPE_GENERATION: TaskType
DIRECTION_UNSPECIFIED: Direction
DIRECTION_MAXIMIZE: Direction
DIRECTION_MINIMIZE: Direction
STUDY_STATE_UNSPECIFIED: StudyState
STUDY_STATE_PENDING: StudyState
STUDY_STATE_RUNNING: StudyState
STUDY_STATE_COMPLETED: StudyState
STUDY_STATE_FAILED: StudyState
STUDY_STATE_CANCELLED: StudyState
TRIAL_STATUS_UNSPECIFIED: TrialStatus
TRIAL_STATUS_QUEUED: TrialStatus
TRIAL_STATUS_TRAINING: TrialStatus
TRIAL_STATUS_EVALUATING: TrialStatus
TRIAL_STATUS_SUCCEEDED: TrialStatus
TRIAL_STATUS_FAILED: TrialStatus
TRIAL_STATUS_CANCELLED: TrialStatus
TRIAL_STATUS_PRUNED: TrialStatus

class ParamValue(_message.Message):
    __slots__ = ("number", "integer", "text", "flag")
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    INTEGER_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    FLAG_FIELD_NUMBER: _ClassVar[int]
    number: float
    integer: int
    text: str
    flag: bool
    def __init__(self, number: _Optional[float] = ..., integer: _Optional[int] = ..., text: _Optional[str] = ..., flag: _Optional[bool] = ...) -> None: ...

class DatasetSpec(_message.Message):
    __slots__ = ("builtin", "path", "text_field", "label_field", "eval_fraction", "max_examples", "artifact", "test_fraction")
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_FIELD_NUMBER: _ClassVar[int]
    LABEL_FIELD_FIELD_NUMBER: _ClassVar[int]
    EVAL_FRACTION_FIELD_NUMBER: _ClassVar[int]
    MAX_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    TEST_FRACTION_FIELD_NUMBER: _ClassVar[int]
    builtin: str
    path: str
    text_field: str
    label_field: str
    eval_fraction: float
    max_examples: int
    artifact: str
    test_fraction: float
    def __init__(self, builtin: _Optional[str] = ..., path: _Optional[str] = ..., text_field: _Optional[str] = ..., label_field: _Optional[str] = ..., eval_fraction: _Optional[float] = ..., max_examples: _Optional[int] = ..., artifact: _Optional[str] = ..., test_fraction: _Optional[float] = ...) -> None: ...

class ModelSpec(_message.Message):
    __slots__ = ("builtin", "path", "tuning", "artifact")
    BUILTIN_FIELD_NUMBER: _ClassVar[int]
    PATH_FIELD_NUMBER: _ClassVar[int]
    TUNING_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    builtin: str
    path: str
    tuning: str
    artifact: str
    def __init__(self, builtin: _Optional[str] = ..., path: _Optional[str] = ..., tuning: _Optional[str] = ..., artifact: _Optional[str] = ...) -> None: ...

class TrainingOptions(_message.Message):
    __slots__ = ("precision", "gradient_checkpointing", "gradient_accumulation_steps", "checkpoint_every_steps", "max_length", "memory_mb")
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_CHECKPOINTING_FIELD_NUMBER: _ClassVar[int]
    GRADIENT_ACCUMULATION_STEPS_FIELD_NUMBER: _ClassVar[int]
    CHECKPOINT_EVERY_STEPS_FIELD_NUMBER: _ClassVar[int]
    MAX_LENGTH_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    precision: str
    gradient_checkpointing: bool
    gradient_accumulation_steps: int
    checkpoint_every_steps: int
    max_length: int
    memory_mb: float
    def __init__(self, precision: _Optional[str] = ..., gradient_checkpointing: _Optional[bool] = ..., gradient_accumulation_steps: _Optional[int] = ..., checkpoint_every_steps: _Optional[int] = ..., max_length: _Optional[int] = ..., memory_mb: _Optional[float] = ...) -> None: ...

class PromptTemplate(_message.Message):
    __slots__ = ("id", "text")
    ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    id: str
    text: str
    def __init__(self, id: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class TemplateVariable(_message.Message):
    __slots__ = ("name", "values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    values: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., values: _Optional[_Iterable[str]] = ...) -> None: ...

class ChoiceDomain(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedCompositeFieldContainer[ParamValue]
    def __init__(self, values: _Optional[_Iterable[_Union[ParamValue, _Mapping]]] = ...) -> None: ...

class RealDomain(_message.Message):
    __slots__ = ("low", "high")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    low: float
    high: float
    def __init__(self, low: _Optional[float] = ..., high: _Optional[float] = ...) -> None: ...

class IntDomain(_message.Message):
    __slots__ = ("low", "high", "step")
    LOW_FIELD_NUMBER: _ClassVar[int]
    HIGH_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    low: int
    high: int
    step: int
    def __init__(self, low: _Optional[int] = ..., high: _Optional[int] = ..., step: _Optional[int] = ...) -> None: ...

class HyperParameter(_message.Message):
    __slots__ = ("name", "choice", "uniform", "log_uniform", "int_range", "when_param", "when_values")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CHOICE_FIELD_NUMBER: _ClassVar[int]
    UNIFORM_FIELD_NUMBER: _ClassVar[int]
    LOG_UNIFORM_FIELD_NUMBER: _ClassVar[int]
    INT_RANGE_FIELD_NUMBER: _ClassVar[int]
    WHEN_PARAM_FIELD_NUMBER: _ClassVar[int]
    WHEN_VALUES_FIELD_NUMBER: _ClassVar[int]
    name: str
    choice: ChoiceDomain
    uniform: RealDomain
    log_uniform: RealDomain
    int_range: IntDomain
    when_param: str
    when_values: _containers.RepeatedCompositeFieldContainer[ParamValue]
    def __init__(self, name: _Optional[str] = ..., choice: _Optional[_Union[ChoiceDomain, _Mapping]] = ..., uniform: _Optional[_Union[RealDomain, _Mapping]] = ..., log_uniform: _Optional[_Union[RealDomain, _Mapping]] = ..., int_range: _Optional[_Union[IntDomain, _Mapping]] = ..., when_param: _Optional[str] = ..., when_values: _Optional[_Iterable[_Union[ParamValue, _Mapping]]] = ...) -> None: ...

class SearchSpace(_message.Message):
    __slots__ = ("templates", "variables", "hyperparameters", "instructions", "instruction_positions", "instruction_edits", "instruction_writer", "models")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTIONS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_POSITIONS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_EDITS_FIELD_NUMBER: _ClassVar[int]
    INSTRUCTION_WRITER_FIELD_NUMBER: _ClassVar[int]
    MODELS_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[PromptTemplate]
    variables: _containers.RepeatedCompositeFieldContainer[TemplateVariable]
    hyperparameters: _containers.RepeatedCompositeFieldContainer[HyperParameter]
    instructions: _containers.RepeatedScalarFieldContainer[str]
    instruction_positions: _containers.RepeatedScalarFieldContainer[str]
    instruction_edits: InstructionEdits
    instruction_writer: InstructionWriter
    models: _containers.RepeatedCompositeFieldContainer[ModelSpec]
    def __init__(self, templates: _Optional[_Iterable[_Union[PromptTemplate, _Mapping]]] = ..., variables: _Optional[_Iterable[_Union[TemplateVariable, _Mapping]]] = ..., hyperparameters: _Optional[_Iterable[_Union[HyperParameter, _Mapping]]] = ..., instructions: _Optional[_Iterable[str]] = ..., instruction_positions: _Optional[_Iterable[str]] = ..., instruction_edits: _Optional[_Union[InstructionEdits, _Mapping]] = ..., instruction_writer: _Optional[_Union[InstructionWriter, _Mapping]] = ..., models: _Optional[_Iterable[_Union[ModelSpec, _Mapping]]] = ...) -> None: ...

class InstructionWriter(_message.Message):
    __slots__ = ("methods", "examples")
    METHODS_FIELD_NUMBER: _ClassVar[int]
    EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    methods: _containers.RepeatedScalarFieldContainer[str]
    examples: int
    def __init__(self, methods: _Optional[_Iterable[str]] = ..., examples: _Optional[int] = ...) -> None: ...

class InstructionEdits(_message.Message):
    __slots__ = ("operations", "phrase_pool", "edits_per_candidate")
    OPERATIONS_FIELD_NUMBER: _ClassVar[int]
    PHRASE_POOL_FIELD_NUMBER: _ClassVar[int]
    EDITS_PER_CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    operations: _containers.RepeatedScalarFieldContainer[str]
    phrase_pool: _containers.RepeatedScalarFieldContainer[str]
    edits_per_candidate: int
    def __init__(self, operations: _Optional[_Iterable[str]] = ..., phrase_pool: _Optional[_Iterable[str]] = ..., edits_per_candidate: _Optional[int] = ...) -> None: ...

class ObjectiveTerm(_message.Message):
    __slots__ = ("metric", "weight")
    METRIC_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    metric: str
    weight: float
    def __init__(self, metric: _Optional[str] = ..., weight: _Optional[float] = ...) -> None: ...

class Objective(_message.Message):
    __slots__ = ("terms", "direction")
    TERMS_FIELD_NUMBER: _ClassVar[int]
    DIRECTION_FIELD_NUMBER: _ClassVar[int]
    terms: _containers.RepeatedCompositeFieldContainer[ObjectiveTerm]
    direction: Direction
    def __init__(self, terms: _Optional[_Iterable[_Union[ObjectiveTerm, _Mapping]]] = ..., direction: _Optional[_Union[Direction, str]] = ...) -> None: ...

class Budget(_message.Message):
    __slots__ = ("max_trials", "max_wall_seconds", "parallelism")
    MAX_TRIALS_FIELD_NUMBER: _ClassVar[int]
    MAX_WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PARALLELISM_FIELD_NUMBER: _ClassVar[int]
    max_trials: int
    max_wall_seconds: float
    parallelism: int
    def __init__(self, max_trials: _Optional[int] = ..., max_wall_seconds: _Optional[float] = ..., parallelism: _Optional[int] = ...) -> None: ...

class StudySpec(_message.Message):
    __slots__ = ("name", "task", "dataset", "model", "search_space", "objective", "strategy", "budget", "seed", "training", "warm_start", "pruner", "extra_objectives", "final_repeats")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    DATASET_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    SEARCH_SPACE_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    BUDGET_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    TRAINING_FIELD_NUMBER: _ClassVar[int]
    WARM_START_FIELD_NUMBER: _ClassVar[int]
    PRUNER_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    FINAL_REPEATS_FIELD_NUMBER: _ClassVar[int]
    name: str
    task: TaskType
    dataset: DatasetSpec
    model: ModelSpec
    search_space: SearchSpace
    objective: Objective
    strategy: str
    budget: Budget
    seed: int
    training: TrainingOptions
    warm_start: WarmStart
    pruner: str
    extra_objectives: _containers.RepeatedCompositeFieldContainer[Objective]
    final_repeats: int
    def __init__(self, name: _Optional[str] = ..., task: _Optional[_Union[TaskType, str]] = ..., dataset: _Optional[_Union[DatasetSpec, _Mapping]] = ..., model: _Optional[_Union[ModelSpec, _Mapping]] = ..., search_space: _Optional[_Union[SearchSpace, _Mapping]] = ..., objective: _Optional[_Union[Objective, _Mapping]] = ..., strategy: _Optional[str] = ..., budget: _Optional[_Union[Budget, _Mapping]] = ..., seed: _Optional[int] = ..., training: _Optional[_Union[TrainingOptions, _Mapping]] = ..., warm_start: _Optional[_Union[WarmStart, _Mapping]] = ..., pruner: _Optional[str] = ..., extra_objectives: _Optional[_Iterable[_Union[Objective, _Mapping]]] = ..., final_repeats: _Optional[int] = ...) -> None: ...

class WarmStart(_message.Message):
    __slots__ = ("from_study_id", "trials_path")
    FROM_STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIALS_PATH_FIELD_NUMBER: _ClassVar[int]
    from_study_id: str
    trials_path: str
    def __init__(self, from_study_id: _Optional[str] = ..., trials_path: _Optional[str] = ...) -> None: ...

class PriorTrials(_message.Message):
    __slots__ = ("trials",)
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    trials: _containers.RepeatedCompositeFieldContainer[PriorTrial]
    def __init__(self, trials: _Optional[_Iterable[_Union[PriorTrial, _Mapping]]] = ...) -> None: ...

class PriorTrial(_message.Message):
    __slots__ = ("template_id", "variables", "hyperparameters", "objective_value")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    variables: _containers.ScalarMap[str, str]
    hyperparameters: _containers.MessageMap[str, ParamValue]
    objective_value: float
    def __init__(self, template_id: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., hyperparameters: _Optional[_Mapping[str, ParamValue]] = ..., objective_value: _Optional[float] = ...) -> None: ...

class Candidate(_message.Message):
    __slots__ = ("id", "template_id", "variables", "prompt", "hyperparameters", "search_state", "lineage")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    class HyperparametersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: ParamValue
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[ParamValue, _Mapping]] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    HYPERPARAMETERS_FIELD_NUMBER: _ClassVar[int]
    SEARCH_STATE_FIELD_NUMBER: _ClassVar[int]
    LINEAGE_FIELD_NUMBER: _ClassVar[int]
    id: str
    template_id: str
    variables: _containers.ScalarMap[str, str]
    prompt: str
    hyperparameters: _containers.MessageMap[str, ParamValue]
    search_state: str
    lineage: CandidateLineage
    def __init__(self, id: _Optional[str] = ..., template_id: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., prompt: _Optional[str] = ..., hyperparameters: _Optional[_Mapping[str, ParamValue]] = ..., search_state: _Optional[str] = ..., lineage: _Optional[_Union[CandidateLineage, _Mapping]] = ...) -> None: ...

class CandidateLineage(_message.Message):
    __slots__ = ("source", "parent_candidate_id", "edits")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    PARENT_CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    EDITS_FIELD_NUMBER: _ClassVar[int]
    source: str
    parent_candidate_id: str
    edits: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, source: _Optional[str] = ..., parent_candidate_id: _Optional[str] = ..., edits: _Optional[_Iterable[str]] = ...) -> None: ...

class Trial(_message.Message):
    __slots__ = ("id", "study_id", "number", "candidate", "status", "metrics", "objective_value", "error", "trainer_id", "train_loss", "created_at", "finished_at", "artifact_path", "precision", "skipped_steps", "extra_objective_values", "assigned_worker_id", "attempt", "memory_mb", "intermediate_values", "predicted_seconds", "predicted_seconds_sd", "actual_seconds", "worker_speed", "score_seconds", "repeat_of", "seed_offset", "test_metrics", "test_objective_value", "test_examples")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class IntermediateValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    class TestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    TRAIN_LOSS_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_PATH_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_STEPS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVE_VALUES_FIELD_NUMBER: _ClassVar[int]
    ASSIGNED_WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    ATTEMPT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUES_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PREDICTED_SECONDS_SD_FIELD_NUMBER: _ClassVar[int]
    ACTUAL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKER_SPEED_FIELD_NUMBER: _ClassVar[int]
    SCORE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    REPEAT_OF_FIELD_NUMBER: _ClassVar[int]
    SEED_OFFSET_FIELD_NUMBER: _ClassVar[int]
    TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    TEST_OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    TEST_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    id: str
    study_id: str
    number: int
    candidate: Candidate
    status: TrialStatus
    metrics: _containers.ScalarMap[str, float]
    objective_value: float
    error: str
    trainer_id: str
    train_loss: float
    created_at: _timestamp_pb2.Timestamp
    finished_at: _timestamp_pb2.Timestamp
    artifact_path: str
    precision: str
    skipped_steps: int
    extra_objective_values: _containers.RepeatedScalarFieldContainer[float]
    assigned_worker_id: str
    attempt: int
    memory_mb: float
    intermediate_values: _containers.ScalarMap[int, float]
    predicted_seconds: float
    predicted_seconds_sd: float
    actual_seconds: float
    worker_speed: float
    score_seconds: float
    repeat_of: str
    seed_offset: int
    test_metrics: _containers.ScalarMap[str, float]
    test_objective_value: float
    test_examples: int
    def __init__(self, id: _Optional[str] = ..., study_id: _Optional[str] = ..., number: _Optional[int] = ..., candidate: _Optional[_Union[Candidate, _Mapping]] = ..., status: _Optional[_Union[TrialStatus, str]] = ..., metrics: _Optional[_Mapping[str, float]] = ..., objective_value: _Optional[float] = ..., error: _Optional[str] = ..., trainer_id: _Optional[str] = ..., train_loss: _Optional[float] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., finished_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., artifact_path: _Optional[str] = ..., precision: _Optional[str] = ..., skipped_steps: _Optional[int] = ..., extra_objective_values: _Optional[_Iterable[float]] = ..., assigned_worker_id: _Optional[str] = ..., attempt: _Optional[int] = ..., memory_mb: _Optional[float] = ..., intermediate_values: _Optional[_Mapping[int, float]] = ..., predicted_seconds: _Optional[float] = ..., predicted_seconds_sd: _Optional[float] = ..., actual_seconds: _Optional[float] = ..., worker_speed: _Optional[float] = ..., score_seconds: _Optional[float] = ..., repeat_of: _Optional[str] = ..., seed_offset: _Optional[int] = ..., test_metrics: _Optional[_Mapping[str, float]] = ..., test_objective_value: _Optional[float] = ..., test_examples: _Optional[int] = ...) -> None: ...

class MetricSpread(_message.Message):
    __slots__ = ("mean", "sd")
    MEAN_FIELD_NUMBER: _ClassVar[int]
    SD_FIELD_NUMBER: _ClassVar[int]
    mean: float
    sd: float
    def __init__(self, mean: _Optional[float] = ..., sd: _Optional[float] = ...) -> None: ...

class FinalReport(_message.Message):
    __slots__ = ("best_trial_id", "validation_metrics", "test_metrics", "validation_objective", "test_objective", "seeds", "validation_spread", "test_spread", "test_examples", "error")
    class ValidationMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class TestMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    class ValidationSpreadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricSpread
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricSpread, _Mapping]] = ...) -> None: ...
    class TestSpreadEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: MetricSpread
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[MetricSpread, _Mapping]] = ...) -> None: ...
    BEST_TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_METRICS_FIELD_NUMBER: _ClassVar[int]
    TEST_METRICS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    TEST_OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SEEDS_FIELD_NUMBER: _ClassVar[int]
    VALIDATION_SPREAD_FIELD_NUMBER: _ClassVar[int]
    TEST_SPREAD_FIELD_NUMBER: _ClassVar[int]
    TEST_EXAMPLES_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    best_trial_id: str
    validation_metrics: _containers.ScalarMap[str, float]
    test_metrics: _containers.ScalarMap[str, float]
    validation_objective: float
    test_objective: float
    seeds: int
    validation_spread: _containers.MessageMap[str, MetricSpread]
    test_spread: _containers.MessageMap[str, MetricSpread]
    test_examples: int
    error: str
    def __init__(self, best_trial_id: _Optional[str] = ..., validation_metrics: _Optional[_Mapping[str, float]] = ..., test_metrics: _Optional[_Mapping[str, float]] = ..., validation_objective: _Optional[float] = ..., test_objective: _Optional[float] = ..., seeds: _Optional[int] = ..., validation_spread: _Optional[_Mapping[str, MetricSpread]] = ..., test_spread: _Optional[_Mapping[str, MetricSpread]] = ..., test_examples: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class Study(_message.Message):
    __slots__ = ("id", "spec", "state", "trace_id", "trials", "best_trial_id", "error", "created_at", "updated_at", "pareto_trial_ids", "window", "tenant", "trial_count", "final", "finished_trial_count", "best_objective_value")
    ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    BEST_TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATED_AT_FIELD_NUMBER: _ClassVar[int]
    UPDATED_AT_FIELD_NUMBER: _ClassVar[int]
    PARETO_TRIAL_IDS_FIELD_NUMBER: _ClassVar[int]
    WINDOW_FIELD_NUMBER: _ClassVar[int]
    TENANT_FIELD_NUMBER: _ClassVar[int]
    TRIAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    FINAL_FIELD_NUMBER: _ClassVar[int]
    FINISHED_TRIAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    BEST_OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    id: str
    spec: StudySpec
    state: StudyState
    trace_id: str
    trials: _containers.RepeatedCompositeFieldContainer[Trial]
    best_trial_id: str
    error: str
    created_at: _timestamp_pb2.Timestamp
    updated_at: _timestamp_pb2.Timestamp
    pareto_trial_ids: _containers.RepeatedScalarFieldContainer[str]
    window: int
    tenant: str
    trial_count: int
    final: FinalReport
    finished_trial_count: int
    best_objective_value: float
    def __init__(self, id: _Optional[str] = ..., spec: _Optional[_Union[StudySpec, _Mapping]] = ..., state: _Optional[_Union[StudyState, str]] = ..., trace_id: _Optional[str] = ..., trials: _Optional[_Iterable[_Union[Trial, _Mapping]]] = ..., best_trial_id: _Optional[str] = ..., error: _Optional[str] = ..., created_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., updated_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., pareto_trial_ids: _Optional[_Iterable[str]] = ..., window: _Optional[int] = ..., tenant: _Optional[str] = ..., trial_count: _Optional[int] = ..., final: _Optional[_Union[FinalReport, _Mapping]] = ..., finished_trial_count: _Optional[int] = ..., best_objective_value: _Optional[float] = ...) -> None: ...
