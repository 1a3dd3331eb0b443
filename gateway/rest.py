"""The REST/JSON front: a Starlette app that transcodes HTTP to gRPC calls.

Routes come from the `google.api.http` annotations of the public services
(see `gateway.http_rules`). A request is matched against the route table,
assembled into its request message (`gateway.transcode`), serialized and sent
to the backend through the same multicallables as the gRPC front. Errors use
the `google.rpc.Status` JSON shape:

    {"error": {"code": 404, "message": "...", "status": "NOT_FOUND",
               "details": [{"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            ...}]}}

A `grpc-timeout` header sets the deadline of the call, as in gRPC: a
positive integer of 1 to 8 digits and a unit. Zero and malformed values get
400, and so does a header sent more than once, because it takes one value.
The deadline runs from when the gateway receives the request, so a
deadline that has passed before the gateway would call the backend (such
as `1n`) gets 504 DEADLINE_EXCEEDED without a backend call, and the backend
call gets the time that is left. Values above `MAX_TIMEOUT_SECONDS` (one
hour) are shortened to it, because the header syntax allows up to 99999999
hours, far past what a gRPC deadline can hold. Without the header a unary
call gets the `deadline_seconds` setting, and a response stream gets no
deadline, as on the gRPC front: a tail runs until the client closes the
connection, which cancels the backend call.

Server-streaming methods respond with newline-delimited JSON: one
`{"result": ...}` line per message and, if the stream fails after it started,
one final `{"error": ...}` line. A stream that reaches the deadline of its
grpc-timeout header ends with an error line of reason
`STREAM_DEADLINE_REACHED`. Client-streaming methods have no routes in
the protos; a route to one would return 501, as do the routes of methods that
the gateway does not forward.

`POST /v1/logs` is OTLP's log export over HTTP, which no annotation
describes: it takes a binary or JSON ExportLogsServiceRequest, forwards it
to the log router's OTLP Export, and replies in the request's encoding,
with a bare google.rpc.Status on errors (see `gateway.otlp_http`).

`GET /healthz` is the HTTP health probe: 200 `{"status": "SERVING"}` while
the gateway's gRPC health for the whole server is SERVING, else 503 with
that status.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import math
import re
import time
import uuid
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote, quote_from_bytes

import grpc
from google.protobuf.message import Message
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_health.v1 import health_pb2
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Mount, request_response

from gateway import (
    idempotency,
    log_batch,
    otlp_http,
    preconditions,
    stream_auth,
    transcode,
)
from gateway.auth import GatewayAuth, bearer_challenge
from gateway.health import OVERALL, HealthServicer
from gateway.http_rules import (
    HttpRoute,
    MethodNotAllowed,
    RouteNotFound,
    RouteTable,
)
from gateway.limits import (
    ConcurrencyLimit,
    RateLimiter,
    is_exempt,
    rate_limit_key,
    rate_limited,
)
from gateway.proxy import (
    BACKEND_REPLY_TOO_LARGE,
    STATUS_DETAILS_KEY,
    BackendPool,
    forwardable,
)
from log_service.model import Limits
from splitlog_runtime import auth
from splitlog_runtime.channels import answer_before
from splitlog_runtime.errors import (
    DomainError,
    InvalidArgument,
    internal_status,
    status_reason,
)
from splitlog_runtime.limits import REQUEST_TOO_LARGE, message_too_large

_LOGGER = logging.getLogger(__name__)

#: Path of the REST front's health probe (`GET /healthz`), which reports the
#: gateway's overall gRPC health: SERVING only while every backend is.
HEALTH_PATH = "/healthz"
# The gRPC method whose auth and limits `GET /healthz` follows.
_HEALTH_CHECK_METHOD = f"/{auth.HEALTH_SERVICE}/Check"

#: Request bodies of at least this many bytes are decoded on a worker thread,
#: so that one large JSON body does not hold up every other call of the
#: event loop. Smaller ones are decoded in place, which is cheaper.
OFF_LOOP_BODY_BYTES = 64 * 1024


async def run_off_loop_if_large(size: int, function, *args):
    """Run `function(*args)` on a worker thread when `size` is large."""
    if size < OFF_LOOP_BODY_BYTES:
        return function(*args)
    return await asyncio.to_thread(function, *args)


# HTTP status of each canonical code, as listed in google/rpc/code.proto.
HTTP_STATUS: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}

# Seconds per unit of a gRPC timeout value, e.g. "500m" or "2S".
_TIMEOUT_UNITS = {
    "H": 3600.0,
    "M": 60.0,
    "S": 1.0,
    "m": 1e-3,
    "u": 1e-6,
    "n": 1e-9,
}
_TIMEOUT = re.compile(r"(0*[1-9][0-9]*)([HMSmun])\Z")
_TIMEOUT_HEADER = "grpc-timeout"
# Maximum backend call deadline in seconds that a grpc-timeout header can set.
MAX_TIMEOUT_SECONDS = 3600.0

# HTTP headers that become gRPC metadata of the call, besides the ones with
# the `grpc-metadata-` prefix, which become metadata without the prefix. The
# gateway authenticates the call on this metadata, so an `Authorization` and a
# `Grpc-Metadata-Authorization` header count as two credentials. Whatever
# `forwardable` keeps of it goes on to the backend.
_METADATA_HEADERS = frozenset({"authorization", "x-request-id", "traceparent"})
_METADATA_PREFIX = "grpc-metadata-"
# Characters that stay as they are in a URL path (RFC 3986 pchar and "/").
_PATH_SAFE = "/:@!$&'()*+,;=-._~"

JSON_MEDIA_TYPE = "application/json"
NDJSON_MEDIA_TYPE = "application/x-ndjson"


class _Endpoint:
    """The message classes and the multicallable of one route, prepared at startup.

    Attributes:
      unsupported: why the route cannot be served, or None when it can.
      resumable: whether both request and response have a `resume_token`
        field, as TailLogEntries does.
      takes_request_id: whether the request has a `request_id` field, as the
        creates do. The gateway then fills in a missing key and ends the
        backend call a margin before the client's deadline.
    """

    __slots__ = (
        "request_class",
        "response_class",
        "multicallable",
        "unsupported",
        "etag_path",
        "sends_etag",
        "resumable",
        "takes_request_id",
    )

    def __init__(self, route: HttpRoute, pool: BackendPool) -> None:
        self.request_class = transcode.message_class(route.method.input_type)
        self.response_class = transcode.message_class(route.method.output_type)
        self.multicallable = pool.callables.get(route.full_method)
        self.etag_path = preconditions.etag_path(route)
        self.sends_etag = preconditions.sends_etag(route)
        self.resumable = all(
            "resume_token" in message.fields_by_name
            for message in (route.method.input_type, route.method.output_type)
        )
        self.takes_request_id = idempotency.request_id_number(route.method) is not None
        self.unsupported = None
        if route.method.client_streaming:
            self.unsupported = (
                f"{route.method.full_name} reads a stream of requests, which has "
                "no REST mapping; call it over gRPC"
            )
        elif self.multicallable is None:
            self.unsupported = f"{route.method.full_name} is not implemented yet"


def _json_response(content: Any, status_code: int = 200, headers=None) -> Response:
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    # An error message may quote a client's string with a lone surrogate,
    # which UTF-8 cannot encode. Inside a JSON string, backslashreplace
    # writes it as a JSON escape such as \ud800, so the body stays valid JSON.
    body = text.encode("utf-8", "backslashreplace")
    return Response(body, status_code, headers, media_type=JSON_MEDIA_TYPE)


def status_json(status: status_pb2.Status) -> dict[str, Any]:
    """Render a google.rpc.Status as the JSON error body, with its HTTP code."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    error: dict[str, Any] = {
        "code": _http_status(status),
        "message": status.message,
        "status": code.name,
    }
    details = [transcode.any_json(detail) for detail in status.details]
    if details:
        error["details"] = details
    return {"error": error}


