"""`splitlog demo logs`: a guided tour of log collection on a running splitlog.

The tour writes a small built-in sample log to a temporary file and ships
it, then queries it, counts it, tails new entries for a few seconds and shows
the cluster. Each step prints a one-line explanation and the equivalent
`splitlog` command, then runs that command line through the same parser and
handler (see `demo_tour`). The service name ends in a random suffix, so the
tour can run again against the same data.

The log steps send the command's own credential: the saved session, or the
access token or API key of --token or SPLITLOG_TOKEN. Logs are operator data,
so with authentication on that credential needs `logs:write` and `logs:read`:
an API key with those scopes, or an administrator's session. When the gateway
rejects it (or its absence), the tour stops and says how to get such a key.
A read call comes first, so that a key with `logs:write` alone stops the tour
before it writes anything.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
from google.protobuf.message import Message

from log_service.timefmt import format_time
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_cli.client import logs
from splitlog_cli.client.command import Context, add_action
from splitlog_cli.client.connection import ServerError, open_channel
from splitlog_cli.client.credentials import TOKEN_ENV, Credential
from splitlog_cli.client.demo_tour import Tour, random_suffix, run_tour
from splitlog_runtime.tls import ClientTls

TAIL_SECONDS = 4
# Heartbeat entries written while the tail runs, one a second from 1 s after
# the writer starts, so the last comes about a second before the tail ends.
HEARTBEATS = 3
# The statuses of a missing, invalid or under-scoped credential.
_CREDENTIAL_CODES = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)
LOGS_KEY_ADVICE = (
    "The log tour needs a credential with the logs:write and logs:read scopes, "
    "which only an administrator can give out. An operator makes a user an "
    "administrator with `splitlog admin-key USER_ID`. That user then signs in "
    "(`splitlog auth signin --email EMAIL`) and either runs the tour with that "
    "session, or creates a key with `splitlog auth keys create --name "
    "log-shipper --scope logs:write --scope logs:read` and runs the tour with "
    f"{TOKEN_ENV}=SECRET or --token SECRET"
)
# The sample: seconds before now, level word and message. Times are recent so
# that they are inside every retention and never in the future.
_SAMPLE = (
    (300, "INFO", "checkout started order=1001 user=alice"),
    (290, "INFO", "payment authorised order=1001 amount=42.50 EUR"),
    (240, "WARN", "inventory low item=espresso-beans remaining=3"),
    (200, "INFO", "checkout started order=1002 user=bob"),
    (190, "ERROR", "payment declined order=1002 reason=card expired"),
    (150, "INFO", "retrying payment order=1002 attempt=2"),
    (140, "ERROR", "payment gateway timeout order=1002 after 5000 ms"),
    (90, "DEBUG", "cache refreshed entries=512"),
    (60, "INFO", "checkout finished order=1001 status=shipped"),
    (30, "FATAL", "database connection pool exhausted; restarting worker"),
)


def add_demo_parser(
    demo_actions: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    """Add `logs` to the actions of `splitlog demo`."""
    add_action(
        demo_actions,
        "logs",
        common,
        run_logs_demo,
        "ship a sample log file, then query, count and tail it and show the "
        "log cluster",
    )


def sample_lines(now_ns: int) -> list[str]:
    """Return the built-in sample as log lines with times before `now_ns`."""
    return [
        f"{format_time(now_ns - seconds_ago * 1_000_000_000)} {level} {message}"
        for seconds_ago, level, message in _SAMPLE
    ]


def run_logs_demo(context: Context, args: argparse.Namespace) -> Message:
    return run_tour(context, args, (logs,), _run)


def _run(tour: Tour) -> Message:
    suffix = random_suffix()
    service = f"shop-{suffix}"
    tour.say(
        f"A tour of splitlog's log collection against {tour.context.address}. The "
        f"sample entries belong to the service {service}, so nothing here "
        "touches other data."
    )
    _say_credential(tour)
    try:
        logs.check_read_access(tour.context, service)
        return _log_steps(tour, service)
    except ServerError as exc:
        if exc.code not in _CREDENTIAL_CODES:
            raise
        raise exc.extended(LOGS_KEY_ADVICE) from None


def _log_steps(tour: Tour, service: str) -> Message:
    with tempfile.TemporaryDirectory(prefix="splitlog-demo-") as folder:
        path = Path(folder) / "shop.log"
        path.write_text("\n".join(sample_lines(time.time_ns())) + "\n")
        tour.say(f"\nThe sample log file {path}:")
        tour.say(path.read_text().rstrip())
        tour.step(
            "Ship the file. Each line becomes one entry, with its time and "
            "severity read from the line header. --no-positions leaves this "
            "temporary file out of the positions file, where logs ship records "
            "how far it shipped each file so that a rerun skips those lines.",
            ["logs", "ship", str(path), "--service", service, "--no-positions"],
        )
    _query_steps(tour, service)
    _tail_step(tour, service)
    result = tour.step(
        "The cluster: each shard's leader, its followers and how far each "
        "follower lags behind.",
        ["logs", "cluster"],
    )
    tour.say(
        "\nA failover, to try by hand: run `splitlog up --processes`, which "
        "prints the pid of every log node, and ship the sample again. Then "
        "`kill -9` the pid of the leader that `splitlog logs cluster` names "
        "for the shard. Within about two seconds `logs cluster` shows the "
        f"follower leading under a higher epoch, and `splitlog logs query "
        f"--service {service}` still lists every entry that was acknowledged. "
        "Writes in the gap get UNAVAILABLE with a retry delay, and `logs ship` "
        "retries them."
    )
    return result


def _say_credential(tour: Tour) -> None:
    """Print which credential the log steps send."""
    credential = tour.context.credential
    if credential is not None and credential.present:
        source = (
            "the session saved by `splitlog auth signin`"
            if credential.from_session
            else f"the access token or API key of --token or {TOKEN_ENV}"
        )
        tour.say(f"The log steps send {source}.")
    else:
        tour.say("The log steps send no credential, because this command has none.")


def _query_steps(tour: Tour, service: str) -> None:
    tour.step(
        "Every entry of the service, oldest first as in the file. Without "
        "--oldest-first, the newest come first.",
        ["logs", "query", "--service", service, "--oldest-first"],
    )
    tour.step(
        "Only errors and worse from the last hour: -1h is an hour before now.",
        ["logs", "query", "--service", service, "--min-severity", "error",
         "--since", "-1h"],
    )  # fmt: skip
    tour.step(
        "A keyword search: the message must contain the text, in any case.",
        ["logs", "query", "--service", service, "--keyword", "ORDER=1002"],
    )
    # The sample spans the 5 minutes before it was written, so minutes of
    # the last 6 give a histogram of 6 or 7 buckets, few of them empty.
    tour.step(
        "Counts by severity, by service and per minute of the last 6 minutes.",
        ["logs", "stats", "--service", service, "--since=-6m", "--step", "1m"],
    )


def _tail_step(tour: Tour, service: str) -> None:
    """Tail the service while a background thread writes a few new entries."""
    context = tour.context
    stop = threading.Event()
    thread = threading.Thread(
        target=_write_live_entries,
        args=(context.address, service, stop, context.tls, context.credential),
        daemon=True,
    )
    thread.start()
    try:
        tour.step(
            f"Follow new entries as they arrive, for {TAIL_SECONDS} seconds. "
            f"Meanwhile the tour writes {HEARTBEATS} heartbeat entries, one a "
            "second. Without --duration, tail runs until Ctrl-C.",
            ["logs", "tail", "--service", service, "--duration", f"{TAIL_SECONDS}s"],
        )
    finally:
        stop.set()
        thread.join(timeout=5)


def _write_live_entries(
    address: str,
    service: str,
    stop: threading.Event,
    tls: ClientTls | None,
    credential: Credential | None,
) -> None:
    # The first write comes a second in, once the tail is listening.
    with open_channel(address, tls, credential) as channel:
        stub = logs_grpc.LogsServiceStub(channel)
        for number in range(1, HEARTBEATS + 1):
            if stop.wait(1.0):
                return
            entry = logs_pb2.LogEntry(
                service=service,
                severity=logs_pb2.SEVERITY_INFO,
                message=f"heartbeat {number} from the demo",
            )
            entry.timestamp.GetCurrentTime()
            request = logs_pb2.WriteLogEntryRequest(
                entry=entry, request_id=str(uuid.uuid4())
            )
            try:
                stub.WriteLogEntry(request, timeout=2)
            except grpc.RpcError:
                # The tail step reports a failing server. The writer only adds
                # entries for it to show.
                return
