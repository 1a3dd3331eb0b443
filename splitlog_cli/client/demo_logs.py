"""`splitlog demo logs`: a guided tour of log collection on a running splitlog.

The tour writes a small built-in sample log to a temporary file and ships
it, then queries it, counts it, tails new entries for a few seconds and shows
the cluster. Each step prints a one-line explanation and the equivalent
`splitlog` command, then runs that command line through the same parser and
handler. The service name ends in a random suffix, so the tour can run again
against the same data.
"""

from __future__ import annotations

import argparse
import secrets
import shlex
import string
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
from splitlog_cli.client.command import HANDLER, Context, add_action
from splitlog_cli.client.connection import open_channel
from splitlog_runtime.tls import ClientTls

_SUFFIX_ALPHABET = string.ascii_lowercase + string.digits
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


class _Tour:
    """Runs and narrates the steps of the tour with one output."""

    def __init__(self, context: Context, gateway_flag: list[str]) -> None:
        self.context = context
        self.gateway_flag = gateway_flag
        self.step_number = 0
        self.parser = argparse.ArgumentParser(prog="splitlog", add_help=False)
        commands = self.parser.add_subparsers(dest="command", required=True)
        logs.add_parsers(commands, argparse.ArgumentParser(add_help=False))

    def say(self, text: str) -> None:
        print(text, file=self.context.out, flush=True)

    def step(self, explanation: str, argv: list[str]) -> Message:
        """Print the explanation and the command, then run the command."""
        self.step_number += 1
        command = shlex.join(["splitlog", *argv, *self.gateway_flag])
        self.say(f"\n{self.step_number}. {explanation}\n$ {command}")
        args = self.parser.parse_args(argv)
        return getattr(args, HANDLER)(self.context, args)


def run_logs_demo(context: Context, args: argparse.Namespace) -> Message:
    gateway_flag = ["--gateway", args.gateway_address] if args.gateway_address else []
    tour = _Tour(context, gateway_flag)
    suffix = "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(6))
    service = f"shop-{suffix}"
    tour.say(
        f"A tour of splitlog's log collection against {context.address}. The "
        f"sample entries belong to the service {service}, so nothing here "
        "touches other data."
    )
    with tempfile.TemporaryDirectory(prefix="splitlog-demo-") as folder:
        path = Path(folder) / "shop.log"
        path.write_text("\n".join(sample_lines(time.time_ns())) + "\n")
        tour.say(f"\nThe sample log file {path}:")
        tour.say(path.read_text().rstrip())
        tour.step(
            "Ship the file. Each line becomes one entry, with its time and "
            "severity read from the line header.",
            ["logs", "ship", str(path), "--service", service],
        )
    _query_steps(tour, service)
    _tail_step(tour, context.address, service)
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


def _query_steps(tour: _Tour, service: str) -> None:
    tour.step(
        "Every entry of the service, oldest first.",
        ["logs", "query", "--service", service],
    )
    tour.step(
        "Only errors and worse from the last hour. A value that starts with "
        "a minus sign needs the --since=VALUE form.",
        ["logs", "query", "--service", service, "--min-severity", "error",
         "--since=-1h"],
    )  # fmt: skip
    tour.step(
        "A keyword search: the message must contain the text, in any case.",
        ["logs", "query", "--service", service, "--keyword", "ORDER=1002"],
    )
    tour.step(
        "Counts by severity, by service and per minute.",
        ["logs", "stats", "--service", service, "--since=-1h", "--step", "1m"],
    )


def _tail_step(tour: _Tour, address: str, service: str) -> None:
    """Tail the service while a background thread writes a few new entries."""
    stop = threading.Event()
    writer = threading.Thread(
        target=_write_live_entries,
        args=(address, service, stop, tour.context.tls),
        daemon=True,
    )
    writer.start()
    try:
        tour.step(
            f"Follow new entries as they arrive, for {TAIL_SECONDS} seconds. The "
            "tour writes one entry a second meanwhile. Without --duration, "
            "tail runs until Ctrl-C.",
            ["logs", "tail", "--service", service, "--duration", f"{TAIL_SECONDS}s"],
        )
    finally:
        stop.set()
        writer.join(timeout=5)


def _write_live_entries(
    address: str, service: str, stop: threading.Event, tls: ClientTls | None
) -> None:
    # The first write comes a second in, once the tail is listening.
    with open_channel(address, tls) as channel:
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
