"""Plain log lines and files into LogEntry messages: times, severities, hosts."""

from __future__ import annotations

import datetime
import io
import os
import time

import pytest

from log_service.logfiles import (
    FILE_NAME,
    TIME_INFERRED,
    TIME_INVALID,
    UTF8_REPAIRED,
    LineTooLong,
    parse_file,
    parse_lines,
    parse_numbered_stream,
    read_lines,
    read_numbered_stream,
    severity_of_word,
)
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

DEBUG = logs_pb2.SEVERITY_DEBUG
INFO = logs_pb2.SEVERITY_INFO
WARN = logs_pb2.SEVERITY_WARN
ERROR = logs_pb2.SEVERITY_ERROR
FATAL = logs_pb2.SEVERITY_FATAL


def utc(*parts: int, micro: int = 0) -> datetime.datetime:
    return datetime.datetime(*parts, micro, tzinfo=datetime.UTC)


def parse_one(line: str, **options) -> logs_pb2.LogEntry:
    options.setdefault("year", 2021)
    (entry,) = parse_lines([line], service="svc", **options)
    return entry


def moment(entry: logs_pb2.LogEntry) -> datetime.datetime:
    return entry.timestamp.ToDatetime(tzinfo=datetime.UTC)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2015-10-18 18:01:47,978 INFO [main] x", "2015-10-18 18:01:47.978"),
        ("2017-05-16 00:00:00.008 25746 INFO x", "2017-05-16 00:00:00.008"),
        ("2024-01-02T03:04:05Z started", "2024-01-02 03:04:05"),
        ("2024-01-02T03:04:05.5+02:00 started", "2024-01-02 01:04:05.5"),
        ("2024-01-02 03:04:05-0130 started", "2024-01-02 04:34:05"),
        ("src.log.1 2017-05-16 00:00:01.551 1 INFO x", "2017-05-16 00:00:01.551"),
        ("2016-09-28 04:30:30, Info   CBS  Loaded", "2016-09-28 04:30:30"),
        ("Jul  1 09:00:55 host-a kernel[0]: x", "2021-07-01 09:00:55"),
        ("Dec 10 06:55:46 LabSZ sshd[24200]: x", "2021-12-10 06:55:46"),
        ("[Sun Dec 04 04:47:44 2005] [notice] x", "2005-12-04 04:47:44"),
        ("[10.30 16:49:06] chrome.exe - x", "2021-10-30 16:49:06"),
        ("081109 203615 148 INFO dfs.DataNode: x", "2008-11-09 20:36:15"),
        ("17/06/09 20:10:40 INFO spark: x", "2017-06-09 20:10:40"),
        ("03-17 16:13:38.811  1702  2395 D Tag: x", "2021-03-17 16:13:38.811"),
        ("134681 node-246 unix.hw state 1077804742 1 x", "2004-02-26 14:12:22"),
        ("2024-01-02 03:04:05.123456789 INFO x", "2024-01-02 03:04:05.123456"),
        (
            '203.0.113.7 - - [10/Oct/2026:13:55:36 -0700] "GET / HTTP/1.1" 200 612',
            "2026-10-10 20:55:36",
        ),
        (
            '2001:db8::1 - ana [01/Feb/2026:00:00:01 +0100] "POST /x HTTP/2.0" 201 0',
            "2026-01-31 23:00:01",
        ),
        ("2026/03/15 10:23:45 [error] 1234#0: *1 open() failed", "2026-03-15 10:23:45"),
        ("2026/12/05 01:05:08.123 WARN x", "2026-12-05 01:05:08.123"),
        ("2026/12/05 01:05:08,456 ERROR x", "2026-12-05 01:05:08.456"),
        ("2026/12/05 01:05:08 +0100 WARN x", "2026-12-05 00:05:08"),
        ("2026/12/05 01:05:08Z WARN x", "2026-12-05 01:05:08"),
        ("2026/12/05 01:05:08.5-02:30 x", "2026-12-05 03:35:08.5"),
    ],
)
def test_timestamp_layouts(line, expected):
    entry = parse_one(line)

    assert moment(entry) == datetime.datetime.fromisoformat(expected + "+00:00")
    assert TIME_INFERRED not in entry.attributes
    assert entry.message == line


