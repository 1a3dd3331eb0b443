"""The router's LogsService and OTLP servicers, and its write path.

A write is checked and normalised (`model.normalize_batch`), its valid
entries are grouped by shard, and each group goes to its shard leader in
parallel, under the batch id `<request_id>/<shard>`: alone with
`AppendEntries`, or with the groups of other writes in one `AppendBatches`
when calls to that shard are already running (`_ShardQueue`). A
leader that has moved on (UNAVAILABLE) makes the router refresh the shard's
route from the coordinator and retry once. A shard that still fails fails
the whole call with UNAVAILABLE and a RetryInfo detail. The groups stored on
other shards stay, and a retry with the same request id stores them once.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.logs.v1 import (
    logs_service_pb2 as otlp_logs_pb2,
)
from opentelemetry.proto.collector.logs.v1 import (
    logs_service_pb2_grpc as otlp_logs_pb2_grpc,
)

from log_service.coordinator import Coordinator
from log_service.ingest_counters import IngestCounters
from log_service.model import (
    ROW_FIELDS,
    Limits,
    NormalizedBatch,
    batch_error_for_size,
    columns_to_entries,
    normalize_batch,
    rows_to_columns,
)
from log_service.otlp import count_log_records, export_request_to_batch, export_response
from log_service.query import (
    Lister,
    ShardReader,
    StatsReader,
    check_selection,
    node_call_timeout,
)
from log_service.retention import RetentionStore, check_name
from log_service.sharding import ServiceRing, Sharder
from log_service.tail import Tail
from log_service.tokens import decode_resume_token, filter_hash
from splitlog.logs.v1 import logs_service_pb2, logs_service_pb2_grpc, node_service_pb2
from splitlog_runtime.channels import downstream_timeout
from splitlog_runtime.errors import Unavailable, invalid_field
from splitlog_runtime.validation import Violations

_LOGGER = logging.getLogger(__name__)

MAX_LISTED_REJECTIONS = 1000
# Batches of one StreamLogEntries call written at the same time.
STREAM_WINDOW = 16
# Threads that write stream batches, shared by every stream of the router.
STREAM_POOL_WORKERS = 64
RETRY_DELAY_SECONDS = 1.0
REFRESH_WAIT_SECONDS = 0.6
# Positions in a normalised row (`model.ROW_FIELDS`).
_TIMESTAMP = ROW_FIELDS.index("timestamps")
_SERVICE = ROW_FIELDS.index("services")


# Calls with small parts that the router runs at once per shard. Parts of
# other writes for the shard queue up meanwhile and go together in the next
# call. With one call, 100-entry batches from 4 callers cost the nodes about
# 48 instead of 59 us of CPU per entry, and streams about 16 instead of 40
# (`python -m bench.log_ingest --cpu`, a busy 2-core machine). Two calls
# helped streams less, and unary calls not at all.
SHARD_CALLS = 1


@dataclass(eq=False)
class _ShardPart:
    """The entries of one write for one shard, and the outcome of sending them."""

    shard: str
    batch_id: str
    rows: list[tuple]
    deadline: float
    wake: threading.Event
    error: str = ""
    done: bool = False
    # Calls of the shard that the writer's thread is to start: ended calls
    # hand their slot to the first waiting part.
    send_next: int = 0


class _ShardQueue:
    """Sends the parts of concurrent writes to one shard, several per call.

    At most SHARD_CALLS calls run at once. A part that arrives while they
    run waits, and the next call carries every waiting part, up to
    `max_entries` entries, as one AppendBatches call. Each part stays a
    batch of its own on the node, under its own batch id, so a retried
    write is recognised whatever it was sent with.

    A part of at least half of `max_entries` entries could not share a
    call with another such part, so it goes out at once in a call of its
    own, outside the SHARD_CALLS limit, as every part did before grouping.

    NOTE: parts are grouped by entry count only. A node request also carries
    the shard, epoch and batch id, so a call can exceed `max_message_bytes`
    when the writes in it are near that size. The shard then fails with
    RESOURCE_EXHAUSTED, and a retry of a write of that size fails again.

    Calls are built and started by the threads of the waiting writes: when
    a call ends, the writer of the first waiting part is woken to start the
    next one.
    """

    def __init__(self, shard: str, writer: Writer, max_entries: int) -> None:
        self._shard = shard
        self._writer = writer
        self._max_entries = max_entries
        self._lock = threading.Lock()
        self._waiting: deque[_ShardPart] = deque()
        self._calls = 0

    def submit(self, part: _ShardPart) -> None:
        """Queue a part; start a call now when fewer than SHARD_CALLS run."""
        if len(part.rows) * 2 >= self._max_entries:
            self._send([part], holds_slot=False)
            return
        with self._lock:
            self._waiting.append(part)
            if self._calls >= SHARD_CALLS:
                return
            self._calls += 1
        self.start_call()

    def start_call(self) -> None:
        """Send the waiting parts. The caller must own one of the call slots."""
        with self._lock:
            group = []
            entries = 0
            while self._waiting and (
                not group or entries + len(self._waiting[0].rows) <= self._max_entries
            ):
                part = self._waiting.popleft()
                group.append(part)
                entries += len(part.rows)
            if not group:
                self._calls -= 1
                return
        self._send(group, holds_slot=True)

    def _send(self, group: list[_ShardPart], *, holds_slot: bool) -> None:
        try:
            route = self._writer.coordinator.route(self._shard)
            if route.leader_address is None:
                self._finish(group, "no leader", holds_slot)
                return
            stub = self._writer.stub_for(route.leader_address)
            timeout = max(0.01, min(part.deadline for part in group) - time.monotonic())
            if len(group) == 1:
                request = _append_request(group[0], route.epoch)
                call = stub.AppendEntries.future(request, timeout=timeout)
            else:
                batches = node_service_pb2.AppendBatchesRequest()
                for part in group:
                    _append_request(part, route.epoch, batches.batches.add())
                call = stub.AppendBatches.future(batches, timeout=timeout)
        except Exception:
            # The parts may belong to other writes, whose threads wait for them.
            _LOGGER.exception("sending entries to log shard %s failed", self._shard)
            self._finish(group, "router error", holds_slot)
            return
        call.add_done_callback(
            lambda done: self._finish(group, _call_error(done), holds_slot)
        )

    def take_handed_slot(self, part: _ShardPart) -> bool:
        """Return whether an ended call handed `part`'s writer a slot, and take it."""
        with self._lock:
            if not part.send_next:
                return False
            part.send_next -= 1
            return True

    def _finish(self, group: list[_ShardPart], error: str, holds_slot: bool) -> None:
        for part in group:
            part.error = error
            part.done = True
            part.wake.set()
        if not holds_slot:
            return
        with self._lock:
            if not self._waiting:
                self._calls -= 1
                return
            # The slot passes to the first waiting part's writer.
            following = self._waiting[0]
            following.send_next += 1
        following.wake.set()


