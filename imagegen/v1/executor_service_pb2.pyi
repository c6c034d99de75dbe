from imagegen.v1 import image_plan_pb2 as _image_plan_pb2
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutePlanRequest(_message.Message):
    __slots__ = ("plan", "request_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    plan: _image_plan_pb2.ImageGenerationPlan
    request_id: str
    def __init__(self, plan: _Optional[_Union[_image_plan_pb2.ImageGenerationPlan, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class ExecutePlanResponse(_message.Message):
    __slots__ = ("result",)
    RESULT_FIELD_NUMBER: _ClassVar[int]
    result: _image_plan_pb2.ImageGenerationResult
    def __init__(self, result: _Optional[_Union[_image_plan_pb2.ImageGenerationResult, _Mapping]] = ...) -> None: ...