def test_epoch_wins_over_local_time():
    line = "- 1131566461 2005.11.09 dn228 Nov 9 12:01:01 dn228/dn228 crond[1]: x"

    entry = parse_one(line, default_zone="America/Los_Angeles")

    assert moment(entry) == utc(2005, 11, 9, 20, 1, 1)
    assert entry.host == "dn228"


def test_default_zone_applies_without_offset():
    entry = parse_one("2024-07-01 12:00:00 INFO x", default_zone="Europe/Paris")

    assert moment(entry) == utc(2024, 7, 1, 10, 0, 0)


@pytest.mark.parametrize(
    ("local", "expected"),
    [
        # Occurs twice when clocks go back: the first, daylight time.
        ("2024-11-03 01:30:00", utc(2024, 11, 3, 8, 30, 0)),
        # Skipped when clocks go forward: read in standard time.
        ("2024-03-10 02:30:00", utc(2024, 3, 10, 10, 30, 0)),
        ("2024-03-10 03:00:00", utc(2024, 3, 10, 10, 0, 0)),
    ],
)
def test_zone_reads_clock_changes(local, expected):
    entry = parse_one(f"{local} INFO x", default_zone="America/Los_Angeles")

    assert moment(entry) == expected


def test_explicit_offset_beats_default_zone():
    entry = parse_one("2024-07-01T12:00:00Z INFO x", default_zone="Europe/Paris")

    assert moment(entry) == utc(2024, 7, 1, 12, 0, 0)


def test_unknown_zone_rejected():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        parse_one("x", default_zone="Mars/Olympus")


def _syslog_stamp(when: datetime.datetime) -> str:
    return when.strftime("%b ") + f"{when.day:2d}" + when.strftime(" %H:%M:%S")


def test_yearless_layout_takes_current_year():
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(days=2)

    entry = parse_one(f"{_syslog_stamp(past)} h p: x", year=None)

    assert moment(entry).year == past.year


def test_yearless_date_ahead_of_now_is_last_year():
    ahead = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    if ahead.month == 2 and ahead.day == 29:
        ahead += datetime.timedelta(days=1)

    entry = parse_one(f"{_syslog_stamp(ahead)} h p: x", year=None)

    assert moment(entry).year == ahead.year - 1


def test_yearless_date_ahead_keeps_a_given_year():
    ahead = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3)
    if ahead.month == 2 and ahead.day == 29:
        ahead += datetime.timedelta(days=1)

    entry = parse_one(f"{_syslog_stamp(ahead)} h p: x", year=ahead.year)

    assert moment(entry).year == ahead.year


def test_line_without_time_takes_previous_time():
    lines = [
        "2020-01-01 00:00:01 ERROR boom",
        "\tat com.example.Main.run(Main.java:10)",
        "2020-01-01 00:00:02 INFO fine",
    ]

    first, trace, last = parse_lines(lines, service="svc")

    assert moment(trace) == moment(first)
    assert trace.attributes[TIME_INFERRED] == "true"
    assert trace.severity == INFO
    assert moment(last) == utc(2020, 1, 1, 0, 0, 2)


def test_first_line_without_time_takes_fallback():
    fallback = 1_600_000_000_123_456_789

    (entry,) = parse_lines(["no time here"], service="svc", fallback_time_ns=fallback)

    assert entry.timestamp.seconds == 1_600_000_000
    assert entry.timestamp.nanos == 123_456_789
    assert entry.attributes[TIME_INFERRED] == "true"


def test_leading_lines_without_fallback_take_parse_time():
    before = time.time_ns()
    first, second, timed, trace = parse_lines(
        ["no time", "still none", "2020-01-01 00:00:00 INFO a", "  at frame"],
        service="svc",
    )
    after = time.time_ns()

    assert before <= first.timestamp.ToNanoseconds() <= after
    assert first.timestamp.ToNanoseconds() <= second.timestamp.ToNanoseconds()
    assert second.timestamp.ToNanoseconds() <= after
    assert second.attributes[TIME_INFERRED] == "true"
    # After a line with a time, a line without one takes that time.
    assert trace.timestamp == timed.timestamp