def _append_request(
    part: _ShardPart,
    epoch: int,
    into: node_service_pb2.AppendEntriesRequest | None = None,
) -> node_service_pb2.AppendEntriesRequest:
    request = node_service_pb2.AppendEntriesRequest() if into is None else into
    request.shard = part.shard
    request.leader_epoch = epoch
    request.batch_id = part.batch_id
    # Filled in place: passing the columns to the constructor would copy
    # every value once more.
    rows_to_columns(part.rows, into=request.entries)
    return request


def _call_error(call: grpc.Future) -> str:
    error = call.exception()
    if error is None:
        return ""
    if isinstance(error, grpc.RpcError):
        return error.code().name
    return type(error).__name__


class Writer:
    """Batch writer: normalises, sends to the shard leaders and counts."""

    def __init__(
        self,
        coordinator: Coordinator,
        sharder: Sharder,
        stub_for,
        limits: Limits,
        retention: RetentionStore,
        counters: IngestCounters,
        default_timeout: float,
    ) -> None:
        self._coordinator = coordinator
        self._sharder = sharder
        self._stub_for = stub_for
        self.limits = limits
        self._retention = retention
        self._counters = counters
        self._default_timeout = default_timeout
        self.coordinator = coordinator
        self.stub_for = stub_for
        self._queues: dict[str, _ShardQueue] = {}
        self._queues_lock = threading.Lock()

    def write(
        self,
        entries: Iterable[logs_service_pb2.LogEntry],
        count: int,
        request_id: str,
        context: grpc.ServicerContext,
        first_index: int = 0,
    ) -> NormalizedBatch:
        """Normalise and store one batch.

        Raises:
          InvalidArgument: the batch is empty or too large.
          Unavailable: a shard could not store its part.
        """
        receive_ns = time.time_ns()
        error = batch_error_for_size(count, self.limits)
        if error is not None:
            self._counters.record(receive_ns, failed_batches=1)
            raise error
        batch = normalize_batch(
            entries,
            now_ns=receive_ns,
            limits=self.limits,
            retention_cutoff=self._retention.cutoff_function(receive_ns),
            first_index=first_index,
        )
        self.store(batch, request_id, context, receive_ns)
        return batch

    def store(
        self,
        batch: NormalizedBatch,
        request_id: str,
        context: grpc.ServicerContext,
        receive_ns: int,
    ) -> None:
        """Send a normalised batch to its shards and count the outcome."""
        rejected = Counter(rejection.reason for rejection in batch.rejections)
        try:
            self._append(batch, request_id, context)
        except Unavailable:
            self._counters.record(receive_ns, rejected=rejected, failed_batches=1)
            raise
        self._counters.record(
            receive_ns, accepted=len(batch.indexes), rejected=rejected
        )

    def _append(
        self,
        batch: NormalizedBatch,
        request_id: str,
        context: grpc.ServicerContext,
    ) -> None:
        rows = batch.rows
        if not rows:
            return
        by_shard: defaultdict[str, list[tuple]] = defaultdict(list)
        shard_for = self._sharder.shard_for
        if isinstance(self._sharder, ServiceRing):
            # The shard depends on the service alone, so each distinct service
            # is looked up once.
            shard_of: dict[str, str] = {}
            for row in rows:
                service = row[_SERVICE]
                shard = shard_of.get(service)
                if shard is None:
                    shard = shard_of[service] = shard_for(service, row[_TIMESTAMP])
                by_shard[shard].append(row)
        else:
            for row in rows:
                by_shard[shard_for(row[_SERVICE], row[_TIMESTAMP])].append(row)
        base_id = request_id or uuid.uuid4().hex
        timeout = downstream_timeout(context, self._default_timeout)
        deadline = time.monotonic() + timeout
        wake = threading.Event()
        parts = [
            _ShardPart(shard, f"{base_id}/{shard}", shard_rows, deadline, wake)
            for shard, shard_rows in by_shard.items()
        ]
        failed = self._send(parts, deadline)
        if failed:
            self._coordinator.wait_for_poll(
                min(REFRESH_WAIT_SECONDS, max(0.0, deadline - time.monotonic()))
            )
            failed = self._send(failed, deadline)
        if failed:
            shards = ", ".join(f"{p.shard} ({p.error})" for p in failed)
            _LOGGER.warning("log write failed on shards %s", shards)
            raise Unavailable(
                f"log shards {shards} could not store their entries; retry the "
                "call with the same request_id, which stores each entry once",
                reason="SHARD_UNAVAILABLE",
                metadata={"shards": ",".join(p.shard for p in failed)},
                retry_delay=RETRY_DELAY_SECONDS,
            )

    def _send(self, parts: list[_ShardPart], deadline: float) -> list[_ShardPart]:
        """Send each part through its shard's queue; return the parts that failed."""
        for part in parts:
            part.error = ""
            part.done = False
            part.deadline = deadline
            self._queue(part.shard).submit(part)
        wake = parts[0].wake
        while not all(part.done for part in parts):
            wake.wait()
            wake.clear()
            self._start_handed_calls(parts)
        # A slot handed over just before its part went out with another call.
        self._start_handed_calls(parts)
        return [part for part in parts if part.error]

    def _start_handed_calls(self, parts: list[_ShardPart]) -> None:
        for part in parts:
            queue = self._queue(part.shard)
            while queue.take_handed_slot(part):
                queue.start_call()

    def _queue(self, shard: str) -> _ShardQueue:
        queue = self._queues.get(shard)
        if queue is None:
            with self._queues_lock:
                queue = self._queues.setdefault(
                    shard, _ShardQueue(shard, self, self.limits.max_batch_entries)
                )
        return queue


