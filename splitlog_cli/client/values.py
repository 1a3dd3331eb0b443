"""Parse command-line values into the messages of the splitlog API.

Every parser raises `UsageError` with a message that names the option, the
value and the expected form, so that the command exits with status 2 before
it sends anything. Amounts are parsed from their decimal text into whole
minor units and then into `google.type.Money`; no float is ever involved.
"""

from __future__ import annotations

import datetime
import re
from decimal import Decimal

from google.protobuf import timestamp_pb2
from google.type import date_pb2, money_pb2

from expense_service.currencies import UnknownCurrencyError
from expense_service.money import (
    MoneyError,
    format_amount,
    from_minor_units,
    parse_decimal_amount,
)
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb2

# A percentage: digits with at most two decimals, such as 25, 33.3 or 33.33.
_PERCENT_TEXT = re.compile(r"(?P<whole>[0-9]+)(?:\.(?P<fraction>[0-9]{1,2}))?\Z")
_DATE_TEXT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}\Z")
_MIXED_KINDS = ("amount", "percent", "shares")
SPLIT_TYPES = {
    "equal": expenses_pb2.SPLIT_TYPE_EQUAL,
    "exact": expenses_pb2.SPLIT_TYPE_EXACT,
    "percent": expenses_pb2.SPLIT_TYPE_PERCENTAGE,
    "shares": expenses_pb2.SPLIT_TYPE_SHARES,
    "mixed": expenses_pb2.SPLIT_TYPE_MIXED,
}
MAX_INT32 = 2**31 - 1
# The times that a google.protobuf.Timestamp can hold, in nanoseconds since
# the Unix epoch: from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_NS = -62_135_596_800 * 10**9
MAX_TIMESTAMP_NS = 253_402_300_800 * 10**9 - 1
TIMESTAMP_RANGE = (
    "a time from 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z "
    "(the years 1 to 9999)"
)


class UsageError(ValueError):
    """A command-line value that cannot be used; the command exits with 2."""


def invalid(option: str, value: str, problem: str) -> UsageError:
    """Return the error for `value` given to `option`, with what to write instead."""
    return UsageError(f"invalid value {value!r} for {option}: {problem}")


def timestamp(
    ns: int, option: str, text: str, problem: str | None = None
) -> timestamp_pb2.Timestamp:
    """Return the Timestamp of `ns`, the value of `option` written as `text`.

    Raises:
      UsageError: the time is before the year 1 or after the year 9999, which
        a Timestamp cannot hold. `problem`, when given, replaces the default
        description and fix.
    """
    if not MIN_TIMESTAMP_NS <= ns <= MAX_TIMESTAMP_NS:
        if problem is None:
            side = "before the year 1" if ns < 0 else "after the year 9999"
            problem = f"the time is {side}; give {TIMESTAMP_RANGE}"
        raise invalid(option, text, problem)
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(ns)
    return stamp


def resource_name(value: str, collection: str, option: str) -> str:
    """Return `collection/value`, or `value` itself when it is already a name.

    `alice` and `users/alice` both give `users/alice` for the `users`
    collection.
    """
    prefix = f"{collection}/"
    name = value if value.startswith(prefix) else prefix + value
    identifier = name[len(prefix) :]
    if not identifier or "/" in identifier:
        raise invalid(
            option, value, f"expected an id such as 'alice' or a name '{prefix}ID'"
        )
    return name


def recorder_help(fallback: str) -> str:
    """Return the help text of a `--by` option whose last default is `fallback`."""
    return (
        "who records it (default: the signed-in user, that is the user of the "
        "access token in --token or SPLITLOG_TOKEN or of the saved session; "
        "with an API key, the key's owner, whom the server fills in; without "
        f"a credential, {fallback})"
    )


def recorder(by: str | None, default: str | None, fallback: str) -> str:
    """Return who records a write: `--by`, else `default`, else `fallback`.

    `default` is `Context.default_recorder`: the signed-in user, or "" for a
    credential that names no user, which leaves the field for the server to
    fill with the caller. With authentication on, a user who is not an
    administrator may record writes only in their own name, so both come
    before a `fallback` taken from the write itself.
    """
    if by:
        return resource_name(by, "users", "--by")
    return fallback if default is None else default


def child_name(value: str, collection: str, option: str) -> str:
    """Check a name such as `groups/trip/expenses/dinner` and return it."""
    parts = value.split("/")
    if len(parts) != 4 or parts[0] != "groups" or parts[2] != collection:
        raise invalid(
            option,
            value,
            f"expected a full name such as 'groups/GROUP/{collection}/ID'",
        )
    if not parts[1] or not parts[3]:
        raise invalid(option, value, "the group id and the id must not be empty")
    return value


