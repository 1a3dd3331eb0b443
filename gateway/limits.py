"""Rate limits per principal and a cap on concurrent calls at the gateway.

`RateLimiter` keeps one token bucket per key. A bucket holds up to `burst`
tokens and gains `rate` tokens per second. Each call takes one token, and a
call that finds the bucket empty is rejected with RESOURCE_EXHAUSTED and a
RetryInfo whose delay is the time until the next token. The key is the
principal that the gateway authenticated (`users/{user}` or
`users/{user}/apiKeys/{key}`), or the client's IP address for anonymous
calls and whenever `auth_required` is off.

`ConcurrencyLimit` counts the calls that the gateway runs at once and rejects
the one over `max_concurrent_rpcs`. The gateway enforces it itself, rather
than through grpc's `maximum_concurrent_rpcs` server option, so that the
error names the setting and carries a RetryInfo.

Health calls are exempt from both limits, so that probes keep working while
the gateway is busy.
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from typing import Any

import grpc
from grpc_status import rpc_status

from gateway import stream_writes
from splitlog_runtime import auth
from splitlog_runtime.auth import peer_host
from splitlog_runtime.errors import DomainError, ResourceExhausted

HEALTH_PREFIX = f"/{auth.HEALTH_SERVICE}/"

# Buckets kept at most. Past this, the least recently used bucket is dropped,
# which gives that key a full bucket on its next call.
MAX_TRACKED_KEYS = 100_000

# Delay in seconds that the RetryInfo of a call over the concurrency cap
# carries. A slot frees up as soon as any running call ends, so it is short.
CONCURRENCY_RETRY_DELAY = 0.1

# The message of grpc's own rejection of a call over the sync server's
# `maximum_concurrent_rpcs` (grpc/_server.py in grpcio 1.85).
GRPC_CONCURRENCY_MESSAGE = "Concurrent RPC limit exceeded!"


def is_exempt(method: str) -> bool:
    """Return whether a method path is exempt from the gateway's limits."""
    return method.startswith(HEALTH_PREFIX)