def test_impossible_date_is_no_time():
    lines = ["2020-01-01 00:00:01 INFO a", "2021-02-30 10:00:00 INFO b"]

    first, second = parse_lines(lines, service="svc")

    assert moment(second) == moment(first)
    assert second.attributes[TIME_INFERRED] == "true"


@pytest.mark.parametrize(
    ("header", "offset"),
    [
        ("2024-01-02 03:04:05+9999", "+9999"),
        ("2024-01-02 03:04:05-0061", "-0061"),
        ("2024-01-02T03:04:05+00:61", "+00:61"),
        ("2024-01-02T03:04:05+24:00", "+24:00"),
        ("h - - [10/Oct/2026:13:55:36 +2500]", "+2500"),
    ],
)
def test_impossible_offset_is_no_time(header, offset):
    lines = ["2020-01-01 00:00:01 INFO a", f"{header} INFO b"]

    first, second = parse_lines(lines, service="svc")

    assert moment(second) == moment(first)
    assert second.attributes[TIME_INFERRED] == "true"
    invalid = second.attributes[TIME_INVALID]
    assert f"its offset {offset} is out of range" in invalid
    assert "(-23:59 to +23:59)" in invalid


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("2024-01-02T03:04:05+23:59 a", utc(2024, 1, 1, 3, 5, 5)),
        ("2024-01-02 03:04:05-2359 a", utc(2024, 1, 3, 3, 3, 5)),
        ('{"time":"2026-12-05T01:00:00+23:59","msg":"a"}', utc(2026, 12, 4, 1, 1)),
        ('{"time":"2026-12-05T01:00:00-0530","msg":"a"}', utc(2026, 12, 5, 6, 30)),
    ],
)
def test_largest_offsets_accepted(line, expected):
    entry = parse_one(line)

    assert moment(entry) == expected
    assert TIME_INFERRED not in entry.attributes


@pytest.mark.parametrize("value", ["-00:61", "+0060", "+01:00:61", "+05:60"])
def test_json_impossible_offset_inferred(value):
    lines = [
        '{"time":"2026-12-05T01:00:00Z","msg":"before"}',
        f'{{"time":"2026-12-05T01:00:00{value}","msg":"bad"}}',
    ]
    before, bad = parse_lines(lines, service="svc")

    assert bad.attributes[TIME_INFERRED] == "true"
    assert moment(bad) == moment(before)


@pytest.mark.parametrize(
    ("line", "severity", "word"),
    [
        ("2015-10-18 18:01:47,978 FATAL [main] x", FATAL, "FATAL"),
        ("2015-10-18 18:01:47,978 WARN [main] x", WARN, "WARN"),
        ("2017-05-16 00:00:00.008 25746 WARNING nova x", WARN, "WARNING"),
        ("2016-09-28 04:30:30, Info   CBS x", INFO, "Info"),
        ("2016-09-28 04:30:30, Error  CBS x", ERROR, "Error"),
        ("[Sun Dec 04 04:47:44 2005] [error] mod_jk x", ERROR, "error"),
        ("[Sun Dec 04 04:47:44 2005] [notice] jk2_init() x", INFO, "notice"),
        ("03-17 16:13:38.811  1702  2395 V Tag: x", DEBUG, "V"),
        ("03-17 16:13:38.811  1702  2395 E Tag: x", ERROR, "E"),
        ("03-17 16:13:38.811  1702  2395 A Tag: x", FATAL, "A"),
        ("081109 203615 148 DEBUG dfs x", DEBUG, "DEBUG"),
        ("2020-01-01 00:00:00 CRITICAL disk gone", FATAL, "CRITICAL"),
        ("2026/03/15 10:23:45 [warn] 1234#0: *1 x", WARN, "warn"),
        ("2026/12/05 01:05:08.123 WARN x", WARN, "WARN"),
        ("2026/12/05 01:05:08 +0100 ERROR x", ERROR, "ERROR"),
        ('h - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 200 612', INFO, "200"),
        ('h - - [10/Oct/2026:13:55:36 +0000] "GET /x HTTP/1.1" 404 9', WARN, "404"),
        ('h - - [10/Oct/2026:13:55:36 +0000] "GET / HTTP/1.1" 502 0 "-"', ERROR, "502"),
        (r'h - - [10/Oct/2026:13:55:36 +0000] "GET /\" 500 x" 503 0', ERROR, "503"),
        ('h - - [10/Oct/2026:13:55:36 +0000] "-" 400 0', WARN, "400"),
        ("h - - [10/Oct/2026:13:55:36 +0000] truncated", INFO, ""),
        ("Dec  6 04:00:01 host ERROR card declined", ERROR, "ERROR"),
        ("Dec  6 04:00:01 host app[1]: ERROR card declined", ERROR, "ERROR"),
        ("Dec  6 04:00:01 host kernel: WARN disk slow", WARN, "WARN"),
        ("Dec  6 04:00:01 host postfix/smtpd[7]: [error] x", ERROR, "error"),
        ("Dec  6 04:00:01 host sshd(pam_unix)[9]: FATAL x", FATAL, "FATAL"),
    ],
)
def test_header_severity(line, severity, word):
    entry = parse_one(line)

    assert entry.severity == severity
    assert entry.severity_text == word


