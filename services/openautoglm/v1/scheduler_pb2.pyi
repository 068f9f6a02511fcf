from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Task(_message.Message):
    __slots__ = ("id", "kind", "compute_seconds", "memory_mb", "study_id", "trial_id", "compute_seconds_by_worker", "pool")
    class ComputeSecondsByWorkerEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_SECONDS_BY_WORKER_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    id: str
    kind: str
    compute_seconds: float
    memory_mb: float
    study_id: str
    trial_id: str
    compute_seconds_by_worker: _containers.ScalarMap[str, float]
    pool: str
    def __init__(self, id: _Optional[str] = ..., kind: _Optional[str] = ..., compute_seconds: _Optional[float] = ..., memory_mb: _Optional[float] = ..., study_id: _Optional[str] = ..., trial_id: _Optional[str] = ..., compute_seconds_by_worker: _Optional[_Mapping[str, float]] = ..., pool: _Optional[str] = ...) -> None: ...

class Dependency(_message.Message):
    __slots__ = ("from_task", "to_task", "transfer_seconds")
    FROM_TASK_FIELD_NUMBER: _ClassVar[int]
    TO_TASK_FIELD_NUMBER: _ClassVar[int]
    TRANSFER_SECONDS_FIELD_NUMBER: _ClassVar[int]
    from_task: str
    to_task: str
    transfer_seconds: float
    def __init__(self, from_task: _Optional[str] = ..., to_task: _Optional[str] = ..., transfer_seconds: _Optional[float] = ...) -> None: ...

class TaskGraph(_message.Message):
    __slots__ = ("tasks", "dependencies")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[Task]
    dependencies: _containers.RepeatedCompositeFieldContainer[Dependency]
    def __init__(self, tasks: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., dependencies: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ...) -> None: ...

class Worker(_message.Message):
    __slots__ = ("id", "slots", "memory_mb", "speed", "device_kind", "queue_slots", "address", "serving_memory_mb", "tokens_per_second", "pool")
    class TokensPerSecondEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: float
        def __init__(self, key: _Optional[str] = ..., value: _Optional[float] = ...) -> None: ...
    ID_FIELD_NUMBER: _ClassVar[int]
    SLOTS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    SPEED_FIELD_NUMBER: _ClassVar[int]
    DEVICE_KIND_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SERVING_MEMORY_MB_FIELD_NUMBER: _ClassVar[int]
    TOKENS_PER_SECOND_FIELD_NUMBER: _ClassVar[int]
    POOL_FIELD_NUMBER: _ClassVar[int]
    id: str
    slots: int
    memory_mb: float
    speed: float
    device_kind: str
    queue_slots: int
    address: str
    serving_memory_mb: float
    tokens_per_second: _containers.ScalarMap[str, float]
    pool: str
    def __init__(self, id: _Optional[str] = ..., slots: _Optional[int] = ..., memory_mb: _Optional[float] = ..., speed: _Optional[float] = ..., device_kind: _Optional[str] = ..., queue_slots: _Optional[int] = ..., address: _Optional[str] = ..., serving_memory_mb: _Optional[float] = ..., tokens_per_second: _Optional[_Mapping[str, float]] = ..., pool: _Optional[str] = ...) -> None: ...

class PlanRequest(_message.Message):
    __slots__ = ("graph", "workers", "policy")
    GRAPH_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    graph: TaskGraph
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    policy: str
    def __init__(self, graph: _Optional[_Union[TaskGraph, _Mapping]] = ..., workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., policy: _Optional[str] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("task_id", "worker_id", "slot", "start_seconds", "finish_seconds", "order")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    WORKER_ID_FIELD_NUMBER: _ClassVar[int]
    SLOT_FIELD_NUMBER: _ClassVar[int]
    START_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FINISH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ORDER_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    worker_id: str
    slot: int
    start_seconds: float
    finish_seconds: float
    order: int
    def __init__(self, task_id: _Optional[str] = ..., worker_id: _Optional[str] = ..., slot: _Optional[int] = ..., start_seconds: _Optional[float] = ..., finish_seconds: _Optional[float] = ..., order: _Optional[int] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("assignments", "makespan_seconds", "total_slots", "policy")
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    MAKESPAN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SLOTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    makespan_seconds: float
    total_slots: int
    policy: str
    def __init__(self, assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., makespan_seconds: _Optional[float] = ..., total_slots: _Optional[int] = ..., policy: _Optional[str] = ...) -> None: ...

class ListWorkersRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListWorkersResponse(_message.Message):
    __slots__ = ("workers", "busy_slots")
    class BusySlotsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    BUSY_SLOTS_FIELD_NUMBER: _ClassVar[int]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    busy_slots: _containers.ScalarMap[str, int]
    def __init__(self, workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., busy_slots: _Optional[_Mapping[str, int]] = ...) -> None: ...

class PackRequest(_message.Message):
    __slots__ = ("pending", "running", "workers", "policy", "running_work", "dependencies")
    PENDING_FIELD_NUMBER: _ClassVar[int]
    RUNNING_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    RUNNING_WORK_FIELD_NUMBER: _ClassVar[int]
    DEPENDENCIES_FIELD_NUMBER: _ClassVar[int]
    pending: _containers.RepeatedCompositeFieldContainer[Task]
    running: _containers.RepeatedCompositeFieldContainer[Assignment]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    policy: str
    running_work: _containers.RepeatedCompositeFieldContainer[Task]
    dependencies: _containers.RepeatedCompositeFieldContainer[Dependency]
    def __init__(self, pending: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., running: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., policy: _Optional[str] = ..., running_work: _Optional[_Iterable[_Union[Task, _Mapping]]] = ..., dependencies: _Optional[_Iterable[_Union[Dependency, _Mapping]]] = ...) -> None: ...

class PackResponse(_message.Message):
    __slots__ = ("placements", "orphaned_task_ids", "unfit_task_ids", "workers", "free_slots", "policy")
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    ORPHANED_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    UNFIT_TASK_IDS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    FREE_SLOTS_FIELD_NUMBER: _ClassVar[int]
    POLICY_FIELD_NUMBER: _ClassVar[int]
    placements: _containers.RepeatedCompositeFieldContainer[Assignment]
    orphaned_task_ids: _containers.RepeatedScalarFieldContainer[str]
    unfit_task_ids: _containers.RepeatedScalarFieldContainer[str]
    workers: _containers.RepeatedCompositeFieldContainer[Worker]
    free_slots: _containers.RepeatedScalarFieldContainer[int]
    policy: str
    def __init__(self, placements: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., orphaned_task_ids: _Optional[_Iterable[str]] = ..., unfit_task_ids: _Optional[_Iterable[str]] = ..., workers: _Optional[_Iterable[_Union[Worker, _Mapping]]] = ..., free_slots: _Optional[_Iterable[int]] = ..., policy: _Optional[str] = ...) -> None: ...
