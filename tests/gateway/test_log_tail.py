"""Resumed tails through a real gateway and log cluster, over gRPC and REST.

The router sends tail responses already serialized, so these tests check that
both fronts of the gateway pass them on as whole responses.
"""

from __future__ import annotations

import json
import uuid

import grpc
import httpx

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc

COUNT = 600


def _write_backlog(stub, services: list[str]) -> list[str]:
    """Write COUNT entries over `services`; return their messages in order."""
    messages = [f"{services[i % len(services)]} {i}" for i in range(COUNT)]
    stub.WriteLogEntries(
        logs_pb2.WriteLogEntriesRequest(
            entries=[
                logs_pb2.LogEntry(service=message.split()[0], message=message)
                for message in messages
            ]
        ),
        timeout=10,
    )
    return messages


def _backlog_after_token(stub, label: str) -> tuple[list[str], str, list[str]]:
    """Take a token of a tail of new services, then write a backlog after it.

    Returns the services, the token and the written messages in order.
    """
    services = [f"tail-{label}-{uuid.uuid4().hex[:8]}-{i}" for i in range(6)]
    call = stub.TailLogEntries(
        logs_pb2.TailLogEntriesRequest(services=services), timeout=10
    )
    token = next(call).resume_token
    call.cancel()
    return services, token, _write_backlog(stub, services)


def test_grpc_tail_resumes_backlog_through_gateway(live):
    with grpc.insecure_channel(f"127.0.0.1:{live.gateway.grpc_port}") as channel:
        stub = logs_grpc.LogsServiceStub(channel)
        services, token, written = _backlog_after_token(stub, "grpc")
        call = stub.TailLogEntries(
            logs_pb2.TailLogEntriesRequest(services=services, resume_token=token),
            timeout=30,
        )
        received: list[str] = []
        tokens: list[str] = []
        skipped = 0
        for response in call:
            received.extend(entry.message for entry in response.entries)
            tokens.append(response.resume_token)
            skipped += response.skipped_count
            if len(received) >= COUNT:
                break
        call.cancel()

    assert skipped == 0
    assert all(tokens)
    assert_once_in_order(received, written, services)


def assert_once_in_order(received: list[str], written: list[str], services) -> None:
    """Check that every entry arrived once, each service's in written order."""
    assert sorted(received) == sorted(written)
    for service in services:
        of_service = [m for m in received if m.split()[0] == service]
        assert of_service == [m for m in written if m.split()[0] == service]


def test_rest_tail_resumes_backlog_through_gateway(live):
    with grpc.insecure_channel(f"127.0.0.1:{live.gateway.grpc_port}") as channel:
        stub = logs_grpc.LogsServiceStub(channel)
        services, token, written = _backlog_after_token(stub, "rest")

    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/logs:tail"
    body = {"services": services, "resumeToken": token}
    received: list[str] = []
    tokens: list[str] = []
    skipped = 0
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line:
                continue
            result = json.loads(line)["result"]
            received.extend(entry["message"] for entry in result.get("entries", []))
            tokens.append(result["resumeToken"])
            skipped += int(result.get("skippedCount", 0))
            if len(received) >= COUNT:
                break

    assert skipped == 0
    assert all(tokens)
    assert_once_in_order(received, written, services)


def test_rest_tail_attribute_conditions(live):
    service = f"tail-eq-{uuid.uuid4().hex[:8]}"
    body = {
        "services": [service],
        "attributeConditions": [{"key": "a=b", "value": "c"}],
    }
    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/logs:tail"
    with httpx.stream("POST", url, json=body, timeout=30) as response:
        assert response.status_code == 200
        first = json.loads(next(response.iter_lines()))["result"]
    with grpc.insecure_channel(f"127.0.0.1:{live.gateway.grpc_port}") as channel:
        logs_grpc.LogsServiceStub(channel).WriteLogEntries(
            logs_pb2.WriteLogEntriesRequest(
                entries=[
                    logs_pb2.LogEntry(
                        service=service, message="other", attributes={"a": "b=c"}
                    ),
                    logs_pb2.LogEntry(
                        service=service, message="match", attributes={"a=b": "c"}
                    ),
                ]
            ),
            timeout=10,
        )

    received: list[str] = []
    resumed = {**body, "resumeToken": first["resumeToken"]}
    with httpx.stream("POST", url, json=resumed, timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line:
                continue
            result = json.loads(line)["result"]
            received.extend(entry["message"] for entry in result.get("entries", []))
            if received:
                break

    assert received == ["match"]
