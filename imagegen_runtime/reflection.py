"""gRPC server reflection in both its versions: grpc.reflection.v1, the current one
(grpcurl, Postman and gRPC's own tools ask it first), and grpc.reflection.v1alpha,
for older tools.

grpcio-reflection ships v1alpha only. v1 is the same protocol under another package:
the same messages with the same field numbers, so one servicer answers both, v1's
bytes read and written with v1alpha's message classes. So that reflection can also
describe v1 itself, its file descriptor (grpc/reflection/v1/reflection.proto, made
from v1alpha's with the package renamed) is added to the default descriptor pool
once, the first time a server enables reflection.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection, reflection_pb2

V1ALPHA_SERVICE_NAME = reflection.SERVICE_NAME  # grpc.reflection.v1alpha.ServerReflection
V1_PACKAGE = "grpc.reflection.v1"
V1_SERVICE_NAME = f"{V1_PACKAGE}.ServerReflection"
V1_FILE = "grpc/reflection/v1/reflection.proto"
SERVICE_NAMES = (V1_SERVICE_NAME, V1ALPHA_SERVICE_NAME)

_lock = threading.Lock()


def _v1_file_descriptor_proto() -> descriptor_pb2.FileDescriptorProto:
    alpha_package = reflection_pb2.DESCRIPTOR.package
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = V1_FILE
    proto.package = V1_PACKAGE
    proto.ClearField("options")  # v1alpha's java/objc names; v1 needs none here

    def renamed(type_name: str) -> str:
        prefix = f".{alpha_package}."
        return (
            f".{V1_PACKAGE}.{type_name.removeprefix(prefix)}" if type_name.startswith(prefix) else type_name
        )

    for message in proto.message_type:
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = renamed(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type, method.output_type = renamed(method.input_type), renamed(method.output_type)
    return proto


def register_v1_descriptor(pool: descriptor_pool.DescriptorPool | None = None) -> None:
    """Add reflection v1's file to pool (the default one) unless it is there already."""
    pool = pool or descriptor_pool.Default()
    with _lock:
        try:
            pool.FindFileByName(V1_FILE)
        except KeyError:
            pool.AddSerializedFile(_v1_file_descriptor_proto().SerializeToString())


def enable_server_reflection(service_names: Iterable[str], server: grpc.aio.Server) -> None:
    """Serve reflection v1 and v1alpha on server, listing service_names and both reflections."""
    register_v1_descriptor()
    names = tuple(dict.fromkeys((*service_names, *SERVICE_NAMES)))
    servicer = reflection.aio.ReflectionServicer(names)
    method = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    for service in SERVICE_NAMES:
        server.add_generic_rpc_handlers(
            (grpc.method_handlers_generic_handler(service, {"ServerReflectionInfo": method}),)
        )