class TokenBucket:
    """Tokens that refill at `rate` per second up to `burst`, starting full."""

    __slots__ = ("rate", "burst", "tokens", "updated")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = float(burst)
        self.updated = now

    def take(self, now: float) -> float:
        """Take one token and return 0, or return the seconds until one is free."""
        elapsed = max(now - self.updated, 0.0)
        self.tokens = min(self.burst, self.tokens + elapsed * self.rate)
        self.updated = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimiter:
    """One token bucket per key, such as a principal or a client address.

    Args:
      rate: tokens added per second to each bucket. Must be above 0.
      burst: maximum tokens in a bucket, which is how many calls a key can
        make at once after a quiet period. Must be 1 or more.
      max_keys: buckets kept at most before the least recently used is
        dropped.
      clock: monotonic time in seconds.

    Raises:
      ValueError: rate or burst is out of range. The message names the
        setting.
    """

    def __init__(
        self,
        rate: float,
        burst: int,
        *,
        max_keys: int = MAX_TRACKED_KEYS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not rate > 0 or not math.isfinite(rate):
            raise ValueError(
                f"gateway_rate_limit_per_second must be above 0 to limit calls, "
                f"got {rate}; set 0 to turn the limit off"
            )
        if burst < 1:
            raise ValueError(
                f"gateway_rate_limit_burst must be 1 or more when the rate limit "
                f"is on, got {burst}"
            )
        self.rate = rate
        self.burst = burst
        self._max_keys = max_keys
        self._clock = clock
        self._buckets: OrderedDict[str, TokenBucket] = OrderedDict()
        # The REST front and the gRPC front share one limiter, and both run
        # on the gateway's event loop. The lock keeps the limiter correct if
        # a caller on another thread uses it too.
        self._lock = threading.Lock()

    def acquire(self, key: str) -> float:
        """Take a token for `key`; return 0, or the seconds until a token is free."""
        now = self._clock()
        with self._lock:
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = TokenBucket(self.rate, self.burst, now)
                self._buckets[key] = bucket
                if len(self._buckets) > self._max_keys:
                    self._buckets.popitem(last=False)
            else:
                self._buckets.move_to_end(key)
            return bucket.take(now)

    def check(self, key: str) -> None:
        """Take a token for `key`.

        Raises:
          ResourceExhausted: the key's bucket is empty; RetryInfo carries the
            seconds until a token is free.
        """
        delay = self.acquire(key)
        if delay > 0:
            raise rate_limited(key, delay, self.rate, self.burst)

    def __len__(self) -> int:
        return len(self._buckets)


def rate_limited(key: str, delay: float, rate: float, burst: int) -> ResourceExhausted:
    """Build the error for a call over the rate limit of `key`."""
    return ResourceExhausted(
        f"rate limit exceeded for {key}: the gateway accepts {rate:g} calls per "
        f"second with bursts of {burst} (gateway_rate_limit_per_second, "
        f"gateway_rate_limit_burst); retry in {delay:.3f}s",
        reason="RATE_LIMIT_EXCEEDED",
        metadata={
            "key": key,
            "limit": "gateway_rate_limit_per_second",
            "rate_per_second": f"{rate:g}",
            "burst": str(burst),
        },
        retry_delay=delay,
    )


def rate_limit_key(principal: auth.Principal | None, client_host: str) -> str:
    """Return the key that a call is counted under.

    An authenticated principal is the key, so each user and each API key has
    its own bucket. An anonymous call is keyed by the client's host, as
    `peer/{host}`. The log router counts open streams under the same names.
    """
    return auth.caller_key(principal, client_host)


class ConcurrencyLimit:
    """A count of running calls with a maximum; 0 means no maximum.

    Only the gateway's event loop uses it, so it needs no lock.
    """

    def __init__(self, maximum: int) -> None:
        if maximum < 0:
            raise ValueError(
                f"max_concurrent_rpcs must be 0 (no limit) or more, got {maximum}"
            )
        self.maximum = maximum
        self.running = 0

    def enter(self) -> None:
        """Count one more running call.

        Raises:
          ResourceExhausted: `maximum` calls are running already.
        """
        if self.maximum and self.running >= self.maximum:
            raise too_many_calls("the gateway", self.maximum)
        self.running += 1

    def exit(self) -> None:
        self.running -= 1


def too_many_calls(server: str, maximum: int | None) -> ResourceExhausted:
    """Build the error for a call over a server's concurrent call limit."""
    count = f"{maximum} calls" if maximum else "its maximum of calls"
    return ResourceExhausted(
        f"{server} is running {count} at once (max_concurrent_rpcs); retry "
        f"shortly, or raise max_concurrent_rpcs if the server has capacity",
        reason="TOO_MANY_CONCURRENT_CALLS",
        metadata={"limit": "max_concurrent_rpcs", "server": server},
        retry_delay=CONCURRENCY_RETRY_DELAY,
    )


def _handler_parts(handler: grpc.RpcMethodHandler) -> tuple[Callable, Callable]:
    if handler.unary_unary:
        return handler.unary_unary, grpc.unary_unary_rpc_method_handler
    if handler.unary_stream:
        return handler.unary_stream, grpc.unary_stream_rpc_method_handler
    if handler.stream_unary:
        return handler.stream_unary, grpc.stream_unary_rpc_method_handler
    return handler.stream_stream, grpc.stream_stream_rpc_method_handler


async def _abort(context: grpc.aio.ServicerContext, error: DomainError) -> None:
    await context.abort_with_status(rpc_status.to_status(error.to_status()))
    raise AssertionError("context.abort_with_status() returned")


def _guarded_handler(
    handler: grpc.RpcMethodHandler,
    method: str,
    enter: Callable[[grpc.aio.ServicerContext], None],
    leave: Callable[[], None] | None,
) -> grpc.RpcMethodHandler:
    """Wrap a handler so that `enter` runs first and `leave` after the call.

    `enter` raises a DomainError to reject the call, which then gets that
    status. `leave` runs only for calls that `enter` let through. A handler
    that yields its responses becomes one that writes them itself, so that
    `leave` runs in the call's task even when the client leaves mid-stream
    (see `gateway.stream_writes`).
    """
    behavior, factory = _handler_parts(handler)
    behavior = stream_writes.writing(behavior, method)

    async def wrapped(request_or_iterator: Any, context: grpc.aio.ServicerContext):
        try:
            enter(context)
        except DomainError as error:
            await _abort(context, error)
        try:
            return await behavior(request_or_iterator, context)
        finally:
            if leave is not None:
                leave()

    return factory(
        wrapped,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class ConcurrencyInterceptor(grpc.aio.ServerInterceptor):
    """Reject calls to the gateway's gRPC front over `max_concurrent_rpcs`.

    It goes first among the interceptors, so a rejected call costs no
    credential check.
    """

    def __init__(self, limit: ConcurrencyLimit) -> None:
        self._limit = limit

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or is_exempt(handler_call_details.method):
            return handler
        limit = self._limit
        return _guarded_handler(
            handler,
            handler_call_details.method,
            lambda _context: limit.enter(),
            limit.exit,
        )


class CappedServer(grpc.aio.Server):
    """A `grpc.aio.Server` whose handlers count against the gateway's call cap.

    Each registered handler is wrapped once, when it is registered. That
    costs a forwarded call less than `ConcurrencyInterceptor`, because
    grpc.aio then runs no interceptor per call. The cap must run before the
    credential check and the rate limit, so use this class only for a server
    without interceptors. The handlers of a generic handler, such as
    reflection's, are wrapped on each call, as the interceptor does. It
    extends `grpc.aio.Server` because grpc's reflection checks for that type.
    """

    def __init__(self, server: grpc.aio.Server, limit: ConcurrencyLimit) -> None:
        self._server = server
        self._limit = limit

    def guard(self, method: str, handler: grpc.RpcMethodHandler | None):
        """Return the handler of a method path, wrapped unless exempt."""
        if handler is None or is_exempt(method):
            return handler
        limit = self._limit
        return _guarded_handler(
            handler, method, lambda _context: limit.enter(), limit.exit
        )

    def add_registered_method_handlers(
        self, service_name: str, method_handlers: dict[str, grpc.RpcMethodHandler]
    ) -> None:
        self._server.add_registered_method_handlers(
            service_name,
            {
                name: self.guard(f"/{service_name}/{name}", handler)
                for name, handler in method_handlers.items()
            },
        )

    def add_generic_rpc_handlers(
        self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]
    ) -> None:
        self._server.add_generic_rpc_handlers(
            tuple(_CappedGenericHandler(self, each) for each in generic_rpc_handlers)
        )

    def add_insecure_port(self, address: str) -> int:
        return self._server.add_insecure_port(address)

    def add_secure_port(
        self, address: str, server_credentials: grpc.ServerCredentials
    ) -> int:
        return self._server.add_secure_port(address, server_credentials)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None) -> None:
        await self._server.stop(grace)

    async def wait_for_termination(self, timeout: float | None = None) -> bool:
        return await self._server.wait_for_termination(timeout)