@pytest.mark.parametrize(
    "line",
    [
        "Dec 10 06:55:46 LabSZ sshd[1]: error: Received disconnect",
        "Jul  1 19:50:12 mac quicklookd[3]: Error returned from iconservicesagent",
        "Dec  6 04:00:01 host app[1]: E is a word of the message",
        "Dec  6 04:00:01 host app[1]: PAM 2 more authentication failures",
        "Jul  3 19:04:48 mac kernel[0]: WARNING: hibernate skipped 11799 pages",
        "Dec  6 04:00:01 host app[1]: card declined, ERROR later",
        "Dec  6 04:00:01 host app[1]:",
        "[10.30 16:49:06] chrome.exe - ERROR connecting",
        "2020-01-01 00:00:00 main started, no ERROR here",
        "2020-01-01 00:00:00 error lower case is a message word",
        "2020-01-01 00:00:00 E is only a level after a numeric field",
        "134681 node-1 unix.hw error 1077804742 1 Fan ERROR",
        "no time and no level",
    ],
)
def test_body_words_not_severity(line):
    entry = parse_one(line)

    assert entry.severity == INFO
    assert entry.severity_text == ""


@pytest.mark.parametrize(
    ("line", "host"),
    [
        ("Jul  1 09:00:55 calvisitor-10 kernel[0]: x", "calvisitor-10"),
        ("134681 node-246 unix.hw state 1077804742 1 x", "node-246"),
        ("2020-01-01 00:00:00 INFO x", ""),
    ],
)
def test_host_from_header(line, host):
    assert parse_one(line).host == host


def test_severity_of_word():
    assert severity_of_word("warning") == WARN
    assert severity_of_word("Err") == ERROR
    assert severity_of_word("E") is None
    assert severity_of_word("chatty") is None


def test_read_lines_endings(tmp_path):
    path = tmp_path / "mixed.log"
    path.write_bytes(b"one\r\ntwo\n\r\nthree  ")

    lines = list(read_lines(path))

    assert lines == [("one", False), ("two", False), ("three  ", False)]


def test_read_lines_strips_every_trailing_cr(tmp_path):
    path = tmp_path / "doubled.log"
    path.write_bytes(b"one\r\r\ntwo\r\r\r\n\r\r\nthree\r\r")

    lines = list(read_lines(path))

    assert lines == [("one", False), ("two", False), ("three", False)]


def test_read_lines_repairs_utf8(tmp_path):
    path = tmp_path / "bad.log"
    path.write_bytes(b"ok \xc3\xa9\nbad \xff\xfe end\n")

    lines = list(read_lines(path))

    assert lines == [("ok \u00e9", False), ("bad \ufffd\ufffd end", True)]