def _http_status(status: status_pb2.Status) -> int:
    """Return the HTTP status of an error reply.

    A backend reply that the gateway could not read gets 502, a bad gateway.
    A request too large gets 413 rather than the 429 of RESOURCE_EXHAUSTED,
    because HTTP clients retry 429, and the same request would fail again.
    """
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        if not detail.Unpack(info):
            continue
        if info.reason == BACKEND_REPLY_TOO_LARGE:
            return 502
        if (
            code == grpc.StatusCode.RESOURCE_EXHAUSTED
            and info.reason == REQUEST_TOO_LARGE
        ):
            return 413
    return HTTP_STATUS[code]


def _error_response(status: status_pb2.Status, headers=None) -> Response:
    body = status_json(status)
    headers = {**bearer_challenge(status), **(headers or {})}
    return _json_response(body, body["error"]["code"], headers)


def _gateway_error(
    code: grpc.StatusCode, reason: str, message: str, **metadata: str
) -> status_pb2.Status:
    error = DomainError(message, reason=reason, metadata=metadata)
    status = error.to_status()
    status.code = code.value[0]
    return status


def _status_of(
    error: grpc.aio.AioRpcError,
    path: str,
    pool: BackendPool,
    filled_request_id: str | None = None,
):
    translated = pool.translate_error(error, path, filled_request_id)
    for key, value in translated.trailing_metadata:
        if key == STATUS_DETAILS_KEY:
            status = status_pb2.Status.FromString(value)
            if status.code == translated.code.value[0]:
                return status
            # The details disagree with the real status; the status wins.
            break
    return status_pb2.Status(code=translated.code.value[0], message=translated.details)


def parse_timeout(text: str) -> float:
    """Parse a gRPC timeout header value such as `500m` or `2S` into seconds.

    Values above `MAX_TIMEOUT_SECONDS` return `MAX_TIMEOUT_SECONDS`.

    Raises:
      InvalidArgument: the value is not a positive integer of 1 to 8 digits
        followed by a unit.
    """
    match = _TIMEOUT.match(text.strip())
    if not match or len(match.group(1)) > 8:
        raise InvalidArgument(
            f"invalid grpc-timeout header {text!r}; use a positive integer of 1 "
            "to 8 digits and a unit H, M, S, m, u or n, e.g. 500m for half a "
            "second",
            reason="INVALID_TIMEOUT",
            metadata={"header": "grpc-timeout"},
        )
    seconds = int(match.group(1)) * _TIMEOUT_UNITS[match.group(2)]
    return min(seconds, MAX_TIMEOUT_SECONDS)


