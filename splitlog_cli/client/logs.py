"""`splitlog logs`: ship log files, and query, tail and count stored entries.

The commands call `splitlog.logs.v1.LogsService` through the gateway. Tables
escape control characters, ANSI escape sequences and bidirectional
formatting characters in every text that comes from a log entry, so a
stored line cannot forge table rows or change the terminal's colours.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import re
import shlex
import signal
import stat
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from log_service.logfiles import (
    LineTooLong,
    parse_numbered_stream,
    read_numbered_stream,
    time_zone,
)
from log_service.model import (
    MAX_BATCH_ENTRIES_KEY,
    Limits,
    service_is_valid,
    severity_from_text,
)
from log_service.query import (
    MAX_BUCKETS,
    MAX_STEP_NS,
    MIN_STEP_NS,
    TOO_MANY_BUCKETS,
    bucket_count,
    clamp_query_ns,
    parse_attribute_filter,
    smallest_step,
)
from log_service.request_ids import request_digest
from log_service.timefmt import (
    DURATION_FORMS,
    TIME_FORMS,
    format_seconds,
    format_time,
    parse_duration,
    parse_time,
)
from log_service.wal import encode_varint
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from splitlog_cli.client import render, ship_file, ship_input, ship_positions
from splitlog_cli.client.command import (
    STREAM_FORMAT_HELP,
    Context,
    PartialFailure,
    add_action,
    add_actions,
    common_options,
)
from splitlog_cli.client.connection import (
    DEFAULT_TIMEOUT,
    ServerError,
    Unreachable,
    channel_reachable,
    current_credential,
    describe,
    from_transport,
    never_reached,
    open_channel,
    server_error,
)
from splitlog_cli.client.credentials import config_dir
from splitlog_cli.client.render import safe_text
from splitlog_cli.client.values import UsageError, invalid, timestamp
from splitlog_runtime.logship import same_stream, stream_request
from splitlog_runtime.tls import ClientTls

DEFAULT_LIMIT = 100
MAX_PAGE_SIZE = 1000
DEFAULT_BATCH_SIZE = 500
# A quarter of the default max_message_bytes (16 MiB), so that a batch passes
# a server whose limit was lowered a little, and a batch of short lines is
# bounded by DEFAULT_BATCH_SIZE first.
DEFAULT_BATCH_BYTES = 4 * 1024 * 1024
# Bytes of a WriteLogEntriesRequest besides its entries: the request id, a
# 36-character UUID, with its tag and length.
_REQUEST_ID_BYTES = 38
# Bytes a LogStream takes besides its entries' share: its own tag and length
# and those of its two number columns, each at most 5 bytes.
_STREAM_BYTES = 15
_NANOS_PER_SECOND = 1_000_000_000
# Maximum `logs tail --duration`, 3650 days (about 10 years). The duration
# becomes the call's gRPC timeout. With grpcio 1.85, a timeout of 100000
# days ends the call at once with DEADLINE_EXCEEDED, which the command would
# take for the end of the duration, while 30000 days works.
MAX_TAIL_DURATION_NS = 3650 * 86_400 * _NANOS_PER_SECOND
_SEVERITY_NAMES = ("debug", "info", "warn", "error", "fatal")
_ENTRY_HEADERS = ("TIME", "SEVERITY", "SERVICE", "HOST", "MESSAGE")
_BAR_WIDTH = 30
_MAX_REJECTIONS_SHOWN = 10
# Exit status of `logs ship` when the server rejected some entries.
EXIT_ENTRIES_REJECTED = 3
# Exit status of `logs ship` when a file was truncated or replaced while it
# was shipped. The command sends no more lines of such a file.
EXIT_FILE_CHANGED = 4
# Exit status of `logs ship` after Ctrl-C, as a shell reports a SIGINT.
EXIT_INTERRUPTED = 128 + signal.SIGINT
# Exit status of `logs ship` after SIGTERM, as a shell reports one.
EXIT_TERMINATED = 128 + signal.SIGTERM
# Namespace of the request ids that `logs ship` derives from its batches.
_SHIP_NAMESPACE = uuid.UUID("2081b718-9d31-4295-b4b3-482fcb416609")
# A command-line word that is a value, not an option, such as -15m or -.5h.
_NEGATIVE_VALUE = re.compile(r"^-\.?\d")


def add_parsers(
    commands: argparse._SubParsersAction, common: argparse.ArgumentParser
) -> None:
    actions = add_actions(
        commands, "logs", "ship log files, and query, tail and count log entries"
    )

    ship = add_action(
        actions,
        "ship",
        common,
        ship_files,
        "parse plain log files and write their lines as log entries",
    )
    ship.description = (
        "Parse plain log files and write their lines as log entries. Each "
        "batch's request id is derived from the service, the file's real "
        "path (symbolic links resolved), the batch's first line number and "
        "the batch's entries, without the times invented for lines that have "
        "none. So running the same command again, after a failure or by "
        "mistake, stores each batch once, and the summary counts the entries "
        "that an earlier run stored as already stored. Request ids alone "
        "cannot cover a file that grew between runs, because its last, partly "
        "filled batch would be stored again in a fuller batch. So the command "
        "records in a positions file the last line of each file that the "
        "server acknowledged, and a rerun sends only the lines after it, with "
        "a note on stderr that names the skipped lines. It also records the "
        "batches with entries rejected as older than the service's retention "
        "or too far in the future. A rerun sends those batches again, so that "
        "it stores those entries after `splitlog logs retention set`. A "
        "rotated or replaced file is shipped from line 1. "
        "--fresh-ids stores the files again. "
        "A FILE of - reads standard input, such as `tail -F app.log | "
        "splitlog logs ship - --service web`. A partly filled batch of "
        "standard input is sent at most --flush-seconds after its first line "
        "was read, and a line without a time before the first line with one "
        "gets the time it was read. "
        "Batches of standard input get random request ids, so a second run "
        "stores its lines again. With --source-name, ids derive from that "
        "name as they do from a file's path. Exit "
        f"status: 0 when every entry was stored, {EXIT_ENTRIES_REJECTED} when "
        "the server rejected some entries (the output counts them by reason), "
        "1 when a call failed or the gateway cannot be reached (stderr then "
        "shows how far the command got), 2 for an invalid command-line value, "
        f"{EXIT_FILE_CHANGED} when a file was truncated or replaced while it "
        "was shipped (stderr names the lines not shipped, and this status "
        f"takes precedence over {EXIT_ENTRIES_REJECTED}), "
        f"{EXIT_INTERRUPTED} after Ctrl-C (the command first sends the full "
        "batches read before it, or every line read from standard input, and "
        f"stderr shows how far it got), {EXIT_TERMINATED} after SIGTERM, which "
        "the command handles as Ctrl-C, 141 when the reader of the output "
        "closed it early."
    )
    ship.add_argument(
        "files",
        metavar="FILE",
        nargs="+",
        help="log file to ship, or - for standard input",
    )
    ship.add_argument(
        "--service", required=True, help="service name stored on every entry"
    )
    ship.add_argument(
        "--batch-size",
        type=int,
        default=DEFAULT_BATCH_SIZE,
        help="maximum number of entries per WriteLogEntries call (default "
        f"{DEFAULT_BATCH_SIZE}). It must not exceed the server's "
        "log_max_batch_entries",
    )
    ship.add_argument(
        "--batch-bytes",
        type=int,
        default=DEFAULT_BATCH_BYTES,
        help="maximum size in bytes of one WriteLogEntries request (default "
        f"{DEFAULT_BATCH_BYTES}, 4 MiB); keep it below the server's "
        "max_message_bytes. A batch that the server still finds too large is "
        "sent again in halves",
    )
    ship.add_argument(
        "--zone",
        help="IANA time zone of times written without an offset (default: the "
        "log_default_time_zone setting, UTC unless set)",
    )
    ship.add_argument(
        "--year",
        type=int,
        help="year of timestamps written without one, such as syslog's. "
        "Default: the current year in the --zone time zone, or the year before "
        "for a date more than a day in the future, such as a December line "
        "read in January",
    )
    ship.add_argument(
        "--fresh-ids",
        action="store_true",
        help="send new random request ids, so that lines an earlier run "
        "stored are stored again (default: ids derived from the file and "
        "batch, so that a rerun stores each batch once)",
    )
    ship.add_argument(
        "--positions",
        metavar="POSITIONS_FILE",
        help="file that records how far each FILE was stored, so that a rerun "
        "over a file that grew sends only its new lines (default: "
        f"$XDG_CONFIG_HOME/splitlog/{ship_positions.POSITIONS_FILE}, "
        "~/.config/splitlog/ without XDG_CONFIG_HOME)",
    )
    ship.add_argument(
        "--no-positions",
        action="store_true",
        help="neither read nor write the positions file: send every line of "
        "each FILE, and rely on the request ids alone to store each batch once",
    )
    ship.add_argument(
        "--source-name",
        help="with -, a name for standard input, such as the file that feeds "
        "it. Request ids derive from it as from a file's path, and every "
        "entry gets it as the log.file.name attribute (default: none, so "
        "each batch gets a random request id)",
    )
    ship.add_argument(
        "--flush-seconds",
        default=f"{ship_input.DEFAULT_FLUSH_SECONDS:g}",
        help="with -, the maximum time in seconds from reading the first line "
        "of a partly filled batch to sending it, above 0 and at most a day "
        f"(default {ship_input.DEFAULT_FLUSH_SECONDS:g})",
    )

    query = add_action(
        actions, "query", common, query_entries, "list the entries that match"
    )
    query.description = (
        "List up to --limit entries that match, newest first unless "
        "--oldest-first. When more match, a note on stderr shows how to see "
        "the next ones."
    )
    _add_filters(query)
    _add_time_range(query)
    query.add_argument(
        "--limit",
        type=int,
        default=DEFAULT_LIMIT,
        help=f"maximum number of entries to print (default {DEFAULT_LIMIT})",
    )
    query.add_argument(
        "--oldest-first",
        action="store_true",
        help="sort by time, oldest first (default: newest first, as the API)",
    )
    query.add_argument(
        "--page-token",
        default="",
        help="continue after the entries of an earlier run with the same "
        "filters and order: the token that it printed on stderr, or its "
        "nextPageToken in --format json",
    )

    tail = add_action(
        actions,
        "tail",
        common_options(STREAM_FORMAT_HELP),
        tail_entries,
        "print matching entries as they are written, until Ctrl-C",
    )
    tail.description = (
        "Print matching entries as they are written, until Ctrl-C or "
        "--duration. On exit the command prints a resume token on stderr. Run "
        "it again with the same filters and --resume-token TOKEN to continue "
        "after the last message it printed in full. Entries printed just "
        "before Ctrl-C may be printed again, and entries skipped because the "
        "output was read too slowly are not sent again."
    )
    _add_filters(tail)
    tail.add_argument(
        "--duration",
        help=f"stop after this long, such as 30s; {DURATION_FORMS}; at most "
        "3650d (default: until Ctrl-C)",
    )
    tail.add_argument(
        "--resume-token",
        metavar="TOKEN",
        help="continue after the last entry of an earlier tail, with the token "
        "that it printed on exit; the filters must be the same",
    )

    stats = add_action(
        actions, "stats", common, log_stats, "count entries by severity and time"
    )
    _add_filters(stats)
    _add_time_range(stats)
    stats.add_argument(
        "--step",
        help="width of each histogram bucket, such as 1m or 1h (default: chosen "
        "by the server)",
    )

    add_action(
        actions,
        "cluster",
        common,
        cluster_status,
        "shards, their leaders and followers, replication lag, and the "
        "placement history",
    )


def _severity_help() -> str:
    return "lowest severity to include: " + ", ".join(_SEVERITY_NAMES)


def _add_filters(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--service",
        dest="services",
        action="append",
        default=[],
        help="only this service; repeat for more",
    )
    parser.add_argument("--min-severity", help=_severity_help())
    parser.add_argument(
        "--severity",
        dest="severities",
        action="append",
        default=[],
        help="only this severity; repeat for more; not with --min-severity",
    )
    parser.add_argument(
        "--keyword", help="text the message must contain, ignoring case"
    )
    parser.add_argument(
        "--attr",
        dest="attributes",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="attribute that must have exactly this value; repeat for more; "
        "in KEY write \\= for = and \\\\ for a backslash",
    )


def _add_time_range(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--since",
        "--start",
        dest="start",
        help=f"start of the time range, inclusive: {TIME_FORMS}",
    )
    parser.add_argument(
        "--end",
        "--until",
        dest="end",
        help="end of the time range, exclusive; same forms (default: now)",
    )
    _accept_negative_values(parser)


def _accept_negative_values(parser: argparse.ArgumentParser) -> None:
    """Read a word that starts with "-" and a digit, such as -15m, as a value.

    argparse takes such a word for an unknown option unless it is a plain
    negative number, so `--since -15m` would fail with "expected one
    argument". No option of these commands starts with "-" and a digit, so
    the word can only be a value.
    """
    # NOTE: argparse has no public setting for this. Python 3.11's
    # ArgumentParser._parse_optional reads this attribute, and a test of
    # `--since -15m` fails if a later version stops doing so.
    parser._negative_number_matcher = _NEGATIVE_VALUE


# --- ship -------------------------------------------------------------------


def ship_files(
    context: Context, args: argparse.Namespace
) -> logs_pb2.StreamLogEntriesResponse:
    flush_seconds = _check_ship_options(args)
    reads_stdin = ship_input.STDIN_ARGUMENT in args.files
    files = [path for path in args.files if path != ship_input.STDIN_ARGUMENT]
    # The size of standard input is unknown, so it gets no progress bar.
    sizes = _file_sizes(files)
    progress = _Progress(sys.stderr, sum(sizes), enabled=not reads_stdin)
    zone = args.zone or context.time_zone
    try:
        time_zone(zone)
    except ValueError as exc:
        raise invalid("--zone", zone, str(exc)) from None
    positions = _positions_file(args)
    with (
        _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client,
        _sigterm_as_interrupt(),
    ):
        shipper = _Shipper(client, args)
        try:
            file_sizes = iter(sizes)
            for path in args.files:
                if path == ship_input.STDIN_ARGUMENT:
                    _ship_stdin(shipper, zone, progress, flush_seconds)
                else:
                    size = next(file_sizes)
                    _ship_file(shipper, path, zone, progress, positions, size)
        except KeyboardInterrupt as exc:
            progress.abandon()
            _stop_after_interrupt(context, shipper, _stop_signal(exc))
        except _BatchOverLimit as exc:
            progress.abandon()
            raise UsageError(_batch_over_limit_message(shipper, exc)) from None
        except _LineTooLarge as exc:
            progress.abandon()
            raise ServerError(
                f"{exc}\n{_too_large_message(shipper, exc)}", exc.code
            ) from None
        except ServerError as exc:
            progress.abandon()
            raise exc.extended(
                _stopped_message(shipper.summary, shipper.position)
            ) from None
    progress.finish()
    _show_summary(context, shipper)
    errors = []
    if shipper.summary.rejected_count:
        errors.append(_rejected_message(shipper.summary))
    if shipper.changed_files:
        errors.append(_changed_files_message(shipper.changed_files))
        raise PartialFailure("\n".join(errors), EXIT_FILE_CHANGED)
    if errors:
        raise PartialFailure(errors[0], EXIT_ENTRIES_REJECTED)
    return shipper.summary


def _changed_files_message(changed_files: list[tuple[str, int]]) -> str:
    """Describe the files that changed while they were shipped."""
    count = len(changed_files)
    files = ", ".join(f"{path} from line {line}" for path, line in changed_files)
    noun = render.count_noun(count, "file", "files")
    return (
        f"error: {noun} changed while {'it was' if count == 1 else 'they were'} "
        f"shipped, so lines of {'it' if count == 1 else 'them'} were not "
        f"shipped: {files}"
    )


# The whole years whose times fit in int64 nanoseconds since 1970.
_FIRST_YEAR = 1678
_LAST_YEAR = 2261
_MAX_FLUSH_SECONDS = 86_400


def _check_ship_options(args: argparse.Namespace) -> float:
    """Reject invalid option values and return --flush-seconds as a number."""
    if args.batch_size < 1:
        raise invalid("--batch-size", str(args.batch_size), "expected 1 or more")
    if args.batch_bytes < 1:
        raise invalid("--batch-bytes", str(args.batch_bytes), "expected 1 or more")
    if not args.service.strip():
        raise invalid("--service", args.service, "the service name is empty")
    check_service_name(args.service, "--service", args.service)
    if args.year is not None and not _FIRST_YEAR <= args.year <= _LAST_YEAR:
        raise invalid(
            "--year",
            str(args.year),
            f"expected a year from {_FIRST_YEAR} to {_LAST_YEAR}, such as 2026 "
            "(log times are nanoseconds since 1970 in 64 bits)",
        )
    flush_seconds = _flush_seconds(args.flush_seconds)
    _check_stdin_options(args)
    return flush_seconds


# The rule of the log router for service names, which no setting changes.
_SERVICE_LIMITS = Limits()


def check_service_name(name: str, option: str, value: str) -> None:
    """Reject a service name that the log router rejects on every entry.

    `value` is the option's whole value, which contains the name.

    Raises:
      UsageError: the name is not valid.
    """
    if not service_is_valid(name, _SERVICE_LIMITS):
        raise invalid(
            option,
            value,
            "the log service accepts service names of 1 to "
            f"{_SERVICE_LIMITS.max_service_bytes} bytes in UTF-8 without "
            "control characters such as tabs or line breaks; give a name such "
            "as 'web'",
        )


def _flush_seconds(text: str) -> float:
    """Return --flush-seconds as a finite number above 0, at most a day."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or not 0 < value <= _MAX_FLUSH_SECONDS:
        raise invalid(
            "--flush-seconds",
            text,
            "expected a finite number of seconds above 0 and at most "
            f"{_MAX_FLUSH_SECONDS:,}, such as 0.5",
        )
    return value


