"""Tests of the log entry rules in log_service.model."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from hypothesis import given, settings
from hypothesis import strategies as st

from log_service import model
from log_service.model import (
    DEBUG,
    ERROR,
    FATAL,
    INFO,
    WARN,
    Limits,
    batch_error_for_size,
    columns_to_entries,
    guess_severity,
    normalize_batch,
    repair_utf8,
    severity_from_number,
    severity_from_text,
)
from splitlog.logs.v1 import logs_service_pb2
from splitlog_runtime.config import load as load_config

LogEntry = logs_service_pb2.LogEntry
NOW_NS = 1_796_403_900_590_180_708  # 2026-12-04T17:05:00.590180708Z
HOUR_NS = 3600 * 10**9
DAY_NS = 24 * HOUR_NS
LIMITS = Limits()


def no_cutoff(service: str) -> int:
    return -(2**63)


def normalize(entries, limits=LIMITS, retention_cutoff=no_cutoff):
    return normalize_batch(
        entries, now_ns=NOW_NS, limits=limits, retention_cutoff=retention_cutoff
    )


def timestamp(ns: int) -> Timestamp:
    return model.timestamp_from_ns(ns)


def only_entry(entry: LogEntry, limits: Limits = LIMITS) -> LogEntry:
    """Normalise one entry that must be accepted and return it as stored."""
    batch = normalize([entry], limits)
    assert list(batch.rejections) == []
    return columns_to_entries(batch.columns)[0]


def only_rejection(entry: LogEntry, limits: Limits = LIMITS):
    batch = normalize([entry], limits)
    assert batch.indexes == []
    assert len(batch.rejections) == 1
    return batch.rejections[0]


# Severity words and numbers.


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("debug", DEBUG),
        ("V", DEBUG),
        ("trace", DEBUG),
        ("finest", DEBUG),
        ("I", INFO),
        ("notice", INFO),
        ("Informational", INFO),
        ("WARNING", WARN),
        ("w", WARN),
        ("err", ERROR),
        ("severe", ERROR),
        ("E", ERROR),
        ("critical", FATAL),
        ("crit", FATAL),
        ("emerg", FATAL),
        ("panic", FATAL),
        (" Fatal ", FATAL),
    ],
)
def test_severity_from_text_known_words(word, expected):
    assert severity_from_text(word) == expected


def test_severity_from_text_unknown_word():
    assert severity_from_text("loud") is None
    assert severity_from_text("") is None


@pytest.mark.parametrize(
    ("number", "expected"),
    [
        (1, DEBUG),
        (8, DEBUG),
        (9, INFO),
        (12, INFO),
        (13, WARN),
        (16, WARN),
        (17, ERROR),
        (20, ERROR),
        (21, FATAL),
        (24, FATAL),
    ],
)
def test_severity_from_number_ranges(number, expected):
    assert severity_from_number(number) == expected


@pytest.mark.parametrize("number", [0, -1, 25, 1000])
def test_severity_from_number_out_of_range(number):
    assert severity_from_number(number) is None


def test_severity_table_matches_words():
    rows = {}
    for line in _severity_doc().splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if len(cells) == 2 and cells[0] in ("DEBUG", "INFO", "WARN", "ERROR", "FATAL"):
            for word in cells[1].split(","):
                rows[word.strip()] = getattr(model, cells[0])
    assert rows == model.SEVERITY_WORDS


def _severity_doc() -> str:
    """Return the docstring written under SEVERITY_WORDS in the module source."""
    source = Path(model.__file__).read_text(encoding="utf-8")
    start = source.index('"""Severity words')
    return source[start : source.index('"""', start + 3)]


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("ERROR connecting to db", ERROR),
        ("2026-12-04 17:05:00 WARNING disk at 91%", WARN),
        ("request failed CRITICAL", FATAL),
        ("INFO then ERROR", INFO),
        ("level=warn msg=slow", WARN),
        ('{"level": "debug", "msg": "x"}', DEBUG),
        ("[error] upstream closed", ERROR),
        ("error: no such file", ERROR),
        ("Fatal: out of memory", FATAL),
        ("EARN then ERROR", ERROR),
    ],
)
def test_guess_severity_finds_word(message, expected):
    assert guess_severity(message) == expected


