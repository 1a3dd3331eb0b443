"""Server reflection under both protocol versions, v1 and v1alpha.

grpcio-reflection (1.85) ships only `grpc.reflection.v1alpha.ServerReflection`,
but newer clients, such as grpcurl 1.9 and later and `buf curl`, request
`grpc.reflection.v1.ServerReflection` first. The v1 messages have the same
fields and field numbers as the v1alpha ones, so the v1 method parses requests
and serialises responses with the v1alpha classes, and one servicer handles
both methods. The v1 file descriptor, which clients fetch to describe the v1
service, is built from the v1alpha one with the package renamed.

The generated `_pb2` modules carry no comments, so the pool's copies of
splitlog's own files have none. tools/genproto.py also writes those files,
with their comments, to the package data file `splitlog/descriptors.binpb`.
The servicer sends those copies instead, so `grpcurl describe` prints the
comments of the .proto files. Only the comments are added: every other
field of a served file still comes from the pool.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Iterable, Iterator
from importlib import resources

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from google.protobuf.descriptor import FileDescriptor
from google.protobuf.message import DecodeError
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

# The package data file that tools/genproto.py writes (its DESCRIPTOR_SET).
DESCRIPTOR_SET_PACKAGE = "splitlog"
DESCRIPTOR_SET = "descriptors.binpb"

_LOGGER = logging.getLogger(__name__)


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


def _read_descriptor_set() -> bytes | None:
    try:
        return (
            resources.files(DESCRIPTOR_SET_PACKAGE)
            .joinpath(DESCRIPTOR_SET)
            .read_bytes()
        )
    except (FileNotFoundError, ModuleNotFoundError):
        return None


def _clear_json_names(messages: Iterable[descriptor_pb2.DescriptorProto]) -> None:
    for message in messages:
        for field in message.field:
            field.ClearField("json_name")
        _clear_json_names(message.nested_type)


def documented_files(pool: descriptor_pool.DescriptorPool) -> dict[str, bytes]:
    """Return the files of `pool` that have comments in the descriptor set.

    Each value is the serialised pool copy of the file with the set's source
    info (the comments) added. A file whose copy in the set differs from the
    pool's in anything but the comments and the JSON names protoc adds is left
    out, with a warning: its comments would be attached to the wrong elements.
    """
    data = _read_descriptor_set()
    if data is None:
        _LOGGER.warning(
            "reflection: %s/%s is missing; reflection serves the protos "
            "without their comments (run tools/genproto.py, then reinstall)",
            DESCRIPTOR_SET_PACKAGE,
            DESCRIPTOR_SET,
        )
        return {}
    try:
        descriptor_set = descriptor_pb2.FileDescriptorSet.FromString(data)
    except DecodeError as exc:
        _LOGGER.warning(
            "reflection: %s/%s is not a valid FileDescriptorSet (%s); reflection "
            "serves the protos without their comments (run tools/genproto.py)",
            DESCRIPTOR_SET_PACKAGE,
            DESCRIPTOR_SET,
            exc,
        )
        return {}
    documented = {}
    stale = []
    for with_source in descriptor_set.file:
        try:
            file = pool.FindFileByName(with_source.name)
        except KeyError:
            continue
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        bare = descriptor_pb2.FileDescriptorProto()
        bare.CopyFrom(with_source)
        bare.ClearField("source_code_info")
        _clear_json_names(bare.message_type)
        if bare != proto:
            stale.append(with_source.name)
            continue
        proto.source_code_info.CopyFrom(with_source.source_code_info)
        documented[proto.name] = proto.SerializeToString()
    if stale:
        _LOGGER.warning(
            "reflection: %s/%s does not match the generated modules for %s; "
            "reflection serves these files without their comments "
            "(run tools/genproto.py)",
            DESCRIPTOR_SET_PACKAGE,
            DESCRIPTOR_SET,
            ", ".join(stale),
        )
    return documented


def _with_comments(
    response: reflection_pb2.ServerReflectionResponse, documented: dict[str, bytes]
) -> reflection_pb2.ServerReflectionResponse:
    """Swap each file of a file response for its documented copy, if any."""
    if not documented or not response.HasField("file_descriptor_response"):
        return response
    files = response.file_descriptor_response.file_descriptor_proto
    for index, data in enumerate(files):
        name = descriptor_pb2.FileDescriptorProto.FromString(data).name
        replacement = documented.get(name)
        if replacement is not None:
            files[index] = replacement
    return response


class _ReflectionServicer(reflection.ReflectionServicer):
    """The grpcio-reflection servicer, sending documented files."""

    def __init__(
        self,
        service_names: Iterable[str],
        pool: descriptor_pool.DescriptorPool,
        documented: dict[str, bytes],
    ) -> None:
        super().__init__(service_names, pool=pool)
        self._documented = documented

    def ServerReflectionInfo(
        self, request_iterator, context
    ) -> Iterator[reflection_pb2.ServerReflectionResponse]:
        for response in super().ServerReflectionInfo(request_iterator, context):
            yield _with_comments(response, self._documented)


class _AsyncReflectionServicer(reflection.aio.ReflectionServicer):
    """The asyncio grpcio-reflection servicer, sending documented files."""

    def __init__(
        self,
        service_names: Iterable[str],
        pool: descriptor_pool.DescriptorPool,
        documented: dict[str, bytes],
    ) -> None:
        super().__init__(service_names, pool=pool)
        self._documented = documented

    async def ServerReflectionInfo(
        self, request_iterator, context
    ) -> AsyncIterator[reflection_pb2.ServerReflectionResponse]:
        async for response in super().ServerReflectionInfo(request_iterator, context):
            yield _with_comments(response, self._documented)


def enable_reflection(
    service_names: Iterable[str],
    server: grpc.Server | grpc.aio.Server,
    pool: descriptor_pool.DescriptorPool,
) -> None:
    """Serve reflection v1 and v1alpha on `server`, both listing `service_names`.

    Both reflection services are added to the listing. `pool` must contain
    the v1 file, as `reflection_pool` builds it. splitlog's own files are
    served with their comments (see `documented_files`).
    """
    names = [*service_names, *SERVICE_NAMES]
    documented = documented_files(pool)
    servicer: _ReflectionServicer | _AsyncReflectionServicer
    if isinstance(server, grpc.aio.Server):
        servicer = _AsyncReflectionServicer(names, pool, documented)
    else:
        servicer = _ReflectionServicer(names, pool, documented)
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
