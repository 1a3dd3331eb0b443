"""The REST front's client address behind trusted proxies, at the ASGI level."""

from __future__ import annotations

import asyncio

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
