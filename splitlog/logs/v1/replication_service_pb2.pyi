import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from splitlog.logs.v1 import logs_service_pb2 as _logs_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class ReplicatedEntry(_message.Message):
    __slots__ = ("sequence", "entry")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    ENTRY_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    entry: _logs_service_pb2.LogEntry
    def __init__(self, sequence: _Optional[int] = ..., entry: _Optional[_Union[_logs_service_pb2.LogEntry, _Mapping]] = ...) -> None: ...

class ShardReplica(_message.Message):
    __slots__ = ("shard", "role", "leader_epoch", "last_sequence", "commit_sequence", "followers")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    shard: str
    role: _logs_service_pb2.ReplicaRole
    leader_epoch: int
    last_sequence: int
    commit_sequence: int
    followers: _containers.RepeatedCompositeFieldContainer[_logs_service_pb2.ReplicaStatus]
    def __init__(self, shard: _Optional[str] = ..., role: _Optional[_Union[_logs_service_pb2.ReplicaRole, str]] = ..., leader_epoch: _Optional[int] = ..., last_sequence: _Optional[int] = ..., commit_sequence: _Optional[int] = ..., followers: _Optional[_Iterable[_Union[_logs_service_pb2.ReplicaStatus, _Mapping]]] = ...) -> None: ...

class ReplicateEntriesRequest(_message.Message):
    __slots__ = ("shard", "leader", "leader_epoch", "entries", "commit_sequence")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    ENTRIES_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    shard: str
    leader: str
    leader_epoch: int
    entries: _containers.RepeatedCompositeFieldContainer[ReplicatedEntry]
    commit_sequence: int
    def __init__(self, shard: _Optional[str] = ..., leader: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., entries: _Optional[_Iterable[_Union[ReplicatedEntry, _Mapping]]] = ..., commit_sequence: _Optional[int] = ...) -> None: ...

class ReplicateEntriesResponse(_message.Message):
    __slots__ = ("node", "last_sequence", "leader_epoch")
    NODE_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    node: str
    last_sequence: int
    leader_epoch: int
    def __init__(self, node: _Optional[str] = ..., last_sequence: _Optional[int] = ..., leader_epoch: _Optional[int] = ...) -> None: ...

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
