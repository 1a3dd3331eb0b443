"""Turn the lines of plain-text log files into `LogEntry` messages.

Each line becomes one entry, and the raw line without its line ending is the
message, kept whole. The parser reads three things from the line header:

- **Timestamp**, from the start of the line, in these layouts:

  - ISO 8601 with `T` or a space, `.` or `,` before the fraction, with or
    without a zone: `2015-10-18 18:01:47,978`, `2024-01-02T03:04:05.6+02:00`.
    One leading word, such as a source file name, may come first:
    `nova-api.log 2017-05-16 00:00:00.008`;
  - syslog without a year: `Jul  1 09:00:55`, `Dec 10 06:55:46`;
  - bracketed with weekday and year (Apache): `[Sun Dec 04 04:47:44 2005]`;
  - bracketed month.day without a year: `[10.30 16:49:06]`;
  - access logs in the Common or Combined Log Format (Apache httpd and
    nginx), the date after three fields:
    `203.0.113.7 - - [10/Oct/2026:13:55:36 -0700] "GET / HTTP/1.1" 200 612`;
  - `yyyy/MM/dd HH:MM:SS` (nginx error log), with an optional fraction and
    offset: `2026/03/15 10:23:45`, `2026/03/15 10:23:45.123 +01:00`;
  - compact `yyMMdd HHmmss`: `081109 203615`;
  - `yy/MM/dd HH:MM:SS`: `17/06/09 20:10:40`;
  - Android `MM-DD HH:MM:SS.mmm` without a year: `03-17 16:13:38.811`;
  - epoch seconds, a 10-digit field among the first six fields:
    `134681 node-246 unix.hw state 1077804742 1 ...`;
  - a bracketed ISO 8601 time (Monolog, Laravel), whose `channel.LEVEL:`
    gives the severity: `[2026-12-05 01:00:00] local.ERROR: a`;
  - klog, a severity letter and `MMDD` without a year:
    `E1205 01:00:00.123456 12345 main.go:10] a`;
  - a JSON object, with the time in `time`, `ts`, `timestamp` or
    `@timestamp` (ISO 8601 text or epoch seconds, milliseconds or
    microseconds) and the level in `level`, `severity` or `lvl` (a level
    name or a pino number such as 50);
  - logrus text, which starts with `time="2026-12-05T01:00:00Z"`.

  An ISO 8601 time may end with ` UTC` or ` GMT` (PostgreSQL).

  A time written without an offset is read in `default_zone`. A layout
  without a year takes the `year` argument, or else the current year in
  `default_zone`, so a year-less file that crosses New Year gets its January
  lines in the same year as its December lines. Without the `year` argument,
  a date that would lie more than a day in the future is read in the year
  before, as a syslog line written last December and read in January must
  be. Epoch seconds are UTC and win
  over any local time that the same line also shows. A line without a
  recognisable time gets the time of the line before it and the attribute
  `time_inferred=true`. So does a line whose time does not exist, such as
  `Feb 29` in a year without it. Such a line keeps its host and gets the
  attribute `time_invalid`, which gives the reason. A time of exactly
  1970-01-01T00:00:00Z counts as no time, because a LogEntry timestamp of
  zero means unset. A JSON or logrus line with that time is then read as a
  plain line. Lines before the first line with a time take the file's
  modification time instead. Those given to `parse_lines` or
  `parse_numbered_stream` take `fallback_time_ns`, or else the time each
  line is parsed, which for standard input is the time it was read.
- **Severity**, of a line with a time, only from the header: the first
  word after the timestamp,
  after up to three fields. Up to two of them may be numeric fields such as
  a process and a thread id, and the others bracketed fields such as
  `[main]` or `[123]:`. After a bracketed field, an upper-case level with a
  colon counts too, as in PostgreSQL's `ERROR:`. Python logging's
  ` - name - LEVEL - ` and a tab-separated level field (zap) count as well.
  That
  word counts when it is a level name in upper case (`INFO`, `WARN`,
  `WARNING`, `ERROR`, `FATAL`, ...), in title case (`Info`), in brackets
  (`[error]`, `[notice]`), or, after a numeric field, a single Android letter
  (`V`, `D`, `I`, `W`, `E`, `F`, `A`). In a syslog line the word may also
  follow the program's tag after the host (`app[1]:`, `kernel:`), but
  there, where the program's own message starts, only a level name in upper
  case or in brackets counts (`ERROR`, `[error]`), not a capitalised first
  word such as `Error returned from ...` or a label such as `WARNING:`.
  When the header of a line that is not syslog, Monolog or an access log
  has no level word, a word after a level key (`level=error`) or in
  brackets (`[warn]`, `<err>`) counts. `model.find_severity_word` finds it,
  as the router does for a message sent without a severity. Other
  words in the message body, such as an upper-case `ERROR`, do not count.
  A line without such a word is INFO. The word as written is kept in
  `severity_text`. An access log line has no level word, so its status
  code sets the severity: 5xx is ERROR, 4xx is WARN, others INFO, and
  `severity_text` keeps the code. A line without a recognisable time has
  no header, so its severity is the one that the router reads from a
  message sent without one (`model.guess_severity`), as in `ERROR card
  declined` or `level=warn retrying`, and otherwise INFO.
- **Host**, in the layouts that carry one: the field after a syslog time,
  the node field of an epoch-seconds line.

The file reader accepts LF and CRLF endings and a last line without a line
ending, and skips empty lines. It removes every carriage return before the
LF, so `\r\r\n`, which a CRLF file copied through a text-mode transfer
gets, ends a line as CRLF does. Bytes that are not valid UTF-8 are replaced
with U+FFFD, and the entry gets the attribute `utf8_repaired=true`. Given
`max_line_bytes`, the reader keeps at most that many bytes of a line plus
one, and raises `LineTooLong` for a longer line, so a line of any length
takes bounded memory.
"""