def _timeout_header(request: Request) -> str | None:
    """Return the request's grpc-timeout header, or None when it has none.

    Raises:
      InvalidArgument: the request sends the header more than once. HTTP
        allows a repeated header only when its value is a comma-separated
        list, and grpc-timeout has one value, so the gateway does not pick
        one of several deadlines.
    """
    values = request.headers.getlist(_TIMEOUT_HEADER)
    if len(values) > 1:
        quoted = ", ".join(repr(value) for value in values)
        raise InvalidArgument(
            f"the grpc-timeout header is sent {len(values)} times ({quoted}); "
            "send it once, with one value such as 500m for half a second",
            reason="INVALID_TIMEOUT",
            metadata={"header": _TIMEOUT_HEADER, "values": ", ".join(values)},
        )
    return values[0] if values else None


def _time_left(timeout: float, received: float) -> float:
    """Return the seconds left of a timeout that started at `received`."""
    return timeout - (time.monotonic() - received)


def _header_time_left(request: Request, received: float | None) -> float | None:
    """Return the seconds left of a valid grpc-timeout header, or None."""
    if received is None:
        return None
    try:
        header = _timeout_header(request)
        if header is None:
            return None
        return _time_left(parse_timeout(header), received)
    except DomainError:
        return None


def _expired_before_call(header: str, full_method: str) -> status_pb2.Status:
    method = full_method.lstrip("/").replace("/", ".")
    return _gateway_error(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "DEADLINE_EXPIRED_BEFORE_CALL",
        f"the deadline of grpc-timeout {header.strip()} expired before the "
        f"gateway called {method}, so the call was not made; retry with a "
        "longer grpc-timeout",
        header="grpc-timeout",
        method=method,
    )


def _header_metadata(request: Request) -> list[tuple[str, str]]:
    """Return the gRPC metadata that the request's headers carry, before filtering."""
    metadata = []
    for key, value in request.headers.items():
        if key.startswith(_METADATA_PREFIX):
            metadata.append((key[len(_METADATA_PREFIX) :], value))
        elif key in _METADATA_HEADERS:
            metadata.append((key, value))
    return metadata


def _metadata_from_headers(request: Request) -> tuple[tuple[str, str], ...]:
    """Return the metadata that the backend call carries."""
    client_host = request.client.host if request.client else ""
    return forwardable(_header_metadata(request), client_host)


