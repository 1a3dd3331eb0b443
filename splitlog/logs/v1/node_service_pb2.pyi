from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from splitlog.logs.v1 import logs_service_pb2 as _logs_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class EntryColumns(_message.Message):
    __slots__ = ("timestamps", "observed_timestamps", "severities", "services", "hosts", "messages", "attributes", "trace_ids", "span_ids", "truncated", "dropped_attributes_counts", "observed_timestamp")
    TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TIMESTAMPS_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    HOSTS_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TRACE_IDS_FIELD_NUMBER: _ClassVar[int]
    SPAN_IDS_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_ATTRIBUTES_COUNTS_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    timestamps: _containers.RepeatedScalarFieldContainer[int]
    observed_timestamps: _containers.RepeatedScalarFieldContainer[int]
    severities: _containers.RepeatedScalarFieldContainer[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    hosts: _containers.RepeatedScalarFieldContainer[str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    attributes: _containers.RepeatedScalarFieldContainer[str]
    trace_ids: _containers.RepeatedScalarFieldContainer[str]
    span_ids: _containers.RepeatedScalarFieldContainer[str]
    truncated: _containers.RepeatedScalarFieldContainer[bool]
    dropped_attributes_counts: _containers.RepeatedScalarFieldContainer[int]
    observed_timestamp: int
    def __init__(self, timestamps: _Optional[_Iterable[int]] = ..., observed_timestamps: _Optional[_Iterable[int]] = ..., severities: _Optional[_Iterable[int]] = ..., services: _Optional[_Iterable[str]] = ..., hosts: _Optional[_Iterable[str]] = ..., messages: _Optional[_Iterable[str]] = ..., attributes: _Optional[_Iterable[str]] = ..., trace_ids: _Optional[_Iterable[str]] = ..., span_ids: _Optional[_Iterable[str]] = ..., truncated: _Optional[_Iterable[bool]] = ..., dropped_attributes_counts: _Optional[_Iterable[int]] = ..., observed_timestamp: _Optional[int] = ...) -> None: ...

class LogRecord(_message.Message):
    __slots__ = ("first_sequence", "epoch", "batch_id", "receive_time", "entries", "index_runs")
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    RECEIVE_TIME_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    INDEX_RUNS_FIELD_NUMBER: _ClassVar[int]
    first_sequence: int
    epoch: int
    batch_id: str
    receive_time: int
    entries: EntryColumns
    index_runs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, first_sequence: _Optional[int] = ..., epoch: _Optional[int] = ..., batch_id: _Optional[str] = ..., receive_time: _Optional[int] = ..., entries: _Optional[_Union[EntryColumns, _Mapping]] = ..., index_runs: _Optional[_Iterable[int]] = ...) -> None: ...

class AttributeMatch(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class EntryFilter(_message.Message):
    __slots__ = ("start_time", "end_time", "services", "severities", "keyword", "attributes", "max_sequence")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    start_time: int
    end_time: int
    services: _containers.RepeatedScalarFieldContainer[str]
    severities: _containers.RepeatedScalarFieldContainer[int]
    keyword: str
    attributes: _containers.RepeatedCompositeFieldContainer[AttributeMatch]
    max_sequence: int
    def __init__(self, start_time: _Optional[int] = ..., end_time: _Optional[int] = ..., services: _Optional[_Iterable[str]] = ..., severities: _Optional[_Iterable[int]] = ..., keyword: _Optional[str] = ..., attributes: _Optional[_Iterable[_Union[AttributeMatch, _Mapping]]] = ..., max_sequence: _Optional[int] = ...) -> None: ...

class EntryCursor(_message.Message):
    __slots__ = ("timestamp", "sequence")
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    timestamp: int
    sequence: int
    def __init__(self, timestamp: _Optional[int] = ..., sequence: _Optional[int] = ...) -> None: ...

class AppendEntriesRequest(_message.Message):
    __slots__ = ("shard", "leader_epoch", "batch_id", "entries", "index_runs")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    INDEX_RUNS_FIELD_NUMBER: _ClassVar[int]
    shard: str
    leader_epoch: int
    batch_id: str
    entries: EntryColumns
    index_runs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, shard: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., batch_id: _Optional[str] = ..., entries: _Optional[_Union[EntryColumns, _Mapping]] = ..., index_runs: _Optional[_Iterable[int]] = ...) -> None: ...

class AppendEntriesResponse(_message.Message):
    __slots__ = ("first_sequence", "count", "duplicate", "duplicate_count")
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    first_sequence: int
    count: int
    duplicate: bool
    duplicate_count: int
    def __init__(self, first_sequence: _Optional[int] = ..., count: _Optional[int] = ..., duplicate: _Optional[bool] = ..., duplicate_count: _Optional[int] = ...) -> None: ...

class AppendBatchesRequest(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[AppendEntriesRequest]
    def __init__(self, batches: _Optional[_Iterable[_Union[AppendEntriesRequest, _Mapping]]] = ...) -> None: ...

class AppendBatchesResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[AppendEntriesResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[AppendEntriesResponse, _Mapping]]] = ...) -> None: ...