def _check_stdin_options(args: argparse.Namespace) -> None:
    """Reject a second `-`, a closed standard input, and the options of
    standard input without a `-`."""
    count = args.files.count(ship_input.STDIN_ARGUMENT)
    if count > 1:
        raise invalid(
            "FILE",
            ship_input.STDIN_ARGUMENT,
            f"given {count} times; standard input can be read once, so give - once",
        )
    if count and sys.stdin is None:
        raise UsageError(
            "cannot read standard input: it is closed, so - has no lines to "
            "read. Pipe the lines into the command, such as `tail -F app.log | "
            "splitlog logs ship - --service web`, or give a FILE"
        )
    if args.source_name is None:
        return
    if not count:
        raise invalid(
            "--source-name",
            args.source_name,
            "it names standard input, so give - as a FILE, or leave the option out",
        )
    if not args.source_name.strip():
        raise invalid("--source-name", args.source_name, "the name is empty")


@dataclass
class _ShipPosition:
    """How far `logs ship` got: lines parsed, and the batch being written."""

    # Lines read, empty ones included, except those that a positions file
    # records as stored.
    lines_read: int = 0
    # The FILE argument being read, and its name in messages: the path, or
    # `standard input` for -.
    argument: str = ""
    path: str = ""
    # Line number of the first entry of the batch (or half) being written.
    line: int = 0
    # Line number of the last entry parsed.
    last_line: int = 0
    # --source-name, which decides what a failed run over standard input
    # advises.
    source_name: str | None = None

    def rerun_advice(self) -> str:
        """Describe how to ship what a failed run did not store."""
        if self.path == ship_input.STDIN_LABEL:
            return ship_input.rerun_advice(self.line, self.source_name)
        return (
            "Run the same command again to ship the rest. That is safe: "
            "what this run stored is not stored twice."
        )


def _read_and_stored(
    position: _ShipPosition, summary: logs_pb2.StreamLogEntriesResponse
) -> str:
    """Describe how many lines `logs ship` read and what became of their entries."""
    newly_stored = summary.accepted_count - summary.duplicate_count
    counts = [f"{summary.rejected_count} rejected"]
    if summary.duplicate_count:
        counts.insert(0, f"{summary.duplicate_count} already stored")
    return (
        f"It read {render.count_noun(position.lines_read, 'line')} and stored "
        f"{render.count_noun(newly_stored, 'entry', 'entries')} "
        f"({', '.join(counts)})"
    )


def _stopped_message(
    summary: logs_pb2.StreamLogEntriesResponse, position: _ShipPosition
) -> str:
    """Describe what a failed `logs ship` stored, where it stopped and what to do."""
    return (
        f"splitlog logs ship stopped at line {position.line} of {position.path}, "
        f"the first line not stored. {_read_and_stored(position, summary)}. "
        f"{position.rerun_advice()}"
    )


def _interrupted_message(shipper: _Shipper, stop: _StopSignal) -> str:
    """Describe how far `logs ship` got before a stop signal and how to ship
    the rest."""
    position = shipper.position
    summary = shipper.summary
    # Empty lines give no entry to send.
    unsent = max(0, position.lines_read - shipper.empty_lines - shipper.acknowledged)
    text = (
        f"stopped by {stop.name} at line {position.last_line} of "
        f"{position.path}. {_read_and_stored(position, summary)}"
    )
    if unsent:
        position.line = shipper.first_unsent_line()
        verb = "was" if unsent == 1 else "were"
        text += (
            f". {unsent} of the lines read {verb} not sent, from line "
            f"{position.line} on"
        )
    else:
        position.line = position.last_line + 1
        text += ", and sent every line it read"
    return f"{text}. {position.rerun_advice()}"


@dataclass(frozen=True)
class _StopSignal:
    """A signal that stops `logs ship`, its name in messages and its exit status."""

    name: str
    exit_status: int


_CTRL_C = _StopSignal("Ctrl-C (SIGINT)", EXIT_INTERRUPTED)
_SIGTERM = _StopSignal("SIGTERM", EXIT_TERMINATED)


def _stop_signal(interrupt: KeyboardInterrupt) -> _StopSignal:
    """Return the signal behind `interrupt`: SIGTERM or Ctrl-C."""
    return _SIGTERM if isinstance(interrupt, _Terminated) else _CTRL_C


def _stop_after_interrupt(
    context: Context, shipper: _Shipper, stop: _StopSignal
) -> None:
    """Send what was read before the stop signal, print the summary, and exit
    with 128 plus the signal's number."""
    _send_after_interrupt(shipper, stop)
    _show_summary(context, shipper)
    raise PartialFailure(_interrupted_message(shipper, stop), stop.exit_status)


def _send_after_interrupt(shipper: _Shipper, stop: _StopSignal) -> None:
    """Send what was read before the stop signal, once, and print why when
    that fails."""
    if shipper.stopped:
        return
    shipper.stopped = True
    try:
        shipper.send_after_interrupt()
    except (KeyboardInterrupt, ServerError) as exc:
        if isinstance(exc, KeyboardInterrupt):
            reason = f"a second {_stop_signal(exc).name}"
        else:
            reason = exc
        print(
            f"splitlog logs ship: sending the lines read before {stop.name} "
            f"stopped: {reason}",
            file=sys.stderr,
        )


def _batch_over_limit_message(shipper: _Shipper, error: _BatchOverLimit) -> str:
    """Return the error that --batch-size is over the server's limit, with the fix."""
    if error.entries > shipper.args.batch_size:
        # Only a batch that the positions file records to send again whole
        # can be larger than --batch-size.
        return _recorded_batch_over_limit_message(shipper, error)
    if error.limit is None:
        limit = "the server's log_max_batch_entries"
        fix = "give a smaller --batch-size, such as the default 500"
    else:
        limit = f"the server's limit of {error.limit} (log_max_batch_entries)"
        fix = f"use --batch-size {error.limit} or less"
    text = (
        f"invalid value '{shipper.args.batch_size}' for --batch-size: the server "
        f"rejected a batch of "
        f"{render.count_noun(error.entries, 'entry', 'entries')}, more than "
        f"{limit}, so "
        f"no batch of that size can be stored; {fix}"
    )
    summary = shipper.summary
    if summary.accepted_count:
        position = shipper.position
        # Batches of another size get other request ids, so a rerun may store
        # the entries of the batches stored before this one again.
        text += (
            f". {_read_and_stored(position, summary)}, from the lines before "
            f"line {position.line} of {position.path}. A rerun with another "
            "--batch-size may store those entries again, so ship only the "
            f"lines from line {position.line} on"
        )
    return text


def _recorded_batch_over_limit_message(
    shipper: _Shipper, error: _BatchOverLimit
) -> str:
    """Describe a recorded batch that exceeds the server's limit, and the fix."""
    limit = (
        "the server's log_max_batch_entries"
        if error.limit is None
        else f"the server's limit of {error.limit} (log_max_batch_entries)"
    )
    entries = render.count_noun(error.entries, "entry", "entries")
    return (
        f"the server rejected a batch of {entries}, more than {limit}. The "
        f"positions file records these lines of {shipper.position.path} as one "
        "batch to send again whole, under the request id of its first run, "
        "because the server stored some of its entries then and another cut "
        "would store those twice; --batch-size does not change it. Raise "
        f"log_max_batch_entries to {error.entries} or more for one rerun, "
        "then lower it again"
    )


