"""The REST front's client address behind trusted proxies, at the ASGI level."""

from __future__ import annotations

import asyncio
import logging

import pytest

from gateway.client_address import ClientAddressMiddleware


def _client_seen(peer: tuple[str, int], forwarded_for: str, trusted: list[str]):
    """Run one HTTP scope through the middleware; return the client it passes on."""
    seen = {}

    async def app(scope, receive, send):
        seen["client"] = scope["client"]

    middleware = ClientAddressMiddleware(app, trusted)
    scope = {
        "type": "http",
        "client": peer,
        "headers": [(b"x-forwarded-for", forwarded_for.encode())],
    }
    asyncio.run(middleware(scope, None, None))
    return seen["client"]


@pytest.mark.parametrize("peer_host", ["10.0.0.5", "::ffff:10.0.0.5"])
def test_ipv4_proxy_trusted_on_any_listener(peer_host):
    client = _client_seen((peer_host, 4000), "203.0.113.9", ["10.0.0.5"])

    assert client[0] == "203.0.113.9"


def test_untrusted_mapped_peer_is_canonical():
    client = _client_seen(("::ffff:198.51.100.4", 4000), "203.0.113.9", ["10.0.0.5"])

    assert client[0] == "198.51.100.4"


def test_entries_not_addresses_warn_once(caplog):
    caplog.set_level(logging.WARNING, logger="gateway.client_address")
    clients = []

    async def app(scope, receive, send):
        clients.append(scope["client"][0])

    middleware = ClientAddressMiddleware(app, ["10.0.0.5"])

    async def requests():
        for entry in ("garbage", "010.001.001.001", "unknown"):
            scope = {
                "type": "http",
                "client": ("10.0.0.5", 4000),
                "headers": [(b"x-forwarded-for", entry.encode())],
            }
            await middleware(scope, None, None)

    asyncio.run(requests())

    assert clients == ["10.0.0.5"] * 3
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "trusted proxy 10.0.0.5 names the client 'garbage'" in warnings[0]
    assert "(0 more such requests since the last warning)" in warnings[0]
