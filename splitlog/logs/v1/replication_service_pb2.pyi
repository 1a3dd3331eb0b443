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
    __slots__ = ("shard", "role", "leader_epoch", "last_sequence", "commit_sequence", "followers", "last_record_epoch", "ready")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    FOLLOWERS_FIELD_NUMBER: _ClassVar[int]
    LAST_RECORD_EPOCH_FIELD_NUMBER: _ClassVar[int]
    READY_FIELD_NUMBER: _ClassVar[int]
    shard: str
    role: _logs_service_pb2.ReplicaRole
    leader_epoch: int
    last_sequence: int
    commit_sequence: int
    followers: _containers.RepeatedCompositeFieldContainer[_logs_service_pb2.ReplicaStatus]
    last_record_epoch: int
    ready: bool
    def __init__(self, shard: _Optional[str] = ..., role: _Optional[_Union[_logs_service_pb2.ReplicaRole, str]] = ..., leader_epoch: _Optional[int] = ..., last_sequence: _Optional[int] = ..., commit_sequence: _Optional[int] = ..., followers: _Optional[_Iterable[_Union[_logs_service_pb2.ReplicaStatus, _Mapping]]] = ..., last_record_epoch: _Optional[int] = ..., ready: _Optional[bool] = ...) -> None: ...

class ReplicateEntriesRequest(_message.Message):
    __slots__ = ("shard", "leader", "leader_epoch", "records", "commit_sequence", "truncate_after")
    SHARD_FIELD_NUMBER: _ClassVar[int]
    LEADER_FIELD_NUMBER: _ClassVar[int]
    LEADER_EPOCH_FIELD_NUMBER: _ClassVar[int]
    RECORDS_FIELD_NUMBER: _ClassVar[int]
    COMMIT_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    TRUNCATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    shard: str
    leader: str
    leader_epoch: int
    records: _containers.RepeatedCompositeFieldContainer[_node_service_pb2.LogRecord]
    commit_sequence: int
    truncate_after: int
    def __init__(self, shard: _Optional[str] = ..., leader: _Optional[str] = ..., leader_epoch: _Optional[int] = ..., records: _Optional[_Iterable[_Union[_node_service_pb2.LogRecord, _Mapping]]] = ..., commit_sequence: _Optional[int] = ..., truncate_after: _Optional[int] = ...) -> None: ...

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