class RestFront:
    """The Starlette app that serves the HTTP routes of the public services.

    Args:
      routes: the HTTP routes of every public method.
      pool: the backends; calls go through its multicallables.
      default_timeout: seconds allowed per call when the request has no
        `grpc-timeout` header.
      max_body_bytes: largest request body accepted; larger ones get 413.
      gateway_auth: authenticates every call when `auth_required` is on;
        None accepts every call as before.
      rate_limiter: the token buckets per principal, shared with the gRPC
        front; None means no rate limit.
      concurrency: the count of running calls, shared with the gRPC front;
        None means no limit.
      log_limits: the limits of log_service, whose batch size and stream
        column lengths are checked on a `POST /logs/batch` body before it is
        converted; None leaves these checks to log_service.
      health: the gateway's gRPC health servicer, whose overall status
        `GET /healthz` reports; None makes `/healthz` a missing route.
    """

    def __init__(
        self,
        routes: Iterable[HttpRoute],
        pool: BackendPool,
        default_timeout: float,
        max_body_bytes: int,
        gateway_auth: GatewayAuth | None = None,
        *,
        rate_limiter: RateLimiter | None = None,
        concurrency: ConcurrencyLimit | None = None,
        log_limits: Limits | None = None,
        health: HealthServicer | None = None,
    ) -> None:
        routes = list(routes)
        self._health = health
        self._check_log_batch = None
        if log_limits is not None:
            self._check_log_batch = functools.partial(
                log_batch.check_request_shape, limits=log_limits
            )
        self._auth = gateway_auth
        self._rate_limiter = rate_limiter
        self._concurrency = concurrency
        self._max_body_bytes = max_body_bytes
        self.table = RouteTable(routes)
        self._pool = pool
        self._default_timeout = default_timeout
        self._endpoints = {id(route): _Endpoint(route, pool) for route in routes}
        self.app = Starlette(
            # Every HTTP method reaches the dispatcher, so that unknown
            # methods get the same JSON errors as unknown paths.
            routes=[Mount("", app=request_response(self._dispatch))],
        )

    async def _dispatch(self, request: Request) -> Response:
        # NOTE: A streaming response counts against max_concurrent_rpcs only
        # until its first message is ready, not while the rest is sent.
        path = _request_path(request)
        if path == HEALTH_PATH and self._health is not None:
            # Health probes skip the concurrency cap, as gRPC health calls do.
            return await self._serve_health(request)
        otlp = path == otlp_http.LOGS_PATH
        if self._concurrency is not None:
            try:
                self._concurrency.enter()
            except DomainError as exc:
                if otlp:
                    return _otlp_error(request, exc.to_status(), _retry_after(exc))
                return _error_response(exc.to_status(), _retry_after(exc))
        try:
            if otlp:
                return await self._serve_otlp(request)
            return await self._serve(request)
        except Exception as exc:
            status = _internal_status(request, exc)
            if otlp:
                return _otlp_error(request, status)
            return _error_response(status)
        finally:
            if self._concurrency is not None:
                self._concurrency.exit()

    async def _serve_health(self, request: Request) -> Response:
        """Serve `GET /healthz`: 200 when the gateway is SERVING, else 503.

        The body names the overall status of the gateway's gRPC health
        service (`{"status": "SERVING"}`). Authentication follows that of
        `grpc.health.v1.Health/Check`, so it is open unless
        `auth_open_health` is off.
        """
        if request.method not in ("GET", "HEAD"):
            return _method_not_allowed(request.method, HEALTH_PATH, ["GET", "HEAD"])
        try:
            await self._admit(_HEALTH_CHECK_METHOD, request)
        except DomainError as exc:
            return _error_response(exc.to_status(), _retry_after(exc))
        status = self._health.status(OVERALL)
        if status is None:
            status = health_pb2.HealthCheckResponse.SERVICE_UNKNOWN
        name = health_pb2.HealthCheckResponse.ServingStatus.Name(status)
        http_status = 200 if status == health_pb2.HealthCheckResponse.SERVING else 503
        return _json_response({"status": name}, http_status)

    async def _admit(
        self, full_method: str, request: Request, received: float | None = None
    ) -> auth.Principal | None:
        """Authenticate a call and take its rate limit token.

        The credential check keeps to the deadline of the request's
        `grpc-timeout` header, counted from `received`. An invalid header
        is left for the caller to reject.

        Returns:
          the principal of the call, or None when `auth_required` is off.

        Raises:
          DomainError: the credential is missing, invalid or lacks the
            method's scope, or the caller is over the rate limit.
        """
        principal = None
        client_host = request.client.host if request.client else ""
        if self._auth is not None:
            principal = await self._auth.authenticate(
                full_method,
                _header_metadata(request),
                client_host,
                _header_time_left(request, received),
            )
        if self._rate_limiter is not None and not is_exempt(full_method):
            key = rate_limit_key(principal, client_host)
            delay = self._rate_limiter.acquire(key)
            if delay > 0:
                limiter = self._rate_limiter
                raise rate_limited(key, delay, limiter.rate, limiter.burst)
        return principal

    async def _serve(self, request: Request) -> Response:
        received = time.monotonic()
        path = _request_path(request)
        http_method = "GET" if request.method == "HEAD" else request.method
        try:
            route, path_values = self.table.match(http_method, path)
        except RouteNotFound:
            return _route_not_found(
                request.method, path, self._similar_route(http_method, path)
            )
        except MethodNotAllowed as exc:
            return _method_not_allowed(request.method, path, exc.allowed)
        except DomainError as exc:
            # A path variable that is not valid UTF-8.
            return _error_response(exc.to_status())
        endpoint = self._endpoints[id(route)]
        if endpoint.unsupported is not None:
            status = _gateway_error(
                grpc.StatusCode.UNIMPLEMENTED,
                "NOT_IMPLEMENTED",
                endpoint.unsupported,
                method=route.method.full_name,
            )
            return _error_response(status)

        try:
            principal = await self._admit(route.full_method, request, received)
        except DomainError as exc:
            return _error_response(exc.to_status(), _retry_after(exc))

        content_encoding = request.headers.get("content-encoding", "")
        if not _is_identity_encoding(content_encoding):
            return _unsupported_content_encoding(
                content_encoding, request.method, route.template.text
            )
        body = await self._read_body(request)
        if body is None:
            return _body_too_large(self._max_body_bytes)
        content_type = request.headers.get("content-type", "")
        if body and not _is_json_content_type(content_type):
            return _unsupported_media_type(content_type)
        try:
            header = _timeout_header(request)
            requested_timeout = None if header is None else parse_timeout(header)
            message, split = await run_off_loop_if_large(
                len(body),
                self._build_request,
                route,
                endpoint,
                path_values,
                request.scope["query_string"],
                body,
            )
            preconditions.apply_if_match(
                message,
                endpoint.etag_path,
                _if_match_header(request),
                route.http_method,
            )
        except DomainError as exc:
            return _error_response(exc.to_status())
        if split is not None and split.rejections and not split.kept:
            # log_service rejects a batch without entries as a whole.
            response = split.empty_response()
            return _json_response(transcode.response_json(route, response))

        with auth.acting_as(principal):
            metadata = _metadata_from_headers(request)
        filled_key = None
        if endpoint.takes_request_id and idempotency.fill_request_id(
            message, self._max_body_bytes
        ):
            metadata = (*metadata, *idempotency.FILLED)
            filled_key = message.request_id
        payload = message.SerializeToString()
        timeout = None
        if requested_timeout is not None:
            timeout = _time_left(requested_timeout, received)
            if timeout <= 0:
                return _error_response(_expired_before_call(header, route.full_method))
        unresponsive = self._pool.unresponsive_error(route.full_method)
        if unresponsive is not None:
            return _error_response(unresponsive.to_status(), _retry_after(unresponsive))
        if route.method.server_streaming:
            return await self._stream(
                request, route, endpoint, payload, metadata, timeout, requested_timeout
            )
        if timeout is None:
            timeout = self._default_timeout
        elif endpoint.takes_request_id:
            # As over gRPC: a create's backend call ends a margin before the
            # client's deadline, whether the client sent the request_id or
            # the gateway filled it in. The 504, whose message names that key
            # for a retry, then arrives in time.
            timeout = answer_before(timeout)
        if self._auth is not None and self._auth.watches(route.full_method):
            return await self._revoking_call(
                route, endpoint, message, payload, timeout, metadata, filled_key
            )
        try:
            reply = await endpoint.multicallable(
                payload, timeout=timeout, metadata=metadata
            )
        except grpc.aio.AioRpcError as error:
            return self._backend_error(route, error, filled_key)
        self._pool.call_succeeded(route.full_method)
        response = endpoint.response_class.FromString(reply)
        if split is not None:
            response = split.merge(response)
        return _json_response(
            transcode.response_json(route, response),
            200,
            _etag_header(endpoint, response),
        )

    def _build_request(
        self,
        route: HttpRoute,
        endpoint: _Endpoint,
        path_values: dict[str, str],
        query_string: bytes,
        body: bytes,
    ) -> tuple[Message, log_batch.SplitBatch | None]:
        """Build a route's request message from the path, query and body.

        For `POST /logs/batch` it also returns the split of the entries that
        the gateway itself rejects.

        Raises:
          DomainError: the request is invalid.
        """
        split = None
        check_body = None
        if route.full_method == log_batch.WRITE_LOG_ENTRIES:
            check_body = self._check_log_batch
            split = log_batch.split_batch(body, check_body)
            body = body if split is None else split.body
        # Starlette's query_params replaces invalid UTF-8 with U+FFFD, so the
        # raw bytes are decoded here, where invalid UTF-8 is rejected.
        query = transcode.parse_query_string(query_string, route.method.input_type)
        message = transcode.build_request(
            route, endpoint.request_class, path_values, query, body, check_body
        )
        if split is not None:
            split.strip(message)
        return message, split

    async def _revoking_call(
        self,
        route: HttpRoute,
        endpoint: _Endpoint,
        message: Message,
        payload: bytes,
        timeout: float,
        metadata,
        filled_request_id: str | None = None,
    ) -> Response:
        """Make a unary call that may revoke credentials, and tell the cache.

        The gateway drops the affected credentials before the client hears
        that the call ended.
        """
        ok, reason = False, ""
        try:
            reply = await endpoint.multicallable(
                payload, timeout=timeout, metadata=metadata
            )
            ok = True
        except grpc.aio.AioRpcError as error:
            status = _status_of(error, route.full_method, self._pool, filled_request_id)
            reason = status_reason(status)
            return self._status_error(route, error, status)
        finally:
            self._auth.call_ended(route.full_method, message, ok, reason)
        response = endpoint.response_class.FromString(reply)
        return _json_response(
            transcode.response_json(route, response),
            200,
            _etag_header(endpoint, response),
        )

    async def _read_body(self, request: Request) -> bytes | None:
        """Read the body, or return None once it exceeds the size limit."""
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self._max_body_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)

    async def _serve_otlp(self, request: Request) -> Response:
        """Serve `POST /v1/logs`, OTLP's log export over HTTP (`gateway.otlp_http`)."""
        received = time.monotonic()
        if request.method != "POST":
            status = _gateway_error(
                grpc.StatusCode.INVALID_ARGUMENT,
                "METHOD_NOT_ALLOWED",
                f"{request.method} is not allowed on {otlp_http.LOGS_PATH}; "
                "OTLP exporters send POST. To query stored log entries, use "
                "GET /logs",
                path=otlp_http.LOGS_PATH,
                method=request.method,
            )
            return _otlp_error(request, status, {"Allow": "POST"}, 405)
        try:
            principal = await self._admit(otlp_http.EXPORT_METHOD, request, received)
        except DomainError as exc:
            return _otlp_error(request, exc.to_status(), _retry_after(exc))
        content_type = request.headers.get("content-type", "")
        encoding = otlp_http.request_encoding(content_type)
        try:
            if encoding is None:
                raise otlp_http.unsupported_media_type(content_type)
            body = await self._read_body(request)
            if body is None:
                raise otlp_http.body_too_large(self._max_body_bytes, inflated=False)
            header = _timeout_header(request)
            timeout = self._default_timeout if header is None else parse_timeout(header)
            payload = await run_off_loop_if_large(
                len(body),
                self._otlp_payload,
                body,
                request.headers.get("content-encoding", ""),
                encoding,
            )
        except otlp_http.HttpError as exc:
            return _otlp_error(request, exc.status, exc.headers, exc.http_status)
        except DomainError as exc:
            return _otlp_error(request, exc.to_status(), _retry_after(exc))

        with auth.acting_as(principal):
            metadata = _metadata_from_headers(request)
        if header is not None:
            timeout = _time_left(timeout, received)
            if timeout <= 0:
                status = _expired_before_call(header, otlp_http.EXPORT_METHOD)
                return _otlp_error(request, status)
        unresponsive = self._pool.unresponsive_error(otlp_http.EXPORT_METHOD)
        if unresponsive is not None:
            return _otlp_error(
                request, unresponsive.to_status(), _retry_after(unresponsive)
            )
        multicallable = self._pool.callables[otlp_http.EXPORT_METHOD]
        try:
            reply = await multicallable(payload, timeout=timeout, metadata=metadata)
        except grpc.aio.AioRpcError as error:
            status = _status_of(error, otlp_http.EXPORT_METHOD, self._pool)
            if status.code in (code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.DATA_LOSS):
                _LOGGER.warning(
                    "POST %s failed: %s %s",
                    otlp_http.LOGS_PATH,
                    error.code().name,
                    status.message,
                )
            return _otlp_error(request, status)
        return Response(
            otlp_http.encode_response(reply, encoding), media_type=encoding.value
        )

    def _otlp_payload(
        self, body: bytes, content_encoding: str, encoding: otlp_http.Encoding
    ) -> bytes:
        """Return the ExportLogsServiceRequest bytes of an OTLP/HTTP body.

        Raises:
          otlp_http.HttpError: the body cannot be inflated or parsed.
          DomainError: the request is larger than the message limit.
        """
        body = otlp_http.decode_content(body, content_encoding, self._max_body_bytes)
        if encoding is otlp_http.Encoding.PROTOBUF:
            otlp_http.check_protobuf(body)
            payload = body
        else:
            payload = otlp_http.json_to_request(body).SerializeToString()
        if len(payload) > self._max_body_bytes:
            raise message_too_large(len(payload), self._max_body_bytes)
        return payload

    def _similar_route(self, http_method: str, path: str) -> str | None:
        """Return the path with `/v1` removed or added if a route matches that.

        Some routes start with `/v1` and others do not (`/logs/stats` but
        `/v1/clusterStatus`), so a client may guess the prefix wrong.
        """
        if path.startswith("/v1/"):
            candidate = path.removeprefix("/v1")
        else:
            candidate = "/v1" + path
        try:
            self.table.match(http_method, candidate)
        except (RouteNotFound, MethodNotAllowed, DomainError):
            return None
        return candidate

    def _backend_error(
        self,
        route: HttpRoute,
        error: grpc.aio.AioRpcError,
        filled_request_id: str | None = None,
    ):
        status = _status_of(error, route.full_method, self._pool, filled_request_id)
        return self._status_error(route, error, status)

    @staticmethod
    def _status_error(
        route: HttpRoute, error: grpc.aio.AioRpcError, status: status_pb2.Status
    ) -> Response:
        # Unreachable backends are logged by the pool, so only failures inside
        # a backend are logged here.
        if status.code in (code_pb2.INTERNAL, code_pb2.UNKNOWN, code_pb2.DATA_LOSS):
            _LOGGER.warning(
                "%s %s failed: %s %s",
                route.http_method,
                route.full_method,
                error.code().name,
                status.message,
            )
        return _error_response(status, _status_retry_after(status))

    async def _stream(
        self,
        request: Request,
        route: HttpRoute,
        endpoint: _Endpoint,
        payload: bytes,
        metadata,
        timeout: float | None,
        requested_timeout: float | None,
    ) -> Response:
        """Forward a response stream as NDJSON until it ends or the client leaves.

        `timeout` is the time left of the grpc-timeout header's
        `requested_timeout`. Without the header the backend call has no
        deadline, as on the gRPC front, so a tail runs until the client
        closes the connection.
        """
        watch = None
        if self._auth is not None:
            # The credential was accepted a moment ago, so unless
            # auth_cache_seconds is 0 the cache serves this check. It starts
            # the checks during the stream.
            try:
                _, watch = await self._auth.authenticate_stream(
                    route.full_method,
                    _header_metadata(request),
                    request.client.host if request.client else "",
                )
            except DomainError as exc:
                return _error_response(exc.to_status(), _retry_after(exc))
        call = endpoint.multicallable(payload, timeout=timeout, metadata=metadata)
        iterator = call.__aiter__()
        try:
            first = await _first_message(request, iterator)
        except grpc.aio.AioRpcError as error:
            _cancel(watch)
            return self._backend_error(route, error)
        except _ClientLeft:
            _cancel(watch)
            call.cancel()
            # Nobody reads this reply. 499 is the status that proxies such as
            # nginx log for a client that closed the connection.
            return Response(status_code=499)
        rest = iterator
        if watch is not None:
            rest = stream_auth.until_failed(iterator, watch)
            call.add_done_callback(lambda _call: watch.cancel())

        async def lines() -> AsyncIterator[bytes]:
            message = first
            try:
                while message is not None:
                    yield _ndjson_line(
                        {"result": self._render(route, endpoint, message)}
                    )
                    message = await anext(rest, None)
            except grpc.aio.AioRpcError as error:
                if requested_timeout is not None and _own_deadline(error):
                    status = _stream_deadline_status(
                        requested_timeout, endpoint.resumable
                    )
                else:
                    status = _status_of(error, route.full_method, self._pool)
                yield _ndjson_line(status_json(status))
            except stream_auth.CredentialRejected as rejected:
                yield _ndjson_line(status_json(rejected.error.to_status()))
            finally:
                _cancel(watch)
                call.cancel()

        # Starlette (1.10, under uvicorn 0.55, which reports ASGI spec 2.3)
        # cancels `lines()` when the client disconnects, and its `finally`
        # then cancels the backend call.
        return StreamingResponse(lines(), media_type=NDJSON_MEDIA_TYPE)

    @staticmethod
    def _render(route: HttpRoute, endpoint: _Endpoint, reply: bytes) -> Any:
        response: Message = endpoint.response_class.FromString(reply)
        return transcode.response_json(route, response)