def test_bounded_lines_up_to_limit():
    stream = io.BytesIO(b"12345\r\n1234\n\n123456789")

    with pytest.raises(LineTooLong) as raised:
        for number, line, _ in read_numbered_stream(stream, max_line_bytes=5):
            assert len(line) <= 5, (number, line)

    assert raised.value.number == 4
    assert raised.value.max_bytes == 5
    assert "line 4 has more than 5 bytes" in str(raised.value)


def test_bounded_line_stops_reading_past_limit():
    stream = io.BytesIO(b"ok\n" + b"x" * 1_000_000 + b"\nnext\n")

    with pytest.raises(LineTooLong) as raised:
        list(read_numbered_stream(stream, max_line_bytes=10))

    assert raised.value.number == 2
    # The reader kept 11 bytes of the line and read one chunk after them to
    # find a byte other than a carriage return.
    assert stream.tell() <= 3 + 11 + 64 * 1024


def test_bounded_line_ending_in_carriage_returns_fits():
    # Carriage returns before the LF are not part of the line, however many.
    stream = io.BytesIO(b"12345" + b"\r" * 200_000 + b"\nnext\n")

    lines = list(read_numbered_stream(stream, max_line_bytes=5))

    assert lines == [(1, "12345", False), (2, "next", False)]


def test_bounded_line_with_text_after_carriage_returns():
    stream = io.BytesIO(b"12345\r\r\rx\n")

    with pytest.raises(LineTooLong):
        list(read_numbered_stream(stream, max_line_bytes=5))


def test_parse_file_attributes(tmp_path):
    path = tmp_path / "app.log"
    path.write_bytes(b"first without time\r\n2020-01-01 00:00:00 WARN \xff\r\n")
    os.utime(path, ns=(1_500_000_000 * 10**9, 1_500_000_000 * 10**9))

    first, second = parse_file(path, service="app")

    assert first.timestamp.seconds == 1_500_000_000
    assert first.attributes[FILE_NAME] == "app.log"
    assert UTF8_REPAIRED not in first.attributes
    assert second.severity == WARN
    assert second.attributes[UTF8_REPAIRED] == "true"
    assert second.message == "2020-01-01 00:00:00 WARN \ufffd"
    assert second.service == "app"


def test_parse_stream_numbers_and_names():
    stream = io.BytesIO(b"first without time\n\n2020-01-01 00:00:00 WARN \xff\r\n")

    parsed = list(
        parse_numbered_stream(
            stream, service="web", file_name="web.log", fallback_time_ns=7 * 10**9
        )
    )

    assert [number for number, _ in parsed] == [1, 3]
    (_, first), (_, second) = parsed
    assert first.timestamp.seconds == 7
    assert first.attributes[TIME_INFERRED] == "true"
    assert first.attributes[FILE_NAME] == "web.log"
    assert second.severity == WARN
    assert second.attributes[UTF8_REPAIRED] == "true"
    assert second.service == "web"


def test_parse_stream_without_name():
    stream = io.BytesIO(b"2020-01-01 00:00:00 INFO one\n")

    ((number, entry),) = parse_numbered_stream(stream, service="web")

    assert number == 1
    assert FILE_NAME not in entry.attributes


def test_message_kept_whole():
    line = "2020-01-01 00:00:00 INFO " + "x" * 5000 + "  "

    assert parse_one(line).message == line


def test_fraction_kept_to_nanoseconds():
    entry = parse_one("2024-01-02 03:04:05.123456789 INFO x")

    assert entry.timestamp.nanos == 123_456_789


# Common application log formats, whose lines give their own time and severity.

