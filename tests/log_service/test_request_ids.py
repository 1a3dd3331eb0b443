"""`request_digest`: which parts of a log write its digest covers."""

from __future__ import annotations

from google.protobuf.timestamp_pb2 import Timestamp

from log_service.request_ids import request_digest
from splitlog.logs.v1 import logs_service_pb2 as logs_pb2

INFERRED = {"time_inferred": "true"}


def entries_request(seconds: int, attributes: dict[str, str]):
    entry = logs_pb2.LogEntry(
        service="web",
        message="no time here",
        timestamp=Timestamp(seconds=seconds),
        attributes=attributes,
    )
    return logs_pb2.WriteLogEntriesRequest(request_id="id-1", entries=[entry])


def streams_request(seconds: int, attributes: dict[str, str]):
    stream = logs_pb2.LogStream(
        service="web",
        attributes=attributes,
        messages=["no time here"],
        timestamps_unix_nano=[seconds * 10**9],
    )
    return logs_pb2.WriteLogEntriesRequest(request_id="id-1", streams=[stream])


def test_digest_ignores_inferred_entry_time():
    assert request_digest(entries_request(1, INFERRED)) == request_digest(
        entries_request(2, INFERRED)
    )


def test_digest_ignores_inferred_stream_time():
    assert request_digest(streams_request(1, INFERRED)) == request_digest(
        streams_request(2, INFERRED)
    )


def test_digest_covers_parsed_times():
    assert request_digest(entries_request(1, {})) != request_digest(
        entries_request(2, {})
    )
    assert request_digest(streams_request(1, {})) != request_digest(
        streams_request(2, {})
    )


def test_digest_covers_inferred_messages():
    first = entries_request(1, INFERRED)
    second = entries_request(1, INFERRED)
    second.entries[0].message = "other text"

    assert request_digest(first) != request_digest(second)


def test_digest_leaves_request_unchanged():
    request = streams_request(5, INFERRED)

    request_digest(request)

    assert list(request.streams[0].timestamps_unix_nano) == [5 * 10**9]


def test_digest_of_single_entry_write():
    first = logs_pb2.WriteLogEntryRequest(
        request_id="id-1", entry=entries_request(1, INFERRED).entries[0]
    )
    second = logs_pb2.WriteLogEntryRequest(
        request_id="id-1", entry=entries_request(2, INFERRED).entries[0]
    )

    assert request_digest(first) == request_digest(second)
