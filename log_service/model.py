"""Rules that turn written log entries into stored, normalised columns.

The router applies these rules to every `WriteLogEntries` batch, through
`log_service.streams.normalize_write`, which adds the rules of the column
form `LogStream`, and `log_service.otlp` calls the same rules for OTLP
exports. Both produce a `NormalizedBatch`: the valid entries as rows (and
stream blocks) in input order, plus one `LogEntryRejection` per rejected
entry. A rejected entry never stops the others.

This code runs once per ingested entry, so each field is read once, each
valid entry becomes one row tuple, and `EntryColumns` is built from the rows
once, when first needed. `normalize_batch` stores the common entry itself and
calls `BatchBuilder.add` for the rest; both give the same row.

Invalid UTF-8 policy: protobuf strings are always valid UTF-8, so bad byte
sequences can only arrive in OTLP `bytes_value` bodies and in shipped files.
`repair_utf8` replaces each bad sequence with U+FFFD, and the entry gets the
attribute `utf8_repaired` = `true` to mark the text as changed. The entry is
kept, not rejected.
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from json.encoder import encode_basestring
from typing import Any

from google.protobuf import timestamp_pb2

from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime.config import Config
from splitlog_runtime.errors import InvalidArgument, clip, invalid_field
from splitlog_runtime.validation import cut_utf8

DEBUG = logs_service_pb2.SEVERITY_DEBUG
INFO = logs_service_pb2.SEVERITY_INFO
WARN = logs_service_pb2.SEVERITY_WARN
ERROR = logs_service_pb2.SEVERITY_ERROR
FATAL = logs_service_pb2.SEVERITY_FATAL

MISSING_FIELD = logs_service_pb2.REJECTION_REASON_MISSING_FIELD
INVALID_FIELD = logs_service_pb2.REJECTION_REASON_INVALID_FIELD
TOO_LARGE = logs_service_pb2.REJECTION_REASON_TOO_LARGE
TIMESTAMP_TOO_OLD = logs_service_pb2.REJECTION_REASON_TIMESTAMP_TOO_OLD
TIMESTAMP_IN_FUTURE = logs_service_pb2.REJECTION_REASON_TIMESTAMP_IN_FUTURE

NANOS_PER_SECOND = 1_000_000_000
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
INT32_MAX = 2**31 - 1

# Attributes the server adds to an entry. They replace a writer's attribute of
# the same name, whose value then counts in `dropped_attributes_count` unless
# it is the same, and they count toward `max_attributes` first.
SEVERITY_TEXT_ATTRIBUTE = "severity_text"
UTF8_REPAIRED_ATTRIBUTE = "utf8_repaired"

SEVERITY_WORDS: dict[str, int] = {
    **dict.fromkeys(
        (
            "debug",
            "dbg",
            "d",
            "v",
            "verbose",
            "trace",
            "t",
            "fine",
            "finer",
            "finest",
            "config",
        ),
        DEBUG,
    ),
    **dict.fromkeys(("info", "information", "informational", "i", "notice", "n"), INFO),
    **dict.fromkeys(("warn", "warning", "w"), WARN),
    **dict.fromkeys(("error", "err", "e", "severe"), ERROR),
    **dict.fromkeys(
        (
            "fatal",
            "f",
            "critical",
            "crit",
            "c",
            "emerg",
            "emergency",
            "alert",
            "panic",
        ),
        FATAL,
    ),
}
"""Severity words, in lower case, and the severity each one maps to.

Words are compared without regard to case and surrounding spaces. The table
covers the level names of syslog, Python's logging module, Java's JUL and
Log4j, and the one-letter levels of Android's logcat except A (assert):

| severity | words |
|---|---|
| DEBUG | debug, dbg, d, v, verbose, trace, t, fine, finer, finest, config |
| INFO | info, information, informational, i, notice, n |
| WARN | warn, warning, w |
| ERROR | error, err, e, severe |
| FATAL | fatal, f, critical, crit, c, emerg, emergency, alert, panic |

