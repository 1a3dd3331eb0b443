import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.rpc import status_pb2 as _status_pb2
from google.type import money_pb2 as _money_pb2
from splitlog.balances.v1 import balances_service_pb2 as _balances_service_pb2
from splitlog.expenses.v1 import expenses_service_pb2 as _expenses_service_pb2
from splitlog.users.v1 import users_service_pb2 as _users_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SectionError(_message.Message):
    __slots__ = ("section", "status")
    SECTION_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    section: str
    status: _status_pb2.Status
    def __init__(self, section: _Optional[str] = ..., status: _Optional[_Union[_status_pb2.Status, _Mapping]] = ...) -> None: ...

class GroupSummary(_message.Message):
    __slots__ = ("group", "net_amounts", "former_member")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    FORMER_MEMBER_FIELD_NUMBER: _ClassVar[int]
    group: _users_service_pb2.Group
    net_amounts: _containers.RepeatedCompositeFieldContainer[_money_pb2.Money]
    former_member: bool
    def __init__(self, group: _Optional[_Union[_users_service_pb2.Group, _Mapping]] = ..., net_amounts: _Optional[_Iterable[_Union[_money_pb2.Money, _Mapping]]] = ..., former_member: _Optional[bool] = ...) -> None: ...

class ActivityItem(_message.Message):
    __slots__ = ("activity_time", "group", "expense", "settlement")
    ACTIVITY_TIME_FIELD_NUMBER: _ClassVar[int]
    GROUP_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    activity_time: _timestamp_pb2.Timestamp
    group: str
    expense: _expenses_service_pb2.Expense
    settlement: _balances_service_pb2.Settlement
    def __init__(self, activity_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., group: _Optional[str] = ..., expense: _Optional[_Union[_expenses_service_pb2.Expense, _Mapping]] = ..., settlement: _Optional[_Union[_balances_service_pb2.Settlement, _Mapping]] = ...) -> None: ...

class GetGroupOverviewRequest(_message.Message):
    __slots__ = ("group", "recent_expense_count")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    RECENT_EXPENSE_COUNT_FIELD_NUMBER: _ClassVar[int]
    group: str
    recent_expense_count: int
    def __init__(self, group: _Optional[str] = ..., recent_expense_count: _Optional[int] = ...) -> None: ...

class GetGroupOverviewResponse(_message.Message):
    __slots__ = ("group", "members", "balance", "settlement_plan", "recent_expenses", "section_errors")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    MEMBERS_FIELD_NUMBER: _ClassVar[int]
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_PLAN_FIELD_NUMBER: _ClassVar[int]
    RECENT_EXPENSES_FIELD_NUMBER: _ClassVar[int]
    SECTION_ERRORS_FIELD_NUMBER: _ClassVar[int]
    group: _users_service_pb2.Group
    members: _containers.RepeatedCompositeFieldContainer[_users_service_pb2.Member]
    balance: _balances_service_pb2.GroupBalance
    settlement_plan: _containers.RepeatedCompositeFieldContainer[_balances_service_pb2.Transfer]
    recent_expenses: _containers.RepeatedCompositeFieldContainer[_expenses_service_pb2.Expense]
    section_errors: _containers.RepeatedCompositeFieldContainer[SectionError]
    def __init__(self, group: _Optional[_Union[_users_service_pb2.Group, _Mapping]] = ..., members: _Optional[_Iterable[_Union[_users_service_pb2.Member, _Mapping]]] = ..., balance: _Optional[_Union[_balances_service_pb2.GroupBalance, _Mapping]] = ..., settlement_plan: _Optional[_Iterable[_Union[_balances_service_pb2.Transfer, _Mapping]]] = ..., recent_expenses: _Optional[_Iterable[_Union[_expenses_service_pb2.Expense, _Mapping]]] = ..., section_errors: _Optional[_Iterable[_Union[SectionError, _Mapping]]] = ...) -> None: ...

class GetUserDashboardRequest(_message.Message):
    __slots__ = ("user", "recent_activity_count")
    USER_FIELD_NUMBER: _ClassVar[int]
    RECENT_ACTIVITY_COUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    recent_activity_count: int
    def __init__(self, user: _Optional[str] = ..., recent_activity_count: _Optional[int] = ...) -> None: ...

class GetUserDashboardResponse(_message.Message):
    __slots__ = ("user", "group_summaries", "total_net_amounts", "recent_activity", "section_errors")
    USER_FIELD_NUMBER: _ClassVar[int]
    GROUP_SUMMARIES_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NET_AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    RECENT_ACTIVITY_FIELD_NUMBER: _ClassVar[int]
    SECTION_ERRORS_FIELD_NUMBER: _ClassVar[int]
    user: _users_service_pb2.User
    group_summaries: _containers.RepeatedCompositeFieldContainer[GroupSummary]
    total_net_amounts: _containers.RepeatedCompositeFieldContainer[_money_pb2.Money]
    recent_activity: _containers.RepeatedCompositeFieldContainer[ActivityItem]
    section_errors: _containers.RepeatedCompositeFieldContainer[SectionError]
    def __init__(self, user: _Optional[_Union[_users_service_pb2.User, _Mapping]] = ..., group_summaries: _Optional[_Iterable[_Union[GroupSummary, _Mapping]]] = ..., total_net_amounts: _Optional[_Iterable[_Union[_money_pb2.Money, _Mapping]]] = ..., recent_activity: _Optional[_Iterable[_Union[ActivityItem, _Mapping]]] = ..., section_errors: _Optional[_Iterable[_Union[SectionError, _Mapping]]] = ...) -> None: ...
