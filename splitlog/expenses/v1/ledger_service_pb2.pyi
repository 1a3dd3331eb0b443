import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from google.type import money_pb2 as _money_pb2
from splitlog.expenses.v1 import expenses_service_pb2 as _expenses_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LedgerEventType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LEDGER_EVENT_TYPE_UNSPECIFIED: _ClassVar[LedgerEventType]
    LEDGER_EVENT_TYPE_CREATED: _ClassVar[LedgerEventType]
    LEDGER_EVENT_TYPE_UPDATED: _ClassVar[LedgerEventType]
    LEDGER_EVENT_TYPE_DELETED: _ClassVar[LedgerEventType]
    LEDGER_EVENT_TYPE_RESTORED: _ClassVar[LedgerEventType]
LEDGER_EVENT_TYPE_UNSPECIFIED: LedgerEventType
LEDGER_EVENT_TYPE_CREATED: LedgerEventType
LEDGER_EVENT_TYPE_UPDATED: LedgerEventType
LEDGER_EVENT_TYPE_DELETED: LedgerEventType
LEDGER_EVENT_TYPE_RESTORED: LedgerEventType

class LedgerEvent(_message.Message):
    __slots__ = ("sequence", "expense", "group", "revision", "type", "deleted", "currency_code", "expense_date", "category", "description", "lines", "total", "commit_time")
    SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    REVISION_FIELD_NUMBER: _ClassVar[int]
    TYPE_FIELD_NUMBER: _ClassVar[int]
    DELETED_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_DATE_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    LINES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    COMMIT_TIME_FIELD_NUMBER: _ClassVar[int]
    sequence: int
    expense: str
    group: str
    revision: int
    type: LedgerEventType
    deleted: bool
    currency_code: str
    expense_date: _date_pb2.Date
    category: _expenses_service_pb2.Category
    description: str
    lines: _containers.RepeatedCompositeFieldContainer[LedgerLine]
    total: _money_pb2.Money
    commit_time: _timestamp_pb2.Timestamp
    def __init__(self, sequence: _Optional[int] = ..., expense: _Optional[str] = ..., group: _Optional[str] = ..., revision: _Optional[int] = ..., type: _Optional[_Union[LedgerEventType, str]] = ..., deleted: _Optional[bool] = ..., currency_code: _Optional[str] = ..., expense_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., category: _Optional[_Union[_expenses_service_pb2.Category, str]] = ..., description: _Optional[str] = ..., lines: _Optional[_Iterable[_Union[LedgerLine, _Mapping]]] = ..., total: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., commit_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class LedgerLine(_message.Message):
    __slots__ = ("user", "paid", "owed")
    USER_FIELD_NUMBER: _ClassVar[int]
    PAID_FIELD_NUMBER: _ClassVar[int]
    OWED_FIELD_NUMBER: _ClassVar[int]
    user: str
    paid: _money_pb2.Money
    owed: _money_pb2.Money
    def __init__(self, user: _Optional[str] = ..., paid: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., owed: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class StreamLedgerEventsRequest(_message.Message):
    __slots__ = ("after_sequence",)
    AFTER_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    after_sequence: int
    def __init__(self, after_sequence: _Optional[int] = ...) -> None: ...

class StreamLedgerEventsResponse(_message.Message):
    __slots__ = ("events",)
    EVENTS_FIELD_NUMBER: _ClassVar[int]
    events: _containers.RepeatedCompositeFieldContainer[LedgerEvent]
    def __init__(self, events: _Optional[_Iterable[_Union[LedgerEvent, _Mapping]]] = ...) -> None: ...

class GetLedgerPositionRequest(_message.Message):
    __slots__ = ("group",)
    GROUP_FIELD_NUMBER: _ClassVar[int]
    group: str
    def __init__(self, group: _Optional[str] = ...) -> None: ...

class GetLedgerPositionResponse(_message.Message):
    __slots__ = ("last_sequence",)
    LAST_SEQUENCE_FIELD_NUMBER: _ClassVar[int]
    last_sequence: int
    def __init__(self, last_sequence: _Optional[int] = ...) -> None: ...