from __future__ import annotations

import datetime
import itertools
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from google.protobuf.timestamp_pb2 import Timestamp

from log_service.model import find_severity_word, severity_from_text
from log_service.timefmt import utc_offset
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

NANOS_PER_SECOND = 1_000_000_000
# Attribute keys that the parser sets.
TIME_INFERRED = "time_inferred"
TIME_INVALID = "time_invalid"
UTF8_REPAIRED = "utf8_repaired"
FILE_NAME = "log.file.name"
# Bytes read at a time past the end of an overlong line, while they are
# carriage returns.
_SKIP_BYTES = 64 * 1024


class LineTooLong(Exception):
    """A line has more than `max_bytes` bytes before its line ending."""

    def __init__(self, number: int, max_bytes: int) -> None:
        super().__init__(f"line {number} has more than {max_bytes} bytes")
        self.number = number
        self.max_bytes = max_bytes


_MONTHS = {
    name: number
    for number, name in enumerate(
        ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
         "Dec"),
        start=1,
    )
}  # fmt: skip
_MONTH = "(?P<month_name>" + "|".join(_MONTHS) + ")"
_TIME = r"(?P<hour>\d{2}):(?P<minute>\d{2}):(?P<second>\d{2})"
_FRACTION = r"(?:[.,](?P<fraction>\d{1,9}))?"
_END = r"(?=\s|$)"

# Android's one-letter priorities, where A means assert.
_SEVERITY_BY_LETTER = {
    "V": logs_pb2.SEVERITY_DEBUG,
    "D": logs_pb2.SEVERITY_DEBUG,
    "I": logs_pb2.SEVERITY_INFO,
    "W": logs_pb2.SEVERITY_WARN,
    "E": logs_pb2.SEVERITY_ERROR,
    "F": logs_pb2.SEVERITY_FATAL,
    "A": logs_pb2.SEVERITY_FATAL,
}
_MAX_NUMERIC_FIELDS = 2
# Maximum number of fields before the level, counting numeric fields and
# bracketed fields such as `[main]` or `[123]:`.
_MAX_HEADER_FIELDS = 3
_FIELD_IN_BRACKETS = re.compile(r"\[[^\]\s]*\]:?\Z")
# Python logging's `%(asctime)s - %(name)s - %(levelname)s - %(message)s`.
_PYTHON_LEVEL = re.compile(r" - \S+ - (?P<word>[A-Z]+) - ")
_EPOCH_SEARCH_FIELDS = 6
_EPOCH_TEXT = re.compile(r"\d{10}\Z")
_DOTTED_DATE = re.compile(r"\d{4}\.\d{2}\.\d{2}\Z")
# The quoted request line of an access log line, backslash escapes allowed,
# and the three-digit status after it.
_ACCESS_STATUS = re.compile(r' "(?:[^"\\]|\\.)*" (?P<status>\d{3})(?=\s|$)')
# A syslog tag after the host: the program, often with its process id, and a
# colon, as in `sshd[24200]:` or `kernel:`.
_SYSLOG_TAG = re.compile(r" *[^\s:]+: +")


@dataclass(frozen=True)
class _Layout:
    """A timestamp layout: its pattern and what its groups contain."""

    name: str
    pattern: re.Pattern[str]
    has_year: bool = True
    two_digit_year: bool = False
    has_host: bool = False
    # A syslog tag may follow the host, and a level word may follow the tag.
    has_tag: bool = False
    # The line is an access log line, whose severity comes from its status.
    access: bool = False
    # A Monolog `channel.LEVEL:` follows the time.
    channel_level: bool = False
    # The line starts with a klog severity letter.
    letter: bool = False
    # Characters that a line of the layout may start with, or empty for any.
    first: str = ""


