from imagegen.v1 import image_plan_pb2 as _image_plan_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanningMode(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLANNING_MODE_UNSPECIFIED: _ClassVar[PlanningMode]
    PLANNING_MODE_AUTO: _ClassVar[PlanningMode]
    PLANNING_MODE_LLM: _ClassVar[PlanningMode]
    PLANNING_MODE_OFFLINE: _ClassVar[PlanningMode]
PLANNING_MODE_UNSPECIFIED: PlanningMode
PLANNING_MODE_AUTO: PlanningMode
PLANNING_MODE_LLM: PlanningMode
PLANNING_MODE_OFFLINE: PlanningMode

class CreatePlanRequest(_message.Message):
    __slots__ = ("prompt", "image_type", "style", "size", "session_id", "context", "mode", "reference_images")
    class ContextEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PROMPT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    CONTEXT_FIELD_NUMBER: _ClassVar[int]
    MODE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    prompt: str
    image_type: _image_plan_pb2.ImageType
    style: str
    size: str
    session_id: str
    context: _containers.ScalarMap[str, str]
    mode: PlanningMode
    reference_images: _containers.RepeatedCompositeFieldContainer[_image_plan_pb2.ReferenceImage]
    def __init__(self, prompt: _Optional[str] = ..., image_type: _Optional[_Union[_image_plan_pb2.ImageType, str]] = ..., style: _Optional[str] = ..., size: _Optional[str] = ..., session_id: _Optional[str] = ..., context: _Optional[_Mapping[str, str]] = ..., mode: _Optional[_Union[PlanningMode, str]] = ..., reference_images: _Optional[_Iterable[_Union[_image_plan_pb2.ReferenceImage, _Mapping]]] = ...) -> None: ...

class CreatePlanResponse(_message.Message):
    __slots__ = ("plan",)
    PLAN_FIELD_NUMBER: _ClassVar[int]
    plan: _image_plan_pb2.ImageGenerationPlan
    def __init__(self, plan: _Optional[_Union[_image_plan_pb2.ImageGenerationPlan, _Mapping]] = ...) -> None: ...
