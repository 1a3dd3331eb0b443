"""`splitlog demo logs`: a guided tour of log collection on a running splitlog.

The tour writes a small built-in sample log to a temporary file and ships
it, then queries it, counts it, tails new entries for a few seconds and shows
the cluster. Each step prints a one-line explanation and the equivalent
`splitlog` command, then runs that command line through the same parser and
handler (see `demo_tour`). The service name ends in a random suffix, so the
tour can run again against the same data.

The log steps send the command's credential when it has one. Without one,
and when the gateway requires one, the tour signs up a user of its own and
creates an API key with the logs:write and logs:read scopes, as a log
shipper on another machine uses. The tour prints which credential it sends.
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
from splitlog.users.v1 import users_service_pb2 as users_pb2
from splitlog_cli.client import logs
from splitlog_cli.client.command import Context, add_action
from splitlog_cli.client.connection import DEFAULT_TIMEOUT, open_channel
from splitlog_cli.client.credentials import TOKEN_ENV, Credential
from splitlog_cli.client.demo_tour import Actor, Tour, random_suffix, run_tour
from splitlog_runtime.tls import ClientTls

TAIL_SECONDS = 3
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
    writer = _log_writer(tour, suffix)
    with tempfile.TemporaryDirectory(prefix="splitlog-demo-") as folder:
        path = Path(folder) / "shop.log"
        path.write_text("\n".join(sample_lines(time.time_ns())) + "\n")
        tour.say(f"\nThe sample log file {path}:")
        tour.say(path.read_text().rstrip())
        tour.step(
            "Ship the file. Each line becomes one entry, with its time and "
            "severity read from the line header.",
            ["logs", "ship", str(path), "--service", service],
            writer,
        )
    _query_steps(tour, service, writer)
    _tail_step(tour, service, writer)
    result = tour.step(
        "The cluster: each shard's leader, its followers and how far each "
        "follower lags behind.",
        ["logs", "cluster"],
        writer,
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


def _log_writer(tour: Tour, suffix: str) -> Actor | None:
    """Print which credential the log steps send, and return it as an actor.

    Returns None when the steps send the command's own credential, or none.
    """
    credential = tour.context.credential
    if credential is not None and credential.present:
        source = (
            "the session saved by `splitlog auth signin`"
            if credential.from_session
            else f"the access token or API key of --token or {TOKEN_ENV}"
        )
        tour.say(f"The log steps send {source}.")
        return None
    if not _requires_credential(tour.context):
        tour.say(
            "The gateway takes calls without a credential (authentication is "
            "off), so the log steps send none."
        )
        return None
    tour.say(
        "The gateway requires a credential and this command has none, so the "
        "tour signs up a user and sends an API key of that user on the log "
        "steps, as a log shipper on another machine would."
    )
    user_id = f"logs-{suffix}"
    owner = tour.sign_up(
        "Sign up a user to own the API key.",
        users_pb2.User(email=f"{user_id}@example.com", display_name="Log demo"),
        user_id,
    )
    return tour.create_logs_key(
        "Create an API key that may only write and read logs, for one hour. "
        "The command prints the key's secret once; the tour sends it on the "
        "next steps without showing it.",
        owner,
        user_id,
    )


def _requires_credential(context: Context) -> bool:
    """Return True when the gateway rejects an anonymous GetClusterStatus."""
    anonymous = Credential(context.address, None, None)
    with open_channel(context.address, context.tls, anonymous) as channel:
        try:
            logs_grpc.LogsServiceStub(channel).GetClusterStatus(
                logs_pb2.GetClusterStatusRequest(), timeout=DEFAULT_TIMEOUT
            )
        except grpc.RpcError as exc:
            # Other failures show up, with their fix, in the first step.
            return exc.code() == grpc.StatusCode.UNAUTHENTICATED
    return False


def _query_steps(tour: Tour, service: str, writer: Actor | None) -> None:
    tour.step(
        "Every entry of the service, oldest first.",
        ["logs", "query", "--service", service],
        writer,
    )
    tour.step(
        "Only errors and worse from the last hour. A value that starts with "
        "a minus sign needs the --since=VALUE form.",
        ["logs", "query", "--service", service, "--min-severity", "error",
         "--since=-1h"],
        writer,
    )  # fmt: skip
    tour.step(
        "A keyword search: the message must contain the text, in any case.",
        ["logs", "query", "--service", service, "--keyword", "ORDER=1002"],
        writer,
    )
    tour.step(
        "Counts by severity, by service and per minute.",
        ["logs", "stats", "--service", service, "--since=-1h", "--step", "1m"],
        writer,
    )


def _tail_step(tour: Tour, service: str, writer: Actor | None) -> None:
    """Tail the service while a background thread writes a few new entries."""
    context = tour.context if writer is None else writer.context
    stop = threading.Event()
    thread = threading.Thread(
        target=_write_live_entries,
        args=(context.address, service, stop, context.tls, context.credential),
        daemon=True,
    )
    thread.start()
    try:
        tour.step(
            f"Follow new entries as they arrive, for {TAIL_SECONDS} seconds. The "
            "tour writes one entry a second meanwhile. Without --duration, "
            "tail runs until Ctrl-C.",
            ["logs", "tail", "--service", service, "--duration", f"{TAIL_SECONDS}s"],
            writer,
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
        number = 0
        while not stop.wait(1.0):
            number += 1
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