_LAYOUTS = (
    _Layout(
        "iso8601",
        re.compile(
            r"(?:\S+ )?(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[T ]"
            + _TIME
            + _FRACTION
            + r"(?P<zone>Z|[+-]\d{2}:?\d{2}| UTC| GMT)?,?"
            + _END
        ),
    ),
    _Layout(
        "syslog",
        re.compile(
            _MONTH
            + r" {1,2}(?P<day>\d{1,2}) "
            + _TIME
            + _FRACTION
            + r" (?P<host>\S+)"
            + _END
        ),
        has_year=False,
        has_host=True,
        has_tag=True,
        first="ADFJMNOS",
    ),
    _Layout(
        "bracketed",
        re.compile(
            r"\[(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun) "
            + _MONTH
            + r" {1,2}(?P<day>\d{1,2}) "
            + _TIME
            + _FRACTION
            + r" (?P<year>\d{4})\]"
        ),
        first="[",
    ),
    _Layout(
        "bracketed_month_day",
        re.compile(r"\[(?P<month>\d{2})\.(?P<day>\d{2}) " + _TIME + r"\]"),
        has_year=False,
        first="[",
    ),
    _Layout(
        "access",
        re.compile(
            r"\S+ \S+ \S+ \[(?P<day>\d{2})/"
            + _MONTH
            + r"/(?P<year>\d{4}):"
            + _TIME
            + r" (?P<zone>[+-]\d{4})\]"
        ),
        access=True,
    ),
    _Layout(
        "slashed_full_year",
        re.compile(
            r"(?P<year>\d{4})/(?P<month>\d{2})/(?P<day>\d{2}) "
            + _TIME
            + _FRACTION
            + r"(?: ?(?P<zone>Z|[+-]\d{2}:?\d{2}))?"
            + _END
        ),
        first="0123456789",
    ),
    _Layout(
        "compact",
        re.compile(
            r"(?P<year>\d{2})(?P<month>\d{2})(?P<day>\d{2}) "
            r"(?P<hour>\d{2})(?P<minute>\d{2})(?P<second>\d{2})" + _END
        ),
        two_digit_year=True,
        first="0123456789",
    ),
    _Layout(
        "slashed",
        re.compile(r"(?P<year>\d{2})/(?P<month>\d{2})/(?P<day>\d{2}) " + _TIME + _END),
        two_digit_year=True,
        first="0123456789",
    ),
    _Layout(
        "bracketed_iso8601",
        re.compile(
            r"\[(?P<year>\d{4})-(?P<month>\d{2})-(?P<day>\d{2})[T ]"
            + _TIME
            + _FRACTION
            + r"(?P<zone>Z|[+-]\d{2}:?\d{2})?\]"
        ),
        channel_level=True,
        first="[",
    ),
    _Layout(
        "klog",
        re.compile(
            r"(?P<letter>[DIWEF])(?P<month>\d{2})(?P<day>\d{2}) "
            + _TIME
            + _FRACTION
            + _END
        ),
        has_year=False,
        letter=True,
        first="DIWEF",
    ),
    _Layout(
        "android",
        re.compile(r"(?P<month>\d{2})-(?P<day>\d{2}) " + _TIME + _FRACTION + _END),
        has_year=False,
        first="0123456789",
    ),
)


# A Monolog or Laravel `channel.LEVEL:` after the bracketed time.
_CHANNEL_LEVEL = re.compile(r" [^\s.:]+(?:\.[^\s.:]+)*\.(?P<word>[A-Za-z]+):")
# The time of a logrus text line.
_LOGRUS_TIME = re.compile(r'time="(?P<time>[^"]{1,64})"')
# Keys of a JSON line that contain its time and its level, in the order tried.
_JSON_TIME_KEYS = ("time", "ts", "timestamp", "@timestamp")
_JSON_LEVEL_KEYS = ("level", "severity", "lvl")
# Severities of pino's numeric levels.
_SEVERITY_BY_NUMBER = {
    10: logs_pb2.SEVERITY_DEBUG,
    20: logs_pb2.SEVERITY_DEBUG,
    30: logs_pb2.SEVERITY_INFO,
    40: logs_pb2.SEVERITY_WARN,
    50: logs_pb2.SEVERITY_ERROR,
    60: logs_pb2.SEVERITY_FATAL,
}
# An epoch number at or above _EPOCH_MILLIS is in milliseconds, one at or
# above _EPOCH_MICROS in microseconds, and one at or above _EPOCH_NANOS in
# nanoseconds. Smaller ones are in seconds. Each bound is the year 5138 in
# the smaller unit, so every time from 1973 to then reads the same in any
# unit.
_EPOCH_MILLIS = 10**11
_EPOCH_MICROS = 10**14
_EPOCH_NANOS = 10**17
# Times that a protobuf Timestamp in int64 nanoseconds can hold, the years
# 1678 to 2262, as log_service stores them.
_MIN_TIME_NS = -(2**63)
_MAX_TIME_NS = 2**63 - 1