def _too_large_message(shipper: _Shipper, error: _LineTooLarge) -> str:
    """Describe where `logs ship` stopped on a line too large to send.

    The message also explains how to ship the rest of the file or of standard
    input.
    """
    position = shipper.position
    line = position.line
    reads_stdin = position.argument == ship_input.STDIN_ARGUMENT
    if error.client_side:
        limit = (
            f"the {_format_bytes(CLIENT_MAX_MESSAGE_BYTES)} that splitlog logs "
            "ship sends in one request"
        )
    else:
        limit = "the server's max_message_bytes"
    text = (
        f"splitlog logs ship stopped at line {line} of {position.path}: the "
        f"line alone is larger than {limit}"
    )
    if not reads_stdin:
        text += ", so running the same command again fails there again"
    text += f". {_read_and_stored(position, shipper.summary)}."
    if error.unsent_lines is not None:
        first, last = error.unsent_lines
        if first == last:
            lines, pronoun = f"line {first}", "it"
        else:
            lines, pronoun = f"lines {first} to {last}", "them"
        text += (
            f" It did not send {lines}, read before line {line}, so that the "
            f"rerun stores {pronoun} once."
        )
    if reads_stdin:
        advice = ship_input.too_large_advice(
            line, position.source_name, error.client_side
        )
    else:
        advice = _file_too_large_advice(line, error.client_side)
    if error.split and (not reads_stdin or position.source_name is not None):
        advice += (
            " Batches sent in halves are an exception: the halves' request ids "
            "derive from the split, so after a change of max_message_bytes or "
            "of the batch with that line, their entries may be stored again."
        )
    return f"{text} {advice}"


def _file_too_large_advice(line: int, client_side: bool) -> str:
    """Describe how to ship the rest of a file after its line `line` was too large."""
    if client_side:
        fixes = (
            f"remove line {line}, or split it into lines shorter than that "
            "limit (the server's max_message_bytes does not change it)"
        )
    else:
        fixes = (
            f"raise the server's max_message_bytes, or remove or shorten line {line}"
        )
    return (
        f"To ship the rest, {fixes}, and run the command again. Batches that "
        "are already stored are not stored twice."
    )


def _format_bytes(size: int) -> str:
    """Format a size as `16 MiB` when it is whole mebibytes, else in bytes."""
    if size % (1024 * 1024) == 0:
        return f"{size // (1024 * 1024)} MiB"
    return f"{size:,} bytes"


def _rejected_message(summary: logs_pb2.StreamLogEntriesResponse) -> str:
    """Return the error that the server rejected entries, with the fix for
    each reason that occurred."""
    total = summary.accepted_count + summary.rejected_count
    counts = _rejection_counts(summary)
    listed = ", ".join(f"{reason} {count}" for reason, count in counts)
    lines = [
        f"error: the server rejected {summary.rejected_count} of "
        f"{render.count_noun(total, 'entry', 'entries')} ({listed})"
    ]
    advice_by_name = {
        _enum_name(logs_pb2.RejectionReason, reason): advice
        for reason, advice in _REJECTION_ADVICE.items()
    }
    for reason, _ in counts:
        advice = advice_by_name.get(reason)
        if advice is not None:
            lines.append(f"{reason}: {advice}")
    return "\n".join(lines)


_RERUN_STORES_THEM = (
    "Then run the same command again: a rerun over a file sends the batches "
    "of these entries again under the same request ids, so it stores them, "
    "and nothing that this run stored is stored twice"
)
# Rejections that a rerun cannot change: the server rejects the same line
# again on every send.
_FIX_LINES = (
    "the rejections listed name the line, the field and the problem. The "
    "server rejects these lines again on every send, and the positions file "
    "counts them as shipped, so a rerun over the file does not send them. "
    "Fix them and ship the fixed lines alone, such as through - (standard "
    "input)"
)
# The fix for each rejection reason.
_REJECTION_ADVICE = {
    logs_pb2.REJECTION_REASON_TIMESTAMP_TOO_OLD: (
        "these entries are older than their service's retention. `splitlog logs "
        "retention` prints the policy, and `splitlog logs retention set "
        "--service NAME=DURATION` raises it (needs an administrator). "
        f"{_RERUN_STORES_THEM}"
    ),
    logs_pb2.REJECTION_REASON_TIMESTAMP_IN_FUTURE: (
        "these entries are more than the server's log_max_future_seconds "
        "ahead of its clock. Check the clock of the host that wrote them. For "
        "times written without an offset, check that --zone (default: the "
        "log_default_time_zone setting) is the time zone they were written in. "
        "A rerun over a file sends the batches of these entries again "
        "unchanged, so it stores them once their times are within "
        "log_max_future_seconds of the server's clock"
    ),
    logs_pb2.REJECTION_REASON_MISSING_FIELD: _FIX_LINES,
    logs_pb2.REJECTION_REASON_INVALID_FIELD: _FIX_LINES,
    logs_pb2.REJECTION_REASON_TOO_LARGE: _FIX_LINES,
}


def _rejection_counts(
    summary: logs_pb2.StreamLogEntriesResponse,
) -> list[tuple[str, int]]:
    """Return (reason, count) pairs, most frequent first.

    The server may list fewer rejections than it counts. Those not listed
    are counted as `not listed`.
    """
    counts = Counter(
        _enum_name(logs_pb2.RejectionReason, rejection.reason)
        for rejection in summary.rejected_entries
    )
    unlisted = summary.rejected_count - len(summary.rejected_entries)
    pairs = counts.most_common()
    if unlisted > 0:
        pairs.append(("not listed", unlisted))
    return pairs


def _file_sizes(paths: list[str]) -> list[int]:
    """Return the size of each file, rejecting anything but regular files.

    A device such as /dev/zero never ends and a FIFO can block forever, so
    only regular files are shipped.
    """
    sizes = []
    for path in paths:
        try:
            info = os.stat(path)
        except OSError as exc:
            raise UsageError(f"cannot read {path}: {exc.strerror}") from None
        if not stat.S_ISREG(info.st_mode):
            kind = "a directory" if stat.S_ISDIR(info.st_mode) else "not a regular file"
            raise UsageError(f"cannot read {path}: it is {kind}; give a log file")
        sizes.append(info.st_size)
    return sizes


def _positions_file(args: argparse.Namespace) -> ship_positions.PositionsFile | None:
    """Return the positions file of the command, or None with --no-positions."""
    if args.no_positions:
        if args.positions is not None:
            raise invalid(
                "--positions",
                args.positions,
                "--no-positions turns the positions file off, so give one of "
                "the two options",
            )
        return None
    if args.positions is not None:
        return ship_positions.PositionsFile(Path(args.positions))
    return ship_positions.PositionsFile(config_dir() / ship_positions.POSITIONS_FILE)


def _ship_file(
    shipper: _Shipper,
    path: str,
    zone: str,
    progress: _Progress,
    positions: ship_positions.PositionsFile | None,
    size_at_start: int,
) -> None:
    """Ship the lines of one FILE argument, as the file was when it was opened.

    `size_at_start` is the size of the file in the progress bar's total.
    """
    shipper.position.argument = shipper.position.path = path
    real_path = os.path.realpath(path)
    try:
        opened = ship_file.OpenedFile(path)
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    with opened:
        # The file may have grown or been replaced since the bar's total.
        progress.total = max(1, progress.total + opened.size - size_at_start)
        try:
            _ship_opened_file(shipper, opened, real_path, zone, progress, positions)
        except KeyboardInterrupt as exc:
            # Sent now, while the file is open and its record is known, the
            # batches read before the signal move the record on.
            _send_after_interrupt(shipper, _stop_signal(exc))
            raise
        except _ChangedWhileShipping as changed:
            print(_changed_while_shipping_message(shipper, changed), file=sys.stderr)
            shipper.changed_files.append((path, changed.first_unsent))
        finally:
            shipper.tracker = None
            shipper.opened = None


def _ship_opened_file(
    shipper: _Shipper,
    opened: ship_file.OpenedFile,
    real_path: str,
    zone: str,
    progress: _Progress,
    positions: ship_positions.PositionsFile | None,
) -> None:
    args = shipper.args
    path = shipper.position.path
    try:
        tracker = _FileTracker.open(positions, args, real_path, path, opened)
        shipper.opened = opened
        while True:
            counts_before = (shipper.empty_lines, shipper.position.lines_read)
            done_before = progress.done
            try:
                if tracker is not None:
                    tracker.check_recorded_line(opened)
                reader = opened.read_from_start(digest=tracker is not None)
                skipped_up_to = 0
                if tracker is not None and tracker.skip:
                    skipped_up_to = tracker.record.line
                # As parse_numbered_file does, with the raw lines kept.
                entries = parse_numbered_stream(
                    reader,
                    service=args.service,
                    default_zone=zone,
                    year=args.year,
                    file_name=Path(real_path).name,
                    fallback_time_ns=opened.mtime_ns,
                    max_line_bytes=CLIENT_MAX_MESSAGE_BYTES,
                    on_empty=shipper.empty_line_counter(skipped_up_to),
                )
                if tracker is not None:
                    entries = tracker.skip_stored(entries, reader, progress)
                shipper.tracker = tracker
                shipper.ship(entries, real_path, progress)
            except _FileChanged:
                # Nothing was sent yet, except batches to send again whose
                # bytes are the ones that `check_recorded_line` read.
                shipper.empty_lines, shipper.position.lines_read = counts_before
                progress.done = done_before
                tracker.start_over()
                continue
            return
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


