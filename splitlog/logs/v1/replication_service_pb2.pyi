import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from splitlog.logs.v1 import logs_service_pb2 as _logs_service_pb2
from splitlog.logs.v1 import node_service_pb2 as _node_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ShardReplica(_message.Message):
    __slots__ = ("shard", "role", "leader_epoch", "last_sequence", "commit_sequence", "followers", "last_record_epoch", "ready", "snapshot", "installed_snapshot_sequence", "log_damage")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    LAST_RECORD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    INSTALLED_SNAPSHOT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LOG_DAMAGE_FIELD_NUMBER: _ClassVar[int]
    shard: str
    role: _logs_service_pb2.ReplicaRole
    leader_epoch: int
    last_sequence: int
    commit_sequence: int
    followers: _containers.RepeatedCompositeFieldContainer[_logs_service_pb2.ReplicaStatus]
    last_record_epoch: int
    ready: bool
    snapshot: _logs_service_pb2.SnapshotProgress
    installed_snapshot_sequence: int
    log_damage: _logs_service_pb2.LogDamage
    def __init__(self, shard: _Optional[str] = ..., role: _Optional[_Union[_logs_service_pb2.ReplicaRole, str]] = ..., leader_epoch: _Optional[int] = ..., last_sequence: _Optional[int] = ..., commit_sequence: _Optional[int] = ..., followers: _Optional[_Iterable[_Union[_logs_service_pb2.ReplicaStatus, _Mapping]]] = ..., last_record_epoch: _Optional[int] = ..., ready: _Optional[bool] = ..., snapshot: _Optional[_Union[_logs_service_pb2.SnapshotProgress, _Mapping]] = ..., installed_snapshot_sequence: _Optional[int] = ..., log_damage: _Optional[_Union[_logs_service_pb2.LogDamage, _Mapping]] = ...) -> None: ...

class ReplicateEntriesRequest(_message.Message):
    __slots__ = ("shard", "leader", "leader_epoch", "records", "commit_sequence", "truncate_after", "snapshot")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    SNAPSHOT_FIELD_NUMBER: _ClassVar[int]
    shard: str
    leader: str
    leader_epoch: int
    records: _containers.RepeatedCompositeFieldContainer[_node_service_pb2.LogRecord]
    commit_sequence: int
    truncate_after: int
    snapshot: SnapshotOffer
    def __init__(self, shard: _Optional[str] = ..., leader: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., records: _Optional[_Iterable[_Union[_node_service_pb2.LogRecord, _Mapping]]] = ..., commit_sequence: _Optional[int] = ..., truncate_after: _Optional[int] = ..., snapshot: _Optional[_Union[SnapshotOffer, _Mapping]] = ...) -> None: ...

class SnapshotOffer(_message.Message):
    __slots__ = ("address", "first_sequence")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    address: str
    first_sequence: int
    def __init__(self, address: _Optional[str] = ..., first_sequence: _Optional[int] = ...) -> None: ...

class FetchSnapshotRequest(_message.Message):
    __slots__ = ("shard", "node", "leader_epoch")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    shard: str
    node: str
    leader_epoch: int
    def __init__(self, shard: _Optional[str] = ..., node: _Optional[str] = ..., leader_epoch: _Optional[int] = ...) -> None: ...

class FetchSnapshotResponse(_message.Message):
    __slots__ = ("header", "entries", "batches", "trailer")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    TRAILER_FIELD_NUMBER: _ClassVar[int]
    header: SnapshotHeader
    entries: SnapshotEntries
    batches: SnapshotBatches
    trailer: SnapshotTrailer
    def __init__(self, header: _Optional[_Union[SnapshotHeader, _Mapping]] = ..., entries: _Optional[_Union[SnapshotEntries, _Mapping]] = ..., batches: _Optional[_Union[SnapshotBatches, _Mapping]] = ..., trailer: _Optional[_Union[SnapshotTrailer, _Mapping]] = ...) -> None: ...

