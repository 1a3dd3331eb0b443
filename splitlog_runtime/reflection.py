"""Server reflection under both protocol versions, v1 and v1alpha.

grpcio-reflection (1.85) ships only `grpc.reflection.v1alpha.ServerReflection`,
but newer clients, such as grpcurl 1.9 and later and `buf curl`, request
`grpc.reflection.v1.ServerReflection` first. The v1 messages have the same
fields and field numbers as the v1alpha ones, so the v1 method parses requests
and serialises responses with the v1alpha classes, and one servicer handles
both methods. The v1 file descriptor, which clients fetch to describe the v1
service, is built from the v1alpha one with the package renamed.
"""

from __future__ import annotations

from collections.abc import Iterable

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from splitlog_runtime.descriptors import copy_pool

V1ALPHA_SERVICE = reflection.SERVICE_NAME
V1_SERVICE = "grpc.reflection.v1.ServerReflection"
SERVICE_NAMES = (V1_SERVICE, V1ALPHA_SERVICE)

_V1ALPHA_PACKAGE = "grpc.reflection.v1alpha"
_V1_PACKAGE = "grpc.reflection.v1"
_V1_FILE_NAME = "grpc/reflection/v1/reflection.proto"


def v1_file_proto() -> descriptor_pb2.FileDescriptorProto:
    """Build the v1 reflection file from the v1alpha one.

    Only the file name, the package and the type references change. The file
    options (the v1alpha Java and Go packages, and its deprecation) are
    dropped, because they describe v1alpha.
    """
    proto = descriptor_pb2.FileDescriptorProto()
    reflection_pb2.DESCRIPTOR.CopyToProto(proto)
    proto.name = _V1_FILE_NAME
    proto.package = _V1_PACKAGE
    proto.ClearField("options")
    old_prefix = f".{_V1ALPHA_PACKAGE}."
    new_prefix = f".{_V1_PACKAGE}."

    def rename(type_name: str) -> str:
        if type_name.startswith(old_prefix):
            return new_prefix + type_name[len(old_prefix) :]
        return type_name

    for message in proto.message_type:
        # The v1alpha messages nest no types, so no nested fields need renaming.
        for field in message.field:
            if field.HasField("type_name"):
                field.type_name = rename(field.type_name)
    for service in proto.service:
        for method in service.method:
            method.input_type = rename(method.input_type)
            method.output_type = rename(method.output_type)
    return proto


def reflection_pool(files: Iterable[FileDescriptor]) -> descriptor_pool.DescriptorPool:
    """Build the pool that reflection resolves symbols in.

    The pool contains copies of `files` and their imports, the health and both
    reflection services, and the google.rpc error details, whose types
    clients such as grpcurl resolve to print the details of an error.
    """
    pool = copy_pool(
        [
            *files,
            health_pb2.DESCRIPTOR,
            reflection_pb2.DESCRIPTOR,
            error_details_pb2.DESCRIPTOR,
        ]
    )
    pool.Add(v1_file_proto())
    return pool


def files_of_services(names: Iterable[str]) -> list[FileDescriptor]:
    """Return the files of the default pool that declare the named services.

    A name the default pool does not contain, such as a service registered
    with generic handlers only, is skipped: reflection lists it but cannot
    describe it.
    """
    default = descriptor_pool.Default()
    files = []
    for name in names:
        try:
            files.append(default.FindServiceByName(name).file)
        except KeyError:
            continue
    return files


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.Server | grpc.aio.Server,
    pool: descriptor_pool.DescriptorPool,
) -> None:
    """Serve reflection v1 and v1alpha on `server`, both listing `service_names`.

    Both reflection services are added to the listing. `pool` must contain
    the v1 file, as `reflection_pool` builds it.
    """
    names = [*service_names, *SERVICE_NAMES]
    if isinstance(server, grpc.aio.Server):
        servicer = reflection.aio.ReflectionServicer(names, pool=pool)
    else:
        servicer = reflection.ReflectionServicer(names, pool=pool)
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    handlers = {
        "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
            servicer.ServerReflectionInfo,
            request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
            response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
        )
    }
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(V1_SERVICE, handlers),)
    )
    server.add_registered_method_handlers(V1_SERVICE, handlers)