class _ChangedWhileShipping(Exception):
    """The file was truncated or replaced under the reader during the run."""

    def __init__(self, reason: str, first_unsent: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.first_unsent = first_unsent


def _changed_while_shipping_message(
    shipper: _Shipper, changed: _ChangedWhileShipping
) -> str:
    """Describe a file that changed under `logs ship` and how to ship the rest.

    The message also names the lines that were not shipped.
    """
    path = shipper.position.path
    line = changed.first_unsent
    return (
        f"splitlog logs ship: {path} was truncated or replaced while it was "
        f"shipped ({changed.reason}), as a rotation by copy and truncate does. "
        f"The lines read after that may be parts of the new content, so it "
        f"sent no more of the file: the lines from line {line} on of the file "
        "as it was before were not shipped. If the rotation copied the file, "
        f"ship those lines from the copy, such as with `tail -n +{line} COPY | "
        f"splitlog logs ship - --service {shlex.quote(shipper.args.service)} "
        "--source-name COPY`, where COPY is the path of the copy. Run the same "
        f"command again to ship the new content of {path} from line 1."
    )


class _FileChanged(Exception):
    """The lines that a record of the positions file covers have changed."""


class _FileTracker:
    """Reads and writes the record of one file in the positions file.

    A rerun skips the lines up to the recorded line, except those of the
    recorded batches to send again. It cuts its batches after each of them,
    the recorded pending batch and the recorded cuts, so that they get the
    request ids of the batches that an earlier run sent.
    """

    def __init__(
        self,
        positions: ship_positions.PositionsFile,
        service: str,
        real_path: str,
        label: str,
        record: ship_positions.Position,
        skip: bool,
    ) -> None:
        self.positions = positions
        self.service = service
        self.real_path = real_path
        self.label = label
        self.record = record
        self.skip = skip and record.line > 0
        # Whether the record may move back to an earlier line of the file.
        self.started_over = False
        # True when batches with entries that a rerun may store are recorded
        # to be sent again. It is False with --fresh-ids, because those
        # batches have random request ids, so a resend under other ids would
        # store their accepted entries twice.
        self.records_retries = skip
        # The number and bytes of the line read without a line ending, which
        # is the last line read, or None.
        self.unterminated: tuple[int, bytes] | None = None
        # Lines after which a batch is cut: the last line of the pending
        # batch, and the recorded cuts of earlier runs.
        self.cut_lines: set[int] = set()
        # The bytes read and the hash of them at the end of each line
        # yielded and not yet acknowledged, which the record takes when its
        # batch is acknowledged.
        self._ends: dict[int, tuple[int, Any]] = {}
        # The same at the end of each batch to send again, as
        # `check_recorded_line` read them.
        self._checked_ends: dict[int, tuple[int, str]] = {}
        if skip:
            retry_ends = {last for _, last in record.retry}
            self.cut_lines = {*record.cuts, record.pending_last, *retry_ends} - {0}
        else:
            record.retry = []

    @classmethod
    def open(
        cls,
        positions: ship_positions.PositionsFile | None,
        args: argparse.Namespace,
        real_path: str,
        label: str,
        opened: ship_file.OpenedFile,
    ) -> _FileTracker | None:
        """Load the record of a file; None without a positions file.

        `opened` is the file, whose identity the record must have.
        """
        if positions is None:
            return None
        current = ship_positions.Position(
            device=opened.device,
            inode=opened.inode,
            head=opened.head,
            head_bytes=opened.head_bytes,
        )
        saved = positions.load(args.service, real_path)
        same_file = (
            saved is not None
            and (saved.device, saved.inode) == (current.device, current.inode)
            and ship_positions.head_matches_at(
                opened.file.fileno(), saved.head, saved.head_bytes
            )
        )
        truncated = same_file and saved.offset > opened.size
        if same_file and saved.head_bytes:
            # The first line has grown since: check the longer line from now on.
            saved.head, saved.head_bytes = current.head, current.head_bytes
        if truncated and saved.line:
            print(
                f"splitlog logs ship: {label} has {opened.size:,} bytes, fewer "
                f"than the {saved.offset:,} bytes up to line {saved.line} that "
                "an earlier run shipped (it was truncated, such as by a rotation "
                "by copy and truncate), so it is shipped from line 1",
                file=sys.stderr,
            )
        elif saved is not None and not same_file and saved.line:
            print(
                f"splitlog logs ship: {label} is not the file that an earlier "
                "run shipped (it was rotated or replaced), so it is shipped "
                "from line 1",
                file=sys.stderr,
            )
        record = saved if same_file and not truncated else current
        # --fresh-ids stores the file again, so it skips nothing.
        tracker = cls(
            positions, args.service, real_path, label, record, not args.fresh_ids
        )
        # The record of the truncated file has the same identity and a later
        # line, which a save would otherwise keep.
        tracker.started_over = truncated
        return tracker

    def skip_stored(
        self,
        entries: Iterable[tuple[int, logs_pb2.LogEntry]],
        reader: ship_positions.LineReader,
        progress: _Progress,
    ) -> Iterator[tuple[int, logs_pb2.LogEntry]]:
        """Yield the entries after the recorded line, and those of the
        recorded batches to send again.

        `reader` is the file that `entries` are parsed from.

        Raises:
          _FileChanged: the recorded line has another text or gives no
            entry, or the file ends before it. Without batches to send
            again it is raised before any entry is yielded. A file with
            such batches is checked by `check_recorded_line` first.
        """
        last = self.record.line if self.skip else 0
        found = not self.skip
        retry = self.record.retry if self.skip else []
        retry_lines = ship_positions.RetryLines(retry)
        sends_again = bool(retry)
        for line, entry in entries:
            if line == last:
                if not self._is_recorded_line(entry.message, reader):
                    raise _FileChanged
                found = True
                self._print_skipped(last, sends_again)
            elif line > last and not found:
                raise _FileChanged
            if line > last or retry_lines.contains(line):
                checked = self._checked_ends.get(line)
                if checked is not None and checked != (
                    reader.offset,
                    reader.prefix_digest(),
                ):
                    # The batch ends here, and its bytes differ from those
                    # checked before: sent now, it could store lines twice.
                    raise _FileChanged
                # A hash state, because its digest is needed only for the
                # line that ends an acknowledged batch.
                self._ends[line] = (reader.offset, reader.prefix_hash())
                if not reader.terminated:
                    self.unterminated = (line, reader.line)
                yield line, entry
            else:
                progress.advance(len(entry.message.encode()) + 1)
        if not found:
            raise _FileChanged

    def sends_again(self, line: int) -> bool:
        """Return whether line `line`, just read, belongs to a batch sent again.

        Only lines of such batches are read up to the recorded line, which
        moves only past lines read before.
        """
        return self.skip and line <= self.record.line

    def check_recorded_line(self, opened: ship_file.OpenedFile) -> None:
        """Check the recorded line before batches are sent again.

        Their lines come before the recorded line, so reading the file once
        could send them before finding that it changed. This pass keeps the
        digest of the bytes up to the end of each of those batches, and
        `skip_stored` sends a batch only when it read the same bytes.

        Raises:
          _FileChanged: the recorded line has another text or is empty, or
            the file ends before it.
        """
        self._checked_ends = {}
        if not (self.skip and self.record.retry):
            return
        retry_ends = {last for _, last in self.record.retry}
        reader = opened.read_from_start(digest=True)
        lines = read_numbered_stream(reader, CLIENT_MAX_MESSAGE_BYTES)
        try:
            for number, text, _ in lines:
                if number in retry_ends:
                    self._checked_ends[number] = (
                        reader.offset,
                        reader.prefix_digest(),
                    )
                if number < self.record.line:
                    continue
                if number == self.record.line and self._is_recorded_line(text, reader):
                    return
                break
        except LineTooLong:
            # Shipping stops at this line before it sends anything.
            return
        raise _FileChanged

    def _print_skipped(self, last: int, sends_again: bool) -> None:
        again = ""
        if sends_again:
            again = (
                ", except the batches with lines that it rejected as older "
                "than the retention or too far in the future, which are sent "
                "again"
            )
        print(
            f"splitlog logs ship: skipping lines 1 to {last} of {self.label}, "
            "which an earlier run sent and the server stored or rejected "
            f"for good, such as for an invalid field{again} (recorded in "
            f"{self.positions.path}; --no-positions sends them again)",
            file=sys.stderr,
        )

    def _is_recorded_line(
        self, message: str, reader: ship_positions.LineReader
    ) -> bool:
        """Return whether the line at the recorded number is the recorded line.

        `message` is the line's text, and `reader` has just read it. A line
        recorded without its line ending may have been completed since, so
        only its recorded bytes are compared. A record with the bytes up to
        the line must also have the same bytes before it.
        """
        length = self.record.line_bytes
        if not length:
            same_line = ship_positions.line_digest(message) == self.record.line_digest
        else:
            prefix = reader.line[:length]
            same_line = (
                len(prefix) == length
                and ship_positions.bytes_digest(prefix) == self.record.line_digest
            )
        if not same_line or not self.record.offset:
            return same_line
        offset = reader.line_start + length if length else reader.offset
        return (
            offset == self.record.offset
            and reader.prefix_digest(length) == self.record.prefix
        )

    def start_over(self) -> None:
        """Ship the file from line 1, because its recorded lines changed."""
        print(
            f"splitlog logs ship: {self.label} has changed before line "
            f"{self.record.line}, the last line that an earlier run stored "
            "(it was truncated or written again), so it is shipped from line 1",
            file=sys.stderr,
        )
        self.skip = False
        self.started_over = True
        self.cut_lines = set()
        self.record.line = 0
        self.record.line_digest = ""
        self.record.line_bytes = 0
        self.record.pending_first = self.record.pending_last = 0
        self.record.cuts = []
        self.record.retry = []
        self.record.offset = 0
        self.record.prefix = ""
        self._ends = {}
        self._checked_ends = {}

    def sending_last_batch(self, batch: _Batch) -> None:
        """Record the batch sent at the end of the file as pending."""
        self.record.pending_first = batch.lines[0]
        self.record.pending_last = batch.lines[-1]
        self.cut_lines.add(batch.lines[-1])
        self._save()

    def acknowledged(self, batch: _Batch, retry_later: bool) -> None:
        """Record that the server acknowledged `batch`.

        `retry_later` is whether the server rejected entries of the batch
        for a reason that a rerun may change. The batch is then recorded to
        be sent again.
        """
        retry_later = retry_later and self.records_retries
        lines = [batch.lines[0], batch.lines[-1]]
        if self.skip and lines[0] <= self.record.line:
            self._record_resent_batch(lines, retry_later)
            if lines[1] <= self.record.line:
                self._save()
                return
        elif retry_later:
            self.record.retry.append(lines)
        self.record.line = batch.lines[-1]
        offset, prefix_hash = self._ends[self.record.line]
        self.record.offset = offset
        self.record.prefix = ship_positions.hash_digest(prefix_hash)
        self._ends = {
            line: end for line, end in self._ends.items() if line > self.record.line
        }
        if self.unterminated is not None and self.unterminated[0] == batch.lines[-1]:
            raw = self.unterminated[1]
            self.record.line_bytes = len(raw)
            self.record.line_digest = ship_positions.bytes_digest(raw)
        else:
            self.record.line_bytes = 0
            self.record.line_digest = ship_positions.line_digest(
                batch.entries[-1].message
            )
        if self.record.pending_last <= self.record.line:
            self.record.pending_first = self.record.pending_last = 0
        self.record.cuts = [c for c in self.record.cuts if c > self.record.line]
        self._save()

    def _record_resent_batch(self, lines: list[int], retry_later: bool) -> None:
        """Record the response to a batch sent again, from line `lines[0]`
        to line `lines[1]`.

        The batch is one recorded batch, unless lines of the file changed
        since, such as the last line of a recorded batch that no longer
        gives an entry. So the batch replaces every recorded batch that it
        overlaps, and the part of the last one after it stays recorded.
        """
        first, last = lines
        before = [kept for kept in self.record.retry if kept[1] < first]
        after = [kept for kept in self.record.retry if kept[0] > last]
        overlapped = [
            kept for kept in self.record.retry if kept[1] >= first and kept[0] <= last
        ]
        if overlapped and overlapped[-1][1] > last:
            after.insert(0, [last + 1, overlapped[-1][1]])
        self.record.retry = before + ([lines] if retry_later else []) + after

    def _save(self) -> None:
        self.positions.save(
            self.service,
            self.real_path,
            self.record,
            allow_backwards=self.started_over,
        )


def _ship_stdin(
    shipper: _Shipper, zone: str, progress: _Progress, flush_seconds: float
) -> None:
    args = shipper.args
    shipper.position.argument = ship_input.STDIN_ARGUMENT
    shipper.position.path = ship_input.STDIN_LABEL
    parsed = parse_numbered_stream(
        ship_input.DescriptorLines(sys.stdin.fileno()),
        service=args.service,
        default_zone=zone,
        year=args.year,
        file_name=args.source_name,
        max_line_bytes=CLIENT_MAX_MESSAGE_BYTES,
        on_empty=shipper.empty_line_counter(0),
    )
    entries = ship_input.FlushMarkedEntries(parsed, flush_seconds)
    shipper.stdin_entries = entries
    source = ship_input.source_key(args.source_name)
    try:
        shipper.ship(entries, source, progress)
    except OSError as exc:
        raise UsageError(f"cannot read standard input: {exc.strerror}") from None
    finally:
        entries.close()


class _Shipper:
    """Groups parsed entries into batches, sends them, and records how far it got.

    A batch is sent when it is full, at the end of the input, and at a
    `ship_input.FLUSH` marker, which standard input yields when a partly
    filled batch is due.
    """

    def __init__(self, client: _LogsClient, args: argparse.Namespace) -> None:
        self.client = client
        self.args = args
        self.summary = logs_pb2.StreamLogEntriesResponse()
        self.position = _ShipPosition(source_name=args.source_name)
        # (FILE argument, line number) of each entry of
        # `summary.rejected_entries`.
        self.rejected_lines: list[tuple[str, int]] = []
        # Entries of the batches (and halves) that got a response.
        self.acknowledged = 0
        # Batches not yet stored, oldest first. The last one is being filled,
        # and the others are full, the first of them in flight.
        self.batches = [_Batch(None)]
        # Standard input's entries, so that those read before Ctrl-C are sent.
        self.stdin_entries: ship_input.FlushMarkedEntries | None = None
        self.retry_seconds = SHIP_RETRY_SECONDS
        self._failed_line: int | None = None
        # Request ids sent so far, to tell a resend of this run's own batch.
        self._sent_ids: set[str] = set()
        # Request ids whose response the summary counts.
        self._counted_ids: set[str] = set()
        # Whether a stop signal ended the reading. The lines read before it
        # are then sent once, by `_send_after_interrupt`.
        self.stopped = False
        # The record of the file being shipped in the positions file, if any.
        self.tracker: _FileTracker | None = None
        # The file being shipped, checked before each batch is sent.
        self.opened: ship_file.OpenedFile | None = None
        # Whether the server rejected entries of the batch being written for
        # a reason that a rerun may change.
        self._retry_later = False
        # Empty lines read, which give no entry. Those up to the line that
        # the positions file records as acknowledged are not counted.
        self.empty_lines = 0
        # (FILE argument, first line not shipped) of each file that was
        # truncated or replaced while it was shipped.
        self.changed_files: list[tuple[str, int]] = []

    def empty_line_counter(self, counted_after: int) -> Callable[[int], None]:
        """Return an `on_empty` callback that counts empty lines after a line."""

        def count(number: int) -> None:
            if number > counted_after:
                self.empty_lines += 1
                self.position.lines_read += 1

        return count

    def ship(
        self,
        entries: Iterable[tuple[int, logs_pb2.LogEntry] | None],
        source: str | None,
        progress: _Progress,
    ) -> None:
        """Send `entries` of one file or standard input, whose ids derive from
        `source` (None gives random ids)."""
        self.batches = [_Batch(source)]
        try:
            for item in entries:
                if item is ship_input.FLUSH:
                    self.send()
                    continue
                line, entry = item
                sent = self.add(line, entry)
                progress.advance(len(entry.message.encode()) + 1)
                if sent and self.stdin_entries is not None:
                    filling = bool(self.batches[-1].entries)
                    self.stdin_entries.restart_flush_timer(filling)
        except LineTooLong as too_long:
            self._stop_at_long_line(too_long)
        self.send()

    def _stop_at_long_line(self, too_long: LineTooLong) -> None:
        """Stop at a line over the client's send limit, found while reading.

        The full batches before it are sent. The partly filled batch is sent
        too when its request id is random. Otherwise it is left to the rerun,
        which puts its lines in a batch with what replaces the long line: sent
        now, they would be stored a second time by the rerun.

        Raises:
          _LineTooLarge: always.
        """
        self.position.lines_read += 1
        self.position.last_line = too_long.number
        filling = self.batches[-1]
        unsent_lines = None
        if filling.source is None or self.args.fresh_ids:
            self.send()
        elif filling.lines:
            unsent_lines = (filling.lines[0], filling.lines[-1])
        self.position.line = too_long.number
        raise _LineTooLarge(
            f"line {too_long.number} is too large to send on its own: it has "
            f"more than {too_long.max_bytes:,} bytes, the client's send limit "
            "(RESOURCE_EXHAUSTED)",
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            client_side=True,
            unsent_lines=unsent_lines,
        )

    def add(self, line: int, entry: logs_pb2.LogEntry) -> bool:
        """Add an entry to the batch; return whether a full batch was sent."""
        self.position.lines_read += 1
        self.position.last_line = line
        entry_bytes = _field_bytes(entry.ByteSize())
        batch = self.batches[-1]
        # A batch sent again keeps its lines whatever the limits of this run,
        # so that it keeps its request id.
        # After the server's log_max_batch_entries was lowered below the size
        # of such a batch, a rerun fails on it with a message that names the fix.
        whole = self.tracker is not None and self.tracker.sends_again(line)
        too_large = batch.size + entry_bytes > self.args.batch_bytes
        if batch.entries and too_large and not whole:
            batch = _Batch(batch.source)
            self.batches.append(batch)
        batch.add(line, entry, entry_bytes)
        full = len(batch.entries) >= self.args.batch_size and not whole
        if full or (self.tracker is not None and line in self.tracker.cut_lines):
            self.batches.append(_Batch(batch.source))
        sent = len(self.batches) > 1
        while len(self.batches) > 1:
            self._send_first()
        return sent

    def send(self) -> None:
        """Send every batch not yet stored, the partly filled one included."""
        while self.batches[0].entries:
            last_batch = len(self.batches) == 1
            if last_batch:
                self._check_file(self.batches[0])
                self.batches.append(_Batch(self.batches[0].source))
                if self.tracker is not None:
                    # No later line closed this batch, so a rerun over a
                    # grown file would batch its lines otherwise.
                    with _STOP_SIGNALS.deferred():
                        self.tracker.sending_last_batch(self.batches[0])
            self._send_first()

    def send_after_interrupt(self) -> None:
        """Send the lines read before Ctrl-C, each batch in a single attempt.

        The batch in flight at Ctrl-C is sent again under its request id, so
        the server stores it once. From a file, the partly filled batch stays
        unsent: sent now, its id would differ from the one the rerun gives the
        same lines in a full batch, and the rerun would store them again.
        """
        self.retry_seconds = 0.0
        if self.stdin_entries is None:
            while len(self.batches) > 1:
                self._send_first()
            return
        self.send()
        if self.stdin_entries is not None:
            for line, entry in self.stdin_entries.drain():
                self.add(line, entry)
        self.send()

    def first_unsent_line(self) -> int:
        """Return the line number of the first line read but not sent."""
        if self._failed_line is not None:
            return self._failed_line
        for batch in self.batches:
            if batch.lines:
                return batch.lines[0]
        return self.position.line

    def _check_file(self, batch: _Batch) -> None:
        """Check that the file was not truncated or replaced under the reader
        before `batch` was read whole.

        Raises:
          _ChangedWhileShipping: it was, so the batch may contain bytes of
            the new content.
        """
        if self.opened is None:
            return
        reason = self.opened.change()
        if reason is not None:
            raise _ChangedWhileShipping(reason, batch.lines[0])

    def _send_first(self) -> None:
        batch = self.batches[0]
        self._check_file(batch)
        request_id = batch.request_id(self.args.service, self.args.fresh_ids)
        self._retry_later = False
        self._write(batch.entries, batch.lines, request_id)
        # A stop signal before this block leaves the batch first, so that
        # `send_after_interrupt` sends it again under its request id. Inside
        # it, the positions file is written whole.
        with _STOP_SIGNALS.deferred():
            self.batches.pop(0)
            if self.tracker is not None:
                self.tracker.acknowledged(batch, self._retry_later)

    def table(self, summary: logs_pb2.StreamLogEntriesResponse) -> str:
        return _ship_table(summary, self.rejected_lines, self.empty_lines)

    def json_summary(self) -> dict[str, Any]:
        """Return the summary as proto3 JSON, with each rejection's file and
        line, and the count of empty lines skipped as `skippedEmptyLines`."""
        summary = json_format.MessageToDict(
            self.summary, always_print_fields_with_no_presence=True
        )
        summary["skippedEmptyLines"] = self.empty_lines
        for rejection, (argument, line) in zip(
            summary["rejectedEntries"], self.rejected_lines, strict=True
        ):
            rejection["file"] = argument
            rejection["line"] = line
        return summary

    def _write(
        self,
        batch: list[logs_pb2.LogEntry],
        lines: list[int],
        request_id: str,
        half: bool = False,
    ) -> None:
        """Write one batch, in halves while it is too large to send.

        Each half's request id is a UUID derived from the batch's, so the same
        batch always splits into the same ids, and a resent half counts once.
        """
        self.position.line = lines[0]
        self._failed_line = lines[0]
        request = stream_request(batch, request_id)
        resent = request_id in self._sent_ids
        self._sent_ids.add(request_id)
        try:
            response, attempts = _write_with_retries(
                self.client, request, self.retry_seconds
            )
        except _RequestTooLarge as too_large:
            self._write_halves(batch, lines, request_id, half, too_large)
            return
        self._failed_line = None
        # Rejections past the listed ones have unknown reasons, so they may
        # be of a kind that a rerun stores.
        if response.rejected_count > len(response.rejected_entries) or any(
            rejection.reason in _RETRY_LATER_REASONS
            for rejection in response.rejected_entries
        ):
            self._retry_later = True
        with _STOP_SIGNALS.deferred():
            self._count(response, lines, request_id, attempts == 1 and not resent)

    def _count(
        self,
        response: logs_pb2.WriteLogEntriesResponse,
        lines: list[int],
        request_id: str,
        first_call: bool,
    ) -> None:
        """Add the response to a batch to the summary, once per request id.

        A stop signal after the response and before the batch is recorded
        makes `send_after_interrupt` send the batch again, and the response
        to that call is not counted a second time.
        """
        if request_id in self._counted_ids:
            return
        self._counted_ids.add(request_id)
        self.acknowledged += len(lines)
        # Rejection indexes count across the whole run, as in StreamLogEntries.
        summary = self.summary
        offset = summary.accepted_count + summary.rejected_count
        for rejection in response.rejected_entries:
            shifted = summary.rejected_entries.add()
            shifted.CopyFrom(rejection)
            shifted.index += offset
            line = lines[rejection.index]
            self.rejected_lines.append((self.position.argument, line))
        summary.batch_count += 1
        summary.accepted_count += response.accepted_count
        summary.rejected_count += response.rejected_count
        # The server counts as duplicates what an earlier call with the same
        # id stored. After a failed or interrupted call of this run, that call
        # most likely stored them, so they count as stored by this run.
        # NOTE: a rerun whose first call of a batch fails therefore counts the
        # entries that the earlier run stored as stored by this run.
        if first_call:
            summary.duplicate_count += response.duplicate_count

    def _write_halves(
        self,
        batch: list[logs_pb2.LogEntry],
        lines: list[int],
        request_id: str,
        half: bool,
        too_large: _RequestTooLarge,
    ) -> None:
        if len(batch) == 1:
            raise _LineTooLarge(
                f"line {lines[0]} is too large to send on its own: "
                f"{describe(too_large.error)}",
                too_large.error.code(),
                client_side=too_large.client_side,
                split=half,
            )
        if not half:
            limit = (
                "the client's send limit"
                if too_large.client_side
                else "the server's max_message_bytes"
            )
            print(
                f"splitlog logs ship: a batch of {len(batch)} entries is over "
                f"{limit}; sending it in halves (lower --batch-bytes to send "
                "smaller batches)",
                file=sys.stderr,
            )
        middle = len(batch) // 2
        parent = uuid.UUID(request_id)
        for part, start, end in (("first", 0, middle), ("second", middle, None)):
            self._write(
                batch[start:end], lines[start:end], _half_id(parent, part), half=True
            )


class _Batch:
    """The entries of one WriteLogEntries call, with their line numbers.

    `size` bounds the bytes of the call's request. An entry counts as the
    `LogEntry` it is, with the service, host and attributes that a stream
    contains once, which is more than its share of a `LogStream`. Each
    stream adds `_STREAM_BYTES`.

    Args:
      source: the key that request ids derive from: a file's real path, or
        `ship_input.source_key` of standard input. None gives random ids.
    """

    def __init__(self, source: str | None) -> None:
        self.source = source
        self.entries: list[logs_pb2.LogEntry] = []
        self.lines: list[int] = []
        self.size = _REQUEST_ID_BYTES
        self._request_id: str | None = None

    def add(self, line: int, entry: logs_pb2.LogEntry, entry_bytes: int) -> None:
        if not self.entries or not same_stream(self.entries[-1], entry):
            self.size += _STREAM_BYTES
        self.lines.append(line)
        self.entries.append(entry)
        self.size += entry_bytes

    def request_id(self, service: str, fresh: bool = False) -> str:
        """Return a UUID that the same lines of the same source always get.

        The name hashed is the service, the source (for a file its real path,
        absolute and with symbolic links resolved, so a link to a shipped
        file finds its batches), the first line number and a digest. The
        digest is the router's `request_digest` of the batch's request
        without its id, with the entries in streams. It leaves out the times
        that the parser invented for lines without one (`time_inferred=true`),
        so a rerun sends the same ids and the same digests although those
        times differ, and the log router stores each batch once. A changed line, zone or
        year gives a new id rather than failing with REQUEST_ID_REUSED.
        Without a source, or with `fresh`, the id is random. The first id
        returned is kept, so a batch sent again after Ctrl-C keeps its id.
        """
        if self._request_id is not None:
            return self._request_id
        if self.source is None or fresh:
            self._request_id = str(uuid.uuid4())
            return self._request_id
        digest = request_digest(stream_request(self.entries, "")).hex()
        name = "\n".join((service, self.source, str(self.lines[0]), digest))
        self._request_id = str(uuid.uuid5(_SHIP_NAMESPACE, name))
        return self._request_id


def _field_bytes(size: int) -> int:
    """Return the bytes of a message field of `size` bytes: tag, length, body."""
    return 1 + len(encode_varint(size)) + size


def _half_id(parent: uuid.UUID, half: str) -> str:
    return str(uuid.uuid5(parent, f"{half} half"))


class _LineTooLarge(ServerError):
    """One entry alone is over the server's max_message_bytes, or over the
    client's send limit when `client_side` is True.

    `split` is True when the entry's batch was sent in halves first.
    `unsent_lines` is the first and last line number of the lines read
    before it that were left unsent, or None.
    """

    def __init__(
        self,
        message: str,
        code: grpc.StatusCode,
        client_side: bool = False,
        split: bool = False,
        unsent_lines: tuple[int, int] | None = None,
    ) -> None:
        super().__init__(message, code)
        self.client_side = client_side
        self.split = split
        self.unsent_lines = unsent_lines


class _BatchOverLimit(ServerError):
    """The server rejected a whole batch for having more entries than its
    log_max_batch_entries, so every batch of the same --batch-size fails.

    `limit` is the server's limit, or None when the error does not name it.
    """

    def __init__(self, error: grpc.RpcError, entries: int) -> None:
        super().__init__(describe(error), error.code())
        self.entries = entries
        info = _status_detail(error, error_details_pb2.ErrorInfo())
        limit = info.metadata.get(MAX_BATCH_ENTRIES_KEY, "") if info else ""
        self.limit = int(limit) if limit.isdigit() else None


class _RequestTooLarge(Exception):
    """A write is larger than the server's max_message_bytes, or than the
    client's send limit when `client_side` is True."""

    def __init__(self, error: grpc.RpcError, client_side: bool = False) -> None:
        super().__init__(error.details())
        self.error = error
        self.client_side = client_side


# Rejection reasons that depend on the service's retention, the server's
# settings or its clock, so that a rerun of `logs ship` may store the entry.
_RETRY_LATER_REASONS = frozenset(
    {
        logs_pb2.REJECTION_REASON_TIMESTAMP_TOO_OLD,
        logs_pb2.REJECTION_REASON_TIMESTAMP_IN_FUTURE,
    }
)

# Codes after which the same batch is sent again: the cluster is failing
# over, overloaded or slow. The request id makes a resent batch count once.
_RETRYABLE = frozenset(
    {
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
    }
)
SHIP_RETRY_SECONDS = 60.0
# Seconds that `logs tail` tries to open its stream again after the server
# went away, per outage; the same limit as a batch of `logs ship`.
TAIL_RETRY_SECONDS = SHIP_RETRY_SECONDS
# The send limit of the client's channel: the default max_message_bytes of
# `splitlog_runtime.channels.insecure_channel` and `tls.secure_channel`.
CLIENT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024
# Part of grpc core's message for a request over the channel's send limit,
# which fails with RESOURCE_EXHAUSTED before anything is sent.
# NOTE: grpc sends no status detail for it, so only its text, as grpcio 1.x
# writes it, distinguishes it from an overloaded server.
_SEND_LIMIT_TEXT = "Sent message larger than max"


def _write_with_retries(
    client: _LogsClient,
    request: logs_pb2.WriteLogEntriesRequest,
    retry_seconds: float = SHIP_RETRY_SECONDS,
) -> tuple[logs_pb2.WriteLogEntriesResponse, int]:
    """Send one batch, resending it under the same request id while it may pass.

    Returns the response and the number of calls made.

    The wait between attempts is the server's RetryInfo delay, or else grows
    from 0.2 s to 2 s. After `retry_seconds` the last error is raised.
    Raises `_RequestTooLarge` at once when the request is over the server's
    max_message_bytes or the client's send limit, because the same request
    would fail again.
    """
    give_up_at = time.monotonic() + retry_seconds
    backoff = 0.2
    warned = False
    attempts = 0
    while True:
        attempts += 1
        try:
            response = client.stub.WriteLogEntries(request, timeout=client.timeout)
        except grpc.RpcError as exc:
            reason = _error_reason(exc)
            if reason == "REQUEST_TOO_LARGE":
                raise _RequestTooLarge(exc) from None
            if reason == "BATCH_TOO_LARGE":
                entries = sum(len(stream.messages) for stream in request.streams)
                raise _BatchOverLimit(exc, entries) from None
            if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and (
                _SEND_LIMIT_TEXT in (exc.details() or "")
            ):
                raise _RequestTooLarge(exc, client_side=True) from None
            retryable = exc.code() in _RETRYABLE or client.server_went_away(exc)
            if not retryable or time.monotonic() >= give_up_at:
                raise client.error(exc) from None
            if not warned:
                # Print once why the shipping pauses, so that a long wait on a
                # stopped gateway does not look like a hang. The advice on
                # starting a gateway waits for the error raised on giving up.
                error = client.error(exc)
                if isinstance(error, Unreachable):
                    cause = f"splitlog at {client.address} is not reachable"
                else:
                    cause = str(error)
                print(
                    f"splitlog logs ship: {cause}; retrying this batch for up "
                    f"to {retry_seconds:g} s",
                    file=sys.stderr,
                )
                warned = True
            delay = _retry_delay(exc) or backoff
            backoff = min(backoff * 2, 2.0)
            time.sleep(min(delay, max(0.0, give_up_at - time.monotonic())))
            continue
        client.responded = True
        return response, attempts


def _retry_delay(error: grpc.RpcError) -> float | None:
    """Return the RetryInfo delay in seconds that the server sent, if any."""
    info = _status_detail(error, error_details_pb2.RetryInfo())
    if info is None:
        return None
    return info.retry_delay.ToTimedelta().total_seconds()


def _error_reason(error: grpc.RpcError) -> str:
    """Return the ErrorInfo reason that the server sent, or ""."""
    info = _status_detail(error, error_details_pb2.ErrorInfo())
    return info.reason if info is not None else ""


def _status_detail(error: grpc.RpcError, detail_type: Message) -> Any:
    """Unpack the first status detail of the type of `detail_type` into it.

    Returns None when the status has no such detail.
    """
    status = rpc_status.from_call(error)
    for detail in status.details if status is not None else []:
        if detail.Is(detail_type.DESCRIPTOR):
            detail.Unpack(detail_type)
            return detail_type
    return None


def _ship_table(
    summary: logs_pb2.StreamLogEntriesResponse,
    rejected_lines: list[tuple[str, int]],
    empty_lines: int = 0,
) -> str:
    """Return the counts, and the first rejections with their file and line.

    `rejected_lines` contains the (FILE argument, line number) of each entry
    of `summary.rejected_entries`. `empty_lines` is shown only when not 0.
    """
    counts = [
        ("batches", summary.batch_count),
        ("stored", summary.accepted_count - summary.duplicate_count),
        ("already stored", summary.duplicate_count),
        ("rejected", summary.rejected_count),
    ]
    if empty_lines:
        counts.append(("skipped empty lines", empty_lines))
    lines = [render.fields(counts)]
    if summary.rejected_count:
        lines.append("")
        lines.append(
            render.table(("REJECTED BECAUSE", "COUNT"), _rejection_counts(summary))
        )
    shown = summary.rejected_entries[:_MAX_REJECTIONS_SHOWN]
    if shown:
        lines.append("")
        lines.append(
            render.table(
                ("FILE", "LINE", "REASON", "FIELD", "DESCRIPTION"),
                _rejection_rows(shown, rejected_lines),
            )
        )
    hidden = summary.rejected_count - len(shown)
    if shown and hidden > 0:
        more = render.count_noun(hidden, "more rejected entry", "more rejected entries")
        lines.append(f"({more} not shown)")
    return "\n".join(lines)


def _rejection_rows(
    rejections: Iterable[logs_pb2.LogEntryRejection],
    rejected_lines: list[tuple[str, int]],
) -> list[tuple[object, ...]]:
    """Return the table rows of rejections, each with a description.

    A response describes only the first rejection of each reason and field,
    so a later one without a description names the line of the last
    described rejection with the same file, reason and field.
    """
    described: dict[tuple[str, int, str], int] = {}
    rows = []
    for rejection, (argument, line) in zip(rejections, rejected_lines, strict=False):
        key = (argument, rejection.reason, rejection.field)
        description = safe_text(rejection.description)
        if description:
            described[key] = line
        elif key in described:
            description = f"same as line {described[key]}"
        rows.append(
            (
                safe_text(_file_label(argument)),
                line,
                _enum_name(logs_pb2.RejectionReason, rejection.reason),
                safe_text(rejection.field),
                description,
            )
        )
    return rows


def _file_label(argument: str) -> str:
    """Return the name of a FILE argument in a table: `standard input` for -."""
    if argument == ship_input.STDIN_ARGUMENT:
        return ship_input.STDIN_LABEL
    return argument


def _show_summary(context: Context, shipper: _Shipper) -> None:
    """Print the summary of `logs ship` as a table or as JSON."""
    if context.format != "json":
        context.show(shipper.summary, shipper.table)
        return
    text = json.dumps(shipper.json_summary(), indent=2, ensure_ascii=False)
    print(text, file=context.out, flush=True)


class _Progress:
    """A progress bar on stderr, drawn only when stderr is a terminal."""

    def __init__(self, stream: TextIO, total: int, enabled: bool = True) -> None:
        self.stream = stream
        self.total = max(total, 1)
        self.done = 0
        self.enabled = enabled and stream.isatty()
        self.last_draw = 0.0

    def advance(self, amount: int) -> None:
        self.done = min(self.total, self.done + amount)
        now = time.monotonic()
        if self.enabled and now - self.last_draw >= 0.1:
            self.last_draw = now
            self._draw()

    def abandon(self) -> None:
        """End the bar's line, so that an error message starts on its own."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()

    def finish(self) -> None:
        if self.enabled:
            self.done = self.total
            self._draw()
            self.stream.write("\n")
            self.stream.flush()

    def _draw(self) -> None:
        filled = _BAR_WIDTH * self.done // self.total
        bar = "#" * filled + "-" * (_BAR_WIDTH - filled)
        percent = 100 * self.done // self.total
        self.stream.write(f"\r[{bar}] {percent:3d}%")
        self.stream.flush()


# --- query, tail ------------------------------------------------------------


def query_entries(
    context: Context, args: argparse.Namespace
) -> logs_pb2.ListLogEntriesResponse:
    if args.limit < 1:
        raise invalid("--limit", str(args.limit), "expected 1 or more")
    request = logs_pb2.ListLogEntriesRequest(
        **_filter_fields(args),
        order_by="timestamp" if args.oldest_first else "timestamp desc",
        page_token=args.page_token,
    )
    _set_time_range(request, args, context.time_zone)
    found: list[logs_pb2.LogEntry] = []
    next_page_token = ""
    with _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client:
        while len(found) < args.limit:
            request.page_size = min(MAX_PAGE_SIZE, args.limit - len(found))
            response = client.call(client.stub.ListLogEntries, request)
            found.extend(response.entries)
            next_page_token = response.next_page_token
            if not next_page_token:
                break
            request.page_token = next_page_token
    # Each page requests at most the entries still missing, so `found` has at
    # most `limit` entries and the token continues right after the last one.
    result = logs_pb2.ListLogEntriesResponse(
        entries=found, next_page_token=next_page_token
    )
    context.show(result, lambda response: entries_table(response.entries))
    if next_page_token:
        _print_more_entries(len(found), next_page_token, request)
    return result


def _print_more_entries(
    shown: int, token: str, request: logs_pb2.ListLogEntriesRequest
) -> None:
    """Print on stderr that more entries may match, and how to see them."""
    # The page token is bound to the time range, so a relative --since or
    # --end is repeated as the absolute time that it gave in this run.
    options = []
    if request.HasField("start_time"):
        options.append(f"--since={format_time(request.start_time.ToNanoseconds())}")
    if request.HasField("end_time"):
        options.append(f"--end={format_time(request.end_time.ToNanoseconds())}")
    options.append(f"--page-token {token}")
    # The server also returns a token when a shard's reply was cut at its
    # size limit, so more entries may match but need not.
    print(
        f"splitlog logs query: showing "
        f"{render.count_noun(shown, 'entry', 'entries')}; more may match: raise "
        "--limit, narrow --since/--end or the filters, or run the same command "
        f"with {' '.join(options)} to see the next ones",
        file=sys.stderr,
        flush=True,
    )


def tail_entries(
    context: Context, args: argparse.Namespace
) -> logs_pb2.TailLogEntriesResponse:
    duration_ns = None
    if args.duration:
        duration_ns = _tail_duration_ns(args.duration)
    given_token = args.resume_token or ""
    request = logs_pb2.TailLogEntriesRequest(
        **_filter_fields(args), resume_token=given_token
    )
    last = logs_pb2.TailLogEntriesResponse(resume_token=given_token)
    with (
        _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client,
        _sigterm_as_interrupt(),
    ):
        try:
            _follow_tail(context, client, request, last, duration_ns)
        except KeyboardInterrupt:
            pass
        except ServerError:
            # Repeating a token that the server just rejected would not help.
            if last.resume_token != given_token:
                _print_resume_token(last.resume_token)
            raise
    _print_resume_token(last.resume_token)
    return last


def _follow_tail(
    context: Context,
    client: _LogsClient,
    request: logs_pb2.TailLogEntriesRequest,
    last: logs_pb2.TailLogEntriesResponse,
    duration_ns: int | None,
) -> None:
    """Print a tail until it ends, reconnecting after the server went away.

    When the gateway or the log router restarts, the tail opens again with
    the resume token of the last printed response, so no entry is lost or
    printed twice. It retries for up to TAIL_RETRY_SECONDS per outage, with
    the server's RetryInfo delay or a delay that grows from 0.2 s to 2 s,
    then raises the last error. When the gateway ends the tail because the
    saved session's access token expired, the tail opens again at once with
    a renewed one and the same resume token. `last` collects the resume token
    and the skipped count. `duration_ns` (--duration) counts from the first
    call.

    Raises:
      ServerError: the tail failed, or the server stayed away too long.
    """
    ends_at = None
    if duration_ns is not None:
        ends_at = time.monotonic_ns() + duration_ns
    give_up_at = None
    backoff = 0.2
    unopened: tuple[str, ...] = ()
    reconnecting = False
    while True:
        if ends_at is not None and reconnecting:
            # A reconnection gets what is left of --duration.
            duration_ns = ends_at - time.monotonic_ns()
            if duration_ns <= 0:
                return
        request.resume_token = last.resume_token
        try:
            for response in client.stream(
                client.stub.TailLogEntries, request, duration_ns
            ):
                if give_up_at is not None:
                    print(
                        "splitlog logs tail: reconnected; continuing after the "
                        "last entry printed",
                        file=sys.stderr,
                        flush=True,
                    )
                give_up_at = None
                backoff = 0.2
                _print_tail(context, response)
                unopened = _note_unopened(unopened, response)
                # Taken only once every entry of the response is printed, so
                # that a resume never skips an entry.
                last.resume_token = response.resume_token or last.resume_token
                last.skipped_count += response.skipped_count
            return
        except _SessionRenewed:
            reconnecting = True
            continue
        except _StreamInterrupted as error:
            reconnecting = True
            if not last.resume_token:
                raise
            now = time.monotonic()
            if give_up_at is None:
                give_up_at = now + TAIL_RETRY_SECONDS
                print(
                    f"splitlog logs tail: {error}; reconnecting with the last "
                    f"resume token for up to {TAIL_RETRY_SECONDS:g} s",
                    file=sys.stderr,
                    flush=True,
                )
            if now >= give_up_at:
                raise
            delay = error.retry_delay or backoff
            backoff = min(backoff * 2, 2.0)
            time.sleep(min(delay, max(0.0, give_up_at - now)))


def _note_unopened(
    previous: tuple[str, ...], response: logs_pb2.TailLogEntriesResponse
) -> tuple[str, ...]:
    """Print a note on stderr when the shards not followed yet change.

    Returns:
      The shards that `response` lists as unopened.
    """
    current = tuple(response.unopened_shards)
    if current == previous:
        return current
    if current:
        names = ", ".join(safe_text(shard) for shard in current)
        message = (
            f"log shard(s) {names} have no responding leader yet, so the tail "
            "shows their entries only once a leader responds (`splitlog logs "
            "cluster` shows the shards' health)"
        )
    else:
        message = "the tail now follows every log shard"
    print(f"splitlog logs tail: {message}", file=sys.stderr, flush=True)
    return current


class _Terminated(KeyboardInterrupt):
    """Raised in the main thread on SIGTERM, so it stops a command as Ctrl-C does."""


class _StopSignals:
    """The handler of SIGINT and SIGTERM that `_sigterm_as_interrupt` installs.

    It raises KeyboardInterrupt, or `_Terminated` for SIGTERM, in the main
    thread. Inside a `deferred` block it holds the signal back and raises
    it when the block ends, so that the block's updates are made whole.
    """

    def __init__(self) -> None:
        self._depth = 0
        self._pending: type[KeyboardInterrupt] | None = None

    def handle(self, signum: int, frame: object) -> None:
        stop = _Terminated if signum == signal.SIGTERM else KeyboardInterrupt
        if self._depth:
            self._pending = self._pending or stop
            return
        raise stop

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Hold the stop signals back while the block runs.

        Only a handler installed by `_sigterm_as_interrupt` defers them.
        A signal that arrived is raised when the outermost block ends, also
        when the block raised an exception.
        """
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
            pending = self._pending
            if not self._depth and pending is not None:
                self._pending = None
                raise pending


_STOP_SIGNALS = _StopSignals()


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """Treat SIGTERM as Ctrl-C while the block runs, in the main thread.

    `timeout`, `kill` and service managers stop a command with SIGTERM. A
    tail must still print its resume token then, and `logs ship` its summary
    and how far it got. Both signals go to `_STOP_SIGNALS`, whose `deferred`
    blocks hold them back. SIGINT stays ignored when it was, as in a job
    that a shell without job control started in the background.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = [signal.SIGTERM]
    if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
        handled.append(signal.SIGINT)
    previous = {}
    try:
        for signum in handled:
            previous[signum] = signal.signal(signum, _STOP_SIGNALS.handle)
        if previous[signal.SIGTERM] is _stopped_before_shipping:
            # Shipping has started, so that handler's message is false from
            # here on.
            previous[signal.SIGTERM] = signal.SIG_DFL
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def stop_on_sigterm_before_shipping() -> None:
    """Make SIGTERM end `logs ship` with a message and exit status 143 until
    shipping starts.

    The command calls this right after parsing its arguments. Loading the
    settings, the credential and the TLS files comes before the connection
    opens, and a SIGTERM meanwhile would otherwise end it without a word.
    Once the connection is open, `_sigterm_as_interrupt` takes over.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _stopped_before_shipping)