COMMON_FORMATS = [
    # JSON lines, with the usual keys for the time and the level.
    ('{"time":"2026-12-05T01:00:00Z","level":"error","msg":"a"}', ERROR, "error"),
    ('{"ts":"2026-12-05T01:00:00Z","severity":"WARNING","msg":"a"}', WARN, "WARNING"),
    ('{"timestamp":"2026-12-05T01:00:00.000Z","lvl":"info"}', INFO, "info"),
    ('{"@timestamp":"2026-12-05T01:00:00+00:00","level":"fatal"}', FATAL, "fatal"),
    ('{"ts":1796432400,"level":"error","msg":"epoch seconds"}', ERROR, "error"),
    # logrus text
    ('time="2026-12-05T01:00:00Z" level=error msg="a"', ERROR, "error"),
    # Monolog and Laravel
    ("[2026-12-05 01:00:00] local.ERROR: a", ERROR, "ERROR"),
    ("[2026-12-05T01:00:00.000000+00:00] app.WARNING: a", WARN, "WARNING"),
    # Python logging, log4j, zap console, PostgreSQL and key=value
    ("2026-12-05 01:00:00,000 - app - ERROR - a", ERROR, "ERROR"),
    ("2026-12-05 01:00:00,000 [main] ERROR com.x - a", ERROR, "ERROR"),
    ("2026-12-05T01:00:00.000Z\terror\tapp/main.go:12\ta", ERROR, "error"),
    ("2026-12-05 01:00:00.000 UTC [123] ERROR:  a", ERROR, "ERROR"),
    ("2026-12-05 01:00:00 UTC [123]: [1-1] ERROR:  a", ERROR, "ERROR"),
    ("2026-12-05 01:00:00,000 level=error a", ERROR, "error"),
    ("2026-12-05T01:00:00+00:00 host app[1]: <err> a", ERROR, "err"),
]


@pytest.mark.parametrize(("line", "severity", "word"), COMMON_FORMATS)
def test_common_formats_time_and_severity(line, severity, word):
    entry = parse_one(line, fallback_time_ns=0)

    assert TIME_INFERRED not in entry.attributes
    assert moment(entry) == utc(2026, 12, 5, 1, 0, 0)
    assert entry.severity == severity
    assert entry.severity_text == word
    assert entry.message == line


@pytest.mark.parametrize(
    ("line", "severity"),
    [
        ("E1205 01:00:00.000000   12345 main.go:10] failed", ERROR),
        ("I1205 01:00:00.000000   12345 main.go:10] started", INFO),
        ("W1205 01:00:00.000000 1 main.go:10] slow", WARN),
        ("F1205 01:00:00.000000 1 main.go:10] dying", FATAL),
    ],
)
def test_klog_header(line, severity):
    entry = parse_one(line, year=2026, fallback_time_ns=0)

    assert TIME_INFERRED not in entry.attributes
    assert moment(entry) == utc(2026, 12, 5, 1, 0, 0)
    assert entry.severity == severity


def test_level_key_severity_matches_router():
    """Check that a level key after the time gives the router's severity.

    The router reads the severity of a message sent without one with
    `guess_severity`.
    """
    from log_service.model import guess_severity

    line = "2026-12-05 01:00:00,000 level=error retrying"
    severity = parse_one(line).severity

    assert severity == ERROR
    assert severity == guess_severity(line)


def test_json_without_time_key_infers_time():
    entry = parse_one('{"level":"error","msg":"no time"}', fallback_time_ns=0)

    assert entry.attributes[TIME_INFERRED] == "true"
    assert entry.severity == ERROR


@pytest.mark.parametrize(
    "value",
    [
        "1796432400",
        "1796432400.0",
        "1796432400000",
        "1796432400000000",
        "1796432400000000000",
    ],
)
def test_json_epoch_units(value):
    entry = parse_one(f'{{"ts":{value},"msg":"a"}}', fallback_time_ns=0)

    assert TIME_INFERRED not in entry.attributes
    assert moment(entry) == utc(2026, 12, 5, 1, 0, 0)


@pytest.mark.parametrize(
    "value",
    [
        "NaN",
        "Infinity",
        "-Infinity",
        "1e999",
        "-1e30",
        "1e300",
        "-1e300",
        "1000000000000000000000000000000",
        "-9300000000",
        '"9999-12-31T23:59:59Z"',
        '"0001-01-01T00:00:00"',
    ],
)
def test_json_time_out_of_range_inferred(value):
    lines = [
        '{"time":"2026-12-05T01:00:00Z","msg":"before"}',
        f'{{"time":{value},"msg":"bad"}}',
        '{"time":"2026-12-05T01:00:01Z","msg":"after"}',
    ]
    before, bad, after = parse_lines(lines, service="svc")

    assert bad.attributes[TIME_INFERRED] == "true"
    assert moment(bad) == utc(2026, 12, 5, 1, 0, 0)
    assert bad.message == lines[1]
    assert moment(after) == utc(2026, 12, 5, 1, 0, 1)


