"""`splitlog logs retention`: print and change the log retention policy.

The commands call GetRetentionPolicy and UpdateRetentionPolicy of
`splitlog.logs.v1.LogsService` through the gateway.
"""

from __future__ import annotations

import argparse

from google.protobuf import field_mask_pb2
from google.protobuf.message import Message

from log_service import retention
from log_service.timefmt import format_time, parse_duration
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog_cli.client import render
from splitlog_cli.client.command import Context, add_action
from splitlog_cli.client.connection import DEFAULT_TIMEOUT
from splitlog_cli.client.logs import (
    _LogsClient,
    _nanos,
    check_service_name,
    format_duration,
    safe_text,
)
from splitlog_cli.client.values import UsageError, invalid

_RETENTION_RANGE = (
    "of at least 1h and at most 100 years, as a number with a unit h or d, "
    "such as 72h, 30d or 365d"
)


def add_parsers(
    actions: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """Add `retention` and `retention set` to the actions of `splitlog logs`."""
    retention_parser = add_action(
        actions,
        "retention",
        common,
        show_retention,
        "print how long entries are kept, or change it with `retention set`",
    )
    retention_actions = retention_parser.add_subparsers(
        dest="retention_action", metavar="ACTION"
    )
    change = add_action(
        retention_actions,
        "set",
        common,
        set_retention,
        "change the retention policy (needs an administrator)",
    )
    change.description = (
        "Change the retention policy with UpdateRetentionPolicy and print the "
        "result. Only the retentions given change. With authentication on, "
        "it needs an administrator: an API key with the admin scope, or the "
        "session of a user who holds such a key (`splitlog admin-key USER_ID` "
        "creates the first one). "
        "Entries older than a shortened "
        "retention are deleted by the cleanup that runs after the update, not "
        "during the call."
    )
    change.add_argument(
        "--default",
        dest="default_retention",
        metavar="DURATION",
        help="retention of every service without one of its own, such as 30d; "
        f"{_RETENTION_RANGE}",
    )
    change.add_argument(
        "--service",
        dest="service_retentions",
        action="append",
        default=[],
        metavar="NAME=DURATION",
        help="retention of one service, in place of the default, such as "
        "billing=90d; repeat for more",
    )
    change.add_argument(
        "--clear-service",
        dest="cleared_services",
        action="append",
        default=[],
        metavar="NAME",
        help="remove a service's own retention, so that the default applies "
        "to it; repeat for more",
    )


def show_retention(context: Context, args: argparse.Namespace) -> Message:
    with _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client:
        policy = _read_retention(client)
    context.show(policy, _retention_table)
    return policy


def set_retention(context: Context, args: argparse.Namespace) -> Message:
    """Update the fields of the policy that the options name.

    A per-service change rewrites the whole `service_retentions` map, because
    that is the unit of the update mask. So the command reads the policy
    first and sends its etag, and a concurrent change fails with ABORTED
    instead of being overwritten.
    """
    services = _service_retentions(args.service_retentions)
    cleared = set(args.cleared_services)
    if args.default_retention is None and not services and not cleared:
        raise UsageError(
            "give --default, --service or --clear-service; `splitlog logs "
            "retention` prints the current policy"
        )
    both = sorted(cleared & services.keys())
    if both:
        raise invalid(
            "--clear-service", both[0], "the same service is also given to --service"
        )
    update = logs_pb2.RetentionPolicy(name=retention.POLICY_NAME)
    mask = field_mask_pb2.FieldMask()
    if args.default_retention is not None:
        update.default_retention.FromNanoseconds(
            _retention_ns(args.default_retention, "--default")
        )
        mask.paths.append("default_retention")
    with _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client:
        if services or cleared:
            current = _read_retention(client)
            merged = {
                name: value.ToNanoseconds()
                for name, value in current.service_retentions.items()
            }
            for name in sorted(cleared):
                if name not in merged:
                    raise invalid(
                        "--clear-service",
                        name,
                        "the service has no retention of its own; `splitlog "
                        "logs retention` lists those that do",
                    )
                del merged[name]
            merged.update(services)
            for name, value_ns in merged.items():
                update.service_retentions[name].FromNanoseconds(value_ns)
            update.etag = current.etag
            mask.paths.append("service_retentions")
        response = client.call(
            client.stub.UpdateRetentionPolicy,
            logs_pb2.UpdateRetentionPolicyRequest(
                retention_policy=update, update_mask=mask
            ),
        )
    context.show(response.retention_policy, _retention_table)
    return response.retention_policy


def _read_retention(client: _LogsClient) -> logs_pb2.RetentionPolicy:
    response = client.call(
        client.stub.GetRetentionPolicy,
        logs_pb2.GetRetentionPolicyRequest(name=retention.POLICY_NAME),
    )
    return response.retention_policy


def _service_retentions(pairs: list[str]) -> dict[str, int]:
    services: dict[str, int] = {}
    for pair in pairs:
        # A duration has no "=", but a service name may.
        name, sep, text = pair.rpartition("=")
        name = name.strip()
        if not sep or not name or not text.strip():
            raise invalid(
                "--service", pair, "expected NAME=DURATION, such as billing=90d"
            )
        check_service_name(name, "--service", pair)
        if name in services:
            raise invalid("--service", pair, f"service {name!r} is given twice")
        services[name] = _retention_ns(text, "--service")
    return services


def _retention_ns(text: str, option: str) -> int:
    try:
        value = parse_duration(text)
    except ValueError:
        value = None
    if value is None or not (
        retention.MIN_RETENTION_NS <= value <= retention.MAX_RETENTION_NS
    ):
        raise invalid(option, text, f"expected a retention {_RETENTION_RANGE}")
    return value


def _retention_table(policy: logs_pb2.RetentionPolicy) -> str:
    updated = "-"
    if policy.HasField("update_time"):
        updated = format_time(_nanos(policy.update_time), fixed_width=True)
    fields = render.fields(
        [
            (
                "default retention",
                format_duration(policy.default_retention.ToNanoseconds()),
            ),
            ("updated", updated),
        ]
    )
    if not policy.service_retentions:
        return f"{fields}\n\nno service has a retention of its own"
    rows = [
        (
            safe_text(name),
            format_duration(policy.service_retentions[name].ToNanoseconds()),
        )
        for name in sorted(policy.service_retentions)
    ]
    return f"{fields}\n\n" + render.table(("SERVICE", "RETENTION"), rows)