An OpenTelemetry severity number maps by range: 1-8 DEBUG, 9-12 INFO,
13-16 WARN, 17-20 ERROR, 21-24 FATAL. Any other word becomes INFO, and the
entry keeps the word in the attribute `severity_text`. When the severity
comes from a `severity` field or a severity number, a severity text that is
not a word of that severity, such as `notice` with WARN or `AUDIT`, is kept
in that attribute too.
"""

VALID_SEVERITIES = frozenset(logs_service_pb2.Severity.values()) - {
    logs_service_pb2.SEVERITY_UNSPECIFIED
}

# Index i is the severity of OpenTelemetry severity number i (1-24).
_SEVERITY_BY_NUMBER = (0,) + (DEBUG,) * 8 + (INFO,) * 4 + (WARN,) * 4
_SEVERITY_BY_NUMBER += (ERROR,) * 4 + (FATAL,) * 4

# Words that `guess_severity` looks for, in lower case. Single letters and
# rare words of SEVERITY_WORDS are left out because they occur in ordinary
# text. `re` is several times faster on lowered text with a leading character
# class than with IGNORECASE, so the context rules are checked in Python.
_GUESS_WORDS = (
    r"[cdefinpstw](?:race|ebug|nfo|otice|arning|arn|rror|rr|evere|atal|ritical|"
    r"rit|anic|mergency|merg)\b"
)
_GUESS_WORD = re.compile(_GUESS_WORDS)
_GUESS_WORD_ANY_CASE = re.compile(_GUESS_WORDS, re.IGNORECASE)
# A key such as `level=`, `lvl:` or `"severity": "` right before a word.
_LEVEL_KEY = re.compile(r"(?i:\b(?:level|lvl|severity)[\"']?\s*[=:]\s*[\"']?)\Z")
_LEVEL_KEY_CHARACTERS = 24

# Log formats put the level near the start, so `guess_severity` reads no
# further and a long message costs no more than a short one.
GUESS_SEVERITY_CHARACTERS = 1024

_HEX_32 = re.compile(r"[0-9a-fA-F]{32}")
_HEX_16 = re.compile(r"[0-9a-fA-F]{16}")
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Encoder of stored attribute objects: sorted keys, no spaces, and text kept
# as UTF-8 instead of \u escapes.
_encode_json = json.JSONEncoder(
    sort_keys=True, ensure_ascii=False, separators=(",", ":")
).encode
# Maximum length of a value quoted back in a rejection description.
_QUOTE_LIMIT = 120


def severity_from_text(word: str) -> int | None:
    """Map a severity word to a `Severity` value by `SEVERITY_WORDS`.

    Returns None for a word that is not in the table.
    """
    return SEVERITY_WORDS.get(word.strip().lower())


def text_names_severity(severity_text: str, severity: int) -> bool:
    """Return whether `severity_text` is a word of `severity` in SEVERITY_WORDS.

    An entry whose severity comes from elsewhere keeps any other text in the
    attribute `severity_text`, so a level such as `notice` or `AUDIT` sent
    with a WARN severity is not lost.
    """
    return severity_from_text(severity_text) == severity


def severity_from_number(number: int) -> int | None:
    """Map an OpenTelemetry severity number (1-24) to a `Severity` value.

    Returns None for 0 (unset) and for numbers outside 1-24.
    """
    if 0 < number <= 24:
        return _SEVERITY_BY_NUMBER[number]
    return None


def guess_severity(message: str) -> int | None:
    """Find the severity that a message names, such as `ERROR` in its text.

    Returns the severity of `find_severity_word`, or None when the message
    names no severity.
    """
    found = find_severity_word(message)
    return None if found is None else found[1]


def find_severity_word(
    message: str, marked_only: bool = False
) -> tuple[str, int] | None:
    """Find the severity word that a message names and its severity.

    Only the first severity word within the first `GUESS_SEVERITY_CHARACTERS`
    characters counts. A word counts when it is written in upper case, follows
    `level=` (or `lvl`, `severity`, with `=` or `:`), is in brackets like
    `[warn]`, or starts the message before a colon. A lower-case word
    elsewhere, as in "no error found", does not count. The router reads the
    severity of a message sent without one with this function, and the log
    file parser reads a line whose header names no level with it too, so both
    paths give a line the same severity. With `marked_only`, only a word
    after a level key or in brackets counts: the parser reads the message of
    a line with a time that way, where an upper-case word is part of the
    text.
    Returns None when the message names no severity.
    """
    window = message[:GUESS_SEVERITY_CHARACTERS]
    lowered = window.lower()
    if len(lowered) == len(window):
        matches = _GUESS_WORD.finditer(lowered)
    else:
        # A few characters, such as U+0130, change length when lowered, so the
        # positions would not match the original text.
        matches = _GUESS_WORD_ANY_CASE.finditer(window)
    for match in matches:
        start, end = match.span()
        before = window[start - 1] if start else ""
        if before.isalnum() or before == "_":
            continue
        word = window[start:end]
        # The pattern also matches a few other words, such as "earn", and
        # U+0130 lowers to two characters: neither is a severity.
        severity = SEVERITY_WORDS.get(word.lower())
        if severity is None:
            continue
        after = window[end : end + 1]
        if (
            (word.isupper() and not marked_only)
            or (before in ("[", "<") and after in ("]", ">"))
            or (after == ":" and not marked_only and not window[:start].strip())
            or _LEVEL_KEY.search(window, max(0, start - _LEVEL_KEY_CHARACTERS), start)
        ):
            return word, severity
    return None


@dataclass(frozen=True)
class Limits:
    """Size and time limits applied to each written entry."""

    max_message_bytes: int = 256 * 1024
    max_batch_entries: int = 10_000
    max_attributes: int = 128
    max_attribute_key_bytes: int = 256
    max_attribute_value_bytes: int = 8192
    max_service_bytes: int = 256
    max_host_bytes: int = 256
    max_future_ns: int = 600 * NANOS_PER_SECOND
    default_time_zone: str = "UTC"

    @classmethod
    def from_config(cls, config: Config) -> Limits:
        """Build the limits from the `log_*` settings of a `Config`."""
        return cls(
            max_message_bytes=config.log_max_message_bytes,
            max_batch_entries=config.log_max_batch_entries,
            max_future_ns=config.log_max_future_seconds * NANOS_PER_SECOND,
            default_time_zone=config.log_default_time_zone,
        )


@dataclass
class NormalizedBatch:
    """The result of normalising one batch.

    Attributes:
      rows: the valid entries, in input order, one `ROW_FIELDS` tuple each.
      indexes: the input index of each valid entry.
      rejections: one rejection per invalid entry, ordered by index.
      blocks: valid entries of `LogStream` messages that are still in columns
        (`streams.ColumnBlock`), each after `row_position` of the rows.
    """

    rows: list[tuple] = field(default_factory=list)
    indexes: list[int] = field(default_factory=list)
    rejections: list[logs_service_pb2.LogEntryRejection] = field(default_factory=list)
    blocks: list[Any] = field(default_factory=list)

    @cached_property
    def columns(self) -> node_service_pb2.EntryColumns:
        """The valid rows as one `EntryColumns` message, built on first use."""
        return rows_to_columns(self.rows)

    @property
    def accepted_count(self) -> int:
        """Number of valid entries, in rows and in blocks."""
        return len(self.indexes) + sum(len(block) for block in self.blocks)

    @property
    def entry_count(self) -> int:
        """Number of input entries, valid or rejected."""
        return self.accepted_count + len(self.rejections)

    def reject_row(self, row: tuple, reason: int, description: str) -> None:
        """Move the valid entry `row` (this very tuple) to the rejections."""
        position = next(i for i, valid in enumerate(self.rows) if valid is row)
        del self.rows[position]
        index = self.indexes.pop(position)
        self.__dict__.pop("columns", None)
        rejection = logs_service_pb2.LogEntryRejection(
            index=index, reason=reason, description=clip(description)
        )
        bisect.insort(self.rejections, rejection, key=_rejection_index)


# The `EntryColumns` field of each item of a normalised row, in row order.
ROW_FIELDS = (
    "timestamps",
    "observed_timestamps",
    "severities",
    "services",
    "hosts",
    "messages",
    "attributes",
    "trace_ids",
    "span_ids",
    "truncated",
    "dropped_attributes_counts",
)


# Columns a sender may leave empty when every entry has the default: "",
# False or 0, and for `observed_timestamps` the batch's `observed_timestamp`
# (see `EntryColumns` in node_service.proto).
SPARSE_FIELDS = frozenset(
    (
        "observed_timestamps",
        "trace_ids",
        "span_ids",
        "truncated",
        "dropped_attributes_counts",
    )
)
# The sparse columns whose default is a false value ("", False or 0).
_FALSE_DEFAULT_FIELDS = tuple(sorted(SPARSE_FIELDS - {"observed_timestamps"}))


def rows_to_columns(
    rows: Sequence[tuple], into: node_service_pb2.EntryColumns | None = None
) -> node_service_pb2.EntryColumns:
    """Fill `into` (or new columns) with normalised rows; return the columns.

    Every column gets one value per row. `fill_columns` is the sparse form
    that the router sends to nodes.
    Each column is extended once, from a tuple that `zip` builds in C, so the
    cost per entry stays far below one Python call.
    """
    columns = node_service_pb2.EntryColumns() if into is None else into
    if rows:
        for name, values in zip(ROW_FIELDS, zip(*rows, strict=True), strict=True):
            getattr(columns, name).extend(values)
    return columns


def fill_columns(
    segments: Sequence[Any], columns: node_service_pb2.EntryColumns
) -> None:
    """Append the entries of `segments` to empty `columns`, in order.

    A segment is a list of normalised rows or a `streams.ColumnBlock`. Each
    column of `SPARSE_FIELDS` whose every value is the default stays empty.
    When every entry has the same observed time, that time goes to
    `columns.observed_timestamp` and `observed_timestamps` stays empty.
    Each column is extended once per segment, from a tuple that `zip` builds
    in C, and the default checks (`any`, `tuple.count`) run in C too, so the
    cost per entry stays far below one Python call.
    """
    parts: list[Any] = []
    filled: set[str] = set()
    observed: set[int] = set()
    for segment in segments:
        if not len(segment):
            continue
        if not isinstance(segment, list):
            parts.append(segment)
            observed.add(segment.observed_timestamp)
            continue
        part = dict(zip(ROW_FIELDS, zip(*segment, strict=True), strict=True))
        parts.append(part)
        for name in _FALSE_DEFAULT_FIELDS:
            if name not in filled and any(part[name]):
                filled.add(name)
        times = part["observed_timestamps"]
        if times.count(times[0]) == len(times):
            observed.add(times[0])
        else:
            filled.add("observed_timestamps")
    if len(observed) > 1:
        filled.add("observed_timestamps")
    elif observed and "observed_timestamps" not in filled:
        columns.observed_timestamp = observed.pop()
    for part in parts:
        if isinstance(part, dict):
            for name, values in part.items():
                if name in filled or name not in SPARSE_FIELDS:
                    getattr(columns, name).extend(values)
        else:
            part.extend(columns, filled)


def repair_utf8(data: bytes) -> tuple[str, bool]:
    """Decode UTF-8, replacing each invalid byte sequence with U+FFFD.

    Returns the text and whether any replacement was made.
    """
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "replace"), True


# ErrorInfo metadata key of a BATCH_TOO_LARGE error: the limit, so that a
# client can resend in batches that fit.
MAX_BATCH_ENTRIES_KEY = "max_batch_entries"


def batch_error_for_size(
    count: int, limits: Limits, field: str = "entries"
) -> InvalidArgument | None:
    """Return the error for a batch of `count` entries, or None if it is allowed.

    A batch must contain at least one entry and at most `limits.max_batch_entries`.
    `field` is the request field that the error names.
    """
    if count == 0:
        return invalid_field(
            field,
            "the batch has no entries; send at least one entry",
            reason="EMPTY_BATCH",
        )
    if count > limits.max_batch_entries:
        return invalid_field(
            field,
            f"the batch has {count} entries, more than the limit of "
            f"{limits.max_batch_entries} (log_max_batch_entries); split it into "
            "smaller batches",
            reason="BATCH_TOO_LARGE",
            metadata={MAX_BATCH_ENTRIES_KEY: str(limits.max_batch_entries)},
        )
    return None


def write_size_error(
    entry_count: int, stream_count: int, has_entries: bool, limits: Limits
) -> InvalidArgument | None:
    """Return the error for a write request of this size, or None.

    `entry_count` counts the entries of `entries` and of every stream. Each
    stream counts as at least one entry against the batch limit, so that a
    request of many empty streams fails before they are read one by one.
    The error names `streams` for a request with streams and no `entries`.
    """
    field = "streams" if stream_count and not has_entries else "entries"
    return batch_error_for_size(max(entry_count, stream_count), limits, field)


def stream_columns_error(
    number: int, message_count: int, columns: Iterable[tuple[str, int]]
) -> InvalidArgument | None:
    """Return the error for stream `number` when its columns do not fit, or None.

    `messages` must not be empty, and each column of `columns`, given by
    name and length, is empty or as long as `messages`.
    """
    if not message_count:
        return invalid_field(
            f"streams[{number}].messages",
            "is required but empty; send at least one message per stream, "
            "or leave the stream out",
        )
    for name, length in columns:
        if length and length != message_count:
            return invalid_field(
                f"streams[{number}].{name}",
                f"has {length} values for {message_count} messages; send one "
                "value per message in the same order, or leave the column empty",
                reason="COLUMN_LENGTH_MISMATCH",
            )
    return None


def _quote(value: str) -> str:
    return repr(clip(value, _QUOTE_LIMIT))


def utf8_length(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))


# Field names used in rejections of public `LogEntry` messages.
LOG_ENTRY_FIELDS: Mapping[str, str] = {
    "service": "service",
    "host": "host",
    "severity": "severity",
    "timestamp": "timestamp",
    "observed_timestamp": "observed_timestamp",
    "trace_id": "trace_id",
    "span_id": "span_id",
    "attributes": "attributes",
}


class BatchBuilder:
    """Collector of normalised entries into columns, one `add` call per entry.

    `normalize_batch` and the OTLP conversion both read their input into plain
    values and call `add`, so every entry rule lives in this one method.

    Args:
      now_ns: the server's receive time, in nanoseconds since the Unix epoch.
      limits: the size and time limits.
      retention_cutoff: returns the lowest timestamp (ns) allowed for a
        service. It is called once per service and batch.
      fields: the input's name for each field named in LOG_ENTRY_FIELDS, used
        in rejections.
    """

    def __init__(
        self,
        *,
        now_ns: int,
        limits: Limits,
        retention_cutoff: Callable[[str], int],
        fields: Mapping[str, str] = LOG_ENTRY_FIELDS,
    ) -> None:
        self.now_ns = now_ns
        self.latest_ns = now_ns + limits.max_future_ns
        self.limits = limits
        self.retention_cutoff = retention_cutoff
        self.cutoffs: dict[str, int] = {}
        self.valid_hosts: set[str] = set()
        self._fields = fields
        self.rows: list[tuple] = []
        self.indexes: list[int] = []
        self.rejections: list[logs_service_pb2.LogEntryRejection] = []
        self.blocks: list[Any] = []

    def reject(self, index: int, reason: int, field: str, description: str) -> None:
        """Record a rejection of entry `index`; `field` is a LOG_ENTRY_FIELDS key."""
        self.rejections.append(
            logs_service_pb2.LogEntryRejection(
                index=index,
                reason=reason,
                field=self._fields.get(field, field),
                description=clip(description),
            )
        )

    def check_service(self, index: int, service: str) -> int | None:
        """Check a service name not seen before in this batch.

        Returns the service's retention cutoff, or None after rejecting entry
        `index`.
        """
        limits = self.limits
        if service_is_valid(service, limits):
            cutoff = self.cutoffs[service] = self.retention_cutoff(service)
            return cutoff
        if not service:
            self.reject(
                index,
                MISSING_FIELD,
                "service",
                f"{self._fields['service']} is empty; set it to the name of the "
                "service that wrote the entry, such as 'expenses'",
            )
            return None
        if utf8_length(service) > limits.max_service_bytes:
            self.reject(
                index,
                INVALID_FIELD,
                "service",
                f"service {_quote(service)} is longer than "
                f"{limits.max_service_bytes} bytes in UTF-8; use a shorter name",
            )
            return None
        if _CONTROL_CHARACTER.search(service) is not None:
            self.reject(
                index,
                INVALID_FIELD,
                "service",
                f"service {_quote(service)} contains a control character; "
                "remove line breaks, tabs and other control characters",
            )
            return None
        cutoff = self.cutoffs[service] = self.retention_cutoff(service)
        return cutoff

    def add(
        self,
        index: int,
        *,
        service: str,
        host: str,
        message: str,
        severity: int,
        severity_text: str,
        timestamp: int,
        observed_timestamp: int,
        attributes: Mapping[str, str],
        trace_id: str,
        span_id: str,
        dropped_attributes: int = 0,
        utf8_repaired: bool = False,
        timestamp_set: bool = False,
    ) -> None:
        """Validate and normalise one entry, then store or reject it.

        `severity` is a `Severity` value (0 when unset). `timestamp` and
        `observed_timestamp` are nanoseconds since the Unix epoch, 0 when
        unset. `timestamp_set` makes a `timestamp` of 0 the Unix epoch
        itself, which a `LogEntry` can tell apart from an unset one.
        `attributes` is not modified.
        """
        limits = self.limits
        fields = self._fields

        # Services and hosts repeat within a batch, so each distinct one is
        # checked once.
        cutoff = self.cutoffs.get(service)
        if cutoff is None:
            cutoff = self.check_service(index, service)
            if cutoff is None:
                return
        if host and host not in self.valid_hosts:
            if not host_is_valid(host, limits):
                self.reject(
                    index,
                    INVALID_FIELD,
                    "host",
                    f"host {_quote(host)} is longer than {limits.max_host_bytes} "
                    "bytes in UTF-8 or contains a control character; send the "
                    "plain host or pod name",
                )
                return
            self.valid_hosts.add(host)

        keep_severity_text = False
        if severity:
            if severity not in VALID_SEVERITIES:
                self.reject(
                    index,
                    INVALID_FIELD,
                    "severity",
                    f"severity {severity} is not a known Severity value; use "
                    "5 (DEBUG), 9 (INFO), 13 (WARN), 17 (ERROR) or 21 (FATAL), "
                    "or leave it unset and send severity_text",
                )
                return
            keep_severity_text = bool(severity_text) and not text_names_severity(
                severity_text, severity
            )
        elif severity_text:
            severity = SEVERITY_WORDS.get(severity_text.strip().lower(), 0)
            if not severity:
                severity = INFO
                keep_severity_text = True
        else:
            severity = (message and guess_severity(message)) or INFO

        if trace_id:
            if not _HEX_32.fullmatch(trace_id):
                self.reject(
                    index,
                    INVALID_FIELD,
                    "trace_id",
                    f"trace_id {_quote(trace_id)} is not 32 hexadecimal digits; "
                    "send the W3C trace id, such as "
                    "'4bf92f3577b34da6a3ce929d0e0e4736', or leave it empty",
                )
                return
            trace_id = trace_id.lower()
            if trace_id == _ZERO_TRACE_ID:
                trace_id = ""
        if span_id:
            if not _HEX_16.fullmatch(span_id):
                self.reject(
                    index,
                    INVALID_FIELD,
                    "span_id",
                    f"span_id {_quote(span_id)} is not 16 hexadecimal digits; "
                    "send the W3C span id, such as '00f067aa0ba902b7', or "
                    "leave it empty",
                )
                return
            span_id = span_id.lower()
            if span_id == _ZERO_SPAN_ID:
                span_id = ""

        if not observed_timestamp:
            observed_timestamp = self.now_ns
        elif not INT64_MIN <= observed_timestamp <= INT64_MAX:
            self.reject(
                index,
                INVALID_FIELD,
                "observed_timestamp",
                f"{fields['observed_timestamp']} {observed_timestamp} ns is "
                "outside the years 1678 to 2262; send the time the entry was "
                "received, or leave it unset",
            )
            return
        time_field = "timestamp"
        if not timestamp and not timestamp_set:
            timestamp = observed_timestamp
            time_field = "observed_timestamp"
        if timestamp > self.latest_ns or timestamp < cutoff:
            self._reject_time(index, timestamp, time_field, cutoff, service)
            return

        message, truncated = cut_utf8(message, limits.max_message_bytes)

        if attributes or keep_severity_text or utf8_repaired:
            max_value_bytes = limits.max_attribute_value_bytes
            added: dict[str, str] = {}
            if keep_severity_text:
                value, cut = cut_utf8(severity_text, max_value_bytes)
                truncated = truncated or cut
                added[SEVERITY_TEXT_ATTRIBUTE] = value
            if utf8_repaired:
                added[UTF8_REPAIRED_ATTRIBUTE] = "true"
            kept: dict[str, str] = {}
            if attributes:
                if "" in attributes:
                    self.reject(
                        index,
                        INVALID_FIELD,
                        "attributes",
                        f"{fields['attributes']} has an empty key (value "
                        f"{_quote(attributes[''])}); give every attribute a "
                        "name, such as 'rpc'",
                    )
                    return
                max_key_bytes = limits.max_attribute_key_bytes
                # The added attributes take their places first, so the
                # entry never has more than `max_attributes`.
                max_attributes = limits.max_attributes - len(added)
                for key in sorted(attributes):
                    value = attributes[key]
                    if key in added:
                        # The server's attribute replaces the writer's, and
                        # a different value counts as dropped.
                        if cut_utf8(value, max_value_bytes)[0] != added[key]:
                            dropped_attributes += 1
                        continue
                    # A character is at most 4 bytes, so most keys and values
                    # skip the encoding.
                    if len(key) * 4 > max_key_bytes and (
                        len(key.encode("utf-8")) > max_key_bytes
                    ):
                        dropped_attributes += 1
                        continue
                    if len(kept) >= max_attributes:
                        dropped_attributes += 1
                        continue
                    if len(value) * 4 > max_value_bytes:
                        value, cut = cut_utf8(value, max_value_bytes)
                        truncated = truncated or cut
                    kept[key] = value
            # Reached only when `max_attributes` is below the number of added
            # attributes.
            for key in list(added)[limits.max_attributes :]:
                del added[key]
                dropped_attributes += 1
            kept.update(added)
            attributes_json = _encode_json(kept) if kept else ""
        else:
            attributes_json = ""

        self.rows.append(
            (
                timestamp,
                observed_timestamp,
                severity,
                service,
                host,
                message,
                attributes_json,
                trace_id,
                span_id,
                truncated,
                min(dropped_attributes, INT32_MAX),
            )
        )
        self.indexes.append(index)

    def _reject_time(
        self, index: int, timestamp: int, field: str, cutoff: int, service: str
    ) -> None:
        """Reject entry `index` for a timestamp in the future or past retention.

        `field` is `observed_timestamp` when the entry had no timestamp of its
        own and took the observed time.
        """
        name = self._fields[field]
        if field == "observed_timestamp":
            name += f" (used because {self._fields['timestamp']} is unset)"
        if timestamp > self.latest_ns:
            ahead = (timestamp - self.now_ns) / NANOS_PER_SECOND
            self.reject(
                index,
                TIMESTAMP_IN_FUTURE,
                field,
                f"{name} {_time_and_ns(timestamp)} is {ahead:.0f} s "
                f"ahead of the server clock ({rfc3339(self.now_ns)}), more "
                f"than the allowed {self.limits.max_future_ns // NANOS_PER_SECOND}"
                " s; check the writer's clock",
            )
            return
        self.reject(
            index,
            TIMESTAMP_TOO_OLD,
            field,
            f"{name} {_time_and_ns(timestamp)} is {_age(self.now_ns - timestamp)} "
            f"old, before {rfc3339(cutoff)}, the oldest time that the "
            f"retention of service {_quote(service)} keeps; entries that old "
            "would be deleted at once, so send recent entries or raise the "
            "retention with UpdateRetentionPolicy (`splitlog logs retention "
            "set`)",
        )

    def build(self) -> NormalizedBatch:
        """Return the collected entries as one `NormalizedBatch`."""
        self.rejections.sort(key=_rejection_index)
        return NormalizedBatch(self.rows, self.indexes, self.rejections, self.blocks)


# Ages from this many hours on are given in days.
_AGE_IN_DAYS_HOURS = 48


def _age(ns: int) -> str:
    """Format an age to a tenth: `5.0 hours`, or `30.0 days` from 48 hours on."""
    hours = ns / (3600 * NANOS_PER_SECOND)
    if hours < _AGE_IN_DAYS_HOURS:
        return f"{hours:.1f} hours"
    return f"{hours / 24:.1f} days"


def _rejection_index(rejection: logs_service_pb2.LogEntryRejection) -> int:
    return rejection.index


def normalize_batch(
    entries: Iterable[logs_service_pb2.LogEntry],
    *,
    now_ns: int,
    limits: Limits,
    retention_cutoff: Callable[[str], int],
    first_index: int = 0,
) -> NormalizedBatch:
    """Validate and normalise public log entries.

    Rules, in order, each rejecting the entry with the named reason:
    - `service` is required (MISSING_FIELD), at most `max_service_bytes` in
      UTF-8 and free of control characters (INVALID_FIELD). `host` follows
      the same rules with `max_host_bytes`.
    - severity: a set `severity` must be a known value (INVALID_FIELD), and
      it wins over `severity_text`, which is kept in the attribute
      `severity_text` unless SEVERITY_WORDS maps it to that same severity.
      Without `severity`, `severity_text` maps by SEVERITY_WORDS, and an
      unknown word becomes INFO and is kept in the attribute
      `severity_text`. Without either, `guess_severity` reads the message,
      and the default is INFO.
    - `trace_id` is 32 and `span_id` 16 hexadecimal digits, stored in lower
      case (INVALID_FIELD). An all-zero id, invalid in W3C Trace Context, is
      stored as empty.
    - a `timestamp` or `observed_timestamp` whose `nanos` is outside 0 to
      999999999 is invalid as a `google.protobuf.Timestamp` (INVALID_FIELD).
    - timestamps are `seconds * 10**9 + nanos`, exact. An unset
      `timestamp` takes `observed_timestamp`, and an unset or zero one
      takes `now_ns`. A `timestamp` set to the Unix epoch is that time. A
      timestamp below `retention_cutoff(service)` is TIMESTAMP_TOO_OLD, one
      above `now_ns + max_future_ns` TIMESTAMP_IN_FUTURE.
    - a message over `max_message_bytes` is cut at a character boundary and
      the entry flagged `truncated`.
    - an attribute with an empty key rejects the entry (INVALID_FIELD).
    - attributes with a key over `max_attribute_key_bytes` are dropped, and
      past `max_attributes` (in sorted key order) the rest are dropped; both
      count in `dropped_attributes_count`. Values over
      `max_attribute_value_bytes` are cut and flag `truncated`. The kept ones
      are stored as a JSON object with sorted keys, or "" when none.
    - the attributes the server adds (`severity_text` for a severity text
      that did not set the severity, `utf8_repaired`) take their places under
      `max_attributes` first and replace a writer's attribute of the same
      name; a replaced value that differs counts as dropped.

    `first_index` is the index of the first entry, for streams that count
    entries across messages.
    """
    builder = BatchBuilder(
        now_ns=now_ns, limits=limits, retention_cutoff=retention_cutoff
    )
    add_log_entries(builder, entries, first_index)
    return builder.build()


def add_log_entries(
    builder: BatchBuilder,
    entries: Iterable[logs_service_pb2.LogEntry],
    first_index: int = 0,
) -> None:
    """Normalise public log entries into `builder`, as `normalize_batch` does."""
    now_ns = builder.now_ns
    limits = builder.limits
    add = builder.add
    # The common entry (a valid service and host, a valid severity with no
    # severity text or a word of that severity, no trace ids, a short
    # message, a few short attributes, sane timestamps) is
    # stored here without a call to `add`. It gets exactly the row that `add`
    # would give it. Every other entry goes through `add`. A service new to
    # the batch is checked here as `add` checks it first, so that in small
    # batches, where many services are new, their entries stay on this path.
    cutoffs = builder.cutoffs
    check_service = builder.check_service
    valid_hosts = builder.valid_hosts
    append_row = builder.rows.append
    append_index = builder.indexes.append
    latest_ns = now_ns + limits.max_future_ns
    max_message_characters = limits.max_message_bytes // 4
    max_key_characters = limits.max_attribute_key_bytes // 4
    max_value_characters = limits.max_attribute_value_bytes // 4
    max_attributes = limits.max_attributes
    valid_severities = VALID_SEVERITIES
    for index, entry in enumerate(entries, first_index):
        timestamp = entry.timestamp
        observed = entry.observed_timestamp
        if not (
            0 <= timestamp.nanos < NANOS_PER_SECOND
            and 0 <= observed.nanos < NANOS_PER_SECOND
        ):
            _reject_nanos(builder, index, timestamp, observed)
            continue
        timestamp_ns = timestamp.seconds * NANOS_PER_SECOND + timestamp.nanos
        observed_ns = observed.seconds * NANOS_PER_SECOND + observed.nanos
        service = entry.service
        host = entry.host
        message = entry.message
        severity = entry.severity
        severity_text = entry.severity_text
        attributes = entry.attributes
        cutoff = cutoffs.get(service)
        if cutoff is None:
            # A service new to the batch: `add` would check it first too.
            cutoff = check_service(index, service)
            if cutoff is None:
                continue
        if host and host not in valid_hosts and host_is_valid(host, limits):
            valid_hosts.add(host)
        # A timestamp set to the Unix epoch is a time, not an unset field,
        # so it is checked against the retention like any other.
        timestamp_set = not timestamp_ns and entry.HasField("timestamp")
        if (
            not timestamp_set
            and severity in valid_severities
            and (not host or host in valid_hosts)
            and len(message) <= max_message_characters
            and not entry.trace_id
            and not entry.span_id
            and (not severity_text or text_names_severity(severity_text, severity))
        ):
            stored_observed = observed_ns or now_ns
            stored_timestamp = timestamp_ns or stored_observed
            attributes_json = (
                short_attributes_json(
                    attributes,
                    max_attributes,
                    max_key_characters,
                    max_value_characters,
                )
                if attributes
                else ""
            )
            if (
                INT64_MIN <= stored_observed <= INT64_MAX
                and cutoff <= stored_timestamp <= latest_ns
                and attributes_json is not None
            ):
                append_row(
                    (
                        stored_timestamp,
                        stored_observed,
                        severity,
                        service,
                        host,
                        message,
                        attributes_json,
                        "",
                        "",
                        False,
                        0,
                    )
                )
                append_index(index)
                continue
        add(
            index,
            service=service,
            host=host,
            message=message,
            severity=severity,
            severity_text=severity_text,
            timestamp=timestamp_ns,
            observed_timestamp=observed_ns,
            attributes=attributes,
            trace_id=entry.trace_id,
            span_id=entry.span_id,
            timestamp_set=timestamp_set,
        )


def _reject_nanos(
    builder: BatchBuilder,
    index: int,
    timestamp: timestamp_pb2.Timestamp,
    observed: timestamp_pb2.Timestamp,
) -> None:
    """Reject entry `index` for a Timestamp whose nanos is out of range.

    Such a Timestamp is invalid, and reading it as `seconds * 10**9 + nanos`
    would store another time than the one the writer meant.
    """
    field, value = "timestamp", timestamp
    if 0 <= timestamp.nanos < NANOS_PER_SECOND:
        field, value = "observed_timestamp", observed
    builder.reject(
        index,
        INVALID_FIELD,
        field,
        f"{field}.nanos {value.nanos} is outside 0 to 999999999; put the whole "
        f"seconds in {field}.seconds and only the fraction of a second, 0 to "
        "999999999, in nanos",
    )


def service_is_valid(service: str, limits: Limits) -> bool:
    """Return whether `BatchBuilder.check_service` accepts a service name."""
    return (
        bool(service)
        and utf8_length(service) <= limits.max_service_bytes
        and _CONTROL_CHARACTER.search(service) is None
    )


def host_is_valid(host: str, limits: Limits) -> bool:
    """Return whether `BatchBuilder.add` accepts a host name."""
    return (
        utf8_length(host) <= limits.max_host_bytes
        and _CONTROL_CHARACTER.search(host) is None
    )


def short_attributes_json(
    attributes: Mapping[str, str],
    max_attributes: int,
    max_key_characters: int,
    max_value_characters: int,
) -> str | None:
    """Return the stored JSON of attributes that no limit can touch, else None.

    The text equals `_encode_json` of the sorted attributes: both quote each
    string with the same `encode_basestring`.
    """
    if len(attributes) > max_attributes or "" in attributes:
        return None
    parts = []
    # Reading the map by key is faster than through its items() view.
    for key in sorted(attributes):
        value = attributes[key]
        if len(key) > max_key_characters or len(value) > max_value_characters:
            return None
        parts.append(encode_basestring(key) + ":" + encode_basestring(value))
    return "{" + ",".join(parts) + "}"


def rfc3339(ns: int) -> str:
    """Format nanoseconds since the Unix epoch as an RFC 3339 UTC time."""
    try:
        return timestamp_from_ns(ns).ToJsonString()
    except ValueError:
        return f"{ns} ns since 1970"


def _time_and_ns(ns: int) -> str:
    """Format a time in RFC 3339 with its nanoseconds since 1970 beside it.

    A time outside the years 1 to 9999 has no RFC 3339 form and gets only
    the nanoseconds.
    """
    try:
        return f"{timestamp_from_ns(ns).ToJsonString()} ({ns} ns)"
    except ValueError:
        return f"{ns} ns since 1970"


def timestamp_from_ns(ns: int) -> timestamp_pb2.Timestamp:
    """Convert nanoseconds since the Unix epoch to a `Timestamp`."""
    seconds, nanos = divmod(ns, NANOS_PER_SECOND)
    return timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos)


def columns_to_entries(
    columns: node_service_pb2.EntryColumns, positions: Sequence[int] | None = None
) -> list[logs_service_pb2.LogEntry]:
    """Convert stored columns back to public `LogEntry` messages.

    `positions` picks and orders the entries to convert; by default all of
    them in column order. An empty sparse column gives every entry its
    default. `severity_text` stays empty because the stored severity
    replaces it.
    """
    count = len(columns.timestamps)
    if positions is None:
        positions = range(count)
    timestamps = columns.timestamps
    observed_timestamps = columns.observed_timestamps or (
        [columns.observed_timestamp] * count
    )
    severities = columns.severities
    services = columns.services
    hosts = columns.hosts
    messages = columns.messages
    attributes = columns.attributes
    trace_ids = columns.trace_ids or [""] * count
    span_ids = columns.span_ids or [""] * count
    truncated = columns.truncated or [False] * count
    dropped = columns.dropped_attributes_counts or [0] * count
    loads = json.loads
    entry_class = logs_service_pb2.LogEntry
    entries = []
    for i in positions:
        seconds, nanos = divmod(timestamps[i], NANOS_PER_SECOND)
        observed_seconds, observed_nanos = divmod(
            observed_timestamps[i], NANOS_PER_SECOND
        )
        attributes_json = attributes[i]
        entries.append(
            entry_class(
                timestamp=timestamp_pb2.Timestamp(seconds=seconds, nanos=nanos),
                observed_timestamp=timestamp_pb2.Timestamp(
                    seconds=observed_seconds, nanos=observed_nanos
                ),
                severity=severities[i],
                service=services[i],
                host=hosts[i],
                message=messages[i],
                attributes=loads(attributes_json) if attributes_json else None,
                trace_id=trace_ids[i],
                span_id=span_ids[i],
                truncated=truncated[i],
                dropped_attributes_count=dropped[i],
            )
        )
    return entries