def _etag_header(endpoint: _Endpoint, response: Message) -> dict[str, str] | None:
    """Return the ETag header of a unary response, or None when it gets none."""
    if not endpoint.sends_etag:
        return None
    etag = preconditions.response_etag(response)
    return {"ETag": etag} if etag else None


def _if_match_header(request: Request) -> str | None:
    """Return the If-Match header, with repeated headers joined by commas."""
    values = request.headers.getlist(preconditions.IF_MATCH)
    return ", ".join(values) if values else None


def _request_path(request: Request) -> str:
    """Return the request path still percent-encoded, as the client sent it."""
    raw_path = request.scope.get("raw_path")
    if not raw_path:
        return quote(request.url.path, safe=_PATH_SAFE)
    # Bytes outside ASCII are invalid in a URL path, so percent-encode them.
    # Existing escapes stay as they are.
    return quote_from_bytes(raw_path, safe=_PATH_SAFE + "%")


def _is_json_content_type(header: str) -> bool:
    """Return whether a body sent with this Content-Type is read as JSON.

    JSON and any `+json` type are, and so are a missing type and the form
    type that `curl -d` sends by default, so quick manual calls keep working.
    """
    media_type = header.split(";", 1)[0].strip().lower()
    return media_type in (
        "",
        "application/json",
        "application/x-www-form-urlencoded",
    ) or media_type.endswith("+json")