@pytest.mark.parametrize(
    "message",
    [
        "no error found",
        "ERROR_CODE=5",
        "TERRORS",
        "information desk",
        "",
        # Words that share a severity word's ending but are not in the table.
        "EARN: rewards credited",
        "DARN it",
        "[tarn]",
        "level=natal",
        "WRIT served",
        # U+0130 lowers to two characters, so "İNFO" is not "info".
        "\u0130NFO x",
    ],
)
def test_guess_severity_ignores_ordinary_text(message):
    assert guess_severity(message) is None


def test_guess_severity_reads_only_start():
    message = "x" * model.GUESS_SEVERITY_CHARACTERS + " ERROR"
    assert guess_severity(message) is None


# Severity rule order.


def test_severity_enum_wins():
    entry = only_entry(
        LogEntry(
            service="api",
            severity=logs_service_pb2.SEVERITY_DEBUG,
            severity_text="error",
            message="FATAL crash",
        )
    )
    assert entry.severity == DEBUG


@pytest.mark.parametrize(
    ("severity_text", "kept"),
    [
        ("notice", {"severity_text": "notice"}),
        ("AUDIT", {"severity_text": "AUDIT"}),
        ("WARNING", {}),
    ],
)
def test_severity_enum_with_severity_text(severity_text, kept):
    entry = only_entry(
        LogEntry(
            service="api",
            severity=logs_service_pb2.SEVERITY_WARN,
            severity_text=severity_text,
        )
    )
    assert entry.severity == logs_service_pb2.SEVERITY_WARN
    assert dict(entry.attributes) == kept


def test_severity_text_wins_over_message_word():
    entry = only_entry(
        LogEntry(service="api", severity_text="WARNING", message="an error occurred")
    )
    assert entry.severity == WARN
    assert dict(entry.attributes) == {}


def test_severity_text_wins_over_message_word_upper():
    entry = only_entry(
        LogEntry(service="api", severity_text="WARNING", message="ERROR in job")
    )
    assert entry.severity == WARN


def test_unknown_severity_text_kept():
    entry = only_entry(
        LogEntry(service="api", severity_text="loud", message="ERROR here")
    )
    assert entry.severity == INFO
    assert dict(entry.attributes) == {"severity_text": "loud"}


def test_unknown_severity_text_replaces_attribute():
    entry = only_entry(
        LogEntry(service="api", severity_text="loud", attributes={"severity_text": "x"})
    )
    assert dict(entry.attributes) == {"severity_text": "loud"}
    assert entry.dropped_attributes_count == 1


def test_unknown_severity_text_same_attribute():
    entry = only_entry(
        LogEntry(
            service="api", severity_text="loud", attributes={"severity_text": "loud"}
        )
    )
    assert dict(entry.attributes) == {"severity_text": "loud"}
    assert entry.dropped_attributes_count == 0


def test_unknown_severity_text_within_cap():
    attributes = {f"k{i:03}": str(i) for i in range(LIMITS.max_attributes)}
    entry = only_entry(
        LogEntry(service="api", severity_text="loud", attributes=attributes)
    )
    assert len(entry.attributes) == LIMITS.max_attributes
    assert entry.attributes["severity_text"] == "loud"
    # The last key in sorted order gives up its place.
    assert f"k{LIMITS.max_attributes - 1:03}" not in entry.attributes
    assert entry.dropped_attributes_count == 1


def test_severity_guessed_from_message():
    entry = only_entry(LogEntry(service="api", message="ERROR timeout"))
    assert entry.severity == ERROR


def test_severity_defaults_to_info():
    entry = only_entry(LogEntry(service="api", message="started"))
    assert entry.severity == INFO


