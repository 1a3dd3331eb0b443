"""CORS responses of the REST port, for pages served from another origin.

A real gateway in front of a real backend; the requests are the ones a
browser sends: a preflight OPTIONS, then the call with its Origin header.
"""

from __future__ import annotations

from splitlog_runtime import config as config_module
from tests.gateway.test_rate_limit import GET_USER_PATH, _http_client
from tests.gateway.test_rate_limit import start_gateway as start_gateway  # fixture

PAGE = "https://app.example.com"


def _preflight(client, origin: str):
    return client.options(
        GET_USER_PATH,
        headers={
            "origin": origin,
            "access-control-request-method": "GET",
            "access-control-request-headers": "authorization",
        },
    )


def test_listed_origin_gets_cors_answers(start_gateway):
    gateway = start_gateway(http_cors_origins=f"{PAGE},http://localhost:3000")
    with _http_client(gateway) as client:
        preflight = _preflight(client, PAGE)
        call = client.get(GET_USER_PATH, headers={"origin": PAGE})

    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == PAGE
    assert "authorization" in preflight.headers["access-control-allow-headers"]
    assert "GET" in preflight.headers["access-control-allow-methods"]
    assert call.status_code == 200, call.text
    assert call.headers["access-control-allow-origin"] == PAGE
    assert "www-authenticate" in call.headers["access-control-expose-headers"]
    assert "access-control-allow-credentials" not in call.headers


def test_ipv6_origin_gets_cors_answers(start_gateway):
    page = "http://[::1]:3000"
    # The setting as an operator writes it, parsed as at startup.
    config = config_module.load(environ={"SPLITLOG_HTTP_CORS_ORIGINS": page})
    gateway = start_gateway(http_cors_origins=config.http_cors_origins)
    with _http_client(gateway) as client:
        preflight = _preflight(client, page)
        call = client.get(GET_USER_PATH, headers={"origin": page})

    assert preflight.status_code == 200, preflight.text
    assert preflight.headers["access-control-allow-origin"] == page
    assert call.headers["access-control-allow-origin"] == page


def test_other_origin_gets_no_cors_answers(start_gateway):
    gateway = start_gateway(http_cors_origins=PAGE)
    with _http_client(gateway) as client:
        preflight = _preflight(client, "https://elsewhere.example.org")
        call = client.get(
            GET_USER_PATH, headers={"origin": "https://elsewhere.example.org"}
        )

    assert preflight.status_code == 400
    assert "access-control-allow-origin" not in preflight.headers
    assert "access-control-allow-origin" not in call.headers


def test_no_cors_by_default(start_gateway):
    gateway = start_gateway()
    with _http_client(gateway) as client:
        preflight = _preflight(client, PAGE)
        call = client.get(GET_USER_PATH, headers={"origin": PAGE})

    assert preflight.status_code == 405
    assert "access-control-allow-origin" not in preflight.headers
    assert call.status_code == 200
    assert "access-control-allow-origin" not in call.headers
