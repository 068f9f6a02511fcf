from google.api import annotations_pb2 as _annotations_pb2
from openautoglm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GetParameterImportanceRequest(_message.Message):
    __slots__ = ("study_id", "objective_index")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_INDEX_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    objective_index: int
    def __init__(self, study_id: _Optional[str] = ..., objective_index: _Optional[int] = ...) -> None: ...

class GetParameterImportanceResponse(_message.Message):
    __slots__ = ("importances", "trials", "evaluator")
    IMPORTANCES_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    EVALUATOR_FIELD_NUMBER: _ClassVar[int]
    importances: _containers.RepeatedCompositeFieldContainer[ParameterImportance]
    trials: int
    evaluator: str
    def __init__(self, importances: _Optional[_Iterable[_Union[ParameterImportance, _Mapping]]] = ..., trials: _Optional[int] = ..., evaluator: _Optional[str] = ...) -> None: ...

class ParameterImportance(_message.Message):
    __slots__ = ("name", "importance")
    NAME_FIELD_NUMBER: _ClassVar[int]
    IMPORTANCE_FIELD_NUMBER: _ClassVar[int]
    name: str
    importance: float
    def __init__(self, name: _Optional[str] = ..., importance: _Optional[float] = ...) -> None: ...

class ExportBestRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class ExportBestResponse(_message.Message):
    __slots__ = ("trial_id", "files")
    TRIAL_ID_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    trial_id: str
    files: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, trial_id: _Optional[str] = ..., files: _Optional[_Iterable[str]] = ...) -> None: ...

class CreateStudyRequest(_message.Message):
    __slots__ = ("spec", "request_id")
    SPEC_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    spec: _common_pb2.StudySpec
    request_id: str
    def __init__(self, spec: _Optional[_Union[_common_pb2.StudySpec, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: _common_pb2.Study
    def __init__(self, study: _Optional[_Union[_common_pb2.Study, _Mapping]] = ...) -> None: ...

class GetStudyRequest(_message.Message):
    __slots__ = ("study_id", "trial_page_size", "trial_page_token", "without_trials")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    TRIAL_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    WITHOUT_TRIALS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_page_size: int
    trial_page_token: str
    without_trials: bool
    def __init__(self, study_id: _Optional[str] = ..., trial_page_size: _Optional[int] = ..., trial_page_token: _Optional[str] = ..., without_trials: _Optional[bool] = ...) -> None: ...

class GetStudyResponse(_message.Message):
    __slots__ = ("study", "next_trial_page_token")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    NEXT_TRIAL_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    study: _common_pb2.Study
    next_trial_page_token: str
    def __init__(self, study: _Optional[_Union[_common_pb2.Study, _Mapping]] = ..., next_trial_page_token: _Optional[str] = ...) -> None: ...

class ListStudiesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListStudiesResponse(_message.Message):
    __slots__ = ("studies", "next_page_token")
    STUDIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    studies: _containers.RepeatedCompositeFieldContainer[_common_pb2.Study]
    next_page_token: str
    def __init__(self, studies: _Optional[_Iterable[_Union[_common_pb2.Study, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchStudyRequest(_message.Message):
    __slots__ = ("study_id", "changes_only")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    CHANGES_ONLY_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    changes_only: bool
    def __init__(self, study_id: _Optional[str] = ..., changes_only: _Optional[bool] = ...) -> None: ...

class WatchStudyResponse(_message.Message):
    __slots__ = ("study", "change", "changed_trials")
    STUDY_FIELD_NUMBER: _ClassVar[int]
    CHANGE_FIELD_NUMBER: _ClassVar[int]
    CHANGED_TRIALS_FIELD_NUMBER: _ClassVar[int]
    study: _common_pb2.Study
    change: str
    changed_trials: _containers.RepeatedCompositeFieldContainer[_common_pb2.Trial]
    def __init__(self, study: _Optional[_Union[_common_pb2.Study, _Mapping]] = ..., change: _Optional[str] = ..., changed_trials: _Optional[_Iterable[_Union[_common_pb2.Trial, _Mapping]]] = ...) -> None: ...

class CancelStudyRequest(_message.Message):
    __slots__ = ("study_id",)
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    def __init__(self, study_id: _Optional[str] = ...) -> None: ...

class CancelStudyResponse(_message.Message):
    __slots__ = ("study",)
    STUDY_FIELD_NUMBER: _ClassVar[int]
    study: _common_pb2.Study
    def __init__(self, study: _Optional[_Union[_common_pb2.Study, _Mapping]] = ...) -> None: ...