def test_unknown_severity_number_rejected():
    rejection = only_rejection(LogEntry(service="api", severity=7))
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_INVALID_FIELD
    assert rejection.field == "severity"
    assert "7" in rejection.description


# Service and host.


def test_missing_service_rejected():
    rejection = only_rejection(LogEntry(message="hello"))
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_MISSING_FIELD
    assert rejection.field == "service"


def test_long_service_rejected():
    rejection = only_rejection(LogEntry(service="s" * 257))
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_INVALID_FIELD
    assert rejection.field == "service"
    assert "256 bytes" in rejection.description


def test_service_limit_multibyte():
    service = "é" * 128  # 256 bytes in UTF-8
    assert only_entry(LogEntry(service=service)).service == service
    rejection = only_rejection(LogEntry(service=service + "é"))
    assert rejection.field == "service"


@pytest.mark.parametrize("service", ["api\n", "a\tb", "x\x00", "y\x7f"])
def test_service_with_control_character_rejected(service):
    rejection = only_rejection(LogEntry(service=service))
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_INVALID_FIELD
    assert "control character" in rejection.description


def test_host_over_limit_rejected():
    rejection = only_rejection(LogEntry(service="api", host="h" * 257))
    assert rejection.field == "host"


def test_host_kept():
    assert only_entry(LogEntry(service="api", host="pod-7")).host == "pod-7"


# Timestamps.


def test_timestamp_keeps_nanoseconds():
    ns = NOW_NS - 123
    batch = normalize([LogEntry(service="api", timestamp=timestamp(ns))])
    assert list(batch.columns.timestamps) == [ns]
    entry = columns_to_entries(batch.columns)[0]
    assert entry.timestamp.seconds == ns // 10**9
    assert entry.timestamp.nanos == ns % 10**9


def test_unset_timestamp_takes_observed():
    observed = NOW_NS - 5_000
    batch = normalize([LogEntry(service="api", observed_timestamp=timestamp(observed))])
    assert list(batch.columns.timestamps) == [observed]
    assert list(batch.columns.observed_timestamps) == [observed]


def test_unset_observed_takes_now():
    batch = normalize([LogEntry(service="api")])
    assert list(batch.columns.timestamps) == [NOW_NS]
    assert list(batch.columns.observed_timestamps) == [NOW_NS]


def test_old_entry_rejected_under_retention():
    retention_ns = 7 * DAY_NS
    entries = [
        LogEntry(service="api", message=f"m{i}", timestamp=timestamp(NOW_NS - i))
        for i in range(10)
    ]
    entries[4].timestamp.CopyFrom(timestamp(NOW_NS - 30 * DAY_NS))
    calls = []

    def cutoff(service: str) -> int:
        calls.append(service)
        return NOW_NS - retention_ns

    batch = normalize(entries, retention_cutoff=cutoff)

    assert batch.indexes == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert len(batch.columns.messages) == 9
    assert len(batch.rejections) == 1
    rejection = batch.rejections[0]
    assert rejection.index == 4
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_TIMESTAMP_TOO_OLD
    assert rejection.field == "timestamp"
    assert "30.0 days old" in rejection.description
    assert "'api'" in rejection.description
    assert calls == ["api"]


def test_retention_cutoff_is_per_service():
    cutoffs = {"short": NOW_NS - HOUR_NS, "long": NOW_NS - 10 * DAY_NS}
    when = timestamp(NOW_NS - 2 * HOUR_NS)
    batch = normalize(
        [
            LogEntry(service="short", timestamp=when),
            LogEntry(service="long", timestamp=when),
        ],
        retention_cutoff=cutoffs.__getitem__,
    )
    assert batch.indexes == [1]
    assert batch.rejections[0].index == 0
    # An age under 48 hours is given in hours.
    assert "2.0 hours old" in batch.rejections[0].description