@dataclass(slots=True)
class _Header:
    """Time, host and remaining text read from the start of one line.

    `time_ns` is None when the line has the layout of a time that does not
    exist, such as 29 February in a year without it. `invalid` then contains
    the reason. `word` and `severity` are set when the layout itself names
    the level, as a JSON line or a klog letter does.
    """

    time_ns: int | None
    rest: str
    host: str = ""
    access: bool = False
    has_tag: bool = False
    channel_level: bool = False
    word: str = ""
    severity: int | None = None
    invalid: str = ""


def parse_lines(
    lines: Iterable[str],
    *,
    service: str,
    default_zone: str = "UTC",
    year: int | None = None,
    fallback_time_ns: int | None = None,
) -> Iterator[logs_pb2.LogEntry]:
    """Parse log lines, without their line endings, into entries of `service`.

    Args:
      lines: the lines; empty lines are skipped.
      service: the `service` of every entry.
      default_zone: IANA zone of times written without an offset.
      year: year of layouts that leave it out; the current year when None.
      fallback_time_ns: time of leading lines without a time, in nanoseconds
        since the epoch; when None, each such line takes the time it is
        parsed.

    Raises:
      ValueError: `default_zone` is not a known IANA zone.
    """
    parser = _LineParser(service, default_zone, year, fallback_time_ns)
    for line in lines:
        if line:
            yield parser.parse(line)


def read_lines(path: str | os.PathLike[str]) -> Iterator[tuple[str, bool]]:
    """Yield each non-empty line of a file and whether its UTF-8 was repaired.

    The line endings (LF, CRLF or LF after several CRs) are removed.
    Invalid UTF-8 bytes become U+FFFD.
    """
    for _, line, repaired in read_numbered_lines(path):
        yield line, repaired


