import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from imagegen.v1 import image_plan_pb2 as _image_plan_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
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
    EXECUTION_STAGE_PREVIEW: _ClassVar[ExecutionStage]

class ExecutionState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    EXECUTION_STATE_UNSPECIFIED: _ClassVar[ExecutionState]
    EXECUTION_STATE_QUEUED: _ClassVar[ExecutionState]
    EXECUTION_STATE_RUNNING: _ClassVar[ExecutionState]
    EXECUTION_STATE_SUCCEEDED: _ClassVar[ExecutionState]
    EXECUTION_STATE_FAILED: _ClassVar[ExecutionState]
    EXECUTION_STATE_CANCELLED: _ClassVar[ExecutionState]
EXECUTION_STAGE_UNSPECIFIED: ExecutionStage
EXECUTION_STAGE_ACCEPTED: ExecutionStage
EXECUTION_STAGE_RENDERING: ExecutionStage
EXECUTION_STAGE_STORING: ExecutionStage
EXECUTION_STAGE_COMPLETED: ExecutionStage
EXECUTION_STAGE_QUEUED: ExecutionStage
EXECUTION_STAGE_PREVIEW: ExecutionStage
EXECUTION_STATE_UNSPECIFIED: ExecutionState
EXECUTION_STATE_QUEUED: ExecutionState
EXECUTION_STATE_RUNNING: ExecutionState
EXECUTION_STATE_SUCCEEDED: ExecutionState
EXECUTION_STATE_FAILED: ExecutionState
EXECUTION_STATE_CANCELLED: ExecutionState

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
    __slots__ = ("chunk_data", "mime_type", "total_size", "content_sha256", "reference_images")
    CHUNK_DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SIZE_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    chunk_data: bytes
    mime_type: str
    total_size: int
    content_sha256: str
    reference_images: _containers.RepeatedCompositeFieldContainer[_image_plan_pb2.ReferenceImage]
    def __init__(self, chunk_data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., total_size: _Optional[int] = ..., content_sha256: _Optional[str] = ..., reference_images: _Optional[_Iterable[_Union[_image_plan_pb2.ReferenceImage, _Mapping]]] = ...) -> None: ...

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

class ListImagesRequest(_message.Message):
    __slots__ = ("session_id", "image_type", "page_size", "page_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    image_type: _image_plan_pb2.ImageType
    page_size: int
    page_token: str
    def __init__(self, session_id: _Optional[str] = ..., image_type: _Optional[_Union[_image_plan_pb2.ImageType, str]] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListImagesResponse(_message.Message):
    __slots__ = ("images", "next_page_token")
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[_image_plan_pb2.ImageGenerationResult]
    next_page_token: str
    def __init__(self, images: _Optional[_Iterable[_Union[_image_plan_pb2.ImageGenerationResult, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteImageRequest(_message.Message):
    __slots__ = ("storage_path",)
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    storage_path: str
    def __init__(self, storage_path: _Optional[str] = ...) -> None: ...

class DeleteImageResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeleteSessionImagesRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class DeleteSessionImagesResponse(_message.Message):
    __slots__ = ("deleted_count",)
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    def __init__(self, deleted_count: _Optional[int] = ...) -> None: ...

class Execution(_message.Message):
    __slots__ = ("name", "state", "stage", "plan", "result", "error", "create_time", "update_time", "queue_position", "session_id", "request_id", "progress_percent")
    NAME_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    STAGE_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_PERCENT_FIELD_NUMBER: _ClassVar[int]
    name: str
    state: ExecutionState
    stage: ExecutionStage
    plan: _image_plan_pb2.ImageGenerationPlan
    result: _image_plan_pb2.ImageGenerationResult
    error: _status_pb2.Status
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    queue_position: int
    session_id: str
    request_id: str
    progress_percent: int
    def __init__(self, name: _Optional[str] = ..., state: _Optional[_Union[ExecutionState, str]] = ..., stage: _Optional[_Union[ExecutionStage, str]] = ..., plan: _Optional[_Union[_image_plan_pb2.ImageGenerationPlan, _Mapping]] = ..., result: _Optional[_Union[_image_plan_pb2.ImageGenerationResult, _Mapping]] = ..., error: _Optional[_Union[_status_pb2.Status, _Mapping]] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., queue_position: _Optional[int] = ..., session_id: _Optional[str] = ..., request_id: _Optional[str] = ..., progress_percent: _Optional[int] = ...) -> None: ...

class ExecutionPreview(_message.Message):
    __slots__ = ("image_data", "mime_type", "width", "height")
    IMAGE_DATA_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    image_data: bytes
    mime_type: str
    width: int
    height: int
    def __init__(self, image_data: _Optional[bytes] = ..., mime_type: _Optional[str] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class StartExecutionRequest(_message.Message):
    __slots__ = ("plan", "request_id")
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    plan: _image_plan_pb2.ImageGenerationPlan
    request_id: str
    def __init__(self, plan: _Optional[_Union[_image_plan_pb2.ImageGenerationPlan, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class StartExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ...) -> None: ...

class GetExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ...) -> None: ...

class ListExecutionsRequest(_message.Message):
    __slots__ = ("session_id", "page_size", "page_token")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    page_size: int
    page_token: str
    def __init__(self, session_id: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListExecutionsResponse(_message.Message):
    __slots__ = ("executions", "next_page_token")
    EXECUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    executions: _containers.RepeatedCompositeFieldContainer[Execution]
    next_page_token: str
    def __init__(self, executions: _Optional[_Iterable[_Union[Execution, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class WatchExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class WatchExecutionResponse(_message.Message):
    __slots__ = ("execution", "preview")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    preview: ExecutionPreview
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ..., preview: _Optional[_Union[ExecutionPreview, _Mapping]] = ...) -> None: ...

class CancelExecutionRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class CancelExecutionResponse(_message.Message):
    __slots__ = ("execution",)
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ...) -> None: ...

class WatchSessionExecutionsRequest(_message.Message):
    __slots__ = ("session_id",)
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    def __init__(self, session_id: _Optional[str] = ...) -> None: ...

class WatchSessionExecutionsResponse(_message.Message):
    __slots__ = ("execution", "preview")
    EXECUTION_FIELD_NUMBER: _ClassVar[int]
    PREVIEW_FIELD_NUMBER: _ClassVar[int]
    execution: Execution
    preview: ExecutionPreview
    def __init__(self, execution: _Optional[_Union[Execution, _Mapping]] = ..., preview: _Optional[_Union[ExecutionPreview, _Mapping]] = ...) -> None: ...
