"""Conversions between the import's plain values and protobuf messages.

Also the walk over every page of a List call, which import and export share.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterator

from google.type import date_pb2, money_pb2

from expense_service.money import from_minor_units, to_minor_units


def to_money(amount: int, currency: str) -> money_pb2.Money:
    """Return minor units of a currency as a `google.type.Money`."""
    units, nanos = from_minor_units(amount, currency)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def to_minor(money: money_pb2.Money) -> int:
    """Return a `google.type.Money` as minor units of its currency."""
    return to_minor_units(money.units, money.nanos, money.currency_code)


def to_date(day: datetime.date) -> date_pb2.Date:
    """Return a date as a `google.type.Date`."""
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def to_day(value: date_pb2.Date) -> datetime.date:
    """Return a full `google.type.Date` as a date."""
    return datetime.date(value.year, value.month, value.day)


def pages(fetch: Callable[[str], object], field: str) -> Iterator:
    """Yield the items in `field` of every page that `fetch(page_token)` returns."""
    token = ""
    while True:
        response = fetch(token)
        yield from getattr(response, field)
        token = response.next_page_token
        if not token:
            return