def _stopped_before_shipping(signum, frame) -> None:
    print(
        "splitlog logs ship: stopped by SIGTERM before shipping started; "
        "nothing was sent",
        file=sys.stderr,
        flush=True,
    )
    raise SystemExit(EXIT_TERMINATED)


def _tail_duration_ns(text: str) -> int:
    duration = _duration_ns(text, "--duration")
    if duration > MAX_TAIL_DURATION_NS:
        raise invalid(
            "--duration",
            text,
            "longer than the maximum of 3650d (about 10 years); give a shorter "
            "duration, or leave --duration out to tail until Ctrl-C",
        )
    return duration


def _print_resume_token(token: str) -> None:
    if token:
        message = (
            "to continue after the last entry printed, run the same command "
            f"with --resume-token {token}"
        )
    else:
        # A very short --duration or an early Ctrl-C can end the call before
        # the first response, which carries the first token.
        message = (
            "stopped before the server sent a resume token, so there is no "
            "position to continue from; run the command again, with a longer "
            "--duration if one was given"
        )
    print(f"splitlog logs tail: {message}", file=sys.stderr, flush=True)


def check_read_access(context: Context, service: str) -> None:
    """List one entry of `service`, a call that needs the `logs:read` scope.

    Raises:
      ServerError: the call failed, such as with PERMISSION_DENIED.
    """
    request = logs_pb2.ListLogEntriesRequest(services=[service], page_size=1)
    with _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client:
        client.call(client.stub.ListLogEntries, request)


