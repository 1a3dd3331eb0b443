"""Names, amounts, dates and etags of the balances API, free of database types.

Every check raises `InvalidArgument` with a BadRequest violation that names
the request field, the rejected value and the fix.
"""

from __future__ import annotations

import re
from datetime import date
from typing import TypeVar

from google.type import date_pb2, money_pb2

from expense_service import money
from expense_service.currencies import UnknownCurrencyError, exponent
from splitlog_runtime.errors import invalid_field
from splitlog_runtime.resources import parse_name_ids
from splitlog_runtime.validation import (
    Violations,  # noqa: F401 (re-exported)
    check_record_date,
    date_example,
    date_given,
)

_T = TypeVar("_T")

USER_PATTERN = "users/{user}"
GROUP_PATTERN = "groups/{group}"
BALANCE_PATTERN = "groups/{group}/balance"
USER_BALANCE_PATTERN = "users/{user}/balance"
REPORT_PATTERN = "groups/{group}/report"
SETTLEMENT_PATTERN = "groups/{group}/settlements/{settlement}"
EXPENSE_PATTERN = "groups/{group}/expenses/{expense}"

GROUP_TYPE = "splitlog.dev/Group"
USER_TYPE = "splitlog.dev/User"
SETTLEMENT_TYPE = "splitlog.dev/Settlement"

# Any group id, for listing settlements across every group of a user.
ALL_GROUPS = "-"

_UUID = re.compile(
    r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"
)


def _parse_ids(name: str, pattern: str, field_path: str) -> tuple[str, ...]:
    return parse_name_ids(name, pattern, field_path)


def parse_user(name: str, field_path: str) -> str:
    """Return the id in `users/{user}`."""
    return _parse_ids(name, USER_PATTERN, field_path)[0]


def parse_group(name: str, field_path: str) -> str:
    """Return the id in `groups/{group}`."""
    return _parse_ids(name, GROUP_PATTERN, field_path)[0]


def parse_balance(name: str, field_path: str = "name") -> str:
    """Return the group id in `groups/{group}/balance`."""
    return _parse_ids(name, BALANCE_PATTERN, field_path)[0]


def parse_user_balance(name: str, field_path: str = "name") -> str:
    """Return the user id in `users/{user}/balance`."""
    return _parse_ids(name, USER_BALANCE_PATTERN, field_path)[0]


def parse_report(name: str, field_path: str = "name") -> str:
    """Return the group id in `groups/{group}/report`."""
    return _parse_ids(name, REPORT_PATTERN, field_path)[0]


def parse_settlement(name: str, field_path: str = "name") -> tuple[str, str]:
    """Return the group id and settlement id in a settlement name."""
    group_id, settlement_id = _parse_ids(name, SETTLEMENT_PATTERN, field_path)
    return group_id, settlement_id


def parse_expense(name: str, field_path: str) -> tuple[str, str]:
    """Return the group id and expense id in an expense name."""
    group_id, expense_id = _parse_ids(name, EXPENSE_PATTERN, field_path)
    return group_id, expense_id


def user_name(user_id: str) -> str:
    return f"users/{user_id}"


def group_name(group_id: str) -> str:
    return f"groups/{group_id}"


def settlement_name(group_id: str, settlement_id: str) -> str:
    return f"groups/{group_id}/settlements/{settlement_id}"


def expense_name(group_id: str, expense_id: str) -> str:
    return f"groups/{group_id}/expenses/{expense_id}"


# Money


def check_currency(code: str, field_path: str) -> str:
    """Check an ISO 4217 code that has a minor unit, such as `EUR`.

    Raises:
      InvalidArgument: the code is empty (reason REQUIRED) or unknown
        (reason INVALID_CURRENCY_CODE).
    """
    if not code:
        raise invalid_field(
            field_path,
            "is required; give an ISO 4217 code such as 'EUR'",
            reason="REQUIRED",
        )
    try:
        exponent(code)
    except UnknownCurrencyError as exc:
        raise invalid_field(
            field_path, str(exc), reason="INVALID_CURRENCY_CODE"
        ) from None
    return code


# The same bound as an expense's amounts: far above any real payment and far
# below 2**63. The sum of a group's settlements is capped as well
# (`expense_service.volumes`), so the BIGINT balance columns cannot overflow.
MAX_AMOUNT_MINOR = 10**15


