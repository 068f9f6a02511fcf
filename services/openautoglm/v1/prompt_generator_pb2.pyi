from openautoglm.v1 import common_pb2 as _common_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReportIntermediateRequest(_message.Message):
    __slots__ = ("study_id", "candidate_id", "step", "value")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    STEP_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    candidate_id: str
    step: int
    value: float
    def __init__(self, study_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., step: _Optional[int] = ..., value: _Optional[float] = ...) -> None: ...

class ReportIntermediateResponse(_message.Message):
    __slots__ = ("should_prune",)
    SHOULD_PRUNE_FIELD_NUMBER: _ClassVar[int]
    should_prune: bool
    def __init__(self, should_prune: _Optional[bool] = ...) -> None: ...

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

class ProposeRequest(_message.Message):
    __slots__ = ("study_id", "spec", "count", "prior_trials", "known_candidate_ids")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    SPEC_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    PRIOR_TRIALS_FIELD_NUMBER: _ClassVar[int]
    KNOWN_CANDIDATE_IDS_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    spec: _common_pb2.StudySpec
    count: int
    prior_trials: _containers.RepeatedCompositeFieldContainer[_common_pb2.PriorTrial]
    known_candidate_ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, study_id: _Optional[str] = ..., spec: _Optional[_Union[_common_pb2.StudySpec, _Mapping]] = ..., count: _Optional[int] = ..., prior_trials: _Optional[_Iterable[_Union[_common_pb2.PriorTrial, _Mapping]]] = ..., known_candidate_ids: _Optional[_Iterable[str]] = ...) -> None: ...

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

class FeedbackRequest(_message.Message):
    __slots__ = ("study_id", "candidate_id", "objective_value", "failed", "pruned", "extra_objective_values")
    STUDY_ID_FIELD_NUMBER: _ClassVar[int]
    CANDIDATE_ID_FIELD_NUMBER: _ClassVar[int]
    OBJECTIVE_VALUE_FIELD_NUMBER: _ClassVar[int]
    FAILED_FIELD_NUMBER: _ClassVar[int]
    PRUNED_FIELD_NUMBER: _ClassVar[int]
    EXTRA_OBJECTIVE_VALUES_FIELD_NUMBER: _ClassVar[int]
    study_id: str
    candidate_id: str
    objective_value: float
    failed: bool
    pruned: bool
    extra_objective_values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, study_id: _Optional[str] = ..., candidate_id: _Optional[str] = ..., objective_value: _Optional[float] = ..., failed: _Optional[bool] = ..., pruned: _Optional[bool] = ..., extra_objective_values: _Optional[_Iterable[float]] = ...) -> None: ...

class FeedbackResponse(_message.Message):
    __slots__ = ("recorded",)
    RECORDED_FIELD_NUMBER: _ClassVar[int]
    recorded: bool
    def __init__(self, recorded: _Optional[bool] = ...) -> None: ...