@pytest.mark.parametrize(
    "value",
    [
        "0",
        "0.0",
        "-0.0",
        '"1970-01-01T00:00:00Z"',
        '"1970-01-01T00:00:00.000+00:00"',
        '"1970-01-01T01:00:00+01:00"',
    ],
)
def test_json_epoch_zero_inferred(value):
    # A LogEntry timestamp of exactly epoch 0 reads as unset, so the router
    # would replace it with its receive time.
    lines = [
        '{"time":"2026-12-05T01:00:00Z","msg":"before"}',
        f'{{"time":{value},"msg":"zero"}}',
    ]
    before, zero = parse_lines(lines, service="svc")

    assert zero.attributes[TIME_INFERRED] == "true"
    assert moment(zero) == utc(2026, 12, 5, 1, 0, 0)
    assert zero.message == lines[1]


def test_logrus_epoch_zero_inferred():
    lines = [
        'time="2026-12-05T01:00:00Z" level=info msg="before"',
        'time="1970-01-01T00:00:00Z" level=error msg="zero"',
    ]
    before, zero = parse_lines(lines, service="svc")

    assert zero.attributes[TIME_INFERRED] == "true"
    assert moment(zero) == utc(2026, 12, 5, 1, 0, 0)


@pytest.mark.parametrize(
    ("line", "zone", "severity", "host"),
    [
        ("1970-01-01 00:00:00 ERROR zero", "UTC", ERROR, ""),
        ("1970-01-01T00:00:00Z ERROR zero", "America/New_York", ERROR, ""),
        ("1970-01-01 01:00:00 WARN zero", "Europe/London", WARN, ""),
        ("- 0000000000 1970.01.01 node7 zero", "UTC", INFO, "node7"),
    ],
)
def test_text_epoch_zero_inferred(line, zone, severity, host):
    # A LogEntry timestamp of exactly epoch 0 reads as unset, so the router
    # would replace it with its receive time.
    lines = ["2026-12-05 01:00:00 INFO before", line]
    before, zero = parse_lines(lines, service="svc", default_zone=zone)

    assert zero.attributes[TIME_INFERRED] == "true"
    assert moment(zero) == moment(before)
    assert zero.severity == severity
    assert zero.host == host
    assert zero.message == line


def test_text_epoch_zero_first_line_takes_fallback():
    (entry,) = parse_lines(
        ["1970-01-01 00:00:00 INFO zero"], service="svc", fallback_time_ns=7
    )

    assert entry.attributes[TIME_INFERRED] == "true"
    assert entry.timestamp.ToNanoseconds() == 7


def test_text_near_epoch_zero_kept():
    entry = parse_one("1970-01-01 00:00:01 INFO one", fallback_time_ns=5)

    assert TIME_INFERRED not in entry.attributes
    assert entry.timestamp.ToNanoseconds() == 1_000_000_000


def test_json_near_epoch_zero_kept():
    entry = parse_one('{"time":1,"msg":"a"}', fallback_time_ns=5)

    assert TIME_INFERRED not in entry.attributes
    assert entry.timestamp.ToNanoseconds() == 1_000_000_000


def test_logrus_time_out_of_range_inferred():
    entry = parse_one(
        'time="9999-12-31T23:59:59Z" level=error msg="a"', fallback_time_ns=0
    )

    assert entry.attributes[TIME_INFERRED] == "true"
    assert entry.timestamp.ToNanoseconds() == 0


def test_impossible_date_keeps_host_and_reason():
    lines = ["Feb 28 10:00:00 host-a app: first", "Feb 29 10:00:01 host-b app: x"]
    first, second = parse_lines(lines, service="svc", year=2026)

    assert second.host == "host-b"
    assert second.attributes[TIME_INFERRED] == "true"
    assert "29 Feb 2026" in second.attributes[TIME_INVALID]
    assert second.timestamp == first.timestamp
