"""Server reflection v1 and v1alpha, called by real clients.

The gateway (an asyncio server) and the test backend (a sync server from
`create_server`) both serve reflection. buf curl requests the protocol chosen
with `--reflect-protocol`, and grpcurl 1.8.6 requests v1alpha only.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_reflection.v1alpha import reflection_pb2

from splitlog.users.v1 import users_service_pb2

REPO = Path(__file__).resolve().parents[2]
BUF = REPO / "build" / "node" / "node_modules" / ".bin" / "buf"
GRPCURL = Path(sys.executable).parent / "grpcurl"
V1 = "grpc.reflection.v1.ServerReflection"
V1ALPHA = "grpc.reflection.v1alpha.ServerReflection"
PROTOCOLS = ["grpc-v1", "grpc-v1alpha"]
SERVERS = ["gateway", "backend"]


@pytest.fixture(scope="module")
def buf() -> Path:
    """Install buf through tools/buf.sh once, then run its binary directly."""
    result = subprocess.run(
        [str(REPO / "tools" / "buf.sh"), "--version"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if result.returncode != 0:
        pytest.skip(f"tools/buf.sh could not install buf: {result.stderr}")
    return BUF


@pytest.fixture(params=SERVERS)
def port(request) -> int:
    if request.param == "gateway":
        return request.getfixturevalue("gateway").grpc_port
    return request.getfixturevalue("backend").port


def _buf_curl(buf: Path, protocol: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            str(buf),
            "curl",
            "--protocol",
            "grpc",
            "--http2-prior-knowledge",
            "--reflect-protocol",
            protocol,
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _reflect(port: int, service: str, requests: list) -> list:
    """Send reflection requests to `service` on the wire, with v1alpha types."""
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        call = channel.stream_stream(
            f"/{service}/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        return list(call(iter(requests), timeout=10))


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_buf_lists_methods(buf, port, protocol):
    result = _buf_curl(buf, protocol, "--list-methods", f"http://127.0.0.1:{port}")

    assert result.returncode == 0, result.stderr
    assert "splitlog.users.v1.UsersService/GetUser" in result.stdout.split()


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_buf_calls_through_reflection(buf, port, protocol):
    url = f"http://127.0.0.1:{port}/splitlog.users.v1.UsersService/GetUser"

    result = _buf_curl(buf, protocol, "-d", '{"name": "users/grace"}', url)

    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["user"]["name"] == "users/grace"


@pytest.mark.parametrize("service", [V1, V1ALPHA])
def test_listing_names_both_versions(port, service):
    request = reflection_pb2.ServerReflectionRequest(host="probe", list_services="")

    (response,) = _reflect(port, service, [request])

    names = {entry.name for entry in response.list_services_response.service}
    assert V1 in names
    assert V1ALPHA in names
    assert response.original_request == request


def test_v1_echoes_each_request(port):
    requests = [
        reflection_pb2.ServerReflectionRequest(host="a", list_services=""),
        reflection_pb2.ServerReflectionRequest(
            host="b", file_containing_symbol="splitlog.users.v1.UsersService"
        ),
        reflection_pb2.ServerReflectionRequest(
            host="c", file_containing_symbol="no.such.Symbol"
        ),
    ]

    responses = _reflect(port, V1, requests)

    assert [r.original_request for r in responses] == requests
    assert responses[1].HasField("file_descriptor_response")
    assert responses[2].error_response.error_code == grpc.StatusCode.NOT_FOUND.value[0]


def test_v1_service_describes_itself(port):
    request = reflection_pb2.ServerReflectionRequest(file_containing_symbol=V1)

    (response,) = _reflect(port, V1, [request])

    files = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]
    assert [f.name for f in files] == ["grpc/reflection/v1/reflection.proto"]
    (service,) = files[0].service
    (method,) = service.method
    assert files[0].package == "grpc.reflection.v1"
    assert method.input_type == ".grpc.reflection.v1.ServerReflectionRequest"
    assert method.output_type == ".grpc.reflection.v1.ServerReflectionResponse"
    assert method.client_streaming
    assert method.server_streaming


def test_grpcurl_v1alpha_lists_both(port):
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", f"127.0.0.1:{port}", "list"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    listed = result.stdout.split()
    assert V1 in listed
    assert V1ALPHA in listed
    assert "splitlog.users.v1.UsersService" in listed


def test_grpcurl_describes_v1_service(port):
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", f"127.0.0.1:{port}", "describe", V1],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    assert "rpc ServerReflectionInfo" in result.stdout
    assert ".grpc.reflection.v1.ServerReflectionRequest" in result.stdout


# Comments of the .proto files, which reflection serves from the descriptor set
# that tools/genproto.py writes. Each test checks that its text is in the proto.
USERS_COMMENT = "Manages users, groups and group membership."
EXPENSES_COMMENT = (
    "Records the expenses of a group and how each one is split between members."
)
EXPENSE_NAME_COMMENT = "Resource name, `groups/{group}/expenses/{expense}`."


def _proto_text(path: str) -> str:
    return (REPO / "protos" / path).read_text()


def _grpcurl_describe(port: int, symbol: str) -> str:
    result = subprocess.run(
        [str(GRPCURL), "-plaintext", f"127.0.0.1:{port}", "describe", symbol],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_grpcurl_describe_shows_proto_comments(port):
    assert USERS_COMMENT in _proto_text("splitlog/users/v1/users_service.proto")

    described = _grpcurl_describe(port, "splitlog.users.v1.UsersService")

    assert f"// {USERS_COMMENT}" in described


def test_grpcurl_describe_shows_expenses_comments(gateway):
    proto = _proto_text("splitlog/expenses/v1/expenses_service.proto")
    assert EXPENSES_COMMENT in proto
    assert EXPENSE_NAME_COMMENT in proto

    service = _grpcurl_describe(
        gateway.grpc_port, "splitlog.expenses.v1.ExpensesService"
    )
    message = _grpcurl_describe(gateway.grpc_port, "splitlog.expenses.v1.Expense")

    assert f"// {EXPENSES_COMMENT}" in service
    assert f"// {EXPENSE_NAME_COMMENT}" in message


def _users_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    """The generated copies of the users proto and of everything it imports."""
    found: dict[str, descriptor_pb2.FileDescriptorProto] = {}

    def add(file) -> None:
        if file.name in found:
            return
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        found[file.name] = proto
        for dependency in file.dependencies:
            add(dependency)

    add(users_service_pb2.DESCRIPTOR)
    return found


@pytest.mark.parametrize("service", [V1, V1ALPHA])
@pytest.mark.parametrize(
    "request_field, value",
    [
        ("file_containing_symbol", "splitlog.users.v1.UsersService"),
        ("file_by_filename", "splitlog/users/v1/users_service.proto"),
    ],
)
def test_served_files_differ_only_by_comments(port, service, request_field, value):
    request = reflection_pb2.ServerReflectionRequest(**{request_field: value})

    (response,) = _reflect(port, service, [request])

    served = [
        descriptor_pb2.FileDescriptorProto.FromString(data)
        for data in response.file_descriptor_response.file_descriptor_proto
    ]
    expected = _users_files()
    assert sorted(f.name for f in served) == sorted(expected)
    for file in served:
        if file.name.startswith("splitlog/"):
            assert file.source_code_info.location, file.name
            file.ClearField("source_code_info")
        else:
            assert not file.HasField("source_code_info"), file.name
        assert file == expected[file.name], file.name
