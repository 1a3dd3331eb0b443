"""The client address of each REST request, for the lockout, limits and logs.

Only from a reverse proxy in `http_trusted_proxies` does the gateway take
the client from X-Forwarded-For, and the scheme from X-Forwarded-Proto.
uvicorn's `ProxyHeadersMiddleware` (0.55) reads the headers. It picks the
last entry that is not a trusted proxy and passes that entry on unchanged.
This module then writes the client in the form that
`splitlog_runtime.auth.canonical_address` returns, such as 10.1.1.1 for
`::ffff:10.1.1.1`. An entry that is not an IP address, such as `garbage` or
`010.001.001.001`, never becomes the client: the request counts as the
proxy's own, so all such requests share the proxy's lockout and rate limit.
"""

from __future__ import annotations

import logging
from typing import Any

from uvicorn.middleware.proxy_headers import ProxyHeadersMiddleware

from splitlog_runtime.auth import canonical_address
from splitlog_runtime.failure_log import Throttle

_LOGGER = logging.getLogger(__name__)

# The ASGI scope key that keeps the connection's own peer, (host, port).
_PEER_KEY = "splitlog.peer"
# Minimum seconds between two warnings about X-Forwarded-For entries.
WARNING_INTERVAL_SECONDS = 60.0


class ClientAddressMiddleware:
    """Set each request's client to a canonical IP address (ASGI middleware).

    Args:
      app: the ASGI app to call.
      trusted_proxies: addresses and networks whose X-Forwarded-For and
        X-Forwarded-Proto headers count; empty ignores the headers.
    """

    def __init__(self, app: Any, trusted_proxies: list[str]) -> None:
        self._app = app
        self._forwarded = (
            ProxyHeadersMiddleware(self._set_canonical_client, trusted_proxies)
            if trusted_proxies
            else None
        )
        self._warnings = Throttle(WARNING_INTERVAL_SECONDS)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        peer = scope.get("client")
        scope[_PEER_KEY] = peer
        if peer:
            # On a dual-stack listener an IPv4 proxy connects as ::ffff:a.b.c.d,
            # which matches no IPv4 entry of http_trusted_proxies.
            scope["client"] = (canonical_address(peer[0]) or peer[0], peer[1])
        if self._forwarded is None:
            await self._set_canonical_client(scope, receive, send)
        else:
            await self._forwarded(scope, receive, send)

    async def _set_canonical_client(self, scope: dict, receive: Any, send: Any) -> None:
        client, peer = scope.get("client"), scope[_PEER_KEY]
        if client:
            host = canonical_address(client[0])
            if host is None and client != peer:
                host = self._proxy_host(peer, client[0])
            scope["client"] = (host or client[0], client[1])
        await self._app(scope, receive, send)

    def _proxy_host(self, peer: tuple[str, int] | None, entry: str) -> str:
        """Return the peer's host in place of a forwarded entry that is no address.

        Also logs a warning, at most once per WARNING_INTERVAL_SECONDS, with
        the count of such requests since the previous warning.
        """
        peer_host = peer[0] if peer else ""
        skipped = self._warnings.allow()
        if skipped is not None:
            _LOGGER.warning(
                "X-Forwarded-For from trusted proxy %s names the client %r, which "
                "is not an IP address; counting the request as the proxy's "
                "(%d more such requests since the last warning)",
                peer_host,
                entry[:100],
                skipped,
            )
        return canonical_address(peer_host) or peer_host