def read_numbered_lines(
    path: str | os.PathLike[str],
) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number from 1, line, repaired) for each non-empty line.

    Empty lines are skipped but counted, so the numbers match an editor's.
    """
    with open(path, "rb") as stream:
        yield from read_numbered_stream(stream)


def read_numbered_stream(
    stream: BinaryIO,
    max_line_bytes: int | None = None,
    on_empty: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, str, bool]]:
    """Yield (line number from 1, line, repaired) for each non-empty line of a
    binary stream, as `read_numbered_lines` does for a file.

    Each line is yielded as soon as its line ending arrives, so a pipe fed
    by `tail -F` is parsed while it is written.

    Raises:
      LineTooLong: a line has more than `max_line_bytes` bytes without its
        line ending (LF and the carriage returns before it). The stream is
        then left within that line.

    `on_empty` is called with the number of each empty line skipped.
    """
    for number in itertools.count(1):
        if max_line_bytes is None:
            raw = stream.readline()
        else:
            raw = _read_bounded_line(stream, number, max_line_bytes)
        if not raw:
            return
        raw = raw.removesuffix(b"\n").rstrip(b"\r")
        if not raw:
            if on_empty is not None:
                on_empty(number)
            continue
        try:
            yield number, raw.decode("utf-8"), False
        except UnicodeDecodeError:
            yield number, raw.decode("utf-8", errors="replace"), True


def _read_bounded_line(stream: BinaryIO, number: int, max_bytes: int) -> bytes:
    """Read line `number`, keeping at most `max_bytes` + 1 of its bytes.

    A line that reaches that size without its LF still fits when everything
    after its kept bytes is carriage returns, which the caller removes. The
    bytes after are read only while they are, at most `_SKIP_BYTES` at a time.

    Raises:
      LineTooLong: at the first byte that shows the line to be too long.
    """
    line = stream.readline(max_bytes + 1)
    if len(line) <= max_bytes or line.endswith(b"\n"):
        return line
    while True:
        rest = stream.readline(_SKIP_BYTES)
        if rest.removesuffix(b"\n").strip(b"\r"):
            raise LineTooLong(number, max_bytes)
        if not rest or rest.endswith(b"\n"):
            break
    if len(line.rstrip(b"\r")) > max_bytes:
        raise LineTooLong(number, max_bytes)
    return line


def parse_file(
    path: str | os.PathLike[str],
    *,
    service: str,
    default_zone: str = "UTC",
    year: int | None = None,
) -> Iterator[logs_pb2.LogEntry]:
    """Parse a log file into entries of `service`, as `parse_lines` does.

    Leading lines without a time take the file's modification time. Every
    entry gets the attribute `log.file.name` with the file's base name,
    symbolic links resolved.

    Raises:
      OSError: the file cannot be read.
      ValueError: `default_zone` is not a known IANA zone.
    """
    for _, entry in parse_numbered_file(
        path, service=service, default_zone=default_zone, year=year
    ):
        yield entry


def parse_numbered_file(
    path: str | os.PathLike[str],
    *,
    service: str,
    default_zone: str = "UTC",
    year: int | None = None,
    max_line_bytes: int | None = None,
) -> Iterator[tuple[int, logs_pb2.LogEntry]]:
    """Parse a log file as `parse_file` does, with each entry's line number.

    Line numbers count from 1 and include empty lines, which give no entry.
    A line longer than `max_line_bytes` raises `LineTooLong`, as in
    `read_numbered_stream`.
    """
    fallback_ns = os.stat(path).st_mtime_ns
    name = Path(os.path.realpath(path)).name
    with open(path, "rb") as stream:
        yield from parse_numbered_stream(
            stream,
            service=service,
            default_zone=default_zone,
            year=year,
            file_name=name,
            fallback_time_ns=fallback_ns,
            max_line_bytes=max_line_bytes,
        )


def parse_numbered_stream(
    stream: BinaryIO,
    *,
    service: str,
    default_zone: str = "UTC",
    year: int | None = None,
    file_name: str | None = None,
    fallback_time_ns: int | None = None,
    max_line_bytes: int | None = None,
    on_empty: Callable[[int], None] | None = None,
) -> Iterator[tuple[int, logs_pb2.LogEntry]]:
    """Parse the lines of a binary stream, such as standard input, with each
    entry's line number.

    Args:
      file_name: the `log.file.name` attribute of every entry; None sets no
        such attribute.
      fallback_time_ns: time of leading lines without a time, as in
        `parse_lines`. When None, each such line takes the time it is
        parsed. A pipe read as it is written thus gives each line the time
        it was read.
      max_line_bytes: the maximum bytes of a line without its line ending;
        None reads lines of any length whole.
      on_empty: called with the number of each empty line skipped.

    Raises:
      OSError: the stream cannot be read.
      ValueError: `default_zone` is not a known IANA zone.
      LineTooLong: a line is longer than `max_line_bytes`.
    """
    parser = _LineParser(service, default_zone, year, fallback_time_ns)
    lines = read_numbered_stream(stream, max_line_bytes, on_empty)
    for number, line, repaired in lines:
        entry = parser.parse(line)
        if file_name is not None:
            entry.attributes[FILE_NAME] = file_name
        if repaired:
            entry.attributes[UTF8_REPAIRED] = "true"
        yield number, entry


def time_zone(name: str) -> ZoneInfo:
    """Return the IANA time zone called `name`.

    Raises:
      ValueError: no such zone is known; the message names it.
    """
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r}; use an IANA name such as UTC or Europe/Paris"
        ) from None


def _epoch_number_ns(value: int | float) -> int | None:
    """Return an epoch number in nanoseconds, its unit read from its size.

    Returns None for NaN, an infinity, or a time outside the int64 range.
    """
    if value >= _EPOCH_NANOS:
        scale = 1
    elif value >= _EPOCH_MICROS:
        scale = 1000
    elif value >= _EPOCH_MILLIS:
        scale = 1_000_000
    else:
        scale = NANOS_PER_SECOND
    time_ns = value * scale
    if isinstance(time_ns, float):
        # NaN compares false above, so it ends up here in seconds.
        if not math.isfinite(time_ns):
            return None
        time_ns = int(time_ns)
    return _in_time_range(time_ns)


def _in_time_range(time_ns: int) -> int | None:
    """Return `time_ns`, or None when an int64 of nanoseconds cannot hold it."""
    if _MIN_TIME_NS <= time_ns <= _MAX_TIME_NS:
        return time_ns
    return None


def severity_of_word(word: str) -> int | None:
    """Return the severity of a level name such as `WARNING` or `err`, or None.

    The match ignores case and uses log_service's table of severity words.
    One-letter levels are not level names here, because a lone letter is too
    common in other text.
    """
    if len(word) < 2:
        return None
    return severity_from_text(word)


# How far ahead of now a year-less date may be before it counts as last year.
_FUTURE_SLACK_SECONDS = 86400


class _LineParser:
    """Parses lines one by one and carries the last time from line to line."""

    def __init__(
        self,
        service: str,
        default_zone: str,
        year: int | None,
        fallback_time_ns: int | None,
    ) -> None:
        self.zone = time_zone(default_zone)
        self.service = service
        self.year = year or datetime.datetime.now(self.zone).year
        self.year_given = year is not None
        # None until a line with a time: each leading line without one then
        # takes the time it is parsed.
        self.last_time_ns = fallback_time_ns

    def parse(self, line: str) -> logs_pb2.LogEntry:
        entry = logs_pb2.LogEntry(service=self.service, message=line)
        header = self._read_header(line)
        header_ns = None if header is None else header.time_ns
        # A LogEntry timestamp of exactly the epoch is the proto's unset
        # value, which the router replaces with its receive time, so a line
        # that shows that time takes the time of the line before it.
        if header_ns is None or header_ns == 0:
            entry.attributes[TIME_INFERRED] = "true"
        else:
            self.last_time_ns = header_ns
        if header is not None:
            entry.host = header.host
            if header.invalid:
                entry.attributes[TIME_INVALID] = header.invalid
        time_ns = self.last_time_ns
        if time_ns is None:
            time_ns = time.time_ns()
        entry.timestamp.CopyFrom(_timestamp(time_ns))
        if header is None:
            # The router's reading of a message sent without a severity, so
            # that a shipped line gets the severity it gets over REST.
            word, severity = find_severity_word(line) or ("", logs_pb2.SEVERITY_INFO)
        elif header.severity is not None:
            word, severity = header.word, header.severity
        elif header.access:
            word, severity = _status_severity(header.rest)
        elif header.has_tag:
            word, severity = _syslog_severity(header.rest)
        elif header.channel_level:
            word, severity = _channel_severity(header.rest)
        else:
            word, severity = _header_severity(header.rest)
            if not word:
                # No level word follows the time, so look for a level key, as
                # in `level=error`, or a bracketed level, as the router does.
                found = find_severity_word(header.rest, marked_only=True)
                if found is not None:
                    word, severity = found
        entry.severity = severity
        if word:
            entry.severity_text = word
        return entry

    def _read_header(self, line: str) -> _Header | None:
        first = line[0]
        if first == "{":
            return self._json_header(line)
        if first == "t" and line.startswith('time="'):
            return self._logrus_header(line)
        for layout in _LAYOUTS:
            if layout.first and first not in layout.first:
                continue
            match = layout.pattern.match(line)
            if match is None:
                continue
            host = match["host"] if layout.has_host else ""
            rest = line[match.end() :]
            try:
                time_ns = self._time_ns(layout, match)
            except _NoSuchDate as error:
                return _Header(None, rest, host, invalid=str(error))
            header = _Header(
                time_ns,
                rest,
                host,
                layout.access,
                layout.has_tag,
                layout.channel_level,
            )
            if layout.letter:
                header.word = match["letter"]
                header.severity = _SEVERITY_BY_LETTER[header.word]
            return header
        return _epoch_header(line)

    def _json_header(self, line: str) -> _Header | None:
        """Read the time and level of a JSON object on one line."""
        try:
            record = json.loads(line)
        except ValueError:
            return None
        if not isinstance(record, dict):
            return None
        time_ns = None
        for key in _JSON_TIME_KEYS:
            value = record.get(key)
            if value is not None:
                time_ns = self._value_time_ns(value)
                break
        if time_ns is None:
            return None
        word, severity = "", None
        for key in _JSON_LEVEL_KEYS:
            value = record.get(key)
            if isinstance(value, str):
                word, severity = value, severity_from_text(value)
                break
            if isinstance(value, int) and not isinstance(value, bool):
                word, severity = str(value), _SEVERITY_BY_NUMBER.get(value)
                break
        if severity is None:
            word, severity = "", logs_pb2.SEVERITY_INFO
        return _Header(time_ns, "", word=word, severity=severity)

    def _logrus_header(self, line: str) -> _Header | None:
        match = _LOGRUS_TIME.match(line)
        if match is None:
            return None
        time_ns = self._value_time_ns(match["time"])
        if time_ns is None:
            return None
        rest = line[match.end() :]
        word, severity = find_severity_word(rest) or ("", logs_pb2.SEVERITY_INFO)
        return _Header(time_ns, rest, word=word, severity=severity)

    def _value_time_ns(self, value: object) -> int | None:
        """Return the time of a JSON or quoted value in nanoseconds, or None.

        The value is ISO 8601 text or a number of epoch seconds, milliseconds,
        microseconds or nanoseconds. ISO 8601 text without an offset is read
        in the parser's time zone. A value that is not a finite number, whose
        time is outside the years 1678 to 2262, or that is exactly the epoch
        returns None, so the line gets an inferred time.
        """
        time_ns = self._decode_value_time_ns(value)
        # A LogEntry timestamp of exactly the epoch is the proto's unset
        # value, which the router replaces with its receive time.
        if time_ns == 0:
            return None
        return time_ns

    def _decode_value_time_ns(self, value: object) -> int | None:
        if isinstance(value, bool):
            return None
        if isinstance(value, int | float):
            return _epoch_number_ns(value)
        if not isinstance(value, str):
            return None
        try:
            moment = datetime.datetime.fromisoformat(value)
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=self.zone)
        elif not _iso_offset_exists(value):
            return None
        try:
            seconds = int(moment.replace(microsecond=0).timestamp())
        except (OverflowError, ValueError):
            return None
        nanos = moment.microsecond * 1000
        fraction = _ISO_FRACTION.search(value)
        if fraction is not None:
            nanos = int(fraction[1][:9].ljust(9, "0"))
        return _in_time_range(seconds * NANOS_PER_SECOND + nanos)

    def _time_ns(self, layout: _Layout, match: re.Match[str]) -> int:
        """Return the time of a matched header in nanoseconds.

        Raises:
          _NoSuchDate: the header names a date or time that does not exist.
        """
        groups = match.groupdict()
        if not layout.has_year:
            year = self.year
        elif layout.two_digit_year:
            year = 2000 + int(groups["year"])
        else:
            year = int(groups["year"])
        if groups.get("month_name"):
            month = _MONTHS[groups["month_name"]]
        else:
            month = int(groups["month"])
        try:
            zone = _offset(groups.get("zone")) or self.zone
        except ValueError as error:
            raise _NoSuchDate.of_offset(match, error) from None
        day = int(groups["day"])
        try:
            moment = datetime.datetime(
                year,
                month,
                day,
                int(groups["hour"]),
                int(groups["minute"]),
                int(groups["second"]),
                tzinfo=zone,
            )
        except ValueError:
            raise _NoSuchDate.of_date(
                layout.has_year or self.year_given, year, match
            ) from None
        if not layout.has_year and not self.year_given:
            latest = time.time() + _FUTURE_SLACK_SECONDS
            if moment.timestamp() > latest:
                try:
                    moment = moment.replace(year=year - 1)
                except ValueError:
                    # 29 February in a year without it
                    raise _NoSuchDate.of_date(False, year - 1, match) from None
        fraction = groups.get("fraction") or ""
        nanos = int(fraction.ljust(9, "0")) if fraction else 0
        return int(moment.timestamp()) * NANOS_PER_SECOND + nanos


class _NoSuchDate(Exception):
    """A header has the layout of a time, but that time does not exist."""

    @classmethod
    def of_date(cls, year_given: bool, year: int, match: re.Match[str]) -> _NoSuchDate:
        text = match.group(0).strip()
        source = "" if year_given else " (no year written; use --year)"
        return cls(
            f"{text!r} read in {year}{source} is not a valid date or time "
            f"({_date_words(match, year)}), so the line took the time of the "
            "line before it"
        )

    @classmethod
    def of_offset(cls, match: re.Match[str], error: ValueError) -> _NoSuchDate:
        return cls(
            f"{match.group(0).strip()!r} is not a valid time: its {error}. The "
            "line took the time of the line before it"
        )


def _date_words(match: re.Match[str], year: int) -> str:
    groups = match.groupdict()
    if groups.get("month_name"):
        month = groups["month_name"]
    else:
        month = (
            _MONTH_NAMES[int(groups["month"]) - 1]
            if 0 < int(groups["month"]) < 13
            else groups["month"]
        )
    return f"{int(groups['day'])} {month} {year}"


_MONTH_NAMES = tuple(_MONTHS)
_ISO_FRACTION = re.compile(r"[.,](\d{1,9})")
# The minutes and seconds of the offset at the end of an ISO 8601 time, as
# `datetime.fromisoformat` reads it: +HH, +HH:MM, +HHMM, +HH:MM:SS[.f].
_ISO_OFFSET = re.compile(r"[+-]\d\d(?::?(\d\d)(?::?(\d\d)(?:[.,]\d+)?)?)?\Z")


def _offset(text: str | None) -> datetime.tzinfo | None:
    """Return the zone of a header's offset, or None when it has none.

    Raises:
      ValueError: the offset's hours are above 23 or its minutes above 59.
    """
    if not text:
        return None
    if text in ("Z", " UTC", " GMT"):
        return datetime.UTC
    return utc_offset(text)


def _iso_offset_exists(text: str) -> bool:
    """Return whether the UTC offset at the end of an ISO 8601 time exists.

    `datetime.fromisoformat` (Python 3.11) reads an offset as a duration, so
    it takes `+00:61` as 1 hour 1 minute. It rejects only 24 hours or more.
    """
    match = _ISO_OFFSET.search(text)
    if match is None:
        return True
    return all(int(part or 0) <= 59 for part in match.groups())


def _epoch_header(line: str) -> _Header | None:
    """Read a line with epoch seconds in one of its first six fields.

    Two layouts also give the host: the node after a numeric record id in the
    second field (as in HPC logs), or the field after a `YYYY.MM.DD` date that
    follows the epoch (as in Thunderbird logs).
    """
    fields = line.split(" ", _EPOCH_SEARCH_FIELDS)
    for index, field in enumerate(fields[:_EPOCH_SEARCH_FIELDS]):
        if not _EPOCH_TEXT.match(field):
            continue
        host = ""
        if index >= 2 and fields[0].isdigit():
            host = fields[1]
        elif index + 2 < len(fields) and _DOTTED_DATE.match(fields[index + 1]):
            host = fields[index + 2]
        rest = " ".join(fields[index + 1 :])
        return _Header(int(field) * NANOS_PER_SECOND, rest, host)
    return None


def _header_severity(rest: str) -> tuple[str, int]:
    """Return the level word of a header and its severity, or ("", INFO).

    `rest` is the line after its timestamp.
    """
    if rest[:1] == "\t":
        # zap's console encoder separates fields with tabs. The level is the
        # field after the time, in any case.
        field = rest[1:].partition("\t")[0]
        severity = severity_of_word(field)
        if severity is not None:
            return field, severity
    python = _PYTHON_LEVEL.match(rest) if rest[:3] == " - " else None
    if python is not None:
        severity = severity_of_word(python["word"])
        if severity is not None:
            return python["word"], severity
    tokens = rest.lstrip(" ,").split(None, _MAX_HEADER_FIELDS + 1)
    skipped = 0
    bracketed = 0
    while skipped < _MAX_HEADER_FIELDS and skipped < len(tokens) - 1:
        token = tokens[skipped]
        if token.isdigit() and skipped - bracketed < _MAX_NUMERIC_FIELDS:
            skipped += 1
        elif _FIELD_IN_BRACKETS.match(token) and severity_of_word(token[1:-1]) is None:
            # A thread or process id, such as log4j's `[main]` or
            # PostgreSQL's `[123]:`.
            skipped += 1
            bracketed += 1
        else:
            break
    if skipped >= len(tokens):
        return "", logs_pb2.SEVERITY_INFO
    token = tokens[skipped]
    if bracketed and token[-1:] == ":" and token[:-1].isupper():
        token = token[:-1]
    if len(token) > 2 and token[0] == "[" and token[-1] == "]":
        word = token[1:-1]
        severity = severity_of_word(word)
    elif token.isupper() or token.istitle():
        word = token
        severity = severity_of_word(word)
        if severity is None and skipped > bracketed and len(token) == 1:
            severity = _SEVERITY_BY_LETTER.get(token)
    else:
        severity = None
    if severity is None:
        return "", logs_pb2.SEVERITY_INFO
    return word, severity


def _syslog_severity(rest: str) -> tuple[str, int]:
    """Return the level word of a syslog line and its severity, or ("", INFO).

    `rest` is the line after its host. The word counts right after the host,
    by the rules of `_header_severity`, or right after the program's tag
    (`app[1]:`). After the tag, the message of the program begins, so only a
    level name in upper case of two letters or more (`ERROR`) or in brackets
    (`[error]`) counts there. A capitalised word such as the `Error` of
    `quicklookd[316]: Error returned from ...` starts a sentence, and a word
    with a colon, as in `kernel[0]: WARNING: hibernate ... skipped`, labels
    the message, as it does after the date.
    """
    word, severity = _header_severity(rest)
    if word:
        return word, severity
    tag = _SYSLOG_TAG.match(rest)
    if tag is None:
        return "", logs_pb2.SEVERITY_INFO
    words = rest[tag.end() :].split(None, 1)
    if not words:
        return "", logs_pb2.SEVERITY_INFO
    token = words[0]
    if len(token) > 2 and token[0] == "[" and token[-1] == "]":
        word = token[1:-1]
    else:
        word = token
        if len(word) < 2 or not word.isupper():
            return "", logs_pb2.SEVERITY_INFO
    severity = severity_of_word(word)
    if severity is None:
        return "", logs_pb2.SEVERITY_INFO
    return word, severity


def _channel_severity(rest: str) -> tuple[str, int]:
    """Return the level word of a Monolog line and its severity.

    `rest` is the line after its bracketed time, as in ` channel.LEVEL: message`.
    Without a known level there, `_header_severity` reads `rest`.
    """
    match = _CHANNEL_LEVEL.match(rest)
    if match is not None:
        severity = severity_of_word(match["word"])
        if severity is not None:
            return match["word"], severity
    return _header_severity(rest)


def _status_severity(rest: str) -> tuple[str, int]:
    """Return the status code of an access log line and its severity.

    `rest` is the line after its bracketed date: the quoted request line, then
    the status. A line without a status is INFO with no word.
    """
    match = _ACCESS_STATUS.match(rest)
    if match is None:
        return "", logs_pb2.SEVERITY_INFO
    status = match["status"]
    if status[0] == "5":
        return status, logs_pb2.SEVERITY_ERROR
    if status[0] == "4":
        return status, logs_pb2.SEVERITY_WARN
    return status, logs_pb2.SEVERITY_INFO


def _timestamp(time_ns: int) -> Timestamp:
    seconds, nanos = divmod(time_ns, NANOS_PER_SECOND)
    return Timestamp(seconds=seconds, nanos=nanos)
