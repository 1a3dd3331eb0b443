"""The REST front on streaming methods, against the test backend and a real
log cluster: a response stream has no deadline unless a grpc-timeout header
sets one, and a client that leaves cancels the backend call."""

from __future__ import annotations

import json
import time
import uuid

import httpx
import pytest

from gateway.http_rules import routes_for_method
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog_runtime import config as config_module
from tests.cli.test_logs_cli import LogsGateway
from tests.gateway.support import find_method


def _literal_route(client_streaming: bool, server_streaming: bool):
    method = find_method(client_streaming, server_streaming)
    for route in routes_for_method(method):
        if not route.template.variables:
            return route
    pytest.skip(f"{method.full_name} has no HTTP route without variables")


@pytest.fixture(scope="module")
def client(gateway):
    with httpx.Client(
        base_url=f"http://127.0.0.1:{gateway.http_port}", timeout=10
    ) as opened:
        yield opened


def _path(route) -> str:
    verb = f":{route.template.verb}" if route.template.verb else ""
    return "/" + "/".join(route.template.segments) + verb


def test_server_stream_as_ndjson(client):
    route = _literal_route(client_streaming=False, server_streaming=True)

    response = client.request(route.http_method, _path(route), json={})

    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines == [{"result": {}}] * 3


def test_stream_upload_path_not_routed(client):
    # StreamLogEntries reads a stream of requests, so it has no REST route.
    response = client.post("/v1/logs:stream", json={"entries": [{"service": "s"}]})

    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_server_stream_without_timeout_has_no_deadline(client, backend_log):
    route = _literal_route(client_streaming=False, server_streaming=True)
    backend_log.stream_time_remaining.clear()

    response = client.request(route.http_method, _path(route), json={})

    assert response.status_code == 200, response.text
    # The gateway's deadline_seconds (3 s) applies to unary calls only.
    assert backend_log.stream_time_remaining[-1] > 1e6


def test_server_stream_timeout_header_sets_deadline(client, backend_log):
    route = _literal_route(client_streaming=False, server_streaming=True)
    backend_log.stream_time_remaining.clear()

    response = client.request(
        route.http_method, _path(route), json={}, headers={"grpc-timeout": "20S"}
    )

    assert response.status_code == 200, response.text
    # The server reads its wall clock, so allow it a second of drift.
    assert 0 < backend_log.stream_time_remaining[-1] < 21


def test_client_leaving_before_first_message_cancels(gateway, backend_log):
    route = _literal_route(client_streaming=False, server_streaming=True)
    backend_log.stream_cancelled.clear()
    url = f"http://127.0.0.1:{gateway.http_port}{_path(route)}"

    # The backend sends nothing for `hang`, so the client gives up waiting for
    # the response headers and closes the connection.
    with pytest.raises(httpx.ReadTimeout):
        httpx.request(route.http_method, url, json={"services": ["hang"]}, timeout=1.0)

    assert backend_log.stream_cancelled.wait(20), "the backend call was not cancelled"


def _tail_lines(response: httpx.Response):
    for line in response.iter_lines():
        if line:
            yield json.loads(line)


def _write_entry(live, service: str, message: str) -> None:
    entry = logs_pb2.LogEntry(service=service, message=message)
    live.stub.WriteLogEntry(logs_pb2.WriteLogEntryRequest(entry=entry), timeout=10)


def test_rest_tail_outlives_default_deadline(live):
    service = f"rest-tail-{uuid.uuid4().hex[:8]}"
    deadline = live.gateway.config.deadline_seconds
    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/logs:tail"

    with httpx.stream("POST", url, json={"services": [service]}, timeout=30) as tail:
        lines = _tail_lines(tail)
        first = next(lines)
        time.sleep(deadline + 1)
        _write_entry(live, service, "after the default deadline")
        received = next(line for line in lines if line.get("result", {}).get("entries"))

    assert tail.status_code == 200
    assert "result" in first
    messages = [entry["message"] for entry in received["result"]["entries"]]
    assert messages == ["after the default deadline"]


def test_rest_tail_ends_at_timeout_header(live):
    service = f"rest-tail-{uuid.uuid4().hex[:8]}"
    url = f"http://127.0.0.1:{live.gateway.http_port}/v1/logs:tail"

    with httpx.stream(
        "POST",
        url,
        json={"services": [service]},
        headers={"grpc-timeout": "1S"},
        timeout=30,
    ) as tail:
        lines = list(_tail_lines(tail))

    assert tail.status_code == 200
    assert "result" in lines[0]
    error = lines[-1]["error"]
    assert error["status"] == "DEADLINE_EXCEEDED"
    assert error["details"][0]["reason"] == "STREAM_DEADLINE_REACHED"
    assert "grpc-timeout" in error["message"]
    assert "request id" not in error["message"]
    # A new request without the token would start at the newest entry.
    assert (
        "resumeToken field set to the resumeToken of the last result line"
        in (error["message"])
    )


@pytest.fixture(scope="module")
def one_stream(loop_thread, tmp_path_factory):
    """A log cluster whose router keeps at most one tail open, and a gateway."""
    base = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": tmp_path_factory.mktemp("one-stream"),
        },
    )
    running = LogsGateway(
        base,
        tmp_path_factory.mktemp("one-stream-gateway"),
        loop_thread,
        log_max_open_streams=1,
    )
    yield running
    running.close()


def test_rest_tail_disconnect_frees_router_slot(one_stream):
    url = f"http://127.0.0.1:{one_stream.gateway.http_port}/v1/logs:tail"
    with httpx.stream("POST", url, json={"services": ["slot"]}, timeout=30) as tail:
        first = next(_tail_lines(tail))

    # The REST tail has no deadline, so only its closed connection can end
    # the router's call and give its one slot to the next tail.
    deadline = time.monotonic() + 20
    while True:
        again = httpx.post(
            url, json={"services": ["slot"]}, timeout=30, headers={"grpc-timeout": "1S"}
        )
        if again.status_code != 429 or time.monotonic() > deadline:
            break
        time.sleep(0.2)

    assert "result" in first
    assert again.status_code == 200, again.text[:500]