class _CappedGenericHandler(grpc.GenericRpcHandler):
    def __init__(self, server: CappedServer, handler: grpc.GenericRpcHandler):
        self._server = server
        self._handler = handler

    def service(self, handler_call_details: grpc.HandlerCallDetails):
        return self._server.guard(
            handler_call_details.method, self._handler.service(handler_call_details)
        )


class RateLimitInterceptor(grpc.aio.ServerInterceptor):
    """Take a token for each call to the gateway's gRPC front, per principal.

    It goes after the authentication interceptor, so that the principal of
    the call is current when it runs.
    """

    def __init__(self, limiter: RateLimiter) -> None:
        self._limiter = limiter

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or is_exempt(handler_call_details.method):
            return handler
        limiter = self._limiter

        def take_token(context: grpc.aio.ServicerContext) -> None:
            key = rate_limit_key(auth.current_principal(), peer_host(context.peer()))
            limiter.check(key)

        return _guarded_handler(handler, handler_call_details.method, take_token, None)


def limiter_from_config(rate: float, burst: int) -> RateLimiter | None:
    """Build the gateway's rate limiter, or return None when `rate` is 0.

    Raises:
      ValueError: rate is negative, or burst is below 1 while rate is set.
    """
    if rate == 0:
        return None
    return RateLimiter(rate, burst)
