import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from imagegen.v1 import image_plan_pb2 as _image_plan_pb2
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ExecutionStage(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STAGE_UNSPECIFIED: _ClassVar[ExecutionStage]
    EXECUTION_STAGE_ACCEPTED: _ClassVar[ExecutionStage]
    EXECUTION_STAGE_RENDERING: _ClassVar[ExecutionStage]
    EXECUTION_STAGE_STORING: _ClassVar[ExecutionStage]
    EXECUTION_STAGE_COMPLETED: _ClassVar[ExecutionStage]
    EXECUTION_STAGE_QUEUED: _ClassVar[ExecutionStage]
EXECUTION_STAGE_UNSPECIFIED: ExecutionStage
EXECUTION_STAGE_ACCEPTED: ExecutionStage
EXECUTION_STAGE_RENDERING: ExecutionStage
EXECUTION_STAGE_STORING: ExecutionStage
EXECUTION_STAGE_COMPLETED: ExecutionStage
EXECUTION_STAGE_QUEUED: ExecutionStage

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

class StreamExecutePlanRequest(_message.Message):
    __slots__ = ("plan", "request_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    plan: _image_plan_pb2.ImageGenerationPlan
    request_id: str
    def __init__(self, plan: _Optional[_Union[_image_plan_pb2.ImageGenerationPlan, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StreamExecutePlanResponse(_message.Message):
    __slots__ = ("stage", "result")
    STAGE_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    stage: ExecutionStage
    result: _image_plan_pb2.ImageGenerationResult
    def __init__(self, stage: _Optional[_Union[ExecutionStage, str]] = ..., result: _Optional[_Union[_image_plan_pb2.ImageGenerationResult, _Mapping]] = ...) -> None: ...

class GetImageRequest(_message.Message):
    __slots__ = ("storage_path",)
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    storage_path: str
    def __init__(self, storage_path: _Optional[str] = ...) -> None: ...

class GetImageResponse(_message.Message):
    __slots__ = ("chunk_data", "mime_type", "total_size", "content_sha256")
    CHUNK_DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    chunk_data: bytes
    mime_type: str
    total_size: int
    content_sha256: str
    def __init__(self, chunk_data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., total_size: _Optional[int] = ..., content_sha256: _Optional[str] = ...) -> None: ...

class SignImageUrlRequest(_message.Message):
    __slots__ = ("storage_path", "expires_in")
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    EXPIRES_IN_FIELD_NUMBER: _ClassVar[int]
    storage_path: str
    expires_in: _duration_pb2.Duration
    def __init__(self, storage_path: _Optional[str] = ..., expires_in: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class SignImageUrlResponse(_message.Message):
    __slots__ = ("image_url", "expire_time")
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    EXPIRE_TIME_FIELD_NUMBER: _ClassVar[int]
    image_url: str
    expire_time: _timestamp_pb2.Timestamp
    def __init__(self, image_url: _Optional[str] = ..., expire_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