class SnapshotHeader(_message.Message):
    __slots__ = ("last_sequence", "last_record_epoch", "epochs")
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LAST_RECORD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    EPOCHS_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    last_record_epoch: int
    epochs: _containers.RepeatedCompositeFieldContainer[EpochStart]
    def __init__(self, last_sequence: _Optional[int] = ..., last_record_epoch: _Optional[int] = ..., epochs: _Optional[_Iterable[_Union[EpochStart, _Mapping]]] = ...) -> None: ...

class EpochStart(_message.Message):
    __slots__ = ("epoch", "first_sequence")
    EPOCH_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    epoch: int
    first_sequence: int
    def __init__(self, epoch: _Optional[int] = ..., first_sequence: _Optional[int] = ...) -> None: ...

class SnapshotEntries(_message.Message):
    __slots__ = ("entries", "sequences", "crc32")
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    entries: _node_service_pb2.EntryColumns
    sequences: _containers.RepeatedScalarFieldContainer[int]
    crc32: int
    def __init__(self, entries: _Optional[_Union[_node_service_pb2.EntryColumns, _Mapping]] = ..., sequences: _Optional[_Iterable[int]] = ..., crc32: _Optional[int] = ...) -> None: ...

class SnapshotBatches(_message.Message):
    __slots__ = ("batches",)
    BATCHES_FIELD_NUMBER: _ClassVar[int]
    batches: _containers.RepeatedCompositeFieldContainer[SnapshotBatch]
    def __init__(self, batches: _Optional[_Iterable[_Union[SnapshotBatch, _Mapping]]] = ...) -> None: ...

class SnapshotBatch(_message.Message):
    __slots__ = ("batch_id", "first_sequence", "count", "index_runs")
    BATCH_ID_FIELD_NUMBER: _ClassVar[int]
    FIRST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_RUNS_FIELD_NUMBER: _ClassVar[int]
    batch_id: str
    first_sequence: int
    count: int
    index_runs: _containers.RepeatedScalarFieldContainer[int]
    def __init__(self, batch_id: _Optional[str] = ..., first_sequence: _Optional[int] = ..., count: _Optional[int] = ..., index_runs: _Optional[_Iterable[int]] = ...) -> None: ...

class SnapshotTrailer(_message.Message):
    __slots__ = ("entry_count", "batch_count", "crc32")
    ENTRY_COUNT_FIELD_NUMBER: _ClassVar[int]
    BATCH_COUNT_FIELD_NUMBER: _ClassVar[int]
    CRC32_FIELD_NUMBER: _ClassVar[int]
    entry_count: int
    batch_count: int
    crc32: int
    def __init__(self, entry_count: _Optional[int] = ..., batch_count: _Optional[int] = ..., crc32: _Optional[int] = ...) -> None: ...

class ReplicateEntriesResponse(_message.Message):
    __slots__ = ("node", "last_sequence", "leader_epoch", "last_record_epoch")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_RECORD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    node: str
    last_sequence: int
    leader_epoch: int
    last_record_epoch: int
    def __init__(self, node: _Optional[str] = ..., last_sequence: _Optional[int] = ..., leader_epoch: _Optional[int] = ..., last_record_epoch: _Optional[int] = ...) -> None: ...

class GetNodeStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetNodeStatusResponse(_message.Message):
    __slots__ = ("node", "address", "shards", "start_time")
    NODE_FIELD_NUMBER: _ClassVar[int]
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    SHARDS_FIELD_NUMBER: _ClassVar[int]
    START_TIME_FIELD_NUMBER: _ClassVar[int]
    node: str
    address: str
    shards: _containers.RepeatedCompositeFieldContainer[ShardReplica]
    start_time: _timestamp_pb2.Timestamp
    def __init__(self, node: _Optional[str] = ..., address: _Optional[str] = ..., shards: _Optional[_Iterable[_Union[ShardReplica, _Mapping]]] = ..., start_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...