def parse_minor_units(text: str, currency_code: str, option: str) -> int:
    """Parse decimal text such as `12.34` or `-5` into whole minor units.

    Raises:
      UsageError: the text is not a plain decimal number, has digits below
        the currency's minor unit, or the currency code is unknown.
    """
    try:
        return parse_decimal_amount(text, currency_code)
    except UnknownCurrencyError as exc:
        raise invalid("--currency", currency_code, str(exc)) from None
    except MoneyError as exc:
        raise invalid(option, text, str(exc)) from None


def money(amount_minor: int, currency_code: str, option: str) -> money_pb2.Money:
    """Build the Money of an amount in minor units.

    Raises:
      UsageError: the amount does not fit `google.type.Money`.
    """
    try:
        units, nanos = from_minor_units(amount_minor, currency_code)
    except MoneyError as exc:
        raise UsageError(f"{option}: {exc}") from None
    return money_pb2.Money(currency_code=currency_code, units=units, nanos=nanos)


def parse_money(text: str, currency_code: str, option: str) -> money_pb2.Money:
    """Parse decimal text such as `12.34` or `-5` into an exact Money.

    Raises:
      UsageError: as `parse_minor_units`, or the amount is out of range.
    """
    minor = parse_minor_units(text, currency_code, option)
    return money(minor, currency_code, option)


def parse_basis_points(text: str, option: str) -> int:
    """Parse a percentage such as `33.33` into basis points (3333).

    Raises:
      UsageError: the text is not a number from 0 to 100 with at most two
        decimals.
    """
    match = _PERCENT_TEXT.match(text)
    if match is None:
        raise invalid(
            option,
            text,
            "expected a percentage from 0 to 100 with at most two decimals, "
            "such as 25 or 33.33, without a % sign",
        )
    basis_points = int(Decimal(text) * 100)
    if basis_points > 10_000:
        raise invalid(option, text, "a percentage cannot be over 100")
    return basis_points


def parse_shares(text: str, option: str) -> int:
    """Parse a whole number of shares, 0 or more.

    Raises:
      UsageError: the text is not a whole number from 0 to 2147483647.
    """
    if not text.isascii() or not text.isdigit() or int(text) > MAX_INT32:
        raise invalid(
            option,
            text,
            "expected a whole number of shares, 0 or more, such as 1 or 2; "
            "scale fractional weights up (1.5 and 1 become 3 and 2)",
        )
    return int(text)


def split_assignment(text: str, option: str) -> tuple[str, str | None]:
    """Split `USER=VALUE` into the user and the value, which may be absent."""
    user, sep, value = text.partition("=")
    if not user:
        raise invalid(option, text, "expected USER or USER=VALUE")
    if sep and not value:
        raise invalid(option, text, "the value after '=' is empty")
    return user, value if sep else None


def parse_participant(
    text: str, split: str, currency_code: str
) -> expenses_pb2.SplitParticipant:
    """Parse one `--participant USER[=VALUE]` for the given split type.

    The value is absent for `equal`, an amount for `exact`, a percentage for
    `percent` (absent takes a part of the remaining percentage), a whole
    number for `shares` (absent is 1 share), and `amount:X`, `percent:P` or
    `shares:N` for `mixed`.

    Raises:
      UsageError: the user or the value does not fit the split type.
    """
    option = "--participant"
    user, value = split_assignment(text, option)
    participant = expenses_pb2.SplitParticipant(
        user=resource_name(user, "users", option)
    )
    # An invalid value names its whole option, such as `--participant
    # alice=1.5`, so that the user sees which participant is wrong.
    value_option = f"{option} {text}"
    if split == "equal":
        if value is not None:
            raise invalid(option, text, "an equal split takes no value; write USER")
    elif split == "exact":
        if value is None:
            raise invalid(option, text, "an exact split needs USER=AMOUNT")
        participant.exact_amount.CopyFrom(
            parse_money(value, currency_code, value_option)
        )
    elif split == "percent":
        if value is not None:
            participant.basis_points = parse_basis_points(value, value_option)
    elif split == "shares":
        participant.shares = 1 if value is None else parse_shares(value, value_option)
    elif split == "mixed":
        _set_mixed_value(participant, text, value, currency_code)
    else:
        raise invalid("--split", split, "expected " + ", ".join(SPLIT_TYPES))
    return participant