def _error_with_http_status(
    status: status_pb2.Status, http_status: int, headers=None
) -> Response:
    """Build the error reply of an HTTP-only error (405, 413, 415).

    No canonical code maps to these statuses, so the body's `status` names
    the code that fits the cause. A method or media type that the route never
    accepts gets INVALID_ARGUMENT. A body over max_message_bytes gets
    RESOURCE_EXHAUSTED, the code gRPC returns for an oversized message. The body's
    `code` is the HTTP status sent, as in every other error reply.
    """
    body = status_json(status)
    body["error"]["code"] = http_status
    return _json_response(body, http_status, headers)


def _unsupported_media_type(header: str) -> Response:
    media_type = header.split(";", 1)[0].strip()
    status = _gateway_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_MEDIA_TYPE",
        f"the body has Content-Type {media_type!r}; send the request as JSON "
        "with Content-Type application/json",
        content_type=media_type,
    )
    return _error_with_http_status(status, 415)


def _is_identity_encoding(header: str) -> bool:
    """Return whether a Content-Encoding header leaves the body as it is."""
    return all(
        coding.strip().lower() in ("", "identity") for coding in header.split(",")
    )


def _unsupported_content_encoding(header: str, http_method: str, path: str):
    """Build the 415 reply to a compressed body on a route that does not inflate.

    Only `POST /v1/logs` inflates gzip, as OTLP/HTTP exporters send it.
    """
    status = _gateway_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "UNSUPPORTED_CONTENT_ENCODING",
        f"Content-Encoding {header.strip()!r} is not supported on {http_method} "
        f"{path}; only POST {otlp_http.LOGS_PATH} accepts gzip, so send this "
        "body uncompressed, without Content-Encoding",
        content_encoding=header.strip(),
    )
    # RFC 9110 (section 12.5.3) lets a 415 list the codings that are accepted.
    return _error_with_http_status(status, 415, {"Accept-Encoding": "identity"})