class QueryEntriesRequest(_message.Message):
    __slots__ = ("shard", "filter", "after", "descending", "limit")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    AFTER_FIELD_NUMBER: _ClassVar[int]
    DESCENDING_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    shard: str
    filter: EntryFilter
    after: EntryCursor
    descending: bool
    limit: int
    def __init__(self, shard: _Optional[str] = ..., filter: _Optional[_Union[EntryFilter, _Mapping]] = ..., after: _Optional[_Union[EntryCursor, _Mapping]] = ..., descending: _Optional[bool] = ..., limit: _Optional[int] = ...) -> None: ...

class QueryEntriesResponse(_message.Message):
    __slots__ = ("entries", "sequences", "last_sequence", "size_limited")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    SIZE_LIMITED_FIELD_NUMBER: _ClassVar[int]
    entries: EntryColumns
    sequences: _containers.RepeatedScalarFieldContainer[int]
    last_sequence: int
    size_limited: bool
    def __init__(self, entries: _Optional[_Union[EntryColumns, _Mapping]] = ..., sequences: _Optional[_Iterable[int]] = ..., last_sequence: _Optional[int] = ..., size_limited: _Optional[bool] = ...) -> None: ...

class CountEntriesRequest(_message.Message):
    __slots__ = ("shard", "filter", "histogram_start", "histogram_step")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_START_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_STEP_FIELD_NUMBER: _ClassVar[int]
    shard: str
    filter: EntryFilter
    histogram_start: int
    histogram_step: int
    def __init__(self, shard: _Optional[str] = ..., filter: _Optional[_Union[EntryFilter, _Mapping]] = ..., histogram_start: _Optional[int] = ..., histogram_step: _Optional[int] = ...) -> None: ...

class BucketCount(_message.Message):
    __slots__ = ("bucket", "severity", "count")
    BUCKET_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    bucket: int
    severity: int
    count: int
    def __init__(self, bucket: _Optional[int] = ..., severity: _Optional[int] = ..., count: _Optional[int] = ...) -> None: ...

class CountEntriesResponse(_message.Message):
    __slots__ = ("severity_counts", "service_counts", "bucket_counts")
    SEVERITY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    BUCKET_COUNTS_FIELD_NUMBER: _ClassVar[int]
    severity_counts: _containers.RepeatedCompositeFieldContainer[_logs_service_pb2.SeverityCount]
    service_counts: _containers.RepeatedCompositeFieldContainer[_logs_service_pb2.ServiceCount]
    bucket_counts: _containers.RepeatedCompositeFieldContainer[BucketCount]
    def __init__(self, severity_counts: _Optional[_Iterable[_Union[_logs_service_pb2.SeverityCount, _Mapping]]] = ..., service_counts: _Optional[_Iterable[_Union[_logs_service_pb2.ServiceCount, _Mapping]]] = ..., bucket_counts: _Optional[_Iterable[_Union[BucketCount, _Mapping]]] = ...) -> None: ...

