from google.api import annotations_pb2 as _annotations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ListTrainersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListTrainersResponse(_message.Message):
    __slots__ = ("trainers",)
    TRAINERS_FIELD_NUMBER: _ClassVar[int]
    trainers: _containers.RepeatedCompositeFieldContainer[TrainerStatus]
    def __init__(self, trainers: _Optional[_Iterable[_Union[TrainerStatus, _Mapping]]] = ...) -> None: ...

class TrainerStatus(_message.Message):
    __slots__ = ("id", "device_kind", "slots", "busy_slots", "utilisation", "memory_mb", "serving_memory_mb", "speed", "queue_slots", "tokens_per_second")
    class TokensPerSecondEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KIND_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    UTILISATION_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    SERVING_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    id: str
    device_kind: str
    slots: int
    busy_slots: int
    utilisation: float
    memory_mb: float
    serving_memory_mb: float
    speed: float
    queue_slots: int
    tokens_per_second: _containers.ScalarMap[str, float]
    def __init__(self, id: _Optional[str] = ..., device_kind: _Optional[str] = ..., slots: _Optional[int] = ..., busy_slots: _Optional[int] = ..., utilisation: _Optional[float] = ..., memory_mb: _Optional[float] = ..., serving_memory_mb: _Optional[float] = ..., speed: _Optional[float] = ..., queue_slots: _Optional[int] = ..., tokens_per_second: _Optional[_Mapping[str, float]] = ...) -> None: ...
