"""Client channels between splitlog components.

Every channel gets message size limits and keepalive pings. Unless a caller
turns it off, it also gets a retry policy that retries only UNAVAILABLE, with
throttling so retries stop when a backend fails often. The services return
UNAVAILABLE before they change anything, or for a write with a `request_id`
whose commit got no response. A retry of such a write returns what the
first attempt stored, so repeating the call is safe. A write without a
`request_id` whose commit got no response fails with UNKNOWN instead, which
is never retried. Before the gateway forwards a create that takes a
`request_id` but arrived without one, it fills in a fresh one
(`gateway.idempotency`).

The log router's writes are never retried (`NO_RETRY_METHODS`). The router
may store the parts of a batch for healthy shards and then return
UNAVAILABLE for the others, so a retry of a batch without a request id would
store those parts again. Every call carries a deadline, which is the
caller's remaining deadline when there is one and otherwise a configured
default.
"""

from __future__ import annotations

import json

import grpc

from splitlog_runtime import auth

#: Methods that grpc never retries on splitlog's channels, because an
#: UNAVAILABLE status may arrive after part of the call took effect.
NO_RETRY_METHODS = (
    ("splitlog.logs.v1.LogsService", "WriteLogEntry"),
    ("splitlog.logs.v1.LogsService", "WriteLogEntries"),
    ("splitlog.logs.v1.LogsService", "StreamLogEntries"),
    ("opentelemetry.proto.collector.logs.v1.LogsService", "Export"),
)

RETRY_SERVICE_CONFIG = {
    "methodConfig": [
        {
            "name": [{}],
            "retryPolicy": {
                "maxAttempts": 4,
                "initialBackoff": "0.05s",
                "maxBackoff": "1s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        },
        # A method named on its own takes this entry instead of the default
        # above, so it has no retry policy.
        {
            "name": [
                {"service": service, "method": method}
                for service, method in NO_RETRY_METHODS
            ]
        },
    ],
    "retryThrottling": {"maxTokens": 20, "tokenRatio": 0.2},
}


def channel_options(
    max_message_bytes: int, *, retries: bool = True
) -> list[tuple[str, object]]:
    """Return the channel arguments for calls between components.

    Args:
      max_message_bytes: the send and receive limit of each message.
      retries: whether grpc retries UNAVAILABLE calls by itself. Turn it off
        for a channel that carries long server streams and reconnects on its
        own. grpc keeps a stream that has received nothing, not even its
        headers, for a retry, and in grpcio 1.85 such a stream whose server
        dies waits forever instead of failing.
    """
    options: list[tuple[str, object]] = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
        ("grpc.keepalive_timeout_ms", 10_000),
        ("grpc.keepalive_permit_without_calls", 1),
        # grpc's reconnect backoff grows to 120 s by default, so a component
        # that was down for a few seconds could stay unreachable from its
        # callers long after it came back. Components restart in seconds.
        # grpc.min_reconnect_backoff_ms stays at its default, because grpc
        # also uses it as the time a connection attempt may take: lowered,
        # a server that accepts TCP but responds slowly would fail calls with
        # UNAVAILABLE instead of letting them run to their deadline.
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 2_000),
    ]
    if retries:
        options += [
            ("grpc.enable_retries", 1),
            ("grpc.service_config", json.dumps(RETRY_SERVICE_CONFIG)),
        ]
    else:
        options.append(("grpc.enable_retries", 0))
    return options


def insecure_channel(
    target: str, max_message_bytes: int = 16 * 1024 * 1024, *, retries: bool = True
) -> grpc.Channel:
    """Open a sync channel to another component.

    Its calls carry the process's principal signature once a component with
    `auth_required` has started (`splitlog_runtime.auth`). `retries` is as
    in `channel_options`.
    """
    channel = grpc.insecure_channel(
        target, options=channel_options(max_message_bytes, retries=retries)
    )
    return auth.signing_channel(channel)


def aio_insecure_channel(
    target: str, max_message_bytes: int = 16 * 1024 * 1024
) -> grpc.aio.Channel:
    """Open an asyncio channel to another component."""
    return grpc.aio.insecure_channel(target, options=channel_options(max_message_bytes))


#: Seconds a service keeps between the end of its call to another service and
#: its caller's deadline, to handle that call's failure and send its own error.
ANSWER_MARGIN_SECONDS = 0.5

#: The share of a caller's remaining deadline that `answer_before` keeps on
#: top of ANSWER_MARGIN_SECONDS. A client's grpc rounds the deadline that it
#: sends up by up to 1% (grpcio 1.85), so the service receives a later
#: deadline than the client keeps.
ANSWER_MARGIN_FRACTION = 0.01


def answer_before(remaining: float) -> float:
    """Return the time a call may take so its caller still gets a response.

    `remaining` is the caller's remaining deadline in seconds. The result
    ends a margin before it, so that the service's own error about the call
    reaches the caller before the caller's deadline passes. A deadline too
    short to leave the call ANSWER_MARGIN_SECONDS after the margin is
    returned unchanged. The call then gets all of it, and the caller may see
    its own DEADLINE_EXCEEDED instead of the service's error.
    """
    margin = ANSWER_MARGIN_SECONDS + ANSWER_MARGIN_FRACTION * remaining
    if remaining - margin >= ANSWER_MARGIN_SECONDS:
        return remaining - margin
    return max(remaining, 0.0)


def downstream_timeout(
    context: grpc.ServicerContext | None, default: float, margin: float = 0.0
) -> float:
    """Return the timeout for a call made while serving `context`.

    The caller's remaining deadline less `margin` is forwarded when there is
    one. Without one, the default applies, so no call between components
    waits forever. A `margin` lets the service return its own error about
    the failed call before its caller gives up.
    """
    if context is None:
        return default
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:
        return default
    return max(remaining - margin, 0.0)


def timeout_before_answer(
    context: grpc.ServicerContext | None, default: float
) -> float:
    """Return the timeout for a call to another service made while serving `context`.

    The call ends a margin before the caller's deadline (`answer_before`),
    so a service whose peer does not respond can still send its own error,
    which names that peer, before its caller gives up. Without a caller's
    deadline, the default applies.
    """
    if context is None:
        return default
    remaining = context.time_remaining()
    if remaining is None or remaining > 1e9:
        return default
    return answer_before(remaining)