def test_future_timestamp_rejected():
    limits = Limits(max_future_ns=60 * 10**9)
    ok = LogEntry(service="api", timestamp=timestamp(NOW_NS + 60 * 10**9))
    late = LogEntry(service="api", timestamp=timestamp(NOW_NS + 60 * 10**9 + 1))
    batch = normalize([ok, late], limits)
    assert batch.indexes == [0]
    rejection = batch.rejections[0]
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_TIMESTAMP_IN_FUTURE
    assert "60 s" in rejection.description


def test_observed_timestamp_overflow_rejected():
    entry = LogEntry(
        service="api",
        timestamp=timestamp(NOW_NS),
        observed_timestamp=Timestamp(seconds=253_402_300_799),
    )
    rejection = only_rejection(entry)
    assert rejection.field == "observed_timestamp"


# Messages.


def test_long_message_truncated_in_batch():
    limits = Limits(max_message_bytes=256 * 1024)
    long_message = ("ab€" * 100_000)[:300_000]
    entries = [
        LogEntry(service="api", message="ok1"),
        LogEntry(service="api", message=long_message),
        LogEntry(service="api", message="ok2"),
    ]
    batch = normalize(entries, limits)

    assert batch.indexes == [0, 1, 2]
    assert list(batch.rejections) == []
    messages = list(batch.columns.messages)
    assert messages[0] == "ok1"
    assert messages[2] == "ok2"
    assert list(batch.columns.truncated) == [False, True, False]
    stored = messages[1]
    assert long_message.startswith(stored)
    encoded = stored.encode("utf-8")
    assert len(encoded) <= 256 * 1024
    # A cut at a character boundary leaves less than one character unused.
    assert len(encoded) > 256 * 1024 - 3


def test_message_cut_inside_multibyte_character():
    limits = Limits(max_message_bytes=10)
    entry = only_entry(LogEntry(service="api", message="aaaaaaaaa€"), limits)
    assert entry.message == "aaaaaaaaa"
    assert entry.truncated


def test_message_at_limit_not_truncated():
    limits = Limits(max_message_bytes=12)
    entry = only_entry(LogEntry(service="api", message="€€€€"), limits)
    assert entry.message == "€€€€"
    assert not entry.truncated


def test_empty_message_stored_empty():
    batch = normalize([LogEntry(service="api")])
    assert list(batch.columns.messages) == [""]


# Attributes.


def test_attributes_stored_as_sorted_json():
    batch = normalize([LogEntry(service="api", attributes={"b": "ü", "a": "1"})])
    assert list(batch.columns.attributes) == ['{"a":"1","b":"ü"}']


def test_no_attributes_stored_as_empty_string():
    batch = normalize([LogEntry(service="api")])
    assert list(batch.columns.attributes) == [""]


def test_extra_attributes_dropped_by_key():
    limits = Limits(max_attributes=3)
    attributes = {f"k{i}": str(i) for i in (4, 0, 3, 1, 2)}
    entry = only_entry(LogEntry(service="api", attributes=attributes), limits)
    assert dict(entry.attributes) == {"k0": "0", "k1": "1", "k2": "2"}
    assert entry.dropped_attributes_count == 2
    assert not entry.truncated


def test_long_attribute_key_dropped():
    limits = Limits(max_attribute_key_bytes=4)
    entry = only_entry(
        LogEntry(service="api", attributes={"keep": "1", "toolong": "2"}), limits
    )
    assert dict(entry.attributes) == {"keep": "1"}
    assert entry.dropped_attributes_count == 1


def test_long_attribute_value_cut():
    limits = Limits(max_attribute_value_bytes=5)
    entry = only_entry(LogEntry(service="api", attributes={"user": "ééé"}), limits)
    assert dict(entry.attributes) == {"user": "éé"}
    assert entry.truncated


# Trace context.


