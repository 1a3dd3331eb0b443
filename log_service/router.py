"""The router's LogsService and OTLP servicers, and its write path.

A write is checked and normalised (`streams.normalize_write`), its valid
entries are grouped by shard, and each group goes to its shard leader in
parallel, under the batch id `<request_id>/<digest>/<shard>` and with the
index of each entry in the request (`index_runs`): alone with
`AppendEntries`, or with the groups of other writes in one `AppendBatches`
when calls to that shard are already running (`_ShardQueue`). No request
to a node exceeds `clients.routed_message_bytes`: a group too large for one
is split, and an entry too large on its own is rejected (`TOO_LARGE`). A
leader that has moved on (UNAVAILABLE) makes the router refresh the shard's
route from the coordinator and retry once. A shard that still fails fails
the whole call with UNAVAILABLE and a RetryInfo detail. The groups stored on
other shards stay, and a retry with the same request id stores each entry
once, because the nodes store only the entries whose indexes they have not
stored under the batch id yet, and count the others as duplicates. An OTLP
export has no request id, so `OtlpLogsServicer` derives its batch id from
its bytes and its caller instead.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
import uuid
import weakref
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.logs.v1 import (
    logs_service_pb2 as otlp_logs_pb2,
)

from log_service.clients import (
    ROUTED_HEADROOM_BYTES,
    ROUTER_STOPPING,
    AppendCalls,
    LeaderReplacedError,
    NodeClients,
    is_closed_channel_error,
    routed_message_bytes,
)
from log_service.coordinator import Coordinator
from log_service.index_runs import join_runs, runs_of, slice_runs
from log_service.ingest_counters import IngestCounters
from log_service.model import (
    MAX_BATCH_ENTRIES_KEY,
    ROW_FIELDS,
    TOO_LARGE,
    Limits,
    NormalizedBatch,
    columns_to_entries,
    fill_columns,
    write_size_error,
)
from log_service.open_streams import OpenStreams, StreamSlot, caller_of
from log_service.otlp import (
    count_log_records,
    every_record_timed,
    export_batch_id,
    export_request_to_batch,
    export_response,
    export_size_error,
)
from log_service.otlp_parse import ParsedExport
from log_service.placement import PlacementRecord
from log_service.query import (
    Lister,
    StatsReader,
    check_selection,
    read_timeout,
)
from log_service.replica_reads import ShardReader
from log_service.request_ids import RequestLedger, request_digest, request_id_error
from log_service.retention import RetentionStore, check_name
from log_service.sharding import ServiceRing, Sharder
from log_service.streams import (
    ColumnBlock,
    column_length_error,
    expanded_size_error,
    normalize_write,
    stream_entry_count,
)
from log_service.tail import MAX_RESPONSE_BYTES, Tail
from log_service.tokens import decode_resume_token, filter_hash, resume_positions
from log_service.wal import encode_varint
from splitlog.logs.v1 import logs_service_pb2, logs_service_pb2_grpc, node_service_pb2
from splitlog_runtime import authz
from splitlog_runtime.channels import answer_before
from splitlog_runtime.errors import (
    DomainError,
    InvalidArgument,
    ResourceExhausted,
    Unavailable,
    invalid_field,
)
from splitlog_runtime.validation import Violations

_LOGGER = logging.getLogger(__name__)

MAX_LISTED_REJECTIONS = 1000
# Batches of one StreamLogEntries call written at the same time.
STREAM_WINDOW = 16
# Threads that write stream batches, shared by every stream of the router.
STREAM_POOL_WORKERS = 64
LOGS_SERVICE = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]
# Full name of the OpenTelemetry log service that the router also serves.
OTLP_SERVICE = otlp_logs_pb2.DESCRIPTOR.services_by_name["LogsService"].full_name
RETRY_DELAY_SECONDS = 1.0
# Maximum seconds that the router's stop waits for the threads of its tails to
# end before it closes the node channels. A stopped tail's threads end at
# once, except one in a QueryEntries call to a node that does not respond.
# That call may last `tail.LAST_SEQUENCE_TIMEOUT_SECONDS`, and the thread ends
# without an error when the channel closes.
TAIL_STOP_WAIT_SECONDS = 1.0
# Ends of the UNAVAILABLE message of a write that a shard failed to store.
WRITE_RETRY_ADVICE = (
    "retry the call with the same request_id, which stores each entry once"
)
UNKEYED_WRITE_RETRY_ADVICE = (
    "a retry may store some entries twice, because the call has no "
    "request_id; set request_id on every write to make retries safe"
)
EXPORT_RETRY_ADVICE = (
    "resend the same export, which stores each log record once because the "
    "router recognises a resend by its bytes and the caller"
)
UNTIMED_EXPORT_RETRY_ADVICE = (
    "a resend of the export stores the records that other shards stored "
    "again, because some records have neither time_unix_nano nor "
    "observed_time_unix_nano, so a resend cannot be told from a new export; "
    "set observed_time_unix_nano on every record to make resends safe"
)
REFRESH_WAIT_SECONDS = 0.6
# The error of a `_ShardPart` that was not sent because the router is stopping.
ROUTER_STOPPED = "router stopped"
# The error of a `_ShardPart` whose call the router ended because the
# coordinator replaced the shard's leader (`Writer.leaders_polled`).
LEADER_REPLACED = "leader replaced"
# The error of a `_ShardPart` whose sending raised an unexpected exception,
# which the router logs with its traceback.
ROUTER_ERROR = "router error"
# Positions in a normalised row (`model.ROW_FIELDS`).
_TIMESTAMP = ROW_FIELDS.index("timestamps")
_SERVICE = ROW_FIELDS.index("services")


# Bytes of the index runs of a single entry in an AppendEntriesRequest, at
# most: the packed field's key and length, and two varints.
_ONE_RUN_BYTES = 2 + 2 * 10
# Bytes that a part gains in a call besides its serialized request: the
# leader epoch (a key and a varint of up to 10 bytes), and in AppendBatches
# the key and length of the part's item (up to 6 bytes).
_PART_FRAMING_BYTES = 17
_EPOCH_KEY = encode_varint(
    node_service_pb2.AppendEntriesRequest.DESCRIPTOR.fields_by_name[
        "leader_epoch"
    ].number
    << 3
)
_BATCHES_KEY = encode_varint(
    node_service_pb2.AppendBatchesRequest.DESCRIPTOR.fields_by_name["batches"].number
    << 3
    | 2
)


@dataclass(frozen=True)
class WrittenBatch:
    """A stored batch and how many of its valid entries were duplicates.

    `duplicate_count` counts the entries that the shards already held under
    the batch's ids and request indexes from an earlier write, so this write
    did not store them.
    """

    batch: NormalizedBatch
    duplicate_count: int = 0


@dataclass(eq=False)
class _ShardPart:
    """The entries of one write for one shard, and the outcome of sending them.

    `request` is the serialized AppendEntriesRequest without `leader_epoch`,
    which the call adds once the shard's route is known. `duplicate_count`
    is the number of its entries that the node reported as already stored.
    `resent` marks a part whose earlier call of the same write failed, which
    the node may still have stored. `sent_to` is the leader address and
    epoch of its latest call, or None before the first.
    """

    shard: str
    batch_id: str
    request: bytes
    count: int
    deadline: float
    wake: threading.Event
    error: str = ""
    done: bool = False
    duplicate_count: int = 0
    resent: bool = False
    sent_to: tuple[str, int] | None = None

    @property
    def size(self) -> int:
        """Bytes the part takes in a call, framing included."""
        return len(self.request) + _PART_FRAMING_BYTES


class _ShardQueue:
    """Sends the parts of concurrent writes to one shard, several per call.

    A thread of the queue sends one call at a time. A part that arrives
    while a call runs waits, and the next call carries every waiting part,
    up to `max_entries` entries and `max_bytes` bytes, as one AppendBatches
    call. Each part stays a batch of its own on the node, under its own
    batch id, so a retried write is recognised whatever it was sent with.
    With one call at a time, 100-entry batches from 4 callers cost the
    nodes about 48 instead of 59 us of CPU per entry, and streams about 16
    instead of 40 (`python -m bench.log_ingest --cpu`, a busy 2-core
    machine). Two calls at a time helped streams less, and unary calls not
    at all.

    The thread makes blocking calls. A future needs a gRPC thread that waits
    for the channel's calls, and gRPC starts a new one whenever no other call
    on the channel runs. With one call at a time, each call started a thread
    (about 0.3 ms of CPU, measured here).

    A part of at least half of `max_entries` entries or of `max_bytes` bytes
    could not share a call with another such part. So it goes out at once in
    a call of its own, beside the queue's calls, as every part did before
    grouping.
    """

    def __init__(
        self, shard: str, writer: Writer, max_entries: int, max_bytes: int
    ) -> None:
        self._shard = shard
        self._writer = writer
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._lock = threading.Lock()
        self._work = threading.Condition(self._lock)
        self._waiting: deque[_ShardPart] = deque()
        self._thread: threading.Thread | None = None
        self._closed = False

    def submit(self, part: _ShardPart) -> None:
        """Queue a part for the queue's thread, or send a large one at once."""
        if part.count * 2 >= self._max_entries or part.size * 2 >= self._max_bytes:
            self._send_at_once(part)
            return
        with self._lock:
            if self._closed:
                closed = True
            else:
                closed = False
                self._waiting.append(part)
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._run,
                        name=f"log-append-{self._shard}",
                        daemon=True,
                    )
                    self._thread.start()
                self._work.notify()
        if closed:
            _finish([part], ROUTER_STOPPED)

    def close(self) -> None:
        """Stop the thread once it has sent the parts already queued."""
        with self._lock:
            self._closed = True
            self._work.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    def _run(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._closed:
                    self._work.wait()
                group = self._take_group()
            if not group:
                return
            self._send(group)

    def _take_group(self) -> list[_ShardPart]:
        """Remove and return the first waiting parts that fit in one call."""
        group = []
        entries = size = 0
        waiting = self._waiting
        while waiting and (
            not group
            or (
                entries + waiting[0].count <= self._max_entries
                and size + waiting[0].size <= self._max_bytes
            )
        ):
            part = waiting.popleft()
            group.append(part)
            entries += part.count
            size += part.size
        return group

    def _call(
        self, group: list[_ShardPart]
    ) -> tuple[grpc.UnaryUnaryMultiCallable, bytes, float, int] | None:
        """Return the method, request, timeout and leader epoch of a call of `group`.

        Returns None, with the parts finished, when the shard has no leader.
        """
        route = self._writer.coordinator.route(self._shard)
        if route.leader_address is None:
            _finish(group, "no leader")
            return None
        # Set before append_calls, so that a part whose leader was replaced
        # meanwhile (LeaderReplacedError) counts as moved and is resent at once.
        for part in group:
            part.sent_to = (route.leader_address, route.epoch)
        calls = self._append_calls(route.leader_address, route.epoch)
        timeout = max(0.01, min(part.deadline for part in group) - time.monotonic())
        epoch = _EPOCH_KEY + encode_varint(route.epoch)
        if len(group) == 1:
            return calls.append_entries, group[0].request + epoch, timeout, route.epoch
        pieces = []
        for part in group:
            length = len(part.request) + len(epoch)
            pieces += (_BATCHES_KEY, encode_varint(length), part.request, epoch)
        return calls.append_batches, b"".join(pieces), timeout, route.epoch

    def _append_calls(self, address: str, epoch: int) -> AppendCalls:
        """Return the append calls of the shard's leader at `address`.

        Raises LeaderReplacedError when `Writer.leaders_polled` recorded
        that the coordinator replaced that leader at `epoch` or later. A
        leader promoted again has a higher epoch, so its route passes even
        before the round's listener runs.
        """
        return self._writer.clients.append_calls(
            address, shard=self._shard, epoch=epoch
        )

    def _note_stored(
        self,
        response: node_service_pb2.AppendEntriesResponse
        | node_service_pb2.AppendBatchesResponse,
        epoch: int,
    ) -> None:
        """Tell the coordinator where the stored entries start, for tails.

        Runs before the parts finish, so before their writes are acknowledged.
        """
        if isinstance(response, node_service_pb2.AppendBatchesResponse):
            results = list(response.results)
        else:
            results = [response]
        firsts = [result.first_sequence for result in results if result.count]
        if firsts:
            self._writer.coordinator.note_stored(self._shard, min(firsts), epoch)

    def _send(self, group: list[_ShardPart]) -> None:
        """Send `group` in one blocking call and finish its parts."""
        try:
            call = self._call(group)
            if call is None:
                return
            method, request, timeout, epoch = call
            response = method(request, timeout=timeout)
        except Exception as error:
            # The parts may belong to other writes, whose threads wait for them.
            _finish(group, self._failure_or_log(error))
        else:
            self._note_stored(response, epoch)
            _finish_stored(group, response)

    def _send_at_once(self, part: _ShardPart) -> None:
        """Send one part in a call of its own, on gRPC's threads."""
        try:
            call = self._call([part])
            if call is None:
                return
            method, request, timeout, epoch = call
            future = method.future(request, timeout=timeout)
        except Exception as error:
            _finish([part], self._failure_or_log(error))
            return
        future.add_done_callback(lambda done: self._finish_call(part, done, epoch))

    def _finish_call(self, part: _ShardPart, call: grpc.Future, epoch: int) -> None:
        error = call.exception()
        if error is None:
            response = call.result()
            self._note_stored(response, epoch)
            _finish_stored([part], response)
        elif isinstance(error, grpc.RpcError) or is_closed_channel_error(error):
            _finish([part], self._failure(error))
        else:
            _finish([part], type(error).__name__)

    def _failure_or_log(self, error: Exception) -> str:
        """Return the error of parts whose sending raised `error`.

        An error other than a node's status, a closed channel or a replaced
        leader is a bug of the router, so it is logged with its traceback.
        """
        if isinstance(error, (grpc.RpcError, LeaderReplacedError)):
            return self._failure(error)
        if is_closed_channel_error(error):
            return self._failure(error)
        _LOGGER.error(
            "sending entries to log shard %s failed", self._shard, exc_info=error
        )
        return ROUTER_ERROR

    def _failure(self, error: grpc.RpcError | ValueError | LeaderReplacedError) -> str:
        """Return the error of parts whose call raised `error`.

        Closing a channel ends its calls with CANCELLED, and a call that
        took the channel's stubs just before raises ValueError. Both happen
        when the router stops (`NodeClients.close`) and when the coordinator
        replaced the shard's leader (`Writer.leaders_polled`). After that
        reset, `append_calls` raises LeaderReplacedError for the old leader.
        """
        stopping = self._writer.clients.closed
        if isinstance(error, LeaderReplacedError):
            return LEADER_REPLACED
        if isinstance(error, ValueError):
            # A closed channel (`is_closed_channel_error`), `ClientsClosed`
            # included.
            return ROUTER_STOPPED if stopping else LEADER_REPLACED
        code = error.code()
        if code == grpc.StatusCode.CANCELLED and not stopping:
            return LEADER_REPLACED
        return code.name


def _stopping(parts: list[_ShardPart]) -> bool:
    """Return whether a part failed because the router is stopping."""
    return any(part.error == ROUTER_STOPPED for part in parts)


def _finish(group: list[_ShardPart], error: str) -> None:
    for part in group:
        part.error = error
        part.done = True
        part.wake.set()


def _finish_stored(
    group: list[_ShardPart],
    response: node_service_pb2.AppendEntriesResponse
    | node_service_pb2.AppendBatchesResponse,
) -> None:
    """Finish the parts of a call that succeeded, noting their duplicates.

    A one-part call returns an AppendEntriesResponse. A call of several parts
    returns an AppendBatchesResponse with one result per part, in order.
    """
    if isinstance(response, node_service_pb2.AppendBatchesResponse):
        results = list(response.results)
    else:
        results = [response]
    if len(results) == len(group):
        for part, result in zip(group, results, strict=True):
            # A node of an earlier version reports a whole duplicate batch
            # with `duplicate` alone.
            duplicates = result.duplicate_count or (
                part.count if result.duplicate else 0
            )
            part.duplicate_count = min(duplicates, part.count)
    else:
        # The entries are stored either way, so they count as accepted.
        _LOGGER.error(
            "log shard answered %d results for %d batches; counting none of "
            "them as duplicates",
            len(results),
            len(group),
        )
    _finish(group, "")


# The entries of one shard in input order: lists of normalised rows and
# blocks of stream entries still in columns.
_Segments = list["list[tuple] | ColumnBlock"]


def _serialized_request(
    shard: str, batch_id: str, segments: _Segments, runs: list[int]
) -> bytes:
    """Serialize an AppendEntriesRequest of `segments`, without `leader_epoch`.

    `runs` are the request indexes of the entries (`log_service.index_runs`).
    """
    request = node_service_pb2.AppendEntriesRequest(
        shard=shard, batch_id=batch_id, index_runs=runs
    )
    # Filled in place: passing the columns to the constructor would copy
    # every value once more.
    fill_columns(segments, request.entries)
    return request.SerializeToString()


def _segment_slice(segments: _Segments, start: int, stop: int) -> _Segments:
    """Return the entries `start` to `stop` (exclusive) of `segments`."""
    sliced: _Segments = []
    offset = 0
    for segment in segments:
        length = len(segment)
        low, high = max(start - offset, 0), min(stop - offset, length)
        if low < high:
            if isinstance(segment, ColumnBlock):
                sliced.append(segment.slice(low, high))
            else:
                sliced.append(segment[low:high])
        offset += length
    return sliced


class Writer:
    """Batch writer: normalises, sends to the shard leaders and counts.

    Args:
      clients: the node channels; appends use their `append_calls`.
      max_message_bytes: the setting; a request to a node stays within
        `clients.routed_message_bytes` of it.
      placement_record: notes the placements that entries reach before they
        are sent, or None when nothing needs the notes, as in tests.
    """

    def __init__(
        self,
        coordinator: Coordinator,
        sharder: Sharder,
        clients: NodeClients,
        limits: Limits,
        retention: RetentionStore,
        counters: IngestCounters,
        default_timeout: float,
        max_message_bytes: int,
        placement_record: PlacementRecord | None = None,
    ) -> None:
        self._coordinator = coordinator
        self._sharder = sharder
        self._placement_record = placement_record
        self.limits = limits
        self._retention = retention
        self._counters = counters
        self._default_timeout = default_timeout
        self.max_message_bytes = max_message_bytes
        self._max_request_bytes = routed_message_bytes(max_message_bytes)
        self.coordinator = coordinator
        self.clients = clients
        # Each shard's leader address and epoch at the latest poll round.
        self._leaders: dict[str, tuple[str | None, int]] = {}
        self._queues: dict[str, _ShardQueue] = {}
        self._queues_lock = threading.Lock()
        self._closed = False
        self._requests = RequestLedger()

    def write(
        self,
        entries: Iterable[logs_service_pb2.LogEntry],
        count: int,
        request_id: str,
        context: grpc.ServicerContext,
        first_index: int = 0,
        digest: bytes = b"",
        streams: Sequence[logs_service_pb2.LogStream] = (),
        request_bytes: int = 0,
    ) -> WrittenBatch:
        """Normalise and store one batch.

        `count` is the number of entries, those of `streams` included.
        `digest` is the `request_digest` of the request that carried the
        batch, checked against the first request with the same request id.
        `request_bytes` is the serialized size of a request with `streams`.

        Raises:
          InvalidArgument: the batch is empty or too large, a stream has no
            messages or columns that differ in length, or its request id was
            used for a request with another digest.
          ResourceExhausted: the streams' entries, each with its stream's
            shared fields, would not fit in max_message_bytes.
          Unavailable: a shard could not store its part.
        """
        receive_ns = time.time_ns()
        error = self._request_error(count, bool(entries), streams, request_bytes)
        if error is not None:
            self._counters.record(receive_ns, failed_batches=1)
            raise error
        try:
            # A retry is normalised at the first request's receive time, so
            # that it returns the times the first request stored.
            normalize_ns = self._requests.claim(request_id, digest, receive_ns)
        except InvalidArgument:
            self._counters.record(receive_ns, failed_batches=1)
            raise
        batch = normalize_write(
            entries,
            streams,
            now_ns=normalize_ns,
            limits=self.limits,
            # The retention cutoff is that of this call's receive time, not
            # the first request's, so that a retry never stores again entries
            # that retention deleted in between and would delete again.
            retention_cutoff=self._retention.cutoff_function(receive_ns),
            first_index=first_index,
            max_entry_bytes=self._block_entry_bytes(request_id),
        )
        # The digest is part of the nodes' batch ids, so a reused request id
        # with other entries can never be taken for a retry of the first
        # write, even after the router has forgotten the id. The parts carry
        # each entry's index in the request, so a retry stores the entries
        # that the first write did not, such as those it rejected.
        base_id = f"{request_id}/{digest.hex()}" if request_id and digest else ""
        duplicates = self.store(
            batch,
            base_id or request_id,
            context,
            receive_ns,
            first_index,
            retry_advice=WRITE_RETRY_ADVICE
            if request_id
            else UNKEYED_WRITE_RETRY_ADVICE,
        )
        return WrittenBatch(batch, duplicates)

    def checked_digest(self, request) -> bytes:
        """Check the request id of a write request and return its digest.

        Returns b"" for a request without a request id. The id is checked
        first, so a long one costs no more than its length.

        Raises:
          InvalidArgument: with reason REQUEST_ID_TOO_LONG when the id is
            over `request_ids.MAX_REQUEST_ID_BYTES`, counted as a failed batch.
        """
        error = request_id_error(request.request_id)
        if error is not None:
            self._counters.record(time.time_ns(), failed_batches=1)
            raise error
        return request_digest(request) if request.request_id else b""

    def _request_error(
        self,
        count: int,
        has_entries: bool,
        streams: Sequence[logs_service_pb2.LogStream],
        request_bytes: int,
    ) -> DomainError | None:
        """Return the error that rejects a whole write before any work, or None.

        The checks run cheapest first. Each stream counts as at least one
        entry against the batch limit, so a request of many empty streams
        fails before they are read one by one.
        """
        error = write_size_error(count, len(streams), has_entries, self.limits)
        if error is None and streams:
            error = column_length_error(streams) or expanded_size_error(
                request_bytes, streams, self.max_message_bytes
            )
        return error

    def _block_entry_bytes(self, request_id: str) -> int:
        """Return the bytes one stream entry may take to stay in its block.

        An entry of a block must fit alone in a request to its node, beside
        the shard, the batch id (`<request_id>/<digest>/<shard>`) and the
        entry's index run. `streams.ENTRY_OVERHEAD_BYTES` covers the entry's
        own framing.
        """
        shard_bytes = max(map(len, self._sharder.shards_for_query((), None, None)))
        batch_id_bytes = len(request_id.encode()) + 2 * shard_bytes + 64
        # The shard and the batch id each come with a tag and a length.
        return (
            self._max_request_bytes
            - _PART_FRAMING_BYTES
            - 2 * batch_id_bytes
            - _ONE_RUN_BYTES
        )

    def store(
        self,
        batch: NormalizedBatch,
        base_id: str,
        context: grpc.ServicerContext,
        receive_ns: int,
        first_index: int = 0,
        retry_advice: str = WRITE_RETRY_ADVICE,
    ) -> int:
        """Send a normalised batch to its shards and count the outcome.

        `base_id` starts the batch ids of the parts; an empty one is replaced
        by a random id. `first_index` is the index of the request's first
        entry in `batch`, so that the parts carry indexes counted from 0
        within the request. An entry too large for a request to a node on
        its own moves from `batch.rows` to `batch.rejections` first.
        `retry_advice` ends the message of the UNAVAILABLE error. Returns
        the number of entries that the shards already held
        (`_stored_counts`).
        """
        try:
            self._note_placements(batch)
        except Unavailable:
            self._counters.record(receive_ns, failed_batches=1)
            raise
        parts = self._parts(batch, base_id or uuid.uuid4().hex, first_index)
        rejected = Counter(rejection.reason for rejection in batch.rejections)
        try:
            self._append(parts, context, retry_advice)
        except Unavailable:
            # Parts that reached their shard are counted now, because a retry
            # of the write finds them stored and counts them as duplicates.
            accepted, duplicates = _stored_counts(parts)
            self._counters.record(
                receive_ns,
                accepted=accepted,
                duplicates=duplicates,
                rejected=rejected,
                failed_batches=1,
            )
            raise
        accepted, duplicates = _stored_counts(parts)
        self._counters.record(
            receive_ns, accepted=accepted, duplicates=duplicates, rejected=rejected
        )
        return duplicates

    def _note_placements(self, batch: NormalizedBatch) -> None:
        """Note in the placement record each placement that `batch` reaches.

        Runs before any entry of the batch is sent, so a later start cannot
        drop a placement that contains entries. Costs nothing once every
        placement has its note.

        Raises:
          Unavailable: the record cannot be written; no entry was sent.
        """
        record = self._placement_record
        if record is None or record.unreceived_from_ns is None:
            return
        latest = max(
            itertools.chain(
                (row[_TIMESTAMP] for row in batch.rows),
                (max(block.timestamps) for block in batch.blocks if len(block)),
            ),
            default=None,
        )
        if latest is None:
            return
        try:
            record.note_timestamp(latest)
        except (OSError, ValueError) as exc:
            _LOGGER.error("log placement: cannot note received entries: %s", exc)
            raise Unavailable(
                "the router cannot note in its placement record that entries "
                f"reach a new placement ({exc}), so it sent none of this batch. "
                "Retry once the router's data directory accepts writes"
            ) from None

    def _parts(
        self, batch: NormalizedBatch, base_id: str, first_index: int
    ) -> list[_ShardPart]:
        """Group the entries by shard and serialize one request per shard.

        Each shard's request has the batch id `<base_id>/<shard>` and the
        runs of its entries' indexes in the request (their `batch` index
        minus `first_index`). A request over the size limit is split
        (`_split`).
        """
        by_shard: defaultdict[str, _Segments] = defaultdict(list)
        runs_by_shard: defaultdict[str, list[int]] = defaultdict(list)
        rows = batch.rows
        indexes = batch.indexes
        start = 0
        for block in batch.blocks:
            stop = block.row_position
            for shard, (shard_rows, shard_indexes) in self._rows_by_shard(
                rows[start:stop], indexes[start:stop]
            ).items():
                by_shard[shard].append(shard_rows)
                join_runs(runs_by_shard[shard], runs_of(shard_indexes, first_index))
            start = stop
            shard_runs = self._sharder.shard_runs(block.service, block.timestamps)
            if len(shard_runs) == 1:
                pieces = [(shard_runs[0][0], block)]
            else:
                pieces = [
                    (shard, block.slice(run_start, run_stop))
                    for shard, run_start, run_stop in shard_runs
                ]
            for shard, piece in pieces:
                by_shard[shard].append(piece)
                join_runs(
                    runs_by_shard[shard], (piece.first_index - first_index, len(piece))
                )
        tail = rows[start:] if start else rows
        tail_indexes = indexes[start:] if start else indexes
        for shard, (shard_rows, shard_indexes) in self._rows_by_shard(
            tail, tail_indexes
        ).items():
            by_shard[shard].append(shard_rows)
            join_runs(runs_by_shard[shard], runs_of(shard_indexes, first_index))
        wake = threading.Event()
        parts = []
        for shard, segments in by_shard.items():
            batch_id = f"{base_id}/{shard}"
            count = sum(map(len, segments))
            pieces = self._split(
                batch, shard, batch_id, segments, runs_by_shard[shard], count
            )
            parts += [
                _ShardPart(shard, batch_id, piece, piece_count, 0.0, wake)
                for piece, piece_count in pieces
            ]
        return parts

    def _rows_by_shard(
        self, rows: list[tuple], indexes: list[int]
    ) -> dict[str, tuple[list[tuple], list[int]]]:
        """Group rows and their indexes by shard, keeping their order."""
        by_shard: defaultdict[str, list[tuple]] = defaultdict(list)
        shard_for = self._sharder.shard_for
        shard_of: dict[str, str] = {}
        if isinstance(self._sharder, ServiceRing):
            # The shard depends on the service alone, so each distinct service
            # is looked up once.
            for row in rows:
                service = row[_SERVICE]
                shard = shard_of.get(service)
                if shard is None:
                    shard = shard_of[service] = shard_for(service, row[_TIMESTAMP])
                by_shard[shard].append(row)
        else:
            for row in rows:
                by_shard[shard_for(row[_SERVICE], row[_TIMESTAMP])].append(row)
        if len(by_shard) == 1:
            # Every row goes to one shard, the common case.
            ((shard, shard_rows),) = by_shard.items()
            return {shard: (shard_rows, indexes)}
        indexes_by_shard: defaultdict[str, list[int]] = defaultdict(list)
        for row, index in zip(rows, indexes, strict=True):
            shard = shard_of.get(row[_SERVICE]) or shard_for(
                row[_SERVICE], row[_TIMESTAMP]
            )
            indexes_by_shard[shard].append(index)
        return {
            shard: (shard_rows, indexes_by_shard[shard])
            for shard, shard_rows in by_shard.items()
        }

    def _split(
        self,
        batch: NormalizedBatch,
        shard: str,
        batch_id: str,
        segments: _Segments,
        runs: list[int],
        count: int,
    ) -> Iterator[tuple[bytes, int]]:
        """Yield requests of `count` entries, in halves until each fits.

        Each request is yielded with its number of entries. The halves keep
        the batch id, each with the index runs of its own entries, so a
        retry whose entries split otherwise still stores each entry once. A
        lone row still too large is rejected. A lone entry of a block always
        fits, because a stream becomes a block only when each of its entries
        fits (`Writer._block_entry_bytes`).
        """
        request = _serialized_request(shard, batch_id, segments, runs)
        size = len(request) + _PART_FRAMING_BYTES
        if size <= self._max_request_bytes:
            yield request, count
        elif count == 1:
            (segment,) = segments
            if isinstance(segment, ColumnBlock):
                raise RuntimeError(
                    f"an entry of a stream takes {size} bytes alone, over the "
                    f"{self._max_request_bytes} bytes that its block allowed"
                )
            batch.reject_row(segment[0], TOO_LARGE, self._too_large(size))
        else:
            middle = count // 2
            yield from self._split(
                batch,
                shard,
                batch_id,
                _segment_slice(segments, 0, middle),
                slice_runs(runs, 0, middle),
                middle,
            )
            yield from self._split(
                batch,
                shard,
                batch_id,
                _segment_slice(segments, middle, count),
                slice_runs(runs, middle, count),
                count - middle,
            )

    def _too_large(self, size: int) -> str:
        return (
            f"the entry takes {size} bytes in the request to its log shard, over "
            f"the {self._max_request_bytes} bytes allowed (max_message_bytes "
            f"{self.max_message_bytes} plus {ROUTED_HEADROOM_BYTES}); shorten its "
            "message or attributes, or raise max_message_bytes"
        )

    def _append(
        self, parts: list[_ShardPart], context: grpc.ServicerContext, retry_advice: str
    ) -> None:
        if not parts:
            return
        deadline = time.monotonic() + self._write_timeout(context)
        failed = self._send(parts, deadline)
        if failed and not _stopping(failed):
            if not self._routes_moved(failed):
                # A leader that rejected the epoch has moved on, and the
                # coordinator learns the new one in its next poll round.
                self._coordinator.wait_for_poll(
                    min(REFRESH_WAIT_SECONDS, max(0.0, deadline - time.monotonic()))
                )
            failed = self._send(failed, deadline)
        if _stopping(failed):
            names = list(dict.fromkeys(p.shard for p in failed))
            _LOGGER.info("log write to shards %s ended by the router's stop", names)
            raise Unavailable(
                f"log shards {', '.join(names)} could not store their entries "
                f"because the router is stopping; {retry_advice}",
                reason=ROUTER_STOPPING,
                metadata={"shards": ",".join(names)},
                retry_delay=RETRY_DELAY_SECONDS,
            )
        if failed:
            shards = ", ".join(dict.fromkeys(f"{p.shard} ({p.error})" for p in failed))
            _LOGGER.warning("log write failed on shards %s", shards)
            raise Unavailable(
                f"log shards {shards} could not store their entries; {retry_advice}",
                reason="SHARD_UNAVAILABLE",
                metadata={"shards": ",".join(dict.fromkeys(p.shard for p in failed))},
                retry_delay=RETRY_DELAY_SECONDS,
            )

    def _write_timeout(self, context: grpc.ServicerContext | None) -> float:
        """Return the seconds that the calls of a write to the leaders may take.

        With a caller's deadline, they end a margin before it
        (`answer_before`), so that the caller receives the router's
        UNAVAILABLE, which names the shards and the way to retry, instead of
        its own DEADLINE_EXCEEDED. Without one, they get `default_timeout`.
        """
        remaining = None if context is None else context.time_remaining()
        if remaining is None or remaining > 1e9:
            return self._default_timeout
        return answer_before(remaining)

    def _routes_moved(self, parts: list[_ShardPart]) -> bool:
        """Return whether each part's shard has a new leader since its last call.

        A part that found no leader was never sent (`sent_to` is None), and
        a shard without a leader has no route to move to. Both wait for the
        next poll round, which may promote a follower.
        """
        for part in parts:
            route = self._coordinator.route(part.shard)
            if part.sent_to is None or route.leader_address is None:
                return False
            if part.sent_to == (route.leader_address, route.epoch):
                return False
        return True

    def leaders_polled(self) -> None:
        """End the append calls to each leader that the coordinator replaced.

        Runs after each poll round. A leader that stopped or was cut off
        keeps its TCP connection open, so its calls would otherwise wait for
        their whole deadline after a follower took over, and the parts
        queued behind them too. Closing the node's append channel ends them
        with LEADER_REPLACED, and `_append` sends them again to the new
        leader, which stores only the entries that it lacks under their
        batch ids. A node that still leads another shard keeps its channel,
        but routes of the shard at the replaced epoch or below get no calls.
        """
        leaders = self._coordinator.leaders()
        previous, self._leaders = self._leaders, leaders
        still_leading = {address for address, _ in leaders.values() if address}
        for shard, (address, epoch) in previous.items():
            new = leaders.get(shard, (None, 0))[0]
            if address is None or new == address:
                continue
            if address in still_leading:
                self.clients.reset_append_channel(address, shard, epoch, close=False)
                continue
            _LOGGER.warning(
                "log shard %s: the coordinator replaced leader %s (new leader: "
                "%s); ending the router's appends to it",
                shard,
                address,
                new or "none",
            )
            self.clients.reset_append_channel(address, shard, epoch)

    def _send(self, parts: list[_ShardPart], deadline: float) -> list[_ShardPart]:
        """Send each part through its shard's queue; return the parts that failed."""
        for part in parts:
            part.resent = part.resent or bool(part.error)
            part.error = ""
            part.done = False
            part.duplicate_count = 0
            part.deadline = deadline
            self._queue(part.shard).submit(part)
        wake = parts[0].wake
        while not all(part.done for part in parts):
            wake.wait()
            wake.clear()
        return [part for part in parts if part.error]

    def close(self) -> None:
        """Stop the threads of the shard queues, after their queued parts."""
        with self._queues_lock:
            self._closed = True
            queues = list(self._queues.values())
        for queue in queues:
            queue.close()

    def _queue(self, shard: str) -> _ShardQueue:
        queue = self._queues.get(shard)
        if queue is None:
            with self._queues_lock:
                queue = self._queues.get(shard)
                if queue is None:
                    queue = _ShardQueue(
                        shard,
                        self,
                        self.limits.max_batch_entries,
                        self._max_request_bytes,
                    )
                    if self._closed:
                        queue.close()
                    self._queues[shard] = queue
        return queue


def _stored_counts(parts: list[_ShardPart]) -> tuple[int, int]:
    """Return the entries newly stored and those the shards already held.

    The duplicates of a part that a node reports only after an earlier call
    of this write failed count as newly stored, because that failed call
    most likely stored them. Failed parts count in neither.
    """
    accepted = duplicates = 0
    for part in parts:
        if part.error or not part.done:
            continue
        if part.resent:
            accepted += part.count
        else:
            duplicates += part.duplicate_count
            accepted += part.count - part.duplicate_count
    return accepted, duplicates


def _entry_count(request) -> int:
    """Return the entries of a write request, those of its streams included."""
    return len(request.entries) + stream_entry_count(request.streams)


def _write_numbered(writer: Writer, number: int, *args, **kwargs) -> WrittenBatch:
    """Call `writer.write` for request message `number` of a StreamLogEntries call.

    A request error names the message, counted from 0, because its fields
    (`streams[0].severities`) are numbered within that message.
    """
    try:
        return writer.write(*args, **kwargs)
    except (InvalidArgument, ResourceExhausted) as error:
        raise _numbered(error, number) from None


def _numbered(
    error: InvalidArgument | ResourceExhausted, number: int
) -> InvalidArgument | ResourceExhausted:
    """Return `error` naming request message `number` of a StreamLogEntries call."""
    return type(error)(
        f"request message {number} of the call (counting from 0): {error.message}",
        reason=error.reason,
        metadata={**error.metadata, "request_message": str(number)},
        field_violations=error.field_violations,
        resource=error.resource,
        preconditions=error.preconditions,
        retry_delay=error.retry_delay,
    )


def _streamed_request_bytes(request) -> int:
    """Return the serialized size of a write request with streams, else 0."""
    return request.ByteSize() if request.streams else 0


# Bytes of a write response kept for its fields other than `rejected_entries`:
# up to three counts of at most 11 bytes each, with their tags.
_RESPONSE_COUNT_BYTES = 64


class RejectionList:
    """The rejections listed in one write response, kept within a byte budget.

    A batch near `max_message_bytes` can have hundreds of rejected entries,
    and a description of each could make the response too large to send even
    though the valid entries were stored. So only the first rejection of each
    reason and field carries its description, later ones carry the index,
    reason and field. The list stops at `MAX_LISTED_REJECTIONS` or before the
    first rejection that would take the response over `max_message_bytes`.
    """

    def __init__(self, max_message_bytes: int) -> None:
        self._room = max_message_bytes - _RESPONSE_COUNT_BYTES
        self._described: set[tuple[int, str]] = set()
        self._count = 0
        self._full = False

    def add(
        self, rejections: list[logs_service_pb2.LogEntryRejection]
    ) -> list[logs_service_pb2.LogEntryRejection]:
        """Return the next rejections to list, in order, shortened as needed."""
        listed = []
        for rejection in rejections:
            if self._full or self._count >= MAX_LISTED_REJECTIONS:
                break
            key = (rejection.reason, rejection.field)
            if key in self._described:
                rejection = logs_service_pb2.LogEntryRejection(
                    index=rejection.index,
                    reason=rejection.reason,
                    field=rejection.field,
                )
            size = rejection.ByteSize()
            # Tag byte, length prefix and the message itself.
            size += 1 + len(encode_varint(size))
            if size > self._room:
                self._full = True
                break
            self._room -= size
            self._count += 1
            self._described.add(key)
            listed.append(rejection)
        return listed


class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    """The public LogsService of the router.

    Every TailLogEntries and StreamLogEntries call takes a slot of
    `open_streams` while it is open (see `log_service.open_streams`).
    """

    def __init__(
        self,
        writer: Writer,
        reader: ShardReader,
        sharder: Sharder,
        coordinator: Coordinator,
        retention: RetentionStore,
        counters: IngestCounters,
        stub_for,
        open_streams: OpenStreams,
        added_shards: frozenset[str] = frozenset(),
        placements: Sequence[logs_service_pb2.ShardPlacement] = (),
    ) -> None:
        self.open_streams = open_streams
        # The placement history that GetClusterStatus returns. The router
        # reads it once at start, and only a restart changes it.
        self._placements = tuple(placements)
        # Shards added since the first placement, which a resume token issued
        # before their addition lacks.
        self._added_shards = added_shards
        self._writer = writer
        self._reader = reader
        self._sharder = sharder
        self._coordinator = coordinator
        self._retention = retention
        self._counters = counters
        self._stub_for = stub_for
        # The tails whose threads may still run. A tail's threads refer to it
        # until they end, so the weak set drops a tail only after that.
        self._tails: weakref.WeakSet[Tail] = weakref.WeakSet()
        self._tails_lock = threading.Lock()
        self._lister = Lister(reader, sharder, writer.max_message_bytes, added_shards)
        self._stats = StatsReader(reader, sharder)
        self._stream_pool = futures.ThreadPoolExecutor(
            max_workers=STREAM_POOL_WORKERS, thread_name_prefix="log-stream"
        )

    def WriteLogEntry(self, request, context):
        # NOTE: the response returns the stored entry, up to about 60 bytes
        # larger than in the request, so an entry within that of
        # max_message_bytes is stored but its response fails with
        # RESOURCE_EXHAUSTED.
        if not request.HasField("entry"):
            raise invalid_field("entry", "is required; send the entry to write")
        digest = self._writer.checked_digest(request)
        batch = self._writer.write(
            [request.entry], 1, request.request_id, context, digest=digest
        ).batch
        if batch.rejections:
            rejection = batch.rejections[0]
            field = f"entry.{rejection.field}" if rejection.field else "entry"
            raise invalid_field(
                field,
                rejection.description,
                reason=logs_service_pb2.RejectionReason.Name(rejection.reason),
            )
        return logs_service_pb2.WriteLogEntryResponse(
            entry=columns_to_entries(batch.columns)[0]
        )

    def WriteLogEntries(self, request, context):
        digest = self._writer.checked_digest(request)
        written = self._writer.write(
            request.entries,
            _entry_count(request),
            request.request_id,
            context,
            digest=digest,
            streams=request.streams,
            request_bytes=_streamed_request_bytes(request),
        )
        batch = written.batch
        return logs_service_pb2.WriteLogEntriesResponse(
            accepted_count=batch.accepted_count,
            rejected_count=len(batch.rejections),
            rejected_entries=RejectionList(self._writer.max_message_bytes).add(
                batch.rejections
            ),
            duplicate_count=written.duplicate_count,
        )

    def StreamLogEntries(self, request_iterator, context):
        slot = self.open_streams.acquire("StreamLogEntries", context)
        try:
            return self._stream_entries(request_iterator, context)
        finally:
            slot.release()

    def _stream_entries(self, request_iterator, context):
        # Up to STREAM_WINDOW batches of one stream are written at once, so
        # the next batch is read while the shards store the previous ones.
        # Results are taken in stream order, and the first failure ends the
        # call. Up to STREAM_WINDOW - 1 batches read after the failed one may
        # be stored too, but their request ids make a resend store them once.
        response = logs_service_pb2.StreamLogEntriesResponse()
        listed = RejectionList(self._writer.max_message_bytes)
        pending: deque[futures.Future] = deque()

        def take_oldest() -> None:
            written = pending.popleft().result()
            batch = written.batch
            response.batch_count += 1
            response.accepted_count += batch.accepted_count
            response.rejected_count += len(batch.rejections)
            response.duplicate_count += written.duplicate_count
            response.rejected_entries.extend(listed.add(batch.rejections))

        index = 0
        requests = iter(request_iterator)
        for number in itertools.count():
            try:
                # Reading a message raises when it is too large or does not
                # parse (the server interceptor checks each one).
                request = next(requests, None)
                if request is None:
                    break
                digest = self._writer.checked_digest(request)
            except (InvalidArgument, ResourceExhausted) as error:
                # Earlier messages come first: one of them may have failed.
                while pending:
                    take_oldest()
                raise _numbered(error, number) from None
            count = _entry_count(request)
            try:
                written = self._stream_pool.submit(
                    _write_numbered,
                    self._writer,
                    number,
                    request.entries,
                    count,
                    request.request_id,
                    context,
                    first_index=index,
                    digest=digest,
                    streams=request.streams,
                    request_bytes=_streamed_request_bytes(request),
                )
            except RuntimeError:
                # The pool takes no batch after `shut_down_stream_pool`.
                raise Unavailable(
                    f"request message {number} of the call (counting from 0) "
                    "was not stored because the router is stopping; retry the "
                    "stream with the same request_id in each message, which "
                    "stores each entry once",
                    reason=ROUTER_STOPPING,
                    metadata={"request_message": str(number)},
                    retry_delay=RETRY_DELAY_SECONDS,
                ) from None
            pending.append(written)
            index += count
            while len(pending) >= STREAM_WINDOW:
                take_oldest()
        while pending:
            take_oldest()
        return response

    def ListLogEntries(self, request, context):
        return self._lister.list(request, read_timeout(context))

    def GetLogStats(self, request, context):
        response, start, end = self._stats.stats(request, read_timeout(context))
        response.ingest_counters.CopyFrom(self._counters.read(start, end))
        return response

    def TailLogEntries(self, request, context) -> Iterator:
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
        violations.raise_if_any()
        fingerprint = filter_hash(selection.fingerprint_fields())
        shards = self._sharder.shards_for_query(selection.services, None, None)
        positions = dict.fromkeys(shards, -1)
        epochs: dict[str, int] = {}
        if request.resume_token:
            token = decode_resume_token(
                request.resume_token,
                fingerprint,
                known_shards=self._sharder.shards_for_query((), None, None),
            )
            positions = resume_positions(token, shards, added_shards=self._added_shards)
            epochs = token.epochs
        slot = self.open_streams.acquire("TailLogEntries", context)
        try:
            tail = Tail(
                self._coordinator,
                self._stub_for,
                selection,
                fingerprint,
                positions,
                epochs,
                max_response_bytes=min(
                    MAX_RESPONSE_BYTES, self._writer.max_message_bytes
                ),
            )
            context.add_callback(tail.stop)
        except BaseException:
            slot.release()
            raise
        with self._tails_lock:
            self._tails.add(tail)
        return _releasing(tail.responses(), slot)

    def close(self) -> None:
        """Stop every tail and wait up to TAIL_STOP_WAIT_SECONDS for its threads.

        The router calls this when it stops, before it closes the node
        channels that the tails' threads call.
        """
        with self._tails_lock:
            tails = list(self._tails)
        for tail in tails:
            tail.stop()
        deadline = time.monotonic() + TAIL_STOP_WAIT_SECONDS
        running = 0
        for tail in tails:
            if not tail.join(max(0.0, deadline - time.monotonic())):
                running += 1
        if running:
            _LOGGER.info(
                "%d of %d log tails still wait for a node after %.1f s; "
                "closing the node channels ends them",
                running,
                len(tails),
                TAIL_STOP_WAIT_SECONDS,
            )

    def shut_down_stream_pool(self) -> None:
        """Cancel the stream batches not yet started and wait for the others.

        The router calls this after it closed the node channels, which ends
        the node calls that the running batches wait for.
        """
        self._stream_pool.shutdown(wait=True, cancel_futures=True)

    def GetClusterStatus(self, request, context):
        status = self._coordinator.cluster_status()
        status.placements.extend(self._placements)
        return status

    def GetRetentionPolicy(self, request, context):
        check_name(request.name)
        policy = self._retention.policy
        return logs_service_pb2.GetRetentionPolicyResponse(
            retention_policy=policy.to_proto()
        )

    def UpdateRetentionPolicy(self, request, context):
        # The policy applies to every service's entries, so only an
        # administrator or a service may change it. The gateway checks this
        # too, but the router does not rely on it.
        authz.require_admin("UpdateRetentionPolicy")
        if not request.HasField("retention_policy"):
            raise invalid_field(
                "retention_policy", "is required; send the policy with its new values"
            )
        policy = self._retention.update(request.retention_policy, request.update_mask)
        return logs_service_pb2.UpdateRetentionPolicyResponse(
            retention_policy=policy.to_proto()
        )


def _releasing(responses: Iterator, slot: StreamSlot) -> Iterator:
    """Yield `responses`, then release `slot`, also when the call fails.

    A client that cancels never resumes the generator, so the call's own
    termination callback, set by `OpenStreams.acquire`, releases the slot
    then.
    """
    try:
        yield from responses
    finally:
        slot.release()


class OtlpLogsServicer:
    """OTLP's LogsService/Export, stored like WriteLogEntries.

    OTLP has no request id. So an export whose records all carry a time
    gets a batch id that `export_batch_id` derives from its bytes and its
    caller. A resend of the same bytes, such as an exporter's retry after
    UNAVAILABLE, then stores each record once. A ledger of its own, apart
    from LogsService's request ids, keeps each such export's first receive
    time, at which a resend is normalised, as a retried write is.
    """

    def __init__(self, writer: Writer, retention: RetentionStore) -> None:
        self._writer = writer
        self._retention = retention
        self._exports = RequestLedger()

    def Export(self, parsed: ParsedExport, context):
        receive_ns = time.time_ns()
        request = parsed.request
        count = count_log_records(request)
        if count == 0:
            return otlp_logs_pb2.ExportLogsServiceResponse()
        if count > self._writer.limits.max_batch_entries:
            raise invalid_field(
                "resource_logs",
                f"the export has {count} log records, more than the limit of "
                f"{self._writer.limits.max_batch_entries} (log_max_batch_entries); "
                "export smaller batches",
                reason="BATCH_TOO_LARGE",
                metadata={
                    MAX_BATCH_ENTRIES_KEY: str(self._writer.limits.max_batch_entries)
                },
            )
        error = export_size_error(request, self._writer.max_message_bytes)
        if error is not None:
            raise error
        export_id = ""
        retry_advice = UNTIMED_EXPORT_RETRY_ADVICE
        if parsed.digest and every_record_timed(request):
            export_id = export_batch_id(parsed.digest, caller_of(context))
            retry_advice = EXPORT_RETRY_ADVICE
        # The id is derived from the digest, so the ledger never finds another
        # digest under it, and only returns the first receive time.
        normalize_ns = self._exports.claim(export_id, parsed.digest, receive_ns)
        batch = export_request_to_batch(
            request,
            now_ns=normalize_ns,
            limits=self._writer.limits,
            # The cutoff at this call's receive time, as in `Writer.write`.
            retention_cutoff=self._retention.cutoff_function(receive_ns),
            repaired_records=parsed.repaired_records,
        )
        self._writer.store(
            batch, export_id, context, receive_ns, retry_advice=retry_advice
        )
        return export_response(batch)


def _serialized(response: bytes) -> bytes:
    """Return a response that its handler has serialized already."""
    return response


def add_logs_servicer_to_server(servicer: LogsServicer, server) -> None:
    """Register LogsService, with TailLogEntries sending serialized responses.

    It registers the same handlers as the generated
    `add_LogsServiceServicer_to_server`, except that the TailLogEntries
    handler yields bytes (see `log_service.tail`), which go out as they are.
    """
    handlers = {}
    for method in LOGS_SERVICE.methods:
        request_class = getattr(logs_service_pb2, method.input_type.name)
        response_class = getattr(logs_service_pb2, method.output_type.name)
        handler = {
            (False, False): grpc.unary_unary_rpc_method_handler,
            (False, True): grpc.unary_stream_rpc_method_handler,
            (True, False): grpc.stream_unary_rpc_method_handler,
            (True, True): grpc.stream_stream_rpc_method_handler,
        }[(method.client_streaming, method.server_streaming)]
        serializer = response_class.SerializeToString
        if method.name == "TailLogEntries":
            serializer = _serialized
        handlers[method.name] = handler(
            getattr(servicer, method.name),
            request_deserializer=request_class.FromString,
            response_serializer=serializer,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(LOGS_SERVICE.full_name, handlers),)
    )
    server.add_registered_method_handlers(LOGS_SERVICE.full_name, handlers)


def add_otlp_servicer_to_server(servicer: OtlpLogsServicer, server) -> None:
    """Register OTLP's LogsService with `ParsedExport` as request deserializer.

    The generated registration parses with ExportLogsServiceRequest, which
    rejects a whole export when one string has invalid UTF-8.
    """
    export = grpc.unary_unary_rpc_method_handler(
        servicer.Export,
        request_deserializer=ParsedExport.FromString,
        response_serializer=otlp_logs_pb2.ExportLogsServiceResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(OTLP_SERVICE, {"Export": export}),)
    )
