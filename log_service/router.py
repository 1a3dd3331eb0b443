"""The router's LogsService and OTLP servicers, and its write path.

A write is checked and normalised (`model.normalize_batch`), its valid
entries are grouped by shard, and each group goes to its shard leader with
`AppendEntries` in parallel, under the batch id `<request_id>/<shard>`. A
leader that has moved on (UNAVAILABLE) makes the router refresh the shard's
route from the coordinator and retry once. A shard that still fails fails
the whole call with UNAVAILABLE and a RetryInfo detail. The groups stored on
other shards stay, and a retry with the same request id stores them once.
"""

from __future__ import annotations

import logging
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


@dataclass
class _ShardPart:
    shard: str
    request: node_service_pb2.AppendEntriesRequest
    epoch: int | None = None
    error: str = ""


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
        parts = []
        for shard, shard_rows in by_shard.items():
            request = node_service_pb2.AppendEntriesRequest(
                shard=shard, batch_id=f"{base_id}/{shard}"
            )
            # Filled in place: passing the columns to the constructor would
            # copy every value once more.
            rows_to_columns(shard_rows, into=request.entries)
            parts.append(_ShardPart(shard, request))

        timeout = downstream_timeout(context, self._default_timeout)
        deadline = time.monotonic() + timeout
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
        ready = []
        for part in parts:
            part.error = ""
            route = self._coordinator.route(part.shard)
            if route.leader_address is None:
                part.error = "no leader"
                continue
            part.request.leader_epoch = route.epoch
            ready.append((part, self._stub_for(route.leader_address).AppendEntries))
        if not ready:
            return list(parts)
        # Every part but the last runs in the background; the last one runs
        # in this thread, which saves a hand-over between threads per call.
        calls = [
            (part, method.future(part.request, timeout=_remaining(deadline)))
            for part, method in ready[:-1]
        ]
        part, method = ready[-1]
        try:
            method(part.request, timeout=_remaining(deadline))
        except grpc.RpcError as exc:
            part.error = exc.code().name
        for part, call in calls:
            try:
                call.result()
            except grpc.RpcError as exc:
                part.error = exc.code().name
        return [part for part in parts if part.error]


def _remaining(deadline: float) -> float:
    return max(0.01, deadline - time.monotonic())


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
        return self._lister.list(request)

    def GetLogStats(self, request, context):
        response, start, end = self._stats.stats(request)
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