def test_trace_and_span_ids_lowered():
    entry = only_entry(
        LogEntry(
            service="api",
            trace_id="4BF92F3577B34DA6A3CE929D0E0E4736",
            span_id="00F067AA0BA902B7",
        )
    )
    assert entry.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert entry.span_id == "00f067aa0ba902b7"


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e473"),
        ("trace_id", "4bf92f3577b34da6a3ce929d0e0e4736ff"),
        ("trace_id", "zbf92f3577b34da6a3ce929d0e0e4736"),
        ("span_id", "00f067aa0ba902b"),
        ("span_id", "00f067aa-ba902b7"),
    ],
)
def test_bad_trace_context_rejected(field, value):
    rejection = only_rejection(LogEntry(service="api", **{field: value}))
    assert rejection.reason == logs_service_pb2.REJECTION_REASON_INVALID_FIELD
    assert rejection.field == field
    assert value in rejection.description


def test_all_zero_trace_context_stored_empty():
    entry = only_entry(LogEntry(service="api", trace_id="0" * 32, span_id="0" * 16))
    assert entry.trace_id == ""
    assert entry.span_id == ""


# Batches.


def test_rejections_do_not_stop_other_entries():
    entries = [
        LogEntry(),
        LogEntry(service="api", message="a"),
        LogEntry(service="api", severity=3),
        LogEntry(service="api", message="b"),
        LogEntry(service="api", trace_id="x"),
    ]
    batch = normalize(entries)
    assert batch.indexes == [1, 3]
    assert list(batch.columns.messages) == ["a", "b"]
    assert [r.index for r in batch.rejections] == [0, 2, 4]
    assert batch.entry_count == 5


def test_first_index_offsets_indexes():
    batch = normalize_batch(
        [LogEntry(), LogEntry(service="api")],
        now_ns=NOW_NS,
        limits=LIMITS,
        retention_cutoff=no_cutoff,
        first_index=100,
    )
    assert batch.indexes == [101]
    assert batch.rejections[0].index == 100


def test_batch_error_for_empty_batch():
    error = batch_error_for_size(0, LIMITS)
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert error.field_violations[0].field == "entries"
    assert "at least one" in error.message


def test_batch_error_for_large_batch():
    limits = Limits(max_batch_entries=100)
    assert batch_error_for_size(100, limits) is None
    error = batch_error_for_size(101, limits)
    assert error is not None
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    assert "101" in error.message
    assert "100" in error.message


def test_limits_from_config():
    config = load_config(
        environ={},
        overrides={
            "log_max_message_bytes": 1000,
            "log_max_batch_entries": 50,
            "log_max_future_seconds": 30,
            "log_default_time_zone": "Europe/Paris",
        },
    )
    limits = Limits.from_config(config)
    assert limits.max_message_bytes == 1000
    assert limits.max_batch_entries == 50
    assert limits.max_future_ns == 30 * 10**9
    assert limits.default_time_zone == "Europe/Paris"


# Round trip and UTF-8 repair.


def test_columns_to_entries_round_trip():
    entries = [
        LogEntry(
            service="api",
            host="h1",
            message="ERROR boom",
            timestamp=timestamp(NOW_NS - 7),
            observed_timestamp=timestamp(NOW_NS - 3),
            attributes={"user": "u1"},
            trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
            span_id="00f067aa0ba902b7",
        ),
        LogEntry(service="web", severity=logs_service_pb2.SEVERITY_WARN),
    ]
    batch = normalize(entries)
    first, second = columns_to_entries(batch.columns)
    assert first.service == "api"
    assert first.host == "h1"
    assert first.severity == ERROR
    assert first.timestamp == timestamp(NOW_NS - 7)
    assert first.observed_timestamp == timestamp(NOW_NS - 3)
    assert dict(first.attributes) == {"user": "u1"}
    assert first.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first.severity_text == ""
    assert second.severity == WARN
    picked = columns_to_entries(batch.columns, [1])
    assert [entry.service for entry in picked] == ["web"]


def test_timestamp_before_epoch_round_trip():
    ns = -1_500_000_001
    converted = model.timestamp_from_ns(ns)
    assert converted.seconds == -2
    assert converted.nanos == 499_999_999


