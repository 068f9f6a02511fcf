import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from openautoglm.v1 import scheduler_pb2 as _scheduler_pb2
from openautoglm.v1 import trainer_pb2 as _trainer_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EventMeta(_message.Message):
    __slots__ = ("event_id", "study_id", "trial_id", "time", "source")
    EVENT_ID_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    TIME_FIELD_NUMBER: _ClassVar[int]
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    event_id: str
    study_id: str
    trial_id: str
    time: _timestamp_pb2.Timestamp
    source: str
    def __init__(self, event_id: _Optional[str] = ..., study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., source: _Optional[str] = ...) -> None: ...

class TrainJobEvent(_message.Message):
    __slots__ = ("meta", "job")
    META_FIELD_NUMBER: _ClassVar[int]
    JOB_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    job: _trainer_pb2.TrainJob
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., job: _Optional[_Union[_trainer_pb2.TrainJob, _Mapping]] = ...) -> None: ...

class TrialProgressEvent(_message.Message):
    __slots__ = ("meta", "progress")
    META_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    progress: _trainer_pb2.TrialProgress
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., progress: _Optional[_Union[_trainer_pb2.TrialProgress, _Mapping]] = ...) -> None: ...

class TrialTrainedEvent(_message.Message):
    __slots__ = ("meta", "trained")
    META_FIELD_NUMBER: _ClassVar[int]
    TRAINED_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    trained: _trainer_pb2.TrialTrained
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., trained: _Optional[_Union[_trainer_pb2.TrialTrained, _Mapping]] = ...) -> None: ...

class TrialFailedEvent(_message.Message):
    __slots__ = ("meta", "reason", "trainer_id")
    META_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    reason: str
    trainer_id: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., reason: _Optional[str] = ..., trainer_id: _Optional[str] = ...) -> None: ...

class TrialPrunedEvent(_message.Message):
    __slots__ = ("meta", "epoch", "intermediate_value", "trainer_id")
    META_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUE_FIELD_NUMBER: _ClassVar[int]
    TRAINER_ID_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    epoch: int
    intermediate_value: float
    trainer_id: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., epoch: _Optional[int] = ..., intermediate_value: _Optional[float] = ..., trainer_id: _Optional[str] = ...) -> None: ...

class TrialStopRequest(_message.Message):
    __slots__ = ("meta", "reason")
    META_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    reason: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., reason: _Optional[str] = ...) -> None: ...

class TrainerHeartbeat(_message.Message):
    __slots__ = ("meta", "worker", "busy_slots", "leaving", "ping_subject")
    META_FIELD_NUMBER: _ClassVar[int]
    WORKER_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    LEAVING_FIELD_NUMBER: _ClassVar[int]
    PING_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    worker: _scheduler_pb2.Worker
    busy_slots: int
    leaving: bool
    ping_subject: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., worker: _Optional[_Union[_scheduler_pb2.Worker, _Mapping]] = ..., busy_slots: _Optional[int] = ..., leaving: _Optional[bool] = ..., ping_subject: _Optional[str] = ...) -> None: ...

class ClusterChanged(_message.Message):
    __slots__ = ("meta", "workers", "joined", "left", "settled")
    META_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    JOINED_FIELD_NUMBER: _ClassVar[int]
    LEFT_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    workers: _containers.RepeatedCompositeFieldContainer[_scheduler_pb2.Worker]
    joined: _containers.RepeatedScalarFieldContainer[str]
    left: _containers.RepeatedScalarFieldContainer[str]
    settled: bool
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., workers: _Optional[_Iterable[_Union[_scheduler_pb2.Worker, _Mapping]]] = ..., joined: _Optional[_Iterable[str]] = ..., left: _Optional[_Iterable[str]] = ..., settled: _Optional[bool] = ...) -> None: ...

class StudyChanged(_message.Message):
    __slots__ = ("meta", "change", "replica_id")
    META_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_ID_FIELD_NUMBER: _ClassVar[int]
    meta: EventMeta
    change: str
    replica_id: str
    def __init__(self, meta: _Optional[_Union[EventMeta, _Mapping]] = ..., change: _Optional[str] = ..., replica_id: _Optional[str] = ...) -> None: ...
