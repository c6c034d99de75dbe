import datetime

from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ImageType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_TYPE_UNSPECIFIED: _ClassVar[ImageType]
    IMAGE_TYPE_SCENE: _ClassVar[ImageType]
    IMAGE_TYPE_CHARACTER: _ClassVar[ImageType]
    IMAGE_TYPE_PORTRAIT: _ClassVar[ImageType]
    IMAGE_TYPE_ITEM: _ClassVar[ImageType]
    IMAGE_TYPE_CREATURE: _ClassVar[ImageType]
    IMAGE_TYPE_LOCATION: _ClassVar[ImageType]
    IMAGE_TYPE_MAP: _ClassVar[ImageType]

class ReferenceRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REFERENCE_ROLE_UNSPECIFIED: _ClassVar[ReferenceRole]
    REFERENCE_ROLE_SUBJECT: _ClassVar[ReferenceRole]
    REFERENCE_ROLE_STYLE: _ClassVar[ReferenceRole]
    REFERENCE_ROLE_EDIT: _ClassVar[ReferenceRole]
IMAGE_TYPE_UNSPECIFIED: ImageType
IMAGE_TYPE_SCENE: ImageType
IMAGE_TYPE_CHARACTER: ImageType
IMAGE_TYPE_PORTRAIT: ImageType
IMAGE_TYPE_ITEM: ImageType
IMAGE_TYPE_CREATURE: ImageType
IMAGE_TYPE_LOCATION: ImageType
IMAGE_TYPE_MAP: ImageType
REFERENCE_ROLE_UNSPECIFIED: ReferenceRole
REFERENCE_ROLE_SUBJECT: ReferenceRole
REFERENCE_ROLE_STYLE: ReferenceRole
REFERENCE_ROLE_EDIT: ReferenceRole

class ReferenceImage(_message.Message):
    __slots__ = ("storage_path", "content_sha256", "role")
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    storage_path: str
    content_sha256: str
    role: ReferenceRole
    def __init__(self, storage_path: _Optional[str] = ..., content_sha256: _Optional[str] = ..., role: _Optional[_Union[ReferenceRole, str]] = ...) -> None: ...

class PlanProvenance(_message.Message):
    __slots__ = ("planner", "model", "fell_back", "latency")
    PLANNER_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    FELL_BACK_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    planner: str
    model: str
    fell_back: bool
    latency: _duration_pb2.Duration
    def __init__(self, planner: _Optional[str] = ..., model: _Optional[str] = ..., fell_back: _Optional[bool] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...

class ImageGenerationPlan(_message.Message):
    __slots__ = ("plan_id", "enhanced_prompt", "image_type", "style", "size", "session_id", "metadata", "provenance", "reference_images", "mask")
    class MetadataEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    PLAN_ID_FIELD_NUMBER: _ClassVar[int]
    ENHANCED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    IMAGE_TYPE_FIELD_NUMBER: _ClassVar[int]
    STYLE_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    METADATA_FIELD_NUMBER: _ClassVar[int]
    PROVENANCE_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    MASK_FIELD_NUMBER: _ClassVar[int]
    plan_id: str
    enhanced_prompt: str
    image_type: ImageType
    style: str
    size: str
    session_id: str
    metadata: _containers.ScalarMap[str, str]
    provenance: PlanProvenance
    reference_images: _containers.RepeatedCompositeFieldContainer[ReferenceImage]
    mask: ReferenceImage
    def __init__(self, plan_id: _Optional[str] = ..., enhanced_prompt: _Optional[str] = ..., image_type: _Optional[_Union[ImageType, str]] = ..., style: _Optional[str] = ..., size: _Optional[str] = ..., session_id: _Optional[str] = ..., metadata: _Optional[_Mapping[str, str]] = ..., provenance: _Optional[_Union[PlanProvenance, _Mapping]] = ..., reference_images: _Optional[_Iterable[_Union[ReferenceImage, _Mapping]]] = ..., mask: _Optional[_Union[ReferenceImage, _Mapping]] = ...) -> None: ...

class ProviderInfo(_message.Message):
    __slots__ = ("name", "model", "latency", "revised_prompt", "usage", "estimated_cost_micros", "seed")
    NAME_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    REVISED_PROMPT_FIELD_NUMBER: _ClassVar[int]
    USAGE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATED_COST_MICROS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    name: str
    model: str
    latency: _duration_pb2.Duration
    revised_prompt: str
    usage: ProviderUsage
    estimated_cost_micros: int
    seed: int
    def __init__(self, name: _Optional[str] = ..., model: _Optional[str] = ..., latency: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., revised_prompt: _Optional[str] = ..., usage: _Optional[_Union[ProviderUsage, _Mapping]] = ..., estimated_cost_micros: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class ProviderUsage(_message.Message):
    __slots__ = ("input_tokens", "input_image_tokens", "output_tokens", "total_tokens")
    INPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    INPUT_IMAGE_TOKENS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TOTAL_TOKENS_FIELD_NUMBER: _ClassVar[int]
    input_tokens: int
    input_image_tokens: int
    output_tokens: int
    total_tokens: int
    def __init__(self, input_tokens: _Optional[int] = ..., input_image_tokens: _Optional[int] = ..., output_tokens: _Optional[int] = ..., total_tokens: _Optional[int] = ...) -> None: ...

class ImageGenerationResult(_message.Message):
    __slots__ = ("image_url", "proxy_url", "storage_path", "mime_type", "byte_size", "width", "height", "content_sha256", "provider", "reused", "create_time", "plan", "reference_images")
    IMAGE_URL_FIELD_NUMBER: _ClassVar[int]
    PROXY_URL_FIELD_NUMBER: _ClassVar[int]
    STORAGE_PATH_FIELD_NUMBER: _ClassVar[int]
    MIME_TYPE_FIELD_NUMBER: _ClassVar[int]
    BYTE_SIZE_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    PROVIDER_FIELD_NUMBER: _ClassVar[int]
    REUSED_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    REFERENCE_IMAGES_FIELD_NUMBER: _ClassVar[int]
    image_url: str
    proxy_url: str
    storage_path: str
    mime_type: str
    byte_size: int
    width: int
    height: int
    content_sha256: str
    provider: ProviderInfo
    reused: bool
    create_time: _timestamp_pb2.Timestamp
    plan: ImageGenerationPlan
    reference_images: _containers.RepeatedCompositeFieldContainer[ReferenceImage]
    def __init__(self, image_url: _Optional[str] = ..., proxy_url: _Optional[str] = ..., storage_path: _Optional[str] = ..., mime_type: _Optional[str] = ..., byte_size: _Optional[int] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., content_sha256: _Optional[str] = ..., provider: _Optional[_Union[ProviderInfo, _Mapping]] = ..., reused: _Optional[bool] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., plan: _Optional[_Union[ImageGenerationPlan, _Mapping]] = ..., reference_images: _Optional[_Iterable[_Union[ReferenceImage, _Mapping]]] = ...) -> None: ...
