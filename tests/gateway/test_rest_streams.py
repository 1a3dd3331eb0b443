"""The REST front on streaming methods, against the test backend."""

from __future__ import annotations

import json

import httpx
import pytest

from gateway.http_rules import routes_for_method
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