def _retry_after(error: DomainError) -> dict[str, str]:
    """Return a Retry-After header in whole seconds, rounded up, for an error."""
    if error.retry_delay is None:
        return {}
    return {"Retry-After": str(max(1, math.ceil(error.retry_delay)))}


def _status_retry_after(status: status_pb2.Status) -> dict[str, str]:
    """Return a Retry-After header for a backend status with a RetryInfo."""
    for detail in status.details:
        info = error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            delay = info.retry_delay.ToTimedelta().total_seconds()
            return {"Retry-After": str(max(1, math.ceil(delay)))}
    return {}


def _body_too_large(limit: int) -> Response:
    status = _gateway_error(
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        REQUEST_TOO_LARGE,
        f"the request body exceeds {limit} bytes (max_message_bytes); send a "
        "smaller body, or raise max_message_bytes",
        limit=str(limit),
        setting="max_message_bytes",
    )
    return _error_with_http_status(status, 413)


def _route_not_found(http_method: str, path: str, similar: str | None) -> Response:
    if similar is None:
        fix = (
            "the routes come from the google.api.http annotations of the "
            "public services"
        )
    else:
        fix = f"did you mean {http_method} {similar}?"
    status = _gateway_error(
        grpc.StatusCode.NOT_FOUND,
        "ROUTE_NOT_FOUND",
        f"no REST route matches {http_method} {path}; {fix}",
        path=path,
    )
    return _error_response(status)


