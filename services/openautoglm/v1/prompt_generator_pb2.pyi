from openautoglm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RenderRequest(_message.Message):
    __slots__ = ("templates", "variables", "model_version")
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    MODEL_VERSION_FIELD_NUMBER: _ClassVar[int]
    templates: _containers.RepeatedCompositeFieldContainer[_common_pb2.PromptTemplate]
    variables: _containers.RepeatedCompositeFieldContainer[_common_pb2.TemplateVariable]
    model_version: str
    def __init__(self, templates: _Optional[_Iterable[_Union[_common_pb2.PromptTemplate, _Mapping]]] = ..., variables: _Optional[_Iterable[_Union[_common_pb2.TemplateVariable, _Mapping]]] = ..., model_version: _Optional[str] = ...) -> None: ...

class RenderedPrompt(_message.Message):
    __slots__ = ("template_id", "variables", "prompt")
    class VariablesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    VARIABLES_FIELD_NUMBER: _ClassVar[int]
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    template_id: str
    variables: _containers.ScalarMap[str, str]
    prompt: str
    def __init__(self, template_id: _Optional[str] = ..., variables: _Optional[_Mapping[str, str]] = ..., prompt: _Optional[str] = ...) -> None: ...

class RenderResponse(_message.Message):
    __slots__ = ("prompts", "cache_hits", "cache_lookups")
    PROMPTS_FIELD_NUMBER: _ClassVar[int]
    CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    CACHE_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    prompts: _containers.RepeatedCompositeFieldContainer[RenderedPrompt]
    cache_hits: int
    cache_lookups: int
    def __init__(self, prompts: _Optional[_Iterable[_Union[RenderedPrompt, _Mapping]]] = ..., cache_hits: _Optional[int] = ..., cache_lookups: _Optional[int] = ...) -> None: ...

class RegisterStudyRequest(_message.Message):
    __slots__ = ("study_id", "spec", "prior_trials", "validate_only")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    PRIOR_TRIALS_FIELD_NUMBER: _ClassVar[int]
    VALIDATE_ONLY_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    spec: _common_pb2.StudySpec
    prior_trials: _containers.RepeatedCompositeFieldContainer[_common_pb2.PriorTrial]
    validate_only: bool
    def __init__(self, study_id: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.StudySpec, _Mapping]] = ..., prior_trials: _Optional[_Iterable[_Union[_common_pb2.PriorTrial, _Mapping]]] = ..., validate_only: _Optional[bool] = ...) -> None: ...

class RegisterStudyResponse(_message.Message):
    __slots__ = ("space_size",)
    SPACE_SIZE_FIELD_NUMBER: _ClassVar[int]
    space_size: int
    def __init__(self, space_size: _Optional[int] = ...) -> None: ...

class TrialRecord(_message.Message):
    __slots__ = ("number", "candidate", "status", "values", "intermediate_values")
    class IntermediateValuesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: float
        def __init__(self, key: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...
    NUMBER_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    VALUES_FIELD_NUMBER: _ClassVar[int]
    INTERMEDIATE_VALUES_FIELD_NUMBER: _ClassVar[int]
    number: int
    candidate: _common_pb2.Candidate
    status: _common_pb2.TrialStatus
    values: _containers.RepeatedScalarFieldContainer[float]
    intermediate_values: _containers.ScalarMap[int, float]
    def __init__(self, number: _Optional[int] = ..., candidate: _Optional[_Union[_common_pb2.Candidate, _Mapping]] = ..., status: _Optional[_Union[_common_pb2.TrialStatus, str]] = ..., values: _Optional[_Iterable[float]] = ..., intermediate_values: _Optional[_Mapping[int, float]] = ...) -> None: ...

class ProposeRequest(_message.Message):
    __slots__ = ("study_id", "count", "trials", "next_number", "registration")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    NEXT_NUMBER_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    count: int
    trials: _containers.RepeatedCompositeFieldContainer[TrialRecord]
    next_number: int
    registration: RegisterStudyRequest
    def __init__(self, study_id: _Optional[str] = ..., count: _Optional[int] = ..., trials: _Optional[_Iterable[_Union[TrialRecord, _Mapping]]] = ..., next_number: _Optional[int] = ..., registration: _Optional[_Union[RegisterStudyRequest, _Mapping]] = ...) -> None: ...

class ProposeResponse(_message.Message):
    __slots__ = ("candidates", "exhausted", "render_cache_hits", "render_cache_lookups")
    CANDIDATES_FIELD_NUMBER: _ClassVar[int]
    EXHAUSTED_FIELD_NUMBER: _ClassVar[int]
    RENDER_CACHE_HITS_FIELD_NUMBER: _ClassVar[int]
    RENDER_CACHE_LOOKUPS_FIELD_NUMBER: _ClassVar[int]
    candidates: _containers.RepeatedCompositeFieldContainer[_common_pb2.Candidate]
    exhausted: bool
    render_cache_hits: int
    render_cache_lookups: int
    def __init__(self, candidates: _Optional[_Iterable[_Union[_common_pb2.Candidate, _Mapping]]] = ..., exhausted: _Optional[bool] = ..., render_cache_hits: _Optional[int] = ..., render_cache_lookups: _Optional[int] = ...) -> None: ...

class ShouldPruneRequest(_message.Message):
    __slots__ = ("study_id", "trial_number", "step", "trials", "registration")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    TRIAL_NUMBER_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    TRIALS_FIELD_NUMBER: _ClassVar[int]
    REGISTRATION_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    trial_number: int
    step: int
    trials: _containers.RepeatedCompositeFieldContainer[TrialRecord]
    registration: RegisterStudyRequest
    def __init__(self, study_id: _Optional[str] = ..., trial_number: _Optional[int] = ..., step: _Optional[int] = ..., trials: _Optional[_Iterable[_Union[TrialRecord, _Mapping]]] = ..., registration: _Optional[_Union[RegisterStudyRequest, _Mapping]] = ...) -> None: ...

class ShouldPruneResponse(_message.Message):
    __slots__ = ("should_prune", "search_state")
    SHOULD_PRUNE_FIELD_NUMBER: _ClassVar[int]
    SEARCH_STATE_FIELD_NUMBER: _ClassVar[int]
    should_prune: bool
    search_state: str
    def __init__(self, should_prune: _Optional[bool] = ..., search_state: _Optional[str] = ...) -> None: ...
