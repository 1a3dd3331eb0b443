import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from google.type import money_pb2 as _money_pb2
from splitlog.expenses.v1 import expenses_service_pb2 as _expenses_service_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class GroupBalance(_message.Message):
    __slots__ = ("name", "currency_balances", "settled", "update_time")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_BALANCES_FIELD_NUMBER: _ClassVar[int]
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    name: str
    currency_balances: _containers.RepeatedCompositeFieldContainer[CurrencyBalance]
    settled: bool
    update_time: _timestamp_pb2.Timestamp
    def __init__(self, name: _Optional[str] = ..., currency_balances: _Optional[_Iterable[_Union[CurrencyBalance, _Mapping]]] = ..., settled: _Optional[bool] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class CurrencyBalance(_message.Message):
    __slots__ = ("currency_code", "member_balances")
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    MEMBER_BALANCES_FIELD_NUMBER: _ClassVar[int]
    currency_code: str
    member_balances: _containers.RepeatedCompositeFieldContainer[MemberBalance]
    def __init__(self, currency_code: _Optional[str] = ..., member_balances: _Optional[_Iterable[_Union[MemberBalance, _Mapping]]] = ...) -> None: ...

class MemberBalance(_message.Message):
    __slots__ = ("user", "net_amount")
    USER_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    net_amount: _money_pb2.Money
    def __init__(self, user: _Optional[str] = ..., net_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class UserBalance(_message.Message):
    __slots__ = ("name", "total_net_amounts", "group_balances", "counterparty_balances")
    NAME_FIELD_NUMBER: _ClassVar[int]
    TOTAL_NET_AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    GROUP_BALANCES_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_BALANCES_FIELD_NUMBER: _ClassVar[int]
    name: str
    total_net_amounts: _containers.RepeatedCompositeFieldContainer[_money_pb2.Money]
    group_balances: _containers.RepeatedCompositeFieldContainer[UserGroupBalance]
    counterparty_balances: _containers.RepeatedCompositeFieldContainer[CounterpartyBalance]
    def __init__(self, name: _Optional[str] = ..., total_net_amounts: _Optional[_Iterable[_Union[_money_pb2.Money, _Mapping]]] = ..., group_balances: _Optional[_Iterable[_Union[UserGroupBalance, _Mapping]]] = ..., counterparty_balances: _Optional[_Iterable[_Union[CounterpartyBalance, _Mapping]]] = ...) -> None: ...

class CounterpartyBalance(_message.Message):
    __slots__ = ("user", "net_amount", "group_amounts")
    USER_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    GROUP_AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    user: str
    net_amount: _money_pb2.Money
    group_amounts: _containers.RepeatedCompositeFieldContainer[CounterpartyGroupAmount]
    def __init__(self, user: _Optional[str] = ..., net_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., group_amounts: _Optional[_Iterable[_Union[CounterpartyGroupAmount, _Mapping]]] = ...) -> None: ...

class CounterpartyGroupAmount(_message.Message):
    __slots__ = ("group", "net_amount")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    group: str
    net_amount: _money_pb2.Money
    def __init__(self, group: _Optional[str] = ..., net_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class UserGroupBalance(_message.Message):
    __slots__ = ("group", "net_amounts")
    GROUP_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    group: str
    net_amounts: _containers.RepeatedCompositeFieldContainer[_money_pb2.Money]
    def __init__(self, group: _Optional[str] = ..., net_amounts: _Optional[_Iterable[_Union[_money_pb2.Money, _Mapping]]] = ...) -> None: ...

class PairwiseBalance(_message.Message):
    __slots__ = ("debtor", "creditor", "amount")
    DEBTOR_FIELD_NUMBER: _ClassVar[int]
    CREDITOR_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    debtor: str
    creditor: str
    amount: _money_pb2.Money
    def __init__(self, debtor: _Optional[str] = ..., creditor: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class BalanceContribution(_message.Message):
    __slots__ = ("source", "description", "date", "paid_amount", "owed_amount", "net_change", "running_net_amount")
    SOURCE_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    DATE_FIELD_NUMBER: _ClassVar[int]
    PAID_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    OWED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NET_CHANGE_FIELD_NUMBER: _ClassVar[int]
    RUNNING_NET_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    source: str
    description: str
    date: _date_pb2.Date
    paid_amount: _money_pb2.Money
    owed_amount: _money_pb2.Money
    net_change: _money_pb2.Money
    running_net_amount: _money_pb2.Money
    def __init__(self, source: _Optional[str] = ..., description: _Optional[str] = ..., date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., paid_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., owed_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., net_change: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., running_net_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class Transfer(_message.Message):
    __slots__ = ("payer", "payee", "amount")
    PAYER_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    payer: str
    payee: str
    amount: _money_pb2.Money
    def __init__(self, payer: _Optional[str] = ..., payee: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class GroupReport(_message.Message):
    __slots__ = ("name", "currency_code", "start_date", "end_date", "total_spent", "expense_count", "category_totals", "member_totals", "month_totals")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SPENT_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_COUNT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_TOTALS_FIELD_NUMBER: _ClassVar[int]
    MEMBER_TOTALS_FIELD_NUMBER: _ClassVar[int]
    MONTH_TOTALS_FIELD_NUMBER: _ClassVar[int]
    name: str
    currency_code: str
    start_date: _date_pb2.Date
    end_date: _date_pb2.Date
    total_spent: _money_pb2.Money
    expense_count: int
    category_totals: _containers.RepeatedCompositeFieldContainer[CategoryTotal]
    member_totals: _containers.RepeatedCompositeFieldContainer[MemberTotal]
    month_totals: _containers.RepeatedCompositeFieldContainer[MonthTotal]
    def __init__(self, name: _Optional[str] = ..., currency_code: _Optional[str] = ..., start_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., end_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., total_spent: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., expense_count: _Optional[int] = ..., category_totals: _Optional[_Iterable[_Union[CategoryTotal, _Mapping]]] = ..., member_totals: _Optional[_Iterable[_Union[MemberTotal, _Mapping]]] = ..., month_totals: _Optional[_Iterable[_Union[MonthTotal, _Mapping]]] = ...) -> None: ...

class CategoryTotal(_message.Message):
    __slots__ = ("category", "amount", "expense_count")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_COUNT_FIELD_NUMBER: _ClassVar[int]
    category: _expenses_service_pb2.Category
    amount: _money_pb2.Money
    expense_count: int
    def __init__(self, category: _Optional[_Union[_expenses_service_pb2.Category, str]] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., expense_count: _Optional[int] = ...) -> None: ...

class MemberTotal(_message.Message):
    __slots__ = ("user", "paid_amount", "owed_amount", "net_amount")
    USER_FIELD_NUMBER: _ClassVar[int]
    PAID_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    OWED_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    NET_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    paid_amount: _money_pb2.Money
    owed_amount: _money_pb2.Money
    net_amount: _money_pb2.Money
    def __init__(self, user: _Optional[str] = ..., paid_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., owed_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., net_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class MonthTotal(_message.Message):
    __slots__ = ("month", "amount", "expense_count")
    MONTH_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_COUNT_FIELD_NUMBER: _ClassVar[int]
    month: _date_pb2.Date
    amount: _money_pb2.Money
    expense_count: int
    def __init__(self, month: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., expense_count: _Optional[int] = ...) -> None: ...

class Settlement(_message.Message):
    __slots__ = ("name", "payer", "payee", "amount", "settlement_date", "note", "creator", "create_time", "update_time", "delete_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    PAYER_FIELD_NUMBER: _ClassVar[int]
    PAYEE_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_DATE_FIELD_NUMBER: _ClassVar[int]
    NOTE_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    payer: str
    payee: str
    amount: _money_pb2.Money
    settlement_date: _date_pb2.Date
    note: str
    creator: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., payer: _Optional[str] = ..., payee: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., settlement_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., note: _Optional[str] = ..., creator: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class GetGroupBalanceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetGroupBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: GroupBalance
    def __init__(self, balance: _Optional[_Union[GroupBalance, _Mapping]] = ...) -> None: ...

class GetUserBalanceRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetUserBalanceResponse(_message.Message):
    __slots__ = ("balance",)
    BALANCE_FIELD_NUMBER: _ClassVar[int]
    balance: UserBalance
    def __init__(self, balance: _Optional[_Union[UserBalance, _Mapping]] = ...) -> None: ...

class ListPairwiseBalancesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "currency_code", "user")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    currency_code: str
    user: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., currency_code: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class ListPairwiseBalancesResponse(_message.Message):
    __slots__ = ("pairwise_balances", "next_page_token")
    PAIRWISE_BALANCES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    pairwise_balances: _containers.RepeatedCompositeFieldContainer[PairwiseBalance]
    next_page_token: str
    def __init__(self, pairwise_balances: _Optional[_Iterable[_Union[PairwiseBalance, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class ExplainBalanceRequest(_message.Message):
    __slots__ = ("name", "user", "currency_code", "counterparty", "page_size", "page_token")
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    COUNTERPARTY_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    name: str
    user: str
    currency_code: str
    counterparty: str
    page_size: int
    page_token: str
    def __init__(self, name: _Optional[str] = ..., user: _Optional[str] = ..., currency_code: _Optional[str] = ..., counterparty: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ExplainBalanceResponse(_message.Message):
    __slots__ = ("net_amount", "contributions", "next_page_token", "circular_debt_adjustment", "pairwise_amount")
    NET_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    CONTRIBUTIONS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    CIRCULAR_DEBT_ADJUSTMENT_FIELD_NUMBER: _ClassVar[int]
    PAIRWISE_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    net_amount: _money_pb2.Money
    contributions: _containers.RepeatedCompositeFieldContainer[BalanceContribution]
    next_page_token: str
    circular_debt_adjustment: _money_pb2.Money
    pairwise_amount: _money_pb2.Money
    def __init__(self, net_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., contributions: _Optional[_Iterable[_Union[BalanceContribution, _Mapping]]] = ..., next_page_token: _Optional[str] = ..., circular_debt_adjustment: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., pairwise_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class ComputeSettlementPlanRequest(_message.Message):
    __slots__ = ("name", "currency_code")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    name: str
    currency_code: str
    def __init__(self, name: _Optional[str] = ..., currency_code: _Optional[str] = ...) -> None: ...

class ComputeSettlementPlanResponse(_message.Message):
    __slots__ = ("transfers", "fewest_transfers")
    TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    FEWEST_TRANSFERS_FIELD_NUMBER: _ClassVar[int]
    transfers: _containers.RepeatedCompositeFieldContainer[Transfer]
    fewest_transfers: bool
    def __init__(self, transfers: _Optional[_Iterable[_Union[Transfer, _Mapping]]] = ..., fewest_transfers: _Optional[bool] = ...) -> None: ...

class CheckSettledRequest(_message.Message):
    __slots__ = ("name", "user")
    NAME_FIELD_NUMBER: _ClassVar[int]
    USER_FIELD_NUMBER: _ClassVar[int]
    name: str
    user: str
    def __init__(self, name: _Optional[str] = ..., user: _Optional[str] = ...) -> None: ...

class CheckSettledResponse(_message.Message):
    __slots__ = ("settled", "unsettled_balances")
    SETTLED_FIELD_NUMBER: _ClassVar[int]
    UNSETTLED_BALANCES_FIELD_NUMBER: _ClassVar[int]
    settled: bool
    unsettled_balances: _containers.RepeatedCompositeFieldContainer[MemberBalance]
    def __init__(self, settled: _Optional[bool] = ..., unsettled_balances: _Optional[_Iterable[_Union[MemberBalance, _Mapping]]] = ...) -> None: ...

class GetGroupReportRequest(_message.Message):
    __slots__ = ("name", "currency_code", "start_date", "end_date")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    name: str
    currency_code: str
    start_date: _date_pb2.Date
    end_date: _date_pb2.Date
    def __init__(self, name: _Optional[str] = ..., currency_code: _Optional[str] = ..., start_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., end_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ...) -> None: ...

class GetGroupReportResponse(_message.Message):
    __slots__ = ("report",)
    REPORT_FIELD_NUMBER: _ClassVar[int]
    report: GroupReport
    def __init__(self, report: _Optional[_Union[GroupReport, _Mapping]] = ...) -> None: ...

class CreateSettlementRequest(_message.Message):
    __slots__ = ("parent", "settlement", "settlement_id", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    SETTLEMENT_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    settlement: Settlement
    settlement_id: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., settlement: _Optional[_Union[Settlement, _Mapping]] = ..., settlement_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateSettlementResponse(_message.Message):
    __slots__ = ("settlement",)
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    settlement: Settlement
    def __init__(self, settlement: _Optional[_Union[Settlement, _Mapping]] = ...) -> None: ...

class GetSettlementRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetSettlementResponse(_message.Message):
    __slots__ = ("settlement",)
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    settlement: Settlement
    def __init__(self, settlement: _Optional[_Union[Settlement, _Mapping]] = ...) -> None: ...

class ListSettlementsRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "participant", "start_date", "end_date", "show_deleted", "order_by")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    participant: str
    start_date: _date_pb2.Date
    end_date: _date_pb2.Date
    show_deleted: bool
    order_by: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., participant: _Optional[str] = ..., start_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., end_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., show_deleted: _Optional[bool] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListSettlementsResponse(_message.Message):
    __slots__ = ("settlements", "next_page_token")
    SETTLEMENTS_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    settlements: _containers.RepeatedCompositeFieldContainer[Settlement]
    next_page_token: str
    def __init__(self, settlements: _Optional[_Iterable[_Union[Settlement, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class DeleteSettlementRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class DeleteSettlementResponse(_message.Message):
    __slots__ = ("settlement",)
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    settlement: Settlement
    def __init__(self, settlement: _Optional[_Union[Settlement, _Mapping]] = ...) -> None: ...

class UndeleteSettlementRequest(_message.Message):
    __slots__ = ("name", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ...) -> None: ...

class UndeleteSettlementResponse(_message.Message):
    __slots__ = ("settlement",)
    SETTLEMENT_FIELD_NUMBER: _ClassVar[int]
    settlement: Settlement
    def __init__(self, settlement: _Optional[_Union[Settlement, _Mapping]] = ...) -> None: ...
