import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import duration_pb2 as _duration_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Severity(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SEVERITY_UNSPECIFIED: _ClassVar[Severity]
    SEVERITY_DEBUG: _ClassVar[Severity]
    SEVERITY_INFO: _ClassVar[Severity]
    SEVERITY_WARN: _ClassVar[Severity]
    SEVERITY_ERROR: _ClassVar[Severity]
    SEVERITY_FATAL: _ClassVar[Severity]

class RejectionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECTION_REASON_UNSPECIFIED: _ClassVar[RejectionReason]
    REJECTION_REASON_MISSING_FIELD: _ClassVar[RejectionReason]
    REJECTION_REASON_INVALID_FIELD: _ClassVar[RejectionReason]
    REJECTION_REASON_TIMESTAMP_TOO_OLD: _ClassVar[RejectionReason]
    REJECTION_REASON_TIMESTAMP_IN_FUTURE: _ClassVar[RejectionReason]
    REJECTION_REASON_TOO_LARGE: _ClassVar[RejectionReason]

class Health(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    HEALTH_UNSPECIFIED: _ClassVar[Health]
    HEALTH_SERVING: _ClassVar[Health]
    HEALTH_DEGRADED: _ClassVar[Health]
    HEALTH_UNAVAILABLE: _ClassVar[Health]

class ShardingStrategy(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SHARDING_STRATEGY_UNSPECIFIED: _ClassVar[ShardingStrategy]
    SHARDING_STRATEGY_SERVICE: _ClassVar[ShardingStrategy]
    SHARDING_STRATEGY_TIME: _ClassVar[ShardingStrategy]

class ReplicaRole(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REPLICA_ROLE_UNSPECIFIED: _ClassVar[ReplicaRole]
    REPLICA_ROLE_LEADER: _ClassVar[ReplicaRole]
    REPLICA_ROLE_FOLLOWER: _ClassVar[ReplicaRole]
SEVERITY_UNSPECIFIED: Severity
SEVERITY_DEBUG: Severity
SEVERITY_INFO: Severity
SEVERITY_WARN: Severity
SEVERITY_ERROR: Severity
SEVERITY_FATAL: Severity
REJECTION_REASON_UNSPECIFIED: RejectionReason
REJECTION_REASON_MISSING_FIELD: RejectionReason
REJECTION_REASON_INVALID_FIELD: RejectionReason
REJECTION_REASON_TIMESTAMP_TOO_OLD: RejectionReason
REJECTION_REASON_TIMESTAMP_IN_FUTURE: RejectionReason
REJECTION_REASON_TOO_LARGE: RejectionReason
HEALTH_UNSPECIFIED: Health
HEALTH_SERVING: Health
HEALTH_DEGRADED: Health
HEALTH_UNAVAILABLE: Health
SHARDING_STRATEGY_UNSPECIFIED: ShardingStrategy
SHARDING_STRATEGY_SERVICE: ShardingStrategy
SHARDING_STRATEGY_TIME: ShardingStrategy
REPLICA_ROLE_UNSPECIFIED: ReplicaRole
REPLICA_ROLE_LEADER: ReplicaRole
REPLICA_ROLE_FOLLOWER: ReplicaRole

class LogEntry(_message.Message):
    __slots__ = ("timestamp", "observed_timestamp", "severity", "service", "host", "message", "attributes", "trace_id", "span_id", "truncated", "dropped_attributes_count", "severity_text")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    OBSERVED_TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    TRACE_ID_FIELD_NUMBER: _ClassVar[int]
    SPAN_ID_FIELD_NUMBER: _ClassVar[int]
    TRUNCATED_FIELD_NUMBER: _ClassVar[int]
    DROPPED_ATTRIBUTES_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_TEXT_FIELD_NUMBER: _ClassVar[int]
    timestamp: _timestamp_pb2.Timestamp
    observed_timestamp: _timestamp_pb2.Timestamp
    severity: Severity
    service: str
    host: str
    message: str
    attributes: _containers.ScalarMap[str, str]
    trace_id: str
    span_id: str
    truncated: bool
    dropped_attributes_count: int
    severity_text: str
    def __init__(self, timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., observed_timestamp: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., severity: _Optional[_Union[Severity, str]] = ..., service: _Optional[str] = ..., host: _Optional[str] = ..., message: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., trace_id: _Optional[str] = ..., span_id: _Optional[str] = ..., truncated: _Optional[bool] = ..., dropped_attributes_count: _Optional[int] = ..., severity_text: _Optional[str] = ...) -> None: ...

class LogStream(_message.Message):
    __slots__ = ("service", "host", "attributes", "messages", "timestamps_unix_nano", "severities", "severity")
    class AttributesEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    HOST_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTES_FIELD_NUMBER: _ClassVar[int]
    MESSAGES_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMPS_UNIX_NANO_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    service: str
    host: str
    attributes: _containers.ScalarMap[str, str]
    messages: _containers.RepeatedScalarFieldContainer[str]
    timestamps_unix_nano: _containers.RepeatedScalarFieldContainer[int]
    severities: _containers.RepeatedScalarFieldContainer[Severity]
    severity: Severity
    def __init__(self, service: _Optional[str] = ..., host: _Optional[str] = ..., attributes: _Optional[_Mapping[str, str]] = ..., messages: _Optional[_Iterable[str]] = ..., timestamps_unix_nano: _Optional[_Iterable[int]] = ..., severities: _Optional[_Iterable[_Union[Severity, str]]] = ..., severity: _Optional[_Union[Severity, str]] = ...) -> None: ...

class LogEntryRejection(_message.Message):
    __slots__ = ("index", "reason", "field", "description")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    FIELD_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    index: int
    reason: RejectionReason
    field: str
    description: str
    def __init__(self, index: _Optional[int] = ..., reason: _Optional[_Union[RejectionReason, str]] = ..., field: _Optional[str] = ..., description: _Optional[str] = ...) -> None: ...

class SeverityCount(_message.Message):
    __slots__ = ("severity", "count")
    SEVERITY_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    severity: Severity
    count: int
    def __init__(self, severity: _Optional[_Union[Severity, str]] = ..., count: _Optional[int] = ...) -> None: ...

class ServiceCount(_message.Message):
    __slots__ = ("service", "count")
    SERVICE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    service: str
    count: int
    def __init__(self, service: _Optional[str] = ..., count: _Optional[int] = ...) -> None: ...

class HistogramBucket(_message.Message):
    __slots__ = ("start_time", "count", "severity_counts")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    count: int
    severity_counts: _containers.RepeatedCompositeFieldContainer[SeverityCount]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., count: _Optional[int] = ..., severity_counts: _Optional[_Iterable[_Union[SeverityCount, _Mapping]]] = ...) -> None: ...

class RejectionCount(_message.Message):
    __slots__ = ("reason", "count")
    REASON_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    reason: RejectionReason
    count: int
    def __init__(self, reason: _Optional[_Union[RejectionReason, str]] = ..., count: _Optional[int] = ...) -> None: ...

class IngestCounters(_message.Message):
    __slots__ = ("accepted_count", "rejected_count", "rejection_counts", "failed_batch_count", "duplicate_count")
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTION_COUNTS_FIELD_NUMBER: _ClassVar[int]
    FAILED_BATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    rejected_count: int
    rejection_counts: _containers.RepeatedCompositeFieldContainer[RejectionCount]
    failed_batch_count: int
    duplicate_count: int
    def __init__(self, accepted_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejection_counts: _Optional[_Iterable[_Union[RejectionCount, _Mapping]]] = ..., failed_batch_count: _Optional[int] = ..., duplicate_count: _Optional[int] = ...) -> None: ...

class ShardStatus(_message.Message):
    __slots__ = ("shard", "health", "leader", "leader_epoch", "last_sequence", "followers", "leader_log_damage")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    LEADER_LOG_DAMAGE_FIELD_NUMBER: _ClassVar[int]
    shard: str
    health: Health
    leader: str
    leader_epoch: int
    last_sequence: int
    followers: _containers.RepeatedCompositeFieldContainer[ReplicaStatus]
    leader_log_damage: LogDamage
    def __init__(self, shard: _Optional[str] = ..., health: _Optional[_Union[Health, str]] = ..., leader: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., last_sequence: _Optional[int] = ..., followers: _Optional[_Iterable[_Union[ReplicaStatus, _Mapping]]] = ..., leader_log_damage: _Optional[_Union[LogDamage, _Mapping]] = ...) -> None: ...

class ShardPlacement(_message.Message):
    __slots__ = ("strategy", "shards", "time_bucket_width", "start_time")
    STRATEGY_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    TIME_BUCKET_WIDTH_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    strategy: ShardingStrategy
    shards: _containers.RepeatedScalarFieldContainer[str]
    time_bucket_width: _duration_pb2.Duration
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, strategy: _Optional[_Union[ShardingStrategy, str]] = ..., shards: _Optional[_Iterable[str]] = ..., time_bucket_width: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class ReplicaStatus(_message.Message):
    __slots__ = ("node", "reachable", "last_sequence", "lag_entries", "lag", "last_contact_time", "snapshot", "log_damage")
    NODE_FIELD_NUMBER: _ClassVar[int]
    REACHABLE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAG_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    LAG_FIELD_NUMBER: _ClassVar[int]
    LAST_CONTACT_TIME_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    LOG_DAMAGE_FIELD_NUMBER: _ClassVar[int]
    node: str
    reachable: bool
    last_sequence: int
    lag_entries: int
    lag: _duration_pb2.Duration
    last_contact_time: _timestamp_pb2.Timestamp
    snapshot: SnapshotProgress
    log_damage: LogDamage
    def __init__(self, node: _Optional[str] = ..., reachable: _Optional[bool] = ..., last_sequence: _Optional[int] = ..., lag_entries: _Optional[int] = ..., lag: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., last_contact_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., snapshot: _Optional[_Union[SnapshotProgress, _Mapping]] = ..., log_damage: _Optional[_Union[LogDamage, _Mapping]] = ...) -> None: ...

class LogDamage(_message.Message):
    __slots__ = ("first_lost_sequence", "last_lost_sequence", "location")
    FIRST_LOST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_LOST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LOCATION_FIELD_NUMBER: _ClassVar[int]
    first_lost_sequence: int
    last_lost_sequence: int
    location: str
    def __init__(self, first_lost_sequence: _Optional[int] = ..., last_lost_sequence: _Optional[int] = ..., location: _Optional[str] = ...) -> None: ...

class SnapshotProgress(_message.Message):
    __slots__ = ("last_sequence", "received_entries", "received_bytes", "installing", "start_time")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_BYTES_FIELD_NUMBER: _ClassVar[int]
    INSTALLING_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    received_entries: int
    received_bytes: int
    installing: bool
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, last_sequence: _Optional[int] = ..., received_entries: _Optional[int] = ..., received_bytes: _Optional[int] = ..., installing: _Optional[bool] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class RetentionPolicy(_message.Message):
    __slots__ = ("name", "default_retention", "service_retentions", "update_time", "etag")
    class ServiceRetentionsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: _duration_pb2.Duration
        def __init__(self, key: _Optional[str] = ..., value: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ...) -> None: ...
    NAME_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_RETENTION_FIELD_NUMBER: _ClassVar[int]
    SERVICE_RETENTIONS_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    default_retention: _duration_pb2.Duration
    service_retentions: _containers.MessageMap[str, _duration_pb2.Duration]
    update_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., default_retention: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., service_retentions: _Optional[_Mapping[str, _duration_pb2.Duration]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class WriteLogEntryRequest(_message.Message):
    __slots__ = ("entry", "request_id")
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    entry: LogEntry
    request_id: str
    def __init__(self, entry: _Optional[_Union[LogEntry, _Mapping]] = ..., request_id: _Optional[str] = ...) -> None: ...

class WriteLogEntryResponse(_message.Message):
    __slots__ = ("entry",)
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    entry: LogEntry
    def __init__(self, entry: _Optional[_Union[LogEntry, _Mapping]] = ...) -> None: ...

class WriteLogEntriesRequest(_message.Message):
    __slots__ = ("entries", "request_id", "streams")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    request_id: str
    streams: _containers.RepeatedCompositeFieldContainer[LogStream]
    def __init__(self, entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., request_id: _Optional[str] = ..., streams: _Optional[_Iterable[_Union[LogStream, _Mapping]]] = ...) -> None: ...

class WriteLogEntriesResponse(_message.Message):
    __slots__ = ("accepted_count", "rejected_count", "rejected_entries", "duplicate_count")
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    accepted_count: int
    rejected_count: int
    rejected_entries: _containers.RepeatedCompositeFieldContainer[LogEntryRejection]
    duplicate_count: int
    def __init__(self, accepted_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejected_entries: _Optional[_Iterable[_Union[LogEntryRejection, _Mapping]]] = ..., duplicate_count: _Optional[int] = ...) -> None: ...

class StreamLogEntriesRequest(_message.Message):
    __slots__ = ("entries", "request_id", "streams")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    STREAMS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    request_id: str
    streams: _containers.RepeatedCompositeFieldContainer[LogStream]
    def __init__(self, entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., request_id: _Optional[str] = ..., streams: _Optional[_Iterable[_Union[LogStream, _Mapping]]] = ...) -> None: ...

class StreamLogEntriesResponse(_message.Message):
    __slots__ = ("batch_count", "accepted_count", "rejected_count", "rejected_entries", "duplicate_count")
    BATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_COUNT_FIELD_NUMBER: _ClassVar[int]
    REJECTED_ENTRIES_FIELD_NUMBER: _ClassVar[int]
    DUPLICATE_COUNT_FIELD_NUMBER: _ClassVar[int]
    batch_count: int
    accepted_count: int
    rejected_count: int
    rejected_entries: _containers.RepeatedCompositeFieldContainer[LogEntryRejection]
    duplicate_count: int
    def __init__(self, batch_count: _Optional[int] = ..., accepted_count: _Optional[int] = ..., rejected_count: _Optional[int] = ..., rejected_entries: _Optional[_Iterable[_Union[LogEntryRejection, _Mapping]]] = ..., duplicate_count: _Optional[int] = ...) -> None: ...

class AttributeCondition(_message.Message):
    __slots__ = ("key", "value")
    KEY_FIELD_NUMBER: _ClassVar[int]
    VALUE_FIELD_NUMBER: _ClassVar[int]
    key: str
    value: str
    def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...

class ListLogEntriesRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "services", "min_severity", "severities", "keyword", "attribute_filters", "attribute_conditions", "order_by", "page_size", "page_token")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FILTERS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    services: _containers.RepeatedScalarFieldContainer[str]
    min_severity: Severity
    severities: _containers.RepeatedScalarFieldContainer[Severity]
    keyword: str
    attribute_filters: _containers.RepeatedScalarFieldContainer[str]
    attribute_conditions: _containers.RepeatedCompositeFieldContainer[AttributeCondition]
    order_by: str
    page_size: int
    page_token: str
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., services: _Optional[_Iterable[str]] = ..., min_severity: _Optional[_Union[Severity, str]] = ..., severities: _Optional[_Iterable[_Union[Severity, str]]] = ..., keyword: _Optional[str] = ..., attribute_filters: _Optional[_Iterable[str]] = ..., attribute_conditions: _Optional[_Iterable[_Union[AttributeCondition, _Mapping]]] = ..., order_by: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListLogEntriesResponse(_message.Message):
    __slots__ = ("entries", "next_page_token")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    next_page_token: str
    def __init__(self, entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class TailLogEntriesRequest(_message.Message):
    __slots__ = ("services", "min_severity", "severities", "keyword", "attribute_filters", "attribute_conditions", "resume_token")
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FILTERS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    services: _containers.RepeatedScalarFieldContainer[str]
    min_severity: Severity
    severities: _containers.RepeatedScalarFieldContainer[Severity]
    keyword: str
    attribute_filters: _containers.RepeatedScalarFieldContainer[str]
    attribute_conditions: _containers.RepeatedCompositeFieldContainer[AttributeCondition]
    resume_token: str
    def __init__(self, services: _Optional[_Iterable[str]] = ..., min_severity: _Optional[_Union[Severity, str]] = ..., severities: _Optional[_Iterable[_Union[Severity, str]]] = ..., keyword: _Optional[str] = ..., attribute_filters: _Optional[_Iterable[str]] = ..., attribute_conditions: _Optional[_Iterable[_Union[AttributeCondition, _Mapping]]] = ..., resume_token: _Optional[str] = ...) -> None: ...

class TailLogEntriesResponse(_message.Message):
    __slots__ = ("entries", "resume_token", "skipped_count", "unopened_shards")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    SKIPPED_COUNT_FIELD_NUMBER: _ClassVar[int]
    UNOPENED_SHARDS_FIELD_NUMBER: _ClassVar[int]
    entries: _containers.RepeatedCompositeFieldContainer[LogEntry]
    resume_token: str
    skipped_count: int
    unopened_shards: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, entries: _Optional[_Iterable[_Union[LogEntry, _Mapping]]] = ..., resume_token: _Optional[str] = ..., skipped_count: _Optional[int] = ..., unopened_shards: _Optional[_Iterable[str]] = ...) -> None: ...

class GetLogStatsRequest(_message.Message):
    __slots__ = ("start_time", "end_time", "services", "min_severity", "histogram_step", "severities", "keyword", "attribute_filters", "attribute_conditions")
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    END_TIME_FIELD_NUMBER: _ClassVar[int]
    SERVICES_FIELD_NUMBER: _ClassVar[int]
    MIN_SEVERITY_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_STEP_FIELD_NUMBER: _ClassVar[int]
    SEVERITIES_FIELD_NUMBER: _ClassVar[int]
    KEYWORD_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_FILTERS_FIELD_NUMBER: _ClassVar[int]
    ATTRIBUTE_CONDITIONS_FIELD_NUMBER: _ClassVar[int]
    start_time: _timestamp_pb2.Timestamp
    end_time: _timestamp_pb2.Timestamp
    services: _containers.RepeatedScalarFieldContainer[str]
    min_severity: Severity
    histogram_step: _duration_pb2.Duration
    severities: _containers.RepeatedScalarFieldContainer[Severity]
    keyword: str
    attribute_filters: _containers.RepeatedScalarFieldContainer[str]
    attribute_conditions: _containers.RepeatedCompositeFieldContainer[AttributeCondition]
    def __init__(self, start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., end_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., services: _Optional[_Iterable[str]] = ..., min_severity: _Optional[_Union[Severity, str]] = ..., histogram_step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., severities: _Optional[_Iterable[_Union[Severity, str]]] = ..., keyword: _Optional[str] = ..., attribute_filters: _Optional[_Iterable[str]] = ..., attribute_conditions: _Optional[_Iterable[_Union[AttributeCondition, _Mapping]]] = ...) -> None: ...

class GetLogStatsResponse(_message.Message):
    __slots__ = ("total_count", "severity_counts", "service_counts", "histogram", "histogram_step", "ingest_counters")
    TOTAL_COUNT_FIELD_NUMBER: _ClassVar[int]
    SEVERITY_COUNTS_FIELD_NUMBER: _ClassVar[int]
    SERVICE_COUNTS_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_FIELD_NUMBER: _ClassVar[int]
    HISTOGRAM_STEP_FIELD_NUMBER: _ClassVar[int]
    INGEST_COUNTERS_FIELD_NUMBER: _ClassVar[int]
    total_count: int
    severity_counts: _containers.RepeatedCompositeFieldContainer[SeverityCount]
    service_counts: _containers.RepeatedCompositeFieldContainer[ServiceCount]
    histogram: _containers.RepeatedCompositeFieldContainer[HistogramBucket]
    histogram_step: _duration_pb2.Duration
    ingest_counters: IngestCounters
    def __init__(self, total_count: _Optional[int] = ..., severity_counts: _Optional[_Iterable[_Union[SeverityCount, _Mapping]]] = ..., service_counts: _Optional[_Iterable[_Union[ServiceCount, _Mapping]]] = ..., histogram: _Optional[_Iterable[_Union[HistogramBucket, _Mapping]]] = ..., histogram_step: _Optional[_Union[datetime.timedelta, _duration_pb2.Duration, _Mapping]] = ..., ingest_counters: _Optional[_Union[IngestCounters, _Mapping]] = ...) -> None: ...

class GetClusterStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetClusterStatusResponse(_message.Message):
    __slots__ = ("health", "shards", "observe_time", "placements")
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    OBSERVE_TIME_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_FIELD_NUMBER: _ClassVar[int]
    health: Health
    shards: _containers.RepeatedCompositeFieldContainer[ShardStatus]
    observe_time: _timestamp_pb2.Timestamp
    placements: _containers.RepeatedCompositeFieldContainer[ShardPlacement]
    def __init__(self, health: _Optional[_Union[Health, str]] = ..., shards: _Optional[_Iterable[_Union[ShardStatus, _Mapping]]] = ..., observe_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., placements: _Optional[_Iterable[_Union[ShardPlacement, _Mapping]]] = ...) -> None: ...

class GetRetentionPolicyRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetRetentionPolicyResponse(_message.Message):
    __slots__ = ("retention_policy",)
    RETENTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    retention_policy: RetentionPolicy
    def __init__(self, retention_policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...

class UpdateRetentionPolicyRequest(_message.Message):
    __slots__ = ("retention_policy", "update_mask")
    RETENTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    retention_policy: RetentionPolicy
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, retention_policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateRetentionPolicyResponse(_message.Message):
    __slots__ = ("retention_policy",)
    RETENTION_POLICY_FIELD_NUMBER: _ClassVar[int]
    retention_policy: RetentionPolicy
    def __init__(self, retention_policy: _Optional[_Union[RetentionPolicy, _Mapping]] = ...) -> None: ...