def _print_tail(context: Context, response: logs_pb2.TailLogEntriesResponse) -> None:
    out = context.out
    for entry in response.entries:
        if context.format == "json":
            line = json.dumps(json_format.MessageToDict(entry), ensure_ascii=False)
        else:
            line = "  ".join(_entry_cells(entry))
        print(line, file=out, flush=True)
    if response.skipped_count and context.format != "json":
        print(
            f"({render.count_noun(response.skipped_count, 'entry', 'entries')} "
            "skipped because the output was read too slowly)",
            file=out,
            flush=True,
        )


def entries_table(entries) -> str:
    """Return entries as a table, with every log text made safe to print."""
    return render.table(_ENTRY_HEADERS, [_entry_cells(entry) for entry in entries])


def _entry_cells(entry: logs_pb2.LogEntry) -> tuple[str, ...]:
    return (
        format_time(_nanos(entry.timestamp), fixed_width=True),
        _enum_name(logs_pb2.Severity, entry.severity),
        safe_text(entry.service),
        safe_text(entry.host) or "-",
        safe_text(entry.message),
    )


# --- stats, cluster ---------------------------------------------------------


def log_stats(
    context: Context, args: argparse.Namespace
) -> logs_pb2.GetLogStatsResponse:
    request = logs_pb2.GetLogStatsRequest(**_filter_fields(args))
    _set_time_range(request, args, context.time_zone)
    if args.step:
        step = _step_ns(args.step)
        request.histogram_step.FromNanoseconds(step)
        if args.start is not None:
            _check_bucket_count(request, args, step)
    with _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client:
        try:
            response = client.call(client.stub.GetLogStats, request)
        except ServerError as error:
            if args.step and error.reason == TOO_MANY_BUCKETS:
                raise _server_bucket_count_error(args, error) from None
            raise
    context.show(response, _stats_table)
    return response