def test_repair_utf8_valid_text():
    assert repair_utf8("grüße".encode()) == ("grüße", False)


def test_repair_utf8_invalid_bytes():
    text, repaired = repair_utf8(b"ok \xff\xfe end \xe2\x82")
    assert repaired
    assert text == "ok \ufffd\ufffd end \ufffd"


def test_utf8_repaired_attribute_added():
    builder = model.BatchBuilder(
        now_ns=NOW_NS, limits=LIMITS, retention_cutoff=no_cutoff
    )
    message, repaired = repair_utf8(b"bad \xc3")
    builder.add(
        0,
        service="api",
        host="",
        message=message,
        severity=0,
        severity_text="",
        timestamp=0,
        observed_timestamp=0,
        attributes={},
        trace_id="",
        span_id="",
        utf8_repaired=repaired,
    )
    batch = builder.build()
    assert json.loads(batch.columns.attributes[0]) == {"utf8_repaired": "true"}
    assert batch.columns.messages[0] == "bad \ufffd"


def add_repaired(builder, attributes: dict[str, str]) -> None:
    builder.add(
        0,
        service="api",
        host="",
        message="bad \ufffd",
        severity=0,
        severity_text="",
        timestamp=0,
        observed_timestamp=0,
        attributes=attributes,
        trace_id="",
        span_id="",
        utf8_repaired=True,
    )


def test_utf8_repaired_replaces_attribute():
    builder = model.BatchBuilder(
        now_ns=NOW_NS, limits=Limits(max_attributes=2), retention_cutoff=no_cutoff
    )
    add_repaired(builder, {"utf8_repaired": "no", "a": "1", "b": "2"})
    batch = builder.build()
    assert json.loads(batch.columns.attributes[0]) == {
        "a": "1",
        "utf8_repaired": "true",
    }
    # The writer's `utf8_repaired` and `b`, which found no place.
    assert list(batch.columns.dropped_attributes_counts) == [2]


# Property: every entry is either stored or rejected, and nothing raises.

_texts = st.text(max_size=40)
_entries = st.builds(
    LogEntry,
    service=st.one_of(st.just("api"), _texts),
    host=_texts,
    message=st.text(max_size=300),
    severity=st.sampled_from([0, 5, 9, 13, 17, 21, 1, 7, 99]),
    severity_text=st.one_of(st.just(""), st.sampled_from(["warn", "loud"]), _texts),
    attributes=st.dictionaries(_texts, _texts, max_size=6),
    trace_id=st.one_of(st.just(""), st.text("0123456789abcdefABCDEF", max_size=33)),
    span_id=st.one_of(st.just(""), st.text("0123456789abcdefABCDEF", max_size=17)),
    timestamp=st.builds(
        Timestamp,
        seconds=st.integers(-(10**12), 10**12),
        nanos=st.integers(-(2**31), 2**31 - 1),
    ),
    observed_timestamp=st.builds(
        Timestamp,
        seconds=st.integers(-(10**12), 10**12),
        nanos=st.integers(0, 999_999_999),
    ),
)


@settings(max_examples=200, deadline=None)
@given(entries=st.lists(_entries, max_size=12))
def test_normalize_batch_accounts_for_every_entry(entries):
    limits = Limits(
        max_message_bytes=64,
        max_attributes=3,
        max_attribute_key_bytes=8,
        max_attribute_value_bytes=8,
        max_service_bytes=16,
    )
    batch = normalize(
        entries, limits, retention_cutoff=lambda service: NOW_NS - 30 * DAY_NS
    )
    assert len(batch.indexes) + len(batch.rejections) == len(entries)
    assert sorted(batch.indexes + [r.index for r in batch.rejections]) == list(
        range(len(entries))
    )
    assert len(batch.columns.services) == len(batch.indexes)
    for message in batch.columns.messages:
        assert len(message.encode("utf-8")) <= 64
    columns_to_entries(batch.columns)