def _limited(rejections: list) -> list:
    return rejections[:MAX_LISTED_REJECTIONS]


class LogsServicer(logs_service_pb2_grpc.LogsServiceServicer):
    """The public LogsService of the router."""

    def __init__(
        self,
        writer: Writer,
        reader: ShardReader,
        sharder: Sharder,
        coordinator: Coordinator,
        retention: RetentionStore,
        counters: IngestCounters,
        stub_for,
    ) -> None:
        self._writer = writer
        self._reader = reader
        self._sharder = sharder
        self._coordinator = coordinator
        self._retention = retention
        self._counters = counters
        self._stub_for = stub_for
        self._lister = Lister(reader, sharder)
        self._stats = StatsReader(reader, sharder)
        self._stream_pool = futures.ThreadPoolExecutor(
            max_workers=STREAM_POOL_WORKERS, thread_name_prefix="log-stream"
        )

    def WriteLogEntry(self, request, context):
        if not request.HasField("entry"):
            raise invalid_field("entry", "is required; send the entry to write")
        batch = self._writer.write([request.entry], 1, request.request_id, context)
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
        batch = self._writer.write(
            request.entries, len(request.entries), request.request_id, context
        )
        return logs_service_pb2.WriteLogEntriesResponse(
            accepted_count=len(batch.indexes),
            rejected_count=len(batch.rejections),
            rejected_entries=_limited(batch.rejections),
        )

    def StreamLogEntries(self, request_iterator, context):
        # Up to STREAM_WINDOW batches of one stream are written at once, so
        # the next batch is read while the shards store the previous ones.
        # Results are taken in stream order, and the first failure ends the
        # call. Batches sent after it may be stored too, but their request ids
        # make a resend count once.
        response = logs_service_pb2.StreamLogEntriesResponse()
        pending: deque[futures.Future] = deque()

        def take_oldest() -> None:
            batch = pending.popleft().result()
            response.batch_count += 1
            response.accepted_count += len(batch.indexes)
            response.rejected_count += len(batch.rejections)
            room = MAX_LISTED_REJECTIONS - len(response.rejected_entries)
            response.rejected_entries.extend(batch.rejections[: max(0, room)])

        index = 0
        for request in request_iterator:
            pending.append(
                self._stream_pool.submit(
                    self._writer.write,
                    request.entries,
                    len(request.entries),
                    request.request_id,
                    context,
                    first_index=index,
                )
            )
            index += len(request.entries)
            while len(pending) >= STREAM_WINDOW:
                take_oldest()
        while pending:
            take_oldest()
        return response

    def ListLogEntries(self, request, context):
        return self._lister.list(request, node_call_timeout(context))

    def GetLogStats(self, request, context):
        response, start, end = self._stats.stats(request, node_call_timeout(context))
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
        )
        violations.raise_if_any()
        fingerprint = filter_hash(selection.fingerprint_fields())
        shards = self._sharder.shards_for_query(selection.services, None, None)
        positions = dict.fromkeys(shards, -1)
        if request.resume_token:
            token = decode_resume_token(request.resume_token, fingerprint)
            for shard in shards:
                positions[shard] = token.positions.get(shard, -1)
        tail = Tail(
            self._coordinator, self._stub_for, selection, fingerprint, positions
        )
        context.add_callback(tail.stop)
        return tail.responses()

    def GetClusterStatus(self, request, context):
        return self._coordinator.cluster_status()

    def GetRetentionPolicy(self, request, context):
        check_name(request.name)
        policy = self._retention.policy
        return logs_service_pb2.GetRetentionPolicyResponse(
            retention_policy=policy.to_proto()
        )

    def UpdateRetentionPolicy(self, request, context):
        if not request.HasField("retention_policy"):
            raise invalid_field(
                "retention_policy", "is required; send the policy with its new values"
            )
        policy = self._retention.update(request.retention_policy, request.update_mask)
        return logs_service_pb2.UpdateRetentionPolicyResponse(
            retention_policy=policy.to_proto()
        )


class OtlpLogsServicer(otlp_logs_pb2_grpc.LogsServiceServicer):
    """OTLP's LogsService/Export, stored like WriteLogEntries."""

    def __init__(self, writer: Writer, retention: RetentionStore) -> None:
        self._writer = writer
        self._retention = retention

    def Export(self, request, context):
        receive_ns = time.time_ns()
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
            )
        batch = export_request_to_batch(
            request,
            now_ns=receive_ns,
            limits=self._writer.limits,
            retention_cutoff=self._retention.cutoff_function(receive_ns),
        )
        self._writer.store(batch, "", context, receive_ns)
        return export_response(batch)