def _set_mixed_value(
    participant: expenses_pb2.SplitParticipant,
    text: str,
    value: str | None,
    currency_code: str,
) -> None:
    option = "--participant"
    kind, _, number = (value or "").partition(":")
    if kind not in _MIXED_KINDS or not number:
        raise invalid(
            option,
            text,
            "a mixed split needs USER=amount:X, USER=percent:P or USER=shares:N",
        )
    value_option = f"{option} {text}"
    if kind == "amount":
        amount = parse_money(number, currency_code, value_option)
        participant.exact_amount.CopyFrom(amount)
    elif kind == "percent":
        participant.basis_points = parse_basis_points(number, value_option)
    else:
        participant.shares = parse_shares(number, value_option)


def parse_payers(
    texts: list[str], total_minor: int, currency_code: str
) -> list[expenses_pb2.Payer]:
    """Parse the `--paid-by USER[=AMOUNT]` options into payers.

    At most one payer may leave out the amount. That payer pays what the
    others do not, so a single `--paid-by alice` pays the whole total.

    Raises:
      UsageError: a value is invalid, two payers leave out the amount, or the
        amounts given leave nothing for the payer without one.
    """
    option = "--paid-by"
    parsed: list[tuple[str, int | None]] = []
    for text in texts:
        user, value = split_assignment(text, option)
        name = resource_name(user, "users", option)
        minor = None
        if value is not None:
            minor = parse_minor_units(value, currency_code, f"{option} {text}")
        parsed.append((name, minor))
    open_payers = [name for name, minor in parsed if minor is None]
    if len(open_payers) > 1:
        raise UsageError(
            f"--paid-by: {', '.join(open_payers)} have no amount; give every "
            "payer but one an amount, such as --paid-by alice=10.00"
        )
    paid_minor = sum(minor for _, minor in parsed if minor is not None)
    rest_minor = total_minor - paid_minor
    if open_payers:
        _check_rest(open_payers[0], rest_minor, paid_minor, total_minor, currency_code)
    return [
        expenses_pb2.Payer(
            user=name,
            amount=money(rest_minor if minor is None else minor, currency_code, option),
        )
        for name, minor in parsed
    ]


def _check_rest(
    payer: str, rest_minor: int, paid_minor: int, total_minor: int, currency_code: str
) -> None:
    """Check that the payer without an amount is left some of the total to pay.

    The server rejects a payer's amount that is zero or of the other sign than
    the total, which here would be an amount that the user never typed.

    A zero total is left to the server, which rejects it with its own reason.

    Raises:
      UsageError: the other payers' amounts reach or pass the total.
    """
    if total_minor == 0 or rest_minor * total_minor > 0:
        return
    paid = f"{format_amount(paid_minor, currency_code)} {currency_code}"
    total = f"{format_amount(total_minor, currency_code)} {currency_code}"
    verb = "equal" if rest_minor == 0 else "exceed"
    raise UsageError(
        f"--paid-by: the payers' amounts {paid} {verb} the total {total}, so "
        f"nothing is left for {payer}, who has no amount; lower them so that "
        f"{payer} takes the rest, or give each payer an amount so that they add "
        "up to the total"
    )


def parse_date(text: str, option: str) -> date_pb2.Date:
    """Parse a YYYY-MM-DD calendar date into a `google.type.Date`.

    Raises:
      UsageError: the text is not a valid date in that form.
    """
    if not _DATE_TEXT.match(text):
        raise invalid(option, text, "expected a date such as 2024-05-31")
    try:
        day = datetime.date.fromisoformat(text)
    except ValueError:
        raise invalid(
            option,
            text,
            "no such day in the calendar; give a day that exists in that month, "
            "such as 2024-05-31",
        ) from None
    return to_proto_date(day)


def to_proto_date(day: datetime.date) -> date_pb2.Date:
    """Convert a `datetime.date` to a `google.type.Date`."""
    return date_pb2.Date(year=day.year, month=day.month, day=day.day)


def category_key(value: str) -> str:
    """Return the command-line key of a category: `dining-out` for DINING_OUT."""
    return value.removeprefix("CATEGORY_").lower().replace("_", "-")


def parse_category(text: str, option: str = "--category") -> int:
    """Parse a category such as `dining-out`, `Dining out` or `DINING_OUT`.

    Raises:
      UsageError: the text names no category.
    """
    key = re.sub(r"[^a-z0-9]+", "-", text.strip().lower()).strip("-")
    key = key.removeprefix("category-")
    for name, number in expenses_pb2.Category.items():
        if number and category_key(name) == key:
            return number
    choices = ", ".join(
        category_key(name) for name, number in expenses_pb2.Category.items() if number
    )
    raise invalid(option, text, f"expected one of {choices}")
