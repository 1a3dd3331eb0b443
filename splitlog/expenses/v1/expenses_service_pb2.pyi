import datetime

from google.api import annotations_pb2 as _annotations_pb2
from google.api import field_behavior_pb2 as _field_behavior_pb2
from google.api import resource_pb2 as _resource_pb2
from google.protobuf import field_mask_pb2 as _field_mask_pb2
from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.type import date_pb2 as _date_pb2
from google.type import money_pb2 as _money_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Category(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CATEGORY_UNSPECIFIED: _ClassVar[Category]
    CATEGORY_GENERAL: _ClassVar[Category]
    CATEGORY_FOOD_AND_DRINK: _ClassVar[Category]
    CATEGORY_GROCERIES: _ClassVar[Category]
    CATEGORY_DINING_OUT: _ClassVar[Category]
    CATEGORY_TRANSPORTATION: _ClassVar[Category]
    CATEGORY_TRAVEL: _ClassVar[Category]
    CATEGORY_RENT: _ClassVar[Category]
    CATEGORY_UTILITIES: _ClassVar[Category]
    CATEGORY_ENTERTAINMENT: _ClassVar[Category]
    CATEGORY_SHOPPING: _ClassVar[Category]
    CATEGORY_HOUSEHOLD_SUPPLIES: _ClassVar[Category]
    CATEGORY_FURNITURE: _ClassVar[Category]
    CATEGORY_MAINTENANCE: _ClassVar[Category]
    CATEGORY_CLOTHING: _ClassVar[Category]
    CATEGORY_MEDICAL: _ClassVar[Category]
    CATEGORY_INSURANCE: _ClassVar[Category]
    CATEGORY_GIFTS: _ClassVar[Category]
    CATEGORY_EDUCATION: _ClassVar[Category]
    CATEGORY_CHILDCARE: _ClassVar[Category]
    CATEGORY_PETS: _ClassVar[Category]
    CATEGORY_SPORTS: _ClassVar[Category]
    CATEGORY_TAXES: _ClassVar[Category]

class SplitType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SPLIT_TYPE_UNSPECIFIED: _ClassVar[SplitType]
    SPLIT_TYPE_EQUAL: _ClassVar[SplitType]
    SPLIT_TYPE_EXACT: _ClassVar[SplitType]
    SPLIT_TYPE_PERCENTAGE: _ClassVar[SplitType]
    SPLIT_TYPE_SHARES: _ClassVar[SplitType]
    SPLIT_TYPE_MIXED: _ClassVar[SplitType]
CATEGORY_UNSPECIFIED: Category
CATEGORY_GENERAL: Category
CATEGORY_FOOD_AND_DRINK: Category
CATEGORY_GROCERIES: Category
CATEGORY_DINING_OUT: Category
CATEGORY_TRANSPORTATION: Category
CATEGORY_TRAVEL: Category
CATEGORY_RENT: Category
CATEGORY_UTILITIES: Category
CATEGORY_ENTERTAINMENT: Category
CATEGORY_SHOPPING: Category
CATEGORY_HOUSEHOLD_SUPPLIES: Category
CATEGORY_FURNITURE: Category
CATEGORY_MAINTENANCE: Category
CATEGORY_CLOTHING: Category
CATEGORY_MEDICAL: Category
CATEGORY_INSURANCE: Category
CATEGORY_GIFTS: Category
CATEGORY_EDUCATION: Category
CATEGORY_CHILDCARE: Category
CATEGORY_PETS: Category
CATEGORY_SPORTS: Category
CATEGORY_TAXES: Category
SPLIT_TYPE_UNSPECIFIED: SplitType
SPLIT_TYPE_EQUAL: SplitType
SPLIT_TYPE_EXACT: SplitType
SPLIT_TYPE_PERCENTAGE: SplitType
SPLIT_TYPE_SHARES: SplitType
SPLIT_TYPE_MIXED: SplitType

class Expense(_message.Message):
    __slots__ = ("name", "description", "category", "expense_date", "currency_code", "total", "payers", "split", "owed_amounts", "notes", "creator", "last_modifier", "create_time", "update_time", "delete_time", "etag")
    NAME_FIELD_NUMBER: _ClassVar[int]
    DESCRIPTION_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_DATE_FIELD_NUMBER: _ClassVar[int]
    CURRENCY_CODE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PAYERS_FIELD_NUMBER: _ClassVar[int]
    SPLIT_FIELD_NUMBER: _ClassVar[int]
    OWED_AMOUNTS_FIELD_NUMBER: _ClassVar[int]
    NOTES_FIELD_NUMBER: _ClassVar[int]
    CREATOR_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIER_FIELD_NUMBER: _ClassVar[int]
    CREATE_TIME_FIELD_NUMBER: _ClassVar[int]
    UPDATE_TIME_FIELD_NUMBER: _ClassVar[int]
    DELETE_TIME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    name: str
    description: str
    category: Category
    expense_date: _date_pb2.Date
    currency_code: str
    total: _money_pb2.Money
    payers: _containers.RepeatedCompositeFieldContainer[Payer]
    split: Split
    owed_amounts: _containers.RepeatedCompositeFieldContainer[OwedAmount]
    notes: str
    creator: str
    last_modifier: str
    create_time: _timestamp_pb2.Timestamp
    update_time: _timestamp_pb2.Timestamp
    delete_time: _timestamp_pb2.Timestamp
    etag: str
    def __init__(self, name: _Optional[str] = ..., description: _Optional[str] = ..., category: _Optional[_Union[Category, str]] = ..., expense_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., currency_code: _Optional[str] = ..., total: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., payers: _Optional[_Iterable[_Union[Payer, _Mapping]]] = ..., split: _Optional[_Union[Split, _Mapping]] = ..., owed_amounts: _Optional[_Iterable[_Union[OwedAmount, _Mapping]]] = ..., notes: _Optional[str] = ..., creator: _Optional[str] = ..., last_modifier: _Optional[str] = ..., create_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., update_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., delete_time: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ..., etag: _Optional[str] = ...) -> None: ...

class Payer(_message.Message):
    __slots__ = ("user", "amount")
    USER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    amount: _money_pb2.Money
    def __init__(self, user: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class Split(_message.Message):
    __slots__ = ("type", "participants")
    TYPE_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    type: SplitType
    participants: _containers.RepeatedCompositeFieldContainer[SplitParticipant]
    def __init__(self, type: _Optional[_Union[SplitType, str]] = ..., participants: _Optional[_Iterable[_Union[SplitParticipant, _Mapping]]] = ...) -> None: ...

class SplitParticipant(_message.Message):
    __slots__ = ("user", "exact_amount", "basis_points", "shares")
    USER_FIELD_NUMBER: _ClassVar[int]
    EXACT_AMOUNT_FIELD_NUMBER: _ClassVar[int]
    BASIS_POINTS_FIELD_NUMBER: _ClassVar[int]
    SHARES_FIELD_NUMBER: _ClassVar[int]
    user: str
    exact_amount: _money_pb2.Money
    basis_points: int
    shares: int
    def __init__(self, user: _Optional[str] = ..., exact_amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ..., basis_points: _Optional[int] = ..., shares: _Optional[int] = ...) -> None: ...

class OwedAmount(_message.Message):
    __slots__ = ("user", "amount")
    USER_FIELD_NUMBER: _ClassVar[int]
    AMOUNT_FIELD_NUMBER: _ClassVar[int]
    user: str
    amount: _money_pb2.Money
    def __init__(self, user: _Optional[str] = ..., amount: _Optional[_Union[_money_pb2.Money, _Mapping]] = ...) -> None: ...

class CategoryInfo(_message.Message):
    __slots__ = ("category", "display_name", "parent_category")
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    DISPLAY_NAME_FIELD_NUMBER: _ClassVar[int]
    PARENT_CATEGORY_FIELD_NUMBER: _ClassVar[int]
    category: Category
    display_name: str
    parent_category: Category
    def __init__(self, category: _Optional[_Union[Category, str]] = ..., display_name: _Optional[str] = ..., parent_category: _Optional[_Union[Category, str]] = ...) -> None: ...

class CreateExpenseRequest(_message.Message):
    __slots__ = ("parent", "expense", "expense_id", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    EXPENSE_ID_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    expense: Expense
    expense_id: str
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., expense: _Optional[_Union[Expense, _Mapping]] = ..., expense_id: _Optional[str] = ..., request_id: _Optional[str] = ...) -> None: ...

class CreateExpenseResponse(_message.Message):
    __slots__ = ("expense",)
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    expense: Expense
    def __init__(self, expense: _Optional[_Union[Expense, _Mapping]] = ...) -> None: ...

class BatchCreateExpensesRequest(_message.Message):
    __slots__ = ("parent", "requests", "request_id")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    parent: str
    requests: _containers.RepeatedCompositeFieldContainer[CreateExpenseRequest]
    request_id: str
    def __init__(self, parent: _Optional[str] = ..., requests: _Optional[_Iterable[_Union[CreateExpenseRequest, _Mapping]]] = ..., request_id: _Optional[str] = ...) -> None: ...

class BatchCreateExpensesResponse(_message.Message):
    __slots__ = ("expenses",)
    EXPENSES_FIELD_NUMBER: _ClassVar[int]
    expenses: _containers.RepeatedCompositeFieldContainer[Expense]
    def __init__(self, expenses: _Optional[_Iterable[_Union[Expense, _Mapping]]] = ...) -> None: ...

class GetExpenseRequest(_message.Message):
    __slots__ = ("name",)
    NAME_FIELD_NUMBER: _ClassVar[int]
    name: str
    def __init__(self, name: _Optional[str] = ...) -> None: ...

class GetExpenseResponse(_message.Message):
    __slots__ = ("expense",)
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    expense: Expense
    def __init__(self, expense: _Optional[_Union[Expense, _Mapping]] = ...) -> None: ...

class ListExpensesRequest(_message.Message):
    __slots__ = ("parent", "page_size", "page_token", "participant", "category", "start_date", "end_date", "show_deleted", "order_by")
    PARENT_FIELD_NUMBER: _ClassVar[int]
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    PARTICIPANT_FIELD_NUMBER: _ClassVar[int]
    CATEGORY_FIELD_NUMBER: _ClassVar[int]
    START_DATE_FIELD_NUMBER: _ClassVar[int]
    END_DATE_FIELD_NUMBER: _ClassVar[int]
    SHOW_DELETED_FIELD_NUMBER: _ClassVar[int]
    ORDER_BY_FIELD_NUMBER: _ClassVar[int]
    parent: str
    page_size: int
    page_token: str
    participant: str
    category: Category
    start_date: _date_pb2.Date
    end_date: _date_pb2.Date
    show_deleted: bool
    order_by: str
    def __init__(self, parent: _Optional[str] = ..., page_size: _Optional[int] = ..., page_token: _Optional[str] = ..., participant: _Optional[str] = ..., category: _Optional[_Union[Category, str]] = ..., start_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., end_date: _Optional[_Union[_date_pb2.Date, _Mapping]] = ..., show_deleted: _Optional[bool] = ..., order_by: _Optional[str] = ...) -> None: ...

class ListExpensesResponse(_message.Message):
    __slots__ = ("expenses", "next_page_token")
    EXPENSES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    expenses: _containers.RepeatedCompositeFieldContainer[Expense]
    next_page_token: str
    def __init__(self, expenses: _Optional[_Iterable[_Union[Expense, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...

class UpdateExpenseRequest(_message.Message):
    __slots__ = ("expense", "update_mask")
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    UPDATE_MASK_FIELD_NUMBER: _ClassVar[int]
    expense: Expense
    update_mask: _field_mask_pb2.FieldMask
    def __init__(self, expense: _Optional[_Union[Expense, _Mapping]] = ..., update_mask: _Optional[_Union[_field_mask_pb2.FieldMask, _Mapping]] = ...) -> None: ...

class UpdateExpenseResponse(_message.Message):
    __slots__ = ("expense",)
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    expense: Expense
    def __init__(self, expense: _Optional[_Union[Expense, _Mapping]] = ...) -> None: ...

class DeleteExpenseRequest(_message.Message):
    __slots__ = ("name", "etag", "last_modifier")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIER_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    last_modifier: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., last_modifier: _Optional[str] = ...) -> None: ...

class DeleteExpenseResponse(_message.Message):
    __slots__ = ("expense",)
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    expense: Expense
    def __init__(self, expense: _Optional[_Union[Expense, _Mapping]] = ...) -> None: ...

class UndeleteExpenseRequest(_message.Message):
    __slots__ = ("name", "etag", "last_modifier")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ETAG_FIELD_NUMBER: _ClassVar[int]
    LAST_MODIFIER_FIELD_NUMBER: _ClassVar[int]
    name: str
    etag: str
    last_modifier: str
    def __init__(self, name: _Optional[str] = ..., etag: _Optional[str] = ..., last_modifier: _Optional[str] = ...) -> None: ...

class UndeleteExpenseResponse(_message.Message):
    __slots__ = ("expense",)
    EXPENSE_FIELD_NUMBER: _ClassVar[int]
    expense: Expense
    def __init__(self, expense: _Optional[_Union[Expense, _Mapping]] = ...) -> None: ...

class ListCategoriesRequest(_message.Message):
    __slots__ = ("page_size", "page_token")
    PAGE_SIZE_FIELD_NUMBER: _ClassVar[int]
    PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    page_size: int
    page_token: str
    def __init__(self, page_size: _Optional[int] = ..., page_token: _Optional[str] = ...) -> None: ...

class ListCategoriesResponse(_message.Message):
    __slots__ = ("categories", "next_page_token")
    CATEGORIES_FIELD_NUMBER: _ClassVar[int]
    NEXT_PAGE_TOKEN_FIELD_NUMBER: _ClassVar[int]
    categories: _containers.RepeatedCompositeFieldContainer[CategoryInfo]
    next_page_token: str
    def __init__(self, categories: _Optional[_Iterable[_Union[CategoryInfo, _Mapping]]] = ..., next_page_token: _Optional[str] = ...) -> None: ...
