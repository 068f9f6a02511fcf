from openautoglm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EvaluateRequest(_message.Message):
    __slots__ = ("study_id", "trial_id", "task", "predictions", "references", "metrics", "objective", "candidate_id", "model_metrics", "extra_objectives")
    class ModelMetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    TASK_FIELD_NUMBER: _ClassVar[int]
    PREDICTIONS_FIELD_NUMBER: _ClassVar[int]
    REFERENCES_FIELD_NUMBER: _ClassVar[int]
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    MODEL_METRICS_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVES_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_id: str
    task: _common_pb2.TaskType
    predictions: _containers.RepeatedScalarFieldContainer[str]
    references: _containers.RepeatedScalarFieldContainer[str]
    metrics: _containers.RepeatedScalarFieldContainer[str]
    objective: _common_pb2.Objective
    candidate_id: str
    model_metrics: _containers.ScalarMap[str, float]
    extra_objectives: _containers.RepeatedCompositeFieldContainer[_common_pb2.Objective]
    def __init__(self, study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., task: _Optional[_Union[_common_pb2.TaskType, str]] = ..., predictions: _Optional[_Iterable[str]] = ..., references: _Optional[_Iterable[str]] = ..., metrics: _Optional[_Iterable[str]] = ..., objective: _Optional[_Union[_common_pb2.Objective, _Mapping]] = ..., candidate_id: _Optional[str] = ..., model_metrics: _Optional[_Mapping[str, float]] = ..., extra_objectives: _Optional[_Iterable[_Union[_common_pb2.Objective, _Mapping]]] = ...) -> None: ...

class EvaluateResponse(_message.Message):
    __slots__ = ("metrics", "objective_value", "extra_objective_values")
    class MetricsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    METRICS_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVE_VALUES_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.ScalarMap[str, float]
    objective_value: float
    extra_objective_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, metrics: _Optional[_Mapping[str, float]] = ..., objective_value: _Optional[float] = ..., extra_objective_values: _Optional[_Iterable[float]] = ...) -> None: ...

class ListMetricsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class MetricInfo(_message.Message):
    __slots__ = ("name", "tasks", "higher_is_better", "description")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TASKS_FIELD_NUMBER: _ClassVar[int]
    HIGHER_IS_BETTER_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    name: str
    tasks: _containers.RepeatedScalarFieldContainer[_common_pb2.TaskType]
    higher_is_better: bool
    description: str
    def __init__(self, name: _Optional[str] = ..., tasks: _Optional[_Iterable[_Union[_common_pb2.TaskType, str]]] = ..., higher_is_better: _Optional[bool] = ..., description: _Optional[str] = ...) -> None: ...

class ListMetricsResponse(_message.Message):
    __slots__ = ("metrics",)
    METRICS_FIELD_NUMBER: _ClassVar[int]
    metrics: _containers.RepeatedCompositeFieldContainer[MetricInfo]
    def __init__(self, metrics: _Optional[_Iterable[_Union[MetricInfo, _Mapping]]] = ...) -> None: ...