def _server_bucket_count_error(
    args: argparse.Namespace, error: ServerError
) -> UsageError:
    """Return the usage error of a --step that the server found too short.

    Without --since, the range starts at the oldest matching entry, which
    only the server can find. Its error names that range and the shortest step
    that fits, which the message passes on in the command's terms.
    """
    metadata = error.metadata
    origin = "--since" if args.start is not None else "the oldest matching entry"
    buckets = metadata.get("buckets", "")
    counted = f"{int(buckets):,}" if buckets.isdigit() else "more"
    return invalid(
        "--step",
        args.step,
        f"gives {counted} buckets from {origin} "
        f"({metadata.get('range_start', '?')}) to "
        f"{metadata.get('range_end', 'now')}, more than the limit of "
        f"{MAX_BUCKETS:,}; give --step {metadata.get('smallest_step', '?')} or "
        "more, or a shorter range with --since",
    )


def _stats_table(stats: logs_pb2.GetLogStatsResponse) -> str:
    counters = stats.ingest_counters
    # The ingest counters ignore every entry filter, so their labels name
    # every service.
    parts = [
        render.fields(
            [
                ("entries", stats.total_count),
                ("accepted (all services)", counters.accepted_count),
                ("duplicates (all services)", counters.duplicate_count),
                ("rejected (all services)", counters.rejected_count),
                ("failed batches (all services)", counters.failed_batch_count),
            ]
        ),
        render.table(
            ("SEVERITY", "COUNT"),
            [
                (_enum_name(logs_pb2.Severity, row.severity), row.count)
                for row in stats.severity_counts
            ],
        ),
        render.table(
            ("SERVICE", "COUNT"),
            [(safe_text(row.service), row.count) for row in stats.service_counts],
        ),
    ]
    if counters.rejection_counts:
        parts.append(
            render.table(
                ("REJECTED BECAUSE (all services)", "COUNT"),
                [
                    (_enum_name(logs_pb2.RejectionReason, row.reason), row.count)
                    for row in counters.rejection_counts
                ],
            )
        )
    if stats.histogram:
        step = format_duration(stats.histogram_step.ToNanoseconds())
        peak = max(bucket.count for bucket in stats.histogram) or 1
        parts.append(
            render.table(
                (f"START (step {step})", "COUNT", ""),
                [
                    (
                        format_time(_nanos(bucket.start_time), fixed_width=True),
                        bucket.count,
                        "#" * (_BAR_WIDTH * bucket.count // peak),
                    )
                    for bucket in stats.histogram
                ],
            )
        )
    return "\n\n".join(parts)


def cluster_status(
    context: Context, args: argparse.Namespace
) -> logs_pb2.GetClusterStatusResponse:
    with _LogsClient(context.address, DEFAULT_TIMEOUT, context.tls) as client:
        response = client.call(
            client.stub.GetClusterStatus, logs_pb2.GetClusterStatusRequest()
        )
    context.show(response, _cluster_table)
    return response


def _snapshot_note(follower: logs_pb2.ReplicaStatus) -> str:
    if not follower.HasField("snapshot"):
        return ""
    snapshot = follower.snapshot
    if snapshot.installing:
        return f", installing snapshot through {snapshot.last_sequence}"
    return (
        f", receiving snapshot through {snapshot.last_sequence}: "
        + render.count_noun(snapshot.received_entries, "entry", "entries")
    )


def _damage_note(damage: logs_pb2.LogDamage) -> str:
    first = damage.first_lost_sequence
    if damage.last_lost_sequence >= first:
        return f"lost entries {first}..{damage.last_lost_sequence} to WAL damage"
    return f"lost entries from {first} on to WAL damage"


def _follower_note(follower: logs_pb2.ReplicaStatus, leader_known: bool) -> str:
    notes = _snapshot_note(follower)
    if follower.HasField("log_damage"):
        notes += ", " + _damage_note(follower.log_damage)
    # The lag of a follower that the leader did not reach is a guess from an
    # old position, so it is shown as unknown. Without a responding leader
    # there is no last sequence to measure the lag against, and the server
    # leaves lag_entries at 0.
    if not follower.reachable:
        return f"{follower.node} (lag unknown, unreachable{notes})"
    if not leader_known:
        return f"{follower.node} (lag unknown, no leader{notes})"
    return f"{follower.node} (lag {follower.lag_entries}{notes})"


def _leader_note(shard: logs_pb2.ShardStatus) -> str:
    if not shard.leader:
        return "-"
    if shard.HasField("leader_log_damage"):
        return f"{shard.leader} ({_damage_note(shard.leader_log_damage)})"
    return shard.leader


def _cluster_table(status: logs_pb2.GetClusterStatusResponse) -> str:
    rows = []
    for shard in status.shards:
        # Without a leader no node reports the shard's last sequence.
        unavailable = shard.health == logs_pb2.HEALTH_UNAVAILABLE
        followers = ", ".join(
            _follower_note(follower, leader_known=not unavailable)
            for follower in shard.followers
        )
        rows.append(
            (
                shard.shard,
                _enum_name(logs_pb2.Health, shard.health),
                _leader_note(shard),
                shard.leader_epoch,
                "-" if unavailable else shard.last_sequence,
                followers or "-",
            )
        )
    health = _enum_name(logs_pb2.Health, status.health)
    table = render.table(
        ("SHARD", "HEALTH", "LEADER", "EPOCH", "LAST SEQUENCE", "FOLLOWERS"), rows
    )
    text = f"cluster health: {health}\n\n{table}"
    # A router of an earlier version sends no placements.
    if status.placements:
        text += "\n\nplacements, oldest first:\n" + _placement_table(status)
    return text


def _placement_table(status: logs_pb2.GetClusterStatusResponse) -> str:
    """Render the placement history with the entry timestamps of each placement.

    The placement in effect is the latest one that starts at or before the
    router's `observe_time`. Later ones are pending.
    """
    observed = _nanos(status.observe_time)
    starts = [
        _nanos(placement.start_time) if placement.HasField("start_time") else None
        for placement in status.placements
    ]
    in_effect = max(
        (
            index
            for index, start in enumerate(starts)
            if start is None or start <= observed
        ),
        default=-1,
    )
    rows = []
    for index, (placement, start) in enumerate(
        zip(status.placements, starts, strict=True)
    ):
        if index < in_effect:
            state = "earlier"
        elif index == in_effect:
            state = "in effect"
        else:
            # Rounded up to whole seconds.
            wait_ns = -(-(start - observed) // _NANOS_PER_SECOND) * _NANOS_PER_SECOND
            state = f"pending, starts in {format_duration(wait_ns)}"
        bucket = "-"
        if placement.HasField("time_bucket_width"):
            bucket = format_duration(placement.time_bucket_width.ToNanoseconds())
        rows.append(
            (
                "(oldest)" if start is None else format_time(start, fixed_width=True),
                state,
                _enum_name(logs_pb2.ShardingStrategy, placement.strategy),
                bucket,
                ", ".join(placement.shards),
            )
        )
    return render.table(("ENTRIES FROM", "STATE", "STRATEGY", "BUCKET", "SHARDS"), rows)


# --- values and connection --------------------------------------------------


def _filter_fields(args: argparse.Namespace) -> dict[str, Any]:
    """Return the entry filters that query, tail and stats share."""
    if args.min_severity and args.severities:
        raise UsageError(
            "--min-severity cannot be combined with --severity; use one of the two"
        )
    for service in args.services:
        check_service_name(service, "--service", service)
    return {
        "services": args.services,
        "min_severity": _severity(args.min_severity),
        "severities": [_severity(text, "--severity") for text in args.severities],
        "keyword": args.keyword or "",
        "attribute_filters": _attribute_filters(args.attributes),
    }


def _severity(text: str | None, option: str = "--min-severity") -> int:
    if text is None:
        return logs_pb2.SEVERITY_UNSPECIFIED
    severity = severity_from_text(text)
    if severity is None:
        raise invalid(option, text, "expected " + ", ".join(_SEVERITY_NAMES))
    return severity


def _attribute_filters(pairs: list[str]) -> list[str]:
    for pair in pairs:
        try:
            parse_attribute_filter(pair)
        except ValueError as exc:
            raise UsageError(f"--attr: {exc}") from None
    return pairs


def _set_time_range(request: Any, args: argparse.Namespace, zone: str) -> None:
    # An empty value is rejected rather than read as no bound.
    if args.start is not None:
        request.start_time.CopyFrom(_time(args.start, "--since", zone))
    if args.end is not None:
        request.end_time.CopyFrom(_time(args.end, "--end", zone))
    if (
        args.start
        and args.end
        and request.end_time.ToNanoseconds() <= (request.start_time.ToNanoseconds())
    ):
        raise UsageError(
            f"--end {args.end} is not after --since {args.start}; swap them or "
            "widen the range"
        )


def _time(text: str, option: str, zone: str) -> Timestamp:
    try:
        ns = parse_time(text, default_zone=zone)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    return timestamp(ns, option, text)


def _duration_ns(text: str, option: str) -> int:
    try:
        value = parse_duration(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {exc}") from None
    if value <= 0:
        raise invalid(option, text, "expected a duration above zero")
    return value


def _step_ns(text: str) -> int:
    """Return `--step` in nanoseconds, within the bounds that the server applies."""
    step = _duration_ns(text, "--step")
    if step < MIN_STEP_NS:
        raise invalid(
            "--step",
            text,
            f"shorter than the minimum of {format_duration(MIN_STEP_NS)}; give "
            f"{format_duration(MIN_STEP_NS)} or more, or leave --step out",
        )
    if step > MAX_STEP_NS:
        raise invalid(
            "--step",
            text,
            f"longer than the maximum of {format_seconds(MAX_STEP_NS)} (2^62 ns, "
            f"about 146 years); give {format_seconds(MAX_STEP_NS)} or less, or "
            "leave --step out",
        )
    return step


def _check_bucket_count(
    request: logs_pb2.GetLogStatsRequest, args: argparse.Namespace, step: int
) -> None:
    """Reject a --step that gives the time range more buckets than the server allows.

    Without --end the range ends now. The server's clock is read a little
    later, so a step at the limit may still fail there.
    """
    first = clamp_query_ns(_nanos(request.start_time))
    if args.end is None:
        end = clamp_query_ns(time.time_ns())
        until = "now"
    else:
        end = clamp_query_ns(_nanos(request.end_time))
        until = "--end"
    if end <= first:
        return
    buckets = bucket_count(first, end, step)
    if buckets <= MAX_BUCKETS:
        return
    fitting = format_duration(smallest_step(first, end))
    raise invalid(
        "--step",
        args.step,
        f"gives {buckets:,} buckets from --since to {until}, more than the "
        f"limit of {MAX_BUCKETS:,}; give --step {fitting} or more, or a "
        "shorter range",
    )


def format_duration(ns: int) -> str:
    """Format a duration as `90s`, `5m` or `2h`, exactly.

    A duration that is not a whole number of minutes is written in decimal
    seconds, such as `86400.5s`, so that no fraction is rounded away.
    """
    seconds, nanos = divmod(ns, _NANOS_PER_SECOND)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds and not nanos and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return format_seconds(ns)


def _nanos(timestamp) -> int:
    return timestamp.seconds * _NANOS_PER_SECOND + timestamp.nanos


def _enum_name(enum, value: int) -> str:
    """Return a value's name without the enum's prefix: `error`, `timestamp_too_old`."""
    try:
        name = enum.Name(value)
    except ValueError:
        return str(value)
    if not value:
        return "-"
    prefix = enum.Name(0).removesuffix("UNSPECIFIED")
    return name.removeprefix(prefix).lower()


class _SessionRenewed(Exception):
    """Signal that the gateway ended a stream because its access token expired.

    The saved session now has a new access token, so the stream may open
    again at once.
    """


class _StreamInterrupted(ServerError):
    """A stream that broke because the server went away or was unavailable
    after earlier calls of this command got responses, so it may open again."""

    def __init__(self, error: ServerError, retry_delay: float | None) -> None:
        super().__init__(str(error), error.code, error.reason, error.metadata)
        self.retry_delay = retry_delay


class _LogsClient:
    """A channel to the gateway with the LogsService stub and error mapping."""

    def __init__(
        self, address: str, timeout: float, tls: ClientTls | None = None
    ) -> None:
        self.address = address
        self.timeout = timeout
        self.tls = tls
        self.channel = open_channel(address, tls)
        self.stub = logs_grpc.LogsServiceStub(self.channel)
        # The command's credential, which `stream` renews when it expires.
        self.credential = current_credential(address)
        # Whether a call of this command got a response, so that a later
        # UNAVAILABLE means that the server went away, not that none runs.
        self.responded = False

    def __enter__(self) -> _LogsClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.channel.close()

    def call(self, method: Callable[..., Any], request: Message) -> Any:
        """Call a unary method with the deadline, raising `ServerError` on failure."""
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as exc:
            raise self.error(exc) from None

    def stream(
        self, method: Callable[..., Any], request: Message, duration_ns: int | None
    ) -> Iterator[Any]:
        """Yield the responses of a server stream until it ends or `duration_ns`
        nanoseconds pass.

        Raises:
          ServerError: the call failed, or `duration_ns` passed before the
            first response, which the server sends as soon as the stream is
            open.
          _SessionRenewed: the gateway rejected the saved session's access
            token, for example because it expired, and the session now has a
            new one.
        """
        timeout = None if duration_ns is None else duration_ns / _NANOS_PER_SECOND
        sent = None
        if self.credential is not None and self.credential.from_session:
            sent = self.credential.bearer()
        call = method(request, timeout=timeout)
        received = False
        try:
            for response in call:
                received = True
                self.responded = True
                yield response
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED and duration_ns:
                if received:
                    return
                raise ServerError(
                    f"{self.address} sent no response within the --duration of "
                    f"{format_seconds(duration_ns)} (DEADLINE_EXCEEDED), so the "
                    "stream never opened; check the log of `splitlog up`, or "
                    "retry with a longer --duration",
                    exc.code(),
                ) from None
            if (
                exc.code() == grpc.StatusCode.UNAUTHENTICATED
                and sent is not None
                and self.credential is not None
                and self.credential.renew(sent)
            ):
                raise _SessionRenewed from None
            if self.responded and (
                exc.code() == grpc.StatusCode.UNAVAILABLE or self.server_went_away(exc)
            ):
                raise _StreamInterrupted(self.error(exc), _retry_delay(exc)) from None
            raise self.error(exc) from None
        finally:
            call.cancel()

    def error(self, error: grpc.RpcError) -> ServerError:
        if self.server_went_away(error):
            return ServerError(
                f"the server at {self.address} went away: it responded to "
                "earlier calls of this command, but the connection broke "
                f"or was refused ({describe(error)})",
                error.code(),
            )
        if never_reached(error, self.responded, self._reachable):
            return Unreachable(self.address, self.tls is not None)
        if error.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
            # The gateway forwards the call with the client's deadline, so a
            # call to a stopped log_service also ends with DEADLINE_EXCEEDED.
            return ServerError(
                f"neither the gateway at {self.address} nor the log_service "
                f"behind it sent a response within {self.timeout:g} s "
                f"(DEADLINE_EXCEEDED); `splitlog health {self.address}` shows "
                "which one is not serving, and the log of `splitlog up` why",
                error.code(),
            )
        return server_error(error)

    def server_went_away(self, error: grpc.RpcError) -> bool:
        """Return whether a server that responded earlier in this command
        stopped or dropped the connection during `error`'s call.

        A status without details comes from the transport: UNAVAILABLE such
        as "Stream removed" when the connection broke, and CANCELLED when
        the server shut down during the call.
        """
        if not self.responded:
            return False
        if error.code() == grpc.StatusCode.CANCELLED:
            return from_transport(error)
        if error.code() == grpc.StatusCode.UNAVAILABLE:
            return from_transport(error) or not self._reachable()
        return False

    def _reachable(self) -> bool:
        return channel_reachable(self.channel)
