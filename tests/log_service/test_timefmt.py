"""Tests of time parsing and formatting in log_service.timefmt."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from log_service.timefmt import (
    TimeFormatError,
    format_seconds,
    format_time,
    parse_duration,
    parse_rfc3339,
    parse_time,
    utc_offset,
)

SECOND = 10**9
MINUTE = 60 * SECOND
HOUR = 60 * MINUTE
# 2026-12-04T17:05:00Z
BASE_SECONDS = 1_796_403_900
NOW_NS = BASE_SECONDS * SECOND + 590_180_708


def test_rfc3339_utc_keeps_nanoseconds():
    ns = parse_time("2026-12-04T17:05:00.590180708Z")
    assert ns == BASE_SECONDS * SECOND + 590_180_708


@pytest.mark.parametrize(
    ("text", "nanos"),
    [
        ("2026-12-04T17:05:00Z", 0),
        ("2026-12-04T17:05:00.5Z", 500_000_000),
        ("2026-12-04T17:05:00.000000001Z", 1),
        ("2026-12-04t17:05:00.123z", 123_000_000),
        ("2026-12-04 17:05:00.000123Z", 123_000),
    ],
)
def test_rfc3339_fractions(text, nanos):
    assert parse_time(text) == BASE_SECONDS * SECOND + nanos


def test_rfc3339_with_offsets():
    assert parse_time("2026-12-04T22:35:00+05:30") == BASE_SECONDS * SECOND
    assert parse_time("2026-12-04T12:05:00.25-05:00") == (
        BASE_SECONDS * SECOND + 250_000_000
    )


def test_offset_wins_over_default_zone():
    ns = parse_time("2026-12-04T17:05:00Z", default_zone="Asia/Tokyo")
    assert ns == BASE_SECONDS * SECOND


def test_no_zone_follows_default_zone():
    # New York is at UTC-5 in December.
    ns = parse_time("2026-12-04T10:00:00", default_zone="America/New_York")
    assert ns == parse_time("2026-12-04T15:00:00Z")


def test_no_zone_in_summer_time():
    # New York is at UTC-4 in July.
    ns = parse_time("2026-07-01T10:00:00.5", default_zone="America/New_York")
    assert ns == parse_time("2026-07-01T14:00:00.5Z")


def test_no_zone_defaults_to_utc():
    assert parse_time("2026-12-04T17:05:00") == BASE_SECONDS * SECOND


def test_date_alone_is_midnight():
    assert parse_time("2026-12-04", default_zone="Europe/Paris") == parse_time(
        "2026-12-03T23:00:00Z"
    )


def test_unknown_zone_rejected():
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        parse_time("2026-12-04T10:00:00", default_zone="Mars/Base")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1700000000s", 1_700_000_000 * SECOND),
        ("1700000000123ms", 1_700_000_000_123_000_000),
        ("1700000000123456us", 1_700_000_000_123_456_000),
        ("1700000000123456789ns", 1_700_000_000_123_456_789),
        ("1700000000.5s", 1_700_000_000_500_000_000),
    ],
)
def test_epoch_with_unit(text, expected):
    assert parse_time(text) == expected


def test_bare_number_rejected_with_unit_hint():
    with pytest.raises(ValueError) as raised:
        parse_time("1700000000")
    message = str(raised.value)
    assert "'1700000000'" in message
    assert "1700000000s" in message
    assert "unit" in message


def test_epoch_in_minutes_rejected():
    with pytest.raises(ValueError, match="-15m"):
        parse_time("15m")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("now", NOW_NS),
        ("NOW", NOW_NS),
        ("now-15m", NOW_NS - 15 * MINUTE),
        ("now - 2h", NOW_NS - 2 * HOUR),
        ("now+30s", NOW_NS + 30 * SECOND),
        ("-1h", NOW_NS - HOUR),
        ("-1d", NOW_NS - 24 * HOUR),
        ("-1h30m", NOW_NS - 90 * MINUTE),
    ],
)
def test_relative_times(text, expected):
    assert parse_time(text, now_ns=NOW_NS) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "yesterday",
        "now-",
        "now-15",
        "now-15x",
        "2026-12-04T17:05",
        "2026-12-04T17:05:00+0530",
        "2026-13-01T00:00:00Z",
        "2026-12-04T17:05:00.1234567890Z",
        "2026-12-04T17:05:00+24:00",
    ],
)
def test_invalid_times_rejected(text):
    with pytest.raises(ValueError) as raised:
        parse_time(text, now_ns=NOW_NS)
    assert repr(text) in str(raised.value)


def test_invalid_time_message_lists_forms():
    with pytest.raises(ValueError) as raised:
        parse_time("yesterday")
    message = str(raised.value)
    assert "RFC 3339" in message
    assert "now-15m" in message
    assert "1700000000s" in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("90s", 90 * SECOND),
        ("15m", 15 * MINUTE),
        ("2h", 2 * HOUR),
        ("7d", 7 * 24 * HOUR),
        ("500ms", 500_000_000),
        ("250us", 250_000),
        ("250µs", 250_000),
        ("42ns", 42),
        ("1h30m", 90 * MINUTE),
        ("1.5h", 90 * MINUTE),
        ("0s", 0),
    ],
)
def test_parse_duration(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "15", "m", "-5m", "5 m", "5w", "1h-5m"])
def test_invalid_durations_rejected(text):
    with pytest.raises(ValueError) as raised:
        parse_duration(text)
    message = str(raised.value)
    assert repr(text) in message
    assert "90s" in message


@pytest.mark.parametrize(
    ("ns", "text"),
    [
        (NOW_NS, "2026-12-04T17:05:00.590180708Z"),
        (BASE_SECONDS * SECOND, "2026-12-04T17:05:00Z"),
        (BASE_SECONDS * SECOND + 500_000_000, "2026-12-04T17:05:00.5Z"),
        (BASE_SECONDS * SECOND + 1, "2026-12-04T17:05:00.000000001Z"),
        (0, "1970-01-01T00:00:00Z"),
        (-1, "1969-12-31T23:59:59.999999999Z"),
    ],
)
def test_format_time(ns, text):
    assert format_time(ns) == text


@given(st.integers(min_value=-(2**63), max_value=2**63 - 1))
def test_format_then_parse_is_exact(ns):
    assert parse_time(format_time(ns)) == ns


@pytest.mark.parametrize(
    "ns, text",
    [
        (0, "0s"),
        (1, "0.000000001s"),
        (1_500_000_000, "1.5s"),
        (10**21, "1000000000000s"),
        (-2_000_000_001, "-2.000000001s"),
    ],
)
def test_format_seconds_is_exact(ns, text):
    assert format_seconds(ns) == text


@pytest.mark.parametrize(
    ("text", "detail"),
    [
        ("2026-12-06T14:00:00+25:00", "offset +25:00 is out of range"),
        ("2026-12-06T14:00:00+99:99", "offset +99:99 is out of range"),
        ("2026-12-06T14:00:00-00:61", "offset -00:61 is out of range"),
        ("2026-12-06T14:00:00.Z", "the '.' has no digits after it"),
        ("2026-12-06T14:00:60Z", "second 60 is a leap second"),
    ],
)
@pytest.mark.parametrize("parse", [parse_time, parse_rfc3339])
def test_impossible_times_rejected(parse, text, detail):
    with pytest.raises(TimeFormatError) as raised:
        parse(text)
    assert detail in raised.value.detail
    assert repr(text) in str(raised.value)


@pytest.mark.parametrize(
    ("text", "utc"),
    [
        ("2026-12-06T14:00:00+23:59", "2026-12-05T14:01:00Z"),
        ("2026-12-06T14:00:00-23:59", "2026-12-07T13:59:00Z"),
        ("2026-12-06T14:00:00-00:00", "2026-12-06T14:00:00Z"),
        ("2026-12-06t14:00:00.5z", "2026-12-06T14:00:00.5Z"),
    ],
)
def test_rfc3339_extreme_offsets(text, utc):
    assert format_time(parse_rfc3339(text)) == utc
    assert format_time(parse_time(text)) == utc


@pytest.mark.parametrize(
    "text",
    ["2026-12-06 14:00:00Z", "2026-12-06T14:00:00", "2026-12-06", "now", "1s"],
)
def test_rfc3339_needs_t_and_zone(text):
    with pytest.raises(TimeFormatError) as raised:
        parse_rfc3339(text)
    assert "expected an RFC 3339 time" in raised.value.detail


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("+05:30", 330), ("-0800", -480), ("-00:00", 0), ("+23:59", 1439)],
)
def test_utc_offset(text, minutes):
    offset = utc_offset(text).utcoffset(None)
    assert offset.total_seconds() == minutes * 60


@pytest.mark.parametrize("text", ["+24:00", "+0060", "-00:61", "+5:30", "05:30"])
def test_utc_offset_rejected(text):
    with pytest.raises(ValueError, match=text.replace("+", "\\+")):
        utc_offset(text)


@pytest.mark.parametrize(
    ("text", "parse"),
    [
        ("1.0000000001s", parse_duration),
        ("0.5ns", parse_duration),
        ("1700000000.0000000001s", parse_time),
        ("now-1.0000000001s", parse_time),
    ],
)
def test_below_nanosecond_rejected(text, parse):
    with pytest.raises(TimeFormatError) as raised:
        parse(text)
    assert "is not a whole number of nanoseconds" in raised.value.detail


def test_trailing_zero_digits_kept_whole():
    assert parse_duration("1.50000000000s") == 1_500_000_000