class FollowEntriesRequest(_message.Message):
    __slots__ = ("shard", "filter", "after_sequence", "after_epoch", "leader_epoch")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    AFTER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    shard: str
    filter: EntryFilter
    after_sequence: int
    after_epoch: int
    leader_epoch: int
    def __init__(self, shard: _Optional[str] = ..., filter: _Optional[_Union[EntryFilter, _Mapping]] = ..., after_sequence: _Optional[int] = ..., after_epoch: _Optional[int] = ..., leader_epoch: _Optional[int] = ...) -> None: ...

class FollowEntriesResponse(_message.Message):
    __slots__ = ("entries", "sequences", "last_sequence", "last_epoch")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_EPOCH_FIELD_NUMBER: _ClassVar[int]
    entries: EntryColumns
    sequences: _containers.RepeatedScalarFieldContainer[int]
    last_sequence: int
    last_epoch: int
    def __init__(self, entries: _Optional[_Union[EntryColumns, _Mapping]] = ..., sequences: _Optional[_Iterable[int]] = ..., last_sequence: _Optional[int] = ..., last_epoch: _Optional[int] = ...) -> None: ...

class ShardMember(_message.Message):
    __slots__ = ("node", "address")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ...) -> None: ...

class ConfigureShardRequest(_message.Message):
    __slots__ = ("shard", "leader_epoch", "role", "leader", "in_sync", "followers", "leader_only_ack", "config_version")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    IN_SYNC_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_ONLY_ACK_FIELD_NUMBER: _ClassVar[int]
    CONFIG_VERSION_FIELD_NUMBER: _ClassVar[int]
    shard: str
    leader_epoch: int
    role: _logs_service_pb2.ReplicaRole
    leader: ShardMember
    in_sync: _containers.RepeatedCompositeFieldContainer[ShardMember]
    followers: _containers.RepeatedCompositeFieldContainer[ShardMember]
    leader_only_ack: bool
    config_version: int
    def __init__(self, shard: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., role: _Optional[_Union[_logs_service_pb2.ReplicaRole, str]] = ..., leader: _Optional[_Union[ShardMember, _Mapping]] = ..., in_sync: _Optional[_Iterable[_Union[ShardMember, _Mapping]]] = ..., followers: _Optional[_Iterable[_Union[ShardMember, _Mapping]]] = ..., leader_only_ack: _Optional[bool] = ..., config_version: _Optional[int] = ...) -> None: ...

class ConfigureShardResponse(_message.Message):
    __slots__ = ("last_sequence",)
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    def __init__(self, last_sequence: _Optional[int] = ...) -> None: ...

class ApplyRetentionRequest(_message.Message):
    __slots__ = ("default_cutoff", "service_cutoffs", "max_sequence")
    class ServiceCutoffsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: int
        def __init__(self, key: _Optional[str] = ..., value: _Optional[int] = ...) -> None: ...
    DEFAULT_CUTOFF_FIELD_NUMBER: _ClassVar[int]
    SERVICE_CUTOFFS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    default_cutoff: int
    service_cutoffs: _containers.ScalarMap[str, int]
    max_sequence: int
    def __init__(self, default_cutoff: _Optional[int] = ..., service_cutoffs: _Optional[_Mapping[str, int]] = ..., max_sequence: _Optional[int] = ...) -> None: ...

class ApplyRetentionResponse(_message.Message):
    __slots__ = ("deleted_count", "dropped_partitions", "max_sequence")
    DELETED_COUNT_FIELD_NUMBER: _ClassVar[int]
    DROPPED_PARTITIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    deleted_count: int
    dropped_partitions: int
    max_sequence: int
    def __init__(self, deleted_count: _Optional[int] = ..., dropped_partitions: _Optional[int] = ..., max_sequence: _Optional[int] = ...) -> None: ...