def to_minor(amount: money_pb2.Money, field_path: str) -> tuple[str, int]:
    """Return the currency and the minor units of a settlement amount.

    An amount that is not positive passes, for the caller's own check, but
    an out-of-range one is rejected naming the range of a settlement amount:
    one minor unit to MAX_AMOUNT_MINOR.
    """
    currency = check_currency(amount.currency_code, f"{field_path}.currency_code")
    minor = minor_units(
        amount.units, amount.nanos, currency, field_path, 1, "a settlement amount"
    )
    return currency, minor


def minor_units(
    units: int,
    nanos: int,
    currency: str,
    field_path: str,
    low: int = -MAX_AMOUNT_MINOR,
    subject: str = "an amount",
) -> int:
    """Return the minor units of an amount in a currency already checked.

    Args:
      low: the smallest amount that the field accepts, named in the error of
        an amount beyond MAX_AMOUNT_MINOR either way.
      subject: what the field is, such as "a settlement amount".

    Raises:
      InvalidArgument: the amount is malformed, too precise for the
        currency, or larger than MAX_AMOUNT_MINOR either way.
    """
    try:
        minor = money.to_minor_units(units, nanos, currency)
    except money.MoneyError as exc:
        raise invalid_field(field_path, str(exc), reason=exc.reason) from None
    if abs(minor) > MAX_AMOUNT_MINOR:
        message = money.describe_out_of_range(
            minor, currency, low, MAX_AMOUNT_MINOR, subject
        )
        raise invalid_field(field_path, message, reason="AMOUNT_OUT_OF_RANGE")
    return minor


def to_money(amount_minor: int, currency: str) -> money_pb2.Money:
    """Build the `google.type.Money` of an amount in minor units."""
    units, nanos = money.from_minor_units(amount_minor, currency)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def format_money(amount_minor: int, currency: str) -> str:
    """Format an amount for messages, such as `12.50 EUR`."""
    return f"{money.format_amount(amount_minor, currency)} {currency}"


# Dates


def to_date(value: date_pb2.Date, field_path: str, query: bool = False) -> date:
    """Return a full calendar date; year, month and day must all be set.

    `query` marks a field that REST reads from the query string, whose
    error shows the query parameters too.
    """
    try:
        return date(value.year, value.month, value.day)
    except ValueError:
        raise invalid_field(
            field_path,
            f"{value.year:04d}-{value.month:02d}-{value.day:02d} is not a valid "
            f"calendar date; set year, month and day, "
            f"{date_example(field_path, query)}",
            reason="INVALID_DATE",
        ) from None


def to_settlement_date(value: date_pb2.Date, field_path: str) -> date:
    """Return the date of a settlement, which must be in the accepted range.

    The range is that of expense dates
    (`splitlog_runtime.validation.check_record_date`).
    """
    return check_record_date(to_date(value, field_path), field_path, "the payment")


def optional_date(message: object, name: str, field_path: str) -> date | None:
    """Return the date in field `name` of `message`, or None when it is unset.

    Only requests of GET routes have such optional dates, so REST reads them
    from the query string.
    """
    if not date_given(message, name):
        return None
    return to_date(getattr(message, name), field_path, query=True)


def date_message(value: date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


# Idempotency keys and etags


def check_request_id(value: str, field_path: str = "request_id") -> str:
    """Check an idempotency key and return it in lower case; empty stays empty."""
    if not value:
        return ""
    if not _UUID.fullmatch(value):
        raise invalid_field(
            field_path,
            f"{value!r} is not a UUID; send a fresh UUID in 8-4-4-4-12 form, such "
            "as '5f0c6d2e-8a41-4c3b-9a57-2f1e0b7d9c44', or leave it empty",
            reason="INVALID_REQUEST_ID",
        )
    return value.lower()


def format_etag(version: int) -> str:
    """Return the etag of a stored version, quoted as RFC 7232 requires."""
    return f'"{version}"'


def parse_etag(value: str, field_path: str = "etag") -> int | None:
    """Return the version inside an etag, or None when no etag was sent."""
    if not value:
        return None
    match = re.fullmatch(r'"([0-9]{1,18})"', value)
    if match is None:
        raise invalid_field(
            field_path,
            f"{value!r} is not an etag issued by this service; send the etag "
            "of the latest read, quotes included, such as '\"3\"', or none",
            reason="INVALID_ETAG",
        )
    return int(match.group(1))