def _method_not_allowed(http_method: str, path: str, allowed: list[str]) -> Response:
    status = _gateway_error(
        grpc.StatusCode.INVALID_ARGUMENT,
        "METHOD_NOT_ALLOWED",
        f"{http_method} is not allowed on {path}; use {' or '.join(allowed)}",
        path=path,
        method=http_method,
    )
    return _error_with_http_status(status, 405, {"Allow": ", ".join(allowed)})


def _internal_status(request: Request, exc: Exception) -> status_pb2.Status:
    incident = uuid.uuid4().hex[:12]
    _LOGGER.error(
        "unexpected error serving %s %s (incident %s)",
        request.method,
        request.url.path,
        incident,
        exc_info=exc,
    )
    return internal_status(f"internal error (incident {incident}); see the gateway log")


def _otlp_error(
    request: Request,
    status: status_pb2.Status,
    headers: dict[str, str] | None = None,
    http_status: int | None = None,
) -> Response:
    """Reply to `POST /v1/logs` with a google.rpc.Status in the request's encoding.

    A request whose Content-Type is neither OTLP encoding gets JSON.
    """
    encoding = otlp_http.request_encoding(request.headers.get("content-type", ""))
    encoding = encoding or otlp_http.Encoding.JSON
    headers = {
        **bearer_challenge(status),
        **_status_retry_after(status),
        **(headers or {}),
    }
    http_status = http_status or _http_status(status)
    _LOGGER.debug(
        "POST %s from %s failed with %d: %s",
        otlp_http.LOGS_PATH,
        request.client.host if request.client else "unknown client",
        http_status,
        status.message,
    )
    return Response(
        otlp_http.encode_status(status, encoding),
        http_status,
        headers,
        media_type=encoding.value,
    )


class _ClientLeft(Exception):
    """The HTTP client disconnected before the response started."""


async def _first_message(request: Request, iterator: AsyncIterator[bytes]):
    """Return a stream's first message, or None when the stream is empty.

    A backend may take long to send it, so the wait also ends when the
    client disconnects, and the caller cancels the backend call.

    Raises:
      grpc.aio.AioRpcError: the backend call failed.
      _ClientLeft: the client disconnected first.
    """
    first = asyncio.ensure_future(anext(iterator, None))
    left = asyncio.ensure_future(_wait_disconnect(request))
    try:
        await asyncio.wait({first, left}, return_when=asyncio.FIRST_COMPLETED)
    except asyncio.CancelledError:
        first.cancel()
        raise
    finally:
        left.cancel()
    if first.done():
        return first.result()
    first.cancel()
    raise _ClientLeft()


async def _wait_disconnect(request: Request) -> None:
    # The body was read in full already, so the next ASGI message is the
    # disconnect.
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _cancel(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()


def _own_deadline(error: grpc.aio.AioRpcError) -> bool:
    """Return whether a call ended at its own deadline, not at a backend's error."""
    if error.code() != grpc.StatusCode.DEADLINE_EXCEEDED:
        return False
    trailing = error.trailing_metadata() or ()
    return not any(key == STATUS_DETAILS_KEY for key, _ in trailing)


def _stream_deadline_status(timeout: float, resumable: bool) -> status_pb2.Status:
    """Build the error line of a stream that reached its grpc-timeout deadline.

    `resumable` is whether the stream's messages carry a resume token. A new
    request without it starts at the newest entry and misses those written
    in between, so the message asks the client to send it.
    """
    if resumable:
        advice = (
            "to continue without missing an entry, send the request again with "
            "its resumeToken field set to the resumeToken of the last result "
            "line"
        )
    else:
        advice = "send the request again to continue"
    return _gateway_error(
        grpc.StatusCode.DEADLINE_EXCEEDED,
        "STREAM_DEADLINE_REACHED",
        f"the stream reached the deadline of {timeout:g} s that its grpc-timeout "
        f"header set; {advice}, or send it without the header to stream until "
        "you close the connection",
        timeout_seconds=f"{timeout:g}",
    )


def _ndjson_line(content: Any) -> bytes:
    text = json.dumps(content, ensure_ascii=False, separators=(",", ":"))
    return text.encode() + b"\n"
