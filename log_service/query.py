"""Reads across shards: ListLogEntries pages and GetLogStats counts.

Both check the request, query every shard that can contain matching entries
in parallel (its leader, or an in-sync follower when the leader does not
respond, see `replica_reads`), and combine the responses. Pages follow the
(timestamp, shard, sequence) order that `merge` defines and continue through
`tokens`.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc
from google.protobuf import duration_pb2, timestamp_pb2

from log_service.merge import Row, merge_rows, shard_cursor
from log_service.model import (
    VALID_SEVERITIES,
    Limits,
    columns_to_entries,
    service_is_valid,
    utf8_length,
)
from log_service.pages import fitting_count, page_budget
from log_service.timefmt import format_seconds, format_time
from log_service.tokens import (
    Cursor,
    PageToken,
    check_page_token_end,
    check_page_token_shards,
    decode_page_token,
    encode_page_token,
    filter_hash,
)
from log_service.wal import encode_varint
from splitlog.logs.v1 import logs_service_pb2, node_service_pb2
from splitlog_runtime import limits
from splitlog_runtime.channels import answer_before
from splitlog_runtime.errors import DomainError, clip, invalid_field
from splitlog_runtime.validation import Violations

if TYPE_CHECKING:
    # The CLI imports this module for its query checks, and the router code
    # behind these names would slow every `splitlog` command's start.
    from log_service.replica_reads import ShardReader
    from log_service.sharding import Sharder

NANOS_PER_SECOND = 1_000_000_000
DEFAULT_PAGE_SIZE = 100
ORDER_ASCENDING = "timestamp"
ORDER_DESCENDING = "timestamp desc"
# Newest first is what a log viewer shows first.
DEFAULT_ORDER = ORDER_DESCENDING
TARGET_BUCKETS = 60
MAX_BUCKETS = 10_000
# ErrorInfo reason of a histogram_step that gives more than MAX_BUCKETS.
TOO_MANY_BUCKETS = "TOO_MANY_BUCKETS"
# A caller's remaining time above this means it sent no deadline: grpcio
# reports about 9.2e18 s then.
NO_DEADLINE_SECONDS = 1e9
# The range of google.protobuf.Timestamp: 0001-01-01 to 9999-12-31 UTC.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799
# Query times are clamped to about 1823-2116 so that they, a histogram step and
# a bucket start aligned below them all fit the node API's int64 nanoseconds.
MIN_QUERY_NS = -(2**62)
MAX_QUERY_NS = 2**62
# Bounds of GetLogStats.histogram_step, which `splitlog logs stats` checks too.
MIN_STEP_NS = NANOS_PER_SECOND
MAX_STEP_NS = 2**62
_NICE_STEPS_SECONDS = (
    1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200, 10800,
    21600, 43200, 86400, 172800, 604800, 2592000, 7776000, 31536000,
)  # fmt: skip


@dataclass(frozen=True)
class EntrySelection:
    """The entry conditions shared by list, tail and stats requests."""

    services: tuple[str, ...]
    severities: tuple[int, ...]
    keyword: str
    attributes: tuple[tuple[str, str], ...]

    def to_filter(
        self, start: int | None = None, end: int | None = None, max_sequence: int = 0
    ) -> node_service_pb2.EntryFilter:
        entry_filter = node_service_pb2.EntryFilter(
            services=self.services,
            severities=self.severities,
            keyword=self.keyword,
            attributes=[
                node_service_pb2.AttributeMatch(key=key, value=value)
                for key, value in self.attributes
            ],
            max_sequence=max_sequence,
        )
        if start is not None:
            entry_filter.start_time = start
        if end is not None:
            entry_filter.end_time = end
        return entry_filter

    def fingerprint_fields(self) -> dict[str, object]:
        return {
            "services": sorted(self.services),
            "severities": sorted(self.severities),
            "keyword": self.keyword,
            "attributes": sorted(self.attributes),
        }


def _check_severity(value: int, path: str) -> int:
    if value not in VALID_SEVERITIES:
        raise invalid_field(
            path,
            f"{value} is not a severity; use SEVERITY_DEBUG, SEVERITY_INFO, "
            "SEVERITY_WARN, SEVERITY_ERROR or SEVERITY_FATAL",
        )
    return value


def parse_attribute_filter(text: str) -> tuple[str, str]:
    r"""Split an attribute filter `key=value` into its key and value.

    The key ends at the first `=` that no backslash escapes. In the key, `\=`
    means `=` and `\\` a backslash. The value is taken as it is.

    Raises:
      ValueError: the text has no unescaped `=`, has an empty key, or has a
        backslash before a character other than `=` and `\`. The message
        names the problem.
    """
    key: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "=":
            break
        if char == "\\":
            escaped = text[index + 1 : index + 2]
            if escaped not in ("=", "\\"):
                follower = _quoted(escaped) if escaped else "the end of the text"
                raise ValueError(
                    f"{_quoted(text)} has a backslash before {follower} in its "
                    "key; in the key write \\= for = and \\\\ for a backslash"
                )
            key.append(escaped)
            index += 2
            continue
        key.append(char)
        index += 1
    if index == len(text):
        raise ValueError(
            f"{_quoted(text)} is not `key=value`; write it as, for example, "
            "rpc=Get, and escape = in the key as \\="
        )
    if not key:
        raise ValueError(
            f"{_quoted(text)} has an empty key; write it as, for example, rpc=Get"
        )
    return "".join(key), text[index + 1 :]


def _quoted(text: str) -> str:
    """Quote a filter for a message as it was typed, without doubling backslashes.

    Only characters that do not print are escaped, as `\\n` or `\\x07`.
    """
    return "'" + "".join(map(_printable, text)) + "'"


def _printable(char: str) -> str:
    return char if char.isprintable() else repr(char)[1:-1]


def _check_attribute(text: str, path: str) -> tuple[str, str]:
    try:
        return parse_attribute_filter(text)
    except ValueError as exc:
        raise invalid_field(path, str(exc)) from None


def _check_condition(
    condition: logs_service_pb2.AttributeCondition, path: str
) -> tuple[str, str]:
    if not condition.key:
        raise invalid_field(
            f"{path}.key", "is empty; send the attribute key, such as rpc"
        )
    return condition.key, condition.value


def check_selection(
    violations: Violations,
    *,
    services: Sequence[str],
    min_severity: int,
    severities: Sequence[int],
    keyword: str,
    attribute_filters: Sequence[str],
    attribute_conditions: Sequence[logs_service_pb2.AttributeCondition] = (),
) -> EntrySelection:
    """Check the entry conditions of a request and collect their errors."""
    chosen: list[int] = []
    if min_severity and severities:
        violations.check(
            _raise,
            "severities",
            "cannot be combined with min_severity; send one of the two",
        )
    elif min_severity and violations.check(
        _check_severity, min_severity, "min_severity"
    ):
        chosen = sorted(s for s in VALID_SEVERITIES if s >= min_severity)
    for index, value in enumerate(severities):
        if violations.check(_check_severity, value, f"severities[{index}]"):
            chosen.append(value)
    for index, service in enumerate(services):
        violations.check(_check_service, service, f"services[{index}]")
    attributes = []
    for index, text in enumerate(attribute_filters):
        pair = violations.check(_check_attribute, text, f"attribute_filters[{index}]")
        if pair is not None:
            attributes.append(pair)
    for index, condition in enumerate(attribute_conditions):
        pair = violations.check(
            _check_condition, condition, f"attribute_conditions[{index}]"
        )
        if pair is not None:
            attributes.append(pair)
    return EntrySelection(
        tuple(dict.fromkeys(services)),
        tuple(sorted(set(chosen))),
        keyword,
        tuple(attributes),
    )


def _raise(path: str, description: str) -> None:
    raise invalid_field(path, description)


# The ingest rule for service names, which no setting changes.
_SERVICE_LIMITS = Limits()
# Characters of a service name that an error message shows.
_QUOTED_SERVICE_CHARACTERS = 120


def _check_service(service: str, path: str) -> None:
    """Reject a service filter that no stored entry can match, because ingest
    rejects every entry with that service name."""
    if service_is_valid(service, _SERVICE_LIMITS):
        return
    if not service:
        raise invalid_field(path, "is empty; send a service name")
    quoted = repr(clip(service, _QUOTED_SERVICE_CHARACTERS))
    size = utf8_length(service)
    if size > _SERVICE_LIMITS.max_service_bytes:
        problem = (
            f"is {size} bytes long in UTF-8, and ingest rejects service names "
            f"over {_SERVICE_LIMITS.max_service_bytes} bytes"
        )
    else:
        problem = (
            "contains a control character, and ingest rejects service names "
            "with control characters such as line breaks and tabs"
        )
    raise invalid_field(
        path,
        f"{quoted} {problem}, so no entry can match it; send the service name "
        "that the entries carry",
    )


def timestamp_ns(value: timestamp_pb2.Timestamp) -> int:
    return value.seconds * NANOS_PER_SECOND + value.nanos


def _check_time(value: timestamp_pb2.Timestamp, path: str) -> int:
    """Return a request time in Unix nanoseconds, clamped to the query range.

    Clamping loses nothing because no stored entry can lie outside that range.
    """
    seconds, nanos = value.seconds, value.nanos
    if not MIN_TIMESTAMP_SECONDS <= seconds <= MAX_TIMESTAMP_SECONDS:
        raise invalid_field(
            path,
            f"seconds {seconds} is outside 0001-01-01 to 9999-12-31; send a "
            "time in that range",
        )
    if not 0 <= nanos < NANOS_PER_SECOND:
        raise invalid_field(
            path, f"nanos {nanos} is outside 0 to 999999999; send nanos in that range"
        )
    return clamp_query_ns(timestamp_ns(value))


def clamp_query_ns(ns: int) -> int:
    """Return a time in Unix nanoseconds moved into the range that queries use."""
    return min(max(ns, MIN_QUERY_NS), MAX_QUERY_NS)


def _check_range(
    violations: Violations, request: object
) -> tuple[int | None, int | None]:
    start = end = None
    if request.HasField("start_time"):
        start = violations.check(_check_time, request.start_time, "start_time")
    if request.HasField("end_time"):
        end = violations.check(_check_time, request.end_time, "end_time")
    if start is None or end is None:
        return start, end
    # The times as sent, because two times past a bound of the query range
    # are equal once clamped.
    sent_start = timestamp_ns(request.start_time)
    sent_end = timestamp_ns(request.end_time)
    end_text = request.end_time.ToJsonString()
    start_text = request.start_time.ToJsonString()
    if sent_end == sent_start:
        violations.check(
            _raise,
            "end_time",
            f"{end_text} equals start_time, and end_time is exclusive, so the "
            "range is empty; send an end_time after start_time",
        )
    elif sent_end < sent_start:
        violations.check(
            _raise,
            "end_time",
            f"{end_text} is before start_time {start_text}; send an end_time "
            "after start_time, or swap them",
        )
    return start, end


def _check_order(order_by: str) -> bool:
    """Return whether the order is newest first."""
    normalized = " ".join(order_by.lower().split())
    if not normalized:
        return DEFAULT_ORDER == ORDER_DESCENDING
    if normalized in (ORDER_ASCENDING, "timestamp asc"):
        return False
    if normalized == ORDER_DESCENDING:
        return True
    raise invalid_field(
        "order_by",
        f"{order_by!r} is not a sort order; use `timestamp` (oldest first) or "
        "`timestamp desc` (newest first)",
    )


def _check_page_size(size: int) -> int:
    if size < 0:
        raise invalid_field(
            "page_size",
            f"must be 0 or more, got {size}; 0 means {DEFAULT_PAGE_SIZE}",
        )
    return min(size or DEFAULT_PAGE_SIZE, limits.current().max_page_size)


def node_call_timeout(context: grpc.ServicerContext) -> float | None:
    """Return the time left of the caller's deadline, or None without one.

    A caller that allows a slow scan more time than `deadline_seconds` thus
    gets it, less the margin that `read_timeout` keeps.
    """
    remaining = context.time_remaining()
    if remaining is None or remaining >= NO_DEADLINE_SECONDS:
        return None
    return max(remaining, 0.001)


def read_timeout(context: grpc.ServicerContext) -> float | None:
    """Return the seconds that a query's node calls may take, or None.

    They end a margin before the caller's deadline (`answer_before`), so that
    a caller whose shard does not respond receives the router's UNAVAILABLE,
    which names the shard, rather than its own DEADLINE_EXCEEDED. None means
    that the caller sent no deadline.
    """
    remaining = node_call_timeout(context)
    return None if remaining is None else answer_before(remaining)


class Lister:
    """Serves ListLogEntries."""

    def __init__(
        self,
        reader: ShardReader,
        sharder: Sharder,
        max_message_bytes: int,
        added_shards: frozenset[str] = frozenset(),
    ) -> None:
        self._reader = reader
        self._sharder = sharder
        self._budget = page_budget(max_message_bytes)
        # Shards added since the first placement. A page token issued before
        # their addition lacks them, and they held no entry of its snapshot.
        self._added_shards = added_shards

    def list(
        self,
        request: logs_service_pb2.ListLogEntriesRequest,
        timeout: float | None = None,
    ) -> logs_service_pb2.ListLogEntriesResponse:
        """Return one page of entries.

        `timeout` is the seconds that the node calls may take; None allows
        the reader's default.
        """
        deadline = self._reader.deadline(timeout)
        violations = Violations()
        selection = check_selection(
            violations,
            services=request.services,
            min_severity=request.min_severity,
            severities=request.severities,
            keyword=request.keyword,
            attribute_filters=request.attribute_filters,
            attribute_conditions=request.attribute_conditions,
        )
        start, end = _check_range(violations, request)
        descending = violations.check(_check_order, request.order_by)
        size = violations.check(_check_page_size, request.page_size)
        violations.raise_if_any()

        fingerprint = filter_hash(
            {
                **selection.fingerprint_fields(),
                "start": start,
                "end": end,
                "descending": descending,
            }
        )
        token = None
        if request.page_token:
            token = decode_page_token(
                request.page_token,
                fingerprint,
                known_shards=self._sharder.shards_for_query((), None, None),
            )
            check_page_token_end(token, end)
            end = token.end_time
        elif end is None:
            end = time.time_ns()

        shards = self._sharder.shards_for_query(selection.services, start, end)
        if token is not None:
            check_page_token_shards(
                token, [shard for shard in shards if shard not in self._added_shards]
            )
        requests = {}
        for shard in shards:
            query = node_service_pb2.QueryEntriesRequest(
                shard=shard, descending=descending, limit=size + 1
            )
            if token is None:
                query.filter.CopyFrom(selection.to_filter(start, end))
            else:
                snapshot = token.snapshot.get(shard, 0)
                if snapshot <= 0:
                    continue
                query.filter.CopyFrom(selection.to_filter(start, end, snapshot))
                timestamp, sequence = shard_cursor(token.cursor, shard)
                query.after.timestamp = timestamp
                query.after.sequence = sequence
            requests[shard] = query
        responses = self._reader.call("QueryEntries", requests, deadline)

        per_shard = {}
        # The last entry of each shard that stopped short of `limit` to fit
        # max_message_bytes: that shard may hold more entries after it.
        cut_ends = []
        for shard, response in responses.items():
            entries = columns_to_entries(response.entries)
            per_shard[shard] = [
                Row(Cursor(entry_ts, shard, sequence), entry)
                for entry_ts, sequence, entry in zip(
                    response.entries.timestamps,
                    response.sequences,
                    entries,
                    strict=False,
                )
            ]
            if response.size_limited:
                cut_ends.append(per_shard[shard][-1])
        merged = merge_rows(per_shard, descending, size + 1)
        if cut_ends:
            # Past the earliest such end, an entry that a cut shard did not
            # send could come before the merged rows, so the page stops there
            # and the next page reads every shard again from there.
            keys = [row.key for row in cut_ends]
            if descending:
                end_key = max(keys)
                merged = [row for row in merged if row.key >= end_key]
            else:
                end_key = min(keys)
                merged = [row for row in merged if row.key <= end_key]
        page = merged[:size]
        page = page[
            : fitting_count([_entry_bytes(row.item) for row in page], self._budget)
        ]
        result = logs_service_pb2.ListLogEntriesResponse(
            entries=[row.item for row in page]
        )
        if cut_ends or len(merged) > len(page):
            snapshot = (
                token.snapshot
                if token is not None
                else {shard: r.last_sequence for shard, r in responses.items()}
            )
            result.next_page_token = encode_page_token(
                PageToken(fingerprint, page[-1].cursor, dict(snapshot), end)
            )
        return result


def _entry_bytes(entry: logs_service_pb2.LogEntry) -> int:
    """Return the bytes that `entry` adds to a ListLogEntriesResponse."""
    size = entry.ByteSize()
    # Tag byte, length prefix and the entry itself.
    return 1 + len(encode_varint(size)) + size


def pick_step(span_ns: int) -> int:
    """Return the smallest readable bucket width giving at most ~60 buckets."""
    for seconds in _NICE_STEPS_SECONDS:
        step = seconds * NANOS_PER_SECOND
        if span_ns <= step * TARGET_BUCKETS:
            return step
    return -(-span_ns // TARGET_BUCKETS)


def bucket_count(first: int, end: int, step: int) -> int:
    """Return how many histogram buckets of `step` ns cover `first` to `end`.

    The first bucket starts at `first` rounded down to a multiple of `step`.
    """
    aligned = first - first % step
    return -(-(end - aligned) // step)


def smallest_step(first: int, end: int) -> int:
    """Return the shortest step in whole seconds that gives at most MAX_BUCKETS."""
    seconds = max(1, -(-(end - first) // (MAX_BUCKETS * NANOS_PER_SECOND)))
    # Rounding the first bucket's start down can add one bucket, so a longer
    # step may be needed.
    while bucket_count(first, end, seconds * NANOS_PER_SECOND) > MAX_BUCKETS:
        seconds += 1
    return seconds * NANOS_PER_SECOND


def _check_step(step: duration_pb2.Duration) -> int:
    seconds, nanos = step.seconds, step.nanos
    if abs(nanos) >= NANOS_PER_SECOND or seconds * nanos < 0:
        raise invalid_field(
            "histogram_step",
            f"seconds {seconds} with nanos {nanos} is not a valid Duration; "
            "send nanos from -999999999 to 999999999 with the sign of "
            "seconds, such as seconds 90 and nanos 500000000 for 90.5s",
        )
    ns = step.ToNanoseconds()
    if ns < MIN_STEP_NS:
        minimum = format_seconds(MIN_STEP_NS)
        raise invalid_field(
            "histogram_step",
            f"{format_seconds(ns)} is shorter than the minimum of {minimum}; "
            f"send {minimum} or more, or leave it unset",
        )
    if ns > MAX_STEP_NS:
        raise invalid_field(
            "histogram_step",
            f"{format_seconds(ns)} is longer than the maximum of "
            f"{format_seconds(MAX_STEP_NS)} (2^62 ns, about 146 years); send "
            f"{format_seconds(MAX_STEP_NS)} or less",
        )
    return ns


def _too_many_buckets(
    step: int, buckets: int, first: int, end: int, from_oldest: bool
) -> DomainError:
    """Build the error of a histogram_step that gives more than MAX_BUCKETS.

    `from_oldest` is whether the range starts at the oldest matching entry,
    because the request has no start_time.
    """
    start = "the oldest matching entry" if from_oldest else "start_time"
    fitting = format_seconds(smallest_step(first, end))
    return invalid_field(
        "histogram_step",
        f"{format_seconds(step)} gives {buckets:,} buckets over the time range "
        f"from {start} ({format_time(first)}) to {format_time(end)}, more than "
        f"the limit of {MAX_BUCKETS:,}; send a histogram_step of {fitting} or "
        "more, or a shorter range with start_time",
        reason=TOO_MANY_BUCKETS,
        metadata={
            "buckets": str(buckets),
            "range_start": format_time(first),
            "range_end": format_time(end),
            "smallest_step": fitting,
        },
    )


class StatsReader:
    """Reader of the entry counts that GetLogStats returns."""

    def __init__(self, reader: ShardReader, sharder: Sharder) -> None:
        self._reader = reader
        self._sharder = sharder

    def stats(
        self,
        request: logs_service_pb2.GetLogStatsRequest,
        timeout: float | None = None,
    ) -> tuple[logs_service_pb2.GetLogStatsResponse, int | None, int]:
        """Return the response without ingest counters, and the time range.

        `timeout` is the seconds that all node calls together may take; None
        allows the reader's default.
        """
        deadline = self._reader.deadline(timeout)
        violations = Violations()
        selection = check_selection(
            violations,
            services=request.services,
            min_severity=request.min_severity,
            severities=request.severities,
            keyword=request.keyword,
            attribute_filters=request.attribute_filters,
            attribute_conditions=request.attribute_conditions,
        )
        start, end = _check_range(violations, request)
        step = None
        if request.HasField("histogram_step"):
            step = violations.check(_check_step, request.histogram_step)
        violations.raise_if_any()
        if end is None:
            end = time.time_ns()
        shards = self._sharder.shards_for_query(selection.services, start, end)
        response = logs_service_pb2.GetLogStatsResponse()
        first = start
        if first is None:
            first = self._oldest(selection, shards, end, deadline)
        if first is None or end <= first:
            if step:
                response.histogram_step.FromNanoseconds(step)
            return response, start, end

        if step is None:
            step = pick_step(end - first)
        aligned = first - first % step
        buckets = bucket_count(first, end, step)
        if buckets > MAX_BUCKETS:
            raise _too_many_buckets(step, buckets, first, end, start is None)
        requests = {
            shard: node_service_pb2.CountEntriesRequest(
                shard=shard,
                filter=selection.to_filter(first, end),
                histogram_start=aligned,
                histogram_step=step,
            )
            for shard in shards
        }
        responses = self._reader.call("CountEntries", requests, deadline)
        _fill_counts(response, responses.values(), first, aligned, step, buckets)
        response.histogram_step.FromNanoseconds(step)
        return response, start, end

    def _oldest(
        self,
        selection: EntrySelection,
        shards: list[str],
        end: int,
        deadline: float,
    ) -> int | None:
        requests = {
            shard: node_service_pb2.QueryEntriesRequest(
                shard=shard, filter=selection.to_filter(None, end), limit=1
            )
            for shard in shards
        }
        responses = self._reader.call("QueryEntries", requests, deadline)
        firsts = [r.entries.timestamps[0] for r in responses.values() if r.sequences]
        return min(firsts, default=None)


def _fill_counts(
    response: logs_service_pb2.GetLogStatsResponse,
    shard_responses,
    start: int,
    aligned: int,
    step: int,
    buckets: int,
) -> None:
    severities: Counter[int] = Counter()
    services: Counter[str] = Counter()
    histogram: defaultdict[int, Counter[int]] = defaultdict(Counter)
    for shard_response in shard_responses:
        for item in shard_response.severity_counts:
            severities[item.severity] += item.count
        for item in shard_response.service_counts:
            services[item.service] += item.count
        for item in shard_response.bucket_counts:
            histogram[item.bucket][item.severity] += item.count
    response.total_count = sum(severities.values())
    for severity in sorted(severities, reverse=True):
        response.severity_counts.add(severity=severity, count=severities[severity])
    for service, count in sorted(services.items(), key=lambda i: (-i[1], i[0])):
        response.service_counts.add(service=service, count=count)
    for index in range(buckets):
        counts = histogram.get(index, Counter())
        bucket = response.histogram.add(count=sum(counts.values()))
        # The first bucket starts at the window's start, not before it.
        bucket.start_time.FromNanoseconds(max(aligned + index * step, start))
        for severity in sorted(counts, reverse=True):
            bucket.severity_counts.add(severity=severity, count=counts[severity])
