"""Validation rules of the expenses API, free of gRPC servers and databases.

Every check raises `InvalidArgument` with a BadRequest violation that names
the request field (such as `expense.payers[1].amount`), the rejected value
and the fix. Amounts leave this module as integer minor units; the currency
of each amount travels with it until `check_expense` compares it with the
total's currency.
"""

from __future__ import annotations

import datetime
import functools
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

from google.type import date_pb2, money_pb2

from expense_service import money, splits
from expense_service.currencies import UnknownCurrencyError
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog_runtime import limits, masks
from splitlog_runtime.errors import InvalidArgument, invalid_field
from splitlog_runtime.etags import format_etag, parse_etag  # noqa: F401 (re-exported)
from splitlog_runtime.idempotency import validate_request_id  # noqa: F401 (re-exported)
from splitlog_runtime.resources import check_id, parse_name_ids
from splitlog_runtime.validation import (  # noqa: F401 (Violations re-exported)
    NOTE_CONTROLS,
    Violations,
    check_record_date,
    date_example,
    date_given,
    find_control_character,
)

_T = TypeVar("_T")

EXPENSE_PATTERN = "groups/{group}/expenses/{expense}"
GROUP_PATTERN = "groups/{group}"
USER_PATTERN = "users/{user}"
EXPENSE_TYPE = "splitlog.dev/Expense"
GROUP_TYPE = "splitlog.dev/Group"
#: The parent that lists one participant's expenses across every group.
ALL_GROUPS = "groups/-"

#: Largest total, payer amount or exact amount, in minor units. The sum of
#: a group's amounts is capped too (`expense_service.volumes`), so that the
#: balances that add them up stay inside a signed 64-bit integer.
MAX_AMOUNT_MINOR = 10**15


# Categories


@dataclass(frozen=True)
class CategoryInfo:
    """A category with the English name clients display and its menu parent."""

    category: int
    display_name: str
    parent: int = pb.CATEGORY_UNSPECIFIED


#: Every category, in the order clients show them. The names are the ones
#: Splitwise users know; a subcategory names its broader category as parent.
CATEGORIES: tuple[CategoryInfo, ...] = (
    CategoryInfo(pb.CATEGORY_GENERAL, "General"),
    CategoryInfo(pb.CATEGORY_FOOD_AND_DRINK, "Food and drink"),
    CategoryInfo(pb.CATEGORY_GROCERIES, "Groceries", pb.CATEGORY_FOOD_AND_DRINK),
    CategoryInfo(pb.CATEGORY_DINING_OUT, "Dining out", pb.CATEGORY_FOOD_AND_DRINK),
    CategoryInfo(pb.CATEGORY_TRANSPORTATION, "Transportation"),
    CategoryInfo(pb.CATEGORY_TRAVEL, "Travel"),
    CategoryInfo(pb.CATEGORY_RENT, "Rent"),
    CategoryInfo(pb.CATEGORY_UTILITIES, "Utilities"),
    CategoryInfo(pb.CATEGORY_ENTERTAINMENT, "Entertainment"),
    CategoryInfo(pb.CATEGORY_SPORTS, "Sports", pb.CATEGORY_ENTERTAINMENT),
    CategoryInfo(pb.CATEGORY_SHOPPING, "Shopping"),
    CategoryInfo(pb.CATEGORY_CLOTHING, "Clothing", pb.CATEGORY_SHOPPING),
    CategoryInfo(pb.CATEGORY_GIFTS, "Gifts", pb.CATEGORY_SHOPPING),
    CategoryInfo(pb.CATEGORY_HOUSEHOLD_SUPPLIES, "Household supplies"),
    CategoryInfo(pb.CATEGORY_FURNITURE, "Furniture"),
    CategoryInfo(pb.CATEGORY_MAINTENANCE, "Maintenance"),
    CategoryInfo(pb.CATEGORY_MEDICAL, "Medical expenses"),
    CategoryInfo(pb.CATEGORY_INSURANCE, "Insurance"),
    CategoryInfo(pb.CATEGORY_EDUCATION, "Education"),
    CategoryInfo(pb.CATEGORY_CHILDCARE, "Childcare"),
    CategoryInfo(pb.CATEGORY_PETS, "Pets"),
    CategoryInfo(pb.CATEGORY_TAXES, "Taxes"),
)
_KNOWN_CATEGORIES = frozenset(info.category for info in CATEGORIES)


def validate_category(value: int, field: str) -> int:
    """Return the category to store: CATEGORY_GENERAL when unset.

    Raises:
      InvalidArgument: the number is not a value of the Category enum.
    """
    if value == pb.CATEGORY_UNSPECIFIED:
        return pb.CATEGORY_GENERAL
    if value not in _KNOWN_CATEGORIES:
        raise invalid_field(
            field,
            f"{value} is not a known category; list them with ListCategories, "
            "or leave the field unset for CATEGORY_GENERAL",
            reason="INVALID_CATEGORY",
        )
    return value


def validate_category_filter(value: int, field: str) -> int | None:
    """Return the category a list filters on, or None for every category."""
    if value == pb.CATEGORY_UNSPECIFIED:
        return None
    return validate_category(value, field)


# Names and ids


def _parse_ids(name: str, pattern: str, field: str) -> tuple[str, ...]:
    if len(name) <= _MAX_CACHED_NAME:
        ids = _valid_ids(name, pattern)
        if ids is not None:
            return ids
    return _check_ids(name, pattern, field)


# Longer names are never valid (an id has at most 63 characters), and a cache
# of long names would hold memory that callers choose.
_MAX_CACHED_NAME = 160


@functools.lru_cache(maxsize=4096)
def _valid_ids(name: str, pattern: str) -> tuple[str, ...] | None:
    """Return the ids of a valid name, or None for an invalid one.

    Results are cached because every create names the same few members.
    """
    try:
        return _check_ids(name, pattern, "")
    except InvalidArgument:
        return None


def _check_ids(name: str, pattern: str, field: str) -> tuple[str, ...]:
    return parse_name_ids(name, pattern, field)


def parse_expense_name(name: str, field: str) -> tuple[str, str]:
    """Return the group id and expense id in `groups/{group}/expenses/{expense}`.

    Raises:
      InvalidArgument: the name is empty or malformed.
    """
    group_id, expense_id = _parse_ids(name, EXPENSE_PATTERN, field)
    return group_id, expense_id


def parse_group_name(name: str, field: str) -> str:
    """Return the id in `groups/{group}`.

    Raises:
      InvalidArgument: the name is empty or malformed.
    """
    return _parse_ids(name, GROUP_PATTERN, field)[0]


def parse_user_name(name: str, field: str) -> str:
    """Return the id in `users/{user}`.

    Raises:
      InvalidArgument: the name is empty or malformed.
    """
    return _parse_ids(name, USER_PATTERN, field)[0]


def validate_user_name(name: str, field: str) -> str:
    """Check a `users/{user}` name and return it unchanged."""
    parse_user_name(name, field)
    return name


def validate_new_id(value: str, field: str) -> str:
    """Check a client-chosen expense id; see `splitlog_runtime.resources.check_id`."""
    return check_id(value, field)


def expense_name(group_id: str, expense_id: str) -> str:
    return f"groups/{group_id}/expenses/{expense_id}"


def group_name(group_id: str) -> str:
    return f"groups/{group_id}"


# Texts and dates


def _is_visible(char: str) -> bool:
    """Return whether `char` shows on its own: not a space, a format character
    such as U+200B ZERO WIDTH SPACE, or a combining mark."""
    category = unicodedata.category(char)
    return not (char.isspace() or category in ("Cf", "Zs") or category[0] == "M")


def validate_description(value: str, field: str) -> str:
    """Check a description and return it with surrounding whitespace removed.

    Raises:
      InvalidArgument: the trimmed text is empty, longer than
        expense_max_description_length (200) characters, or contains a
        control or bidirectional-override character.
    """
    trimmed = value.strip()
    maximum = limits.current().expense_max_description_length
    if not any(_is_visible(char) for char in trimmed):
        raise invalid_field(
            field,
            f"{value!r} is empty after removing spaces and zero-width "
            f"characters; give 1 to {maximum} characters, such as 'Dinner'",
            reason="REQUIRED",
        )
    if len(trimmed) > maximum:
        raise invalid_field(
            field,
            f"has {len(trimmed)} characters, more than the maximum of "
            f"{maximum} (expense_max_description_length); shorten it and put "
            "details in notes",
            reason="DESCRIPTION_TOO_LONG",
        )
    forbidden = find_control_character(trimmed)
    if forbidden is not None:
        raise invalid_field(
            field,
            f"{value!r} contains the control character U+{ord(forbidden):04X}; "
            "remove it",
            reason="INVALID_DESCRIPTION",
        )
    return trimmed


def validate_notes(value: str, field: str) -> str:
    """Check free-text notes; line breaks and tabs are allowed.

    Raises:
      InvalidArgument: the notes are longer than max_notes_length (2000)
        characters or contain another control character.
    """
    maximum = limits.current().max_notes_length
    if len(value) > maximum:
        raise invalid_field(
            field,
            f"has {len(value)} characters, more than the maximum of "
            f"{maximum} (max_notes_length); shorten them",
            reason="NOTES_TOO_LONG",
        )
    forbidden = find_control_character(value, allowed=NOTE_CONTROLS)
    if forbidden is not None:
        raise invalid_field(
            field,
            f"contains the control character U+{ord(forbidden):04X}; remove it",
            reason="INVALID_NOTES",
        )
    return value


def validate_date(
    value: date_pb2.Date, present: bool, field: str, query: bool = False
) -> datetime.date:
    """Convert a full `google.type.Date` to a date.

    `query` marks a field that REST reads from the query string, whose
    errors show the query parameters too.

    Raises:
      InvalidArgument: the date is missing, partial (a zero year, month or
        day) or does not exist, such as February 30.
    """
    if not present:
        raise invalid_field(
            field,
            f"is required; give the day of the expense, {date_example(field)}",
            reason="REQUIRED",
        )
    text = f"{value.year:04d}-{value.month:02d}-{value.day:02d}"
    try:
        return datetime.date(value.year, value.month, value.day)
    except ValueError:
        raise invalid_field(
            field,
            f"{text} is not a calendar date; give a full date with a year from "
            "1 to 9999, a month and a day that exists in that month, "
            f"{date_example(field, query)}",
            reason="INVALID_DATE",
        ) from None


def validate_expense_date(
    value: date_pb2.Date, present: bool, field: str
) -> datetime.date:
    """Convert the date of an expense, which must be in the accepted range.

    Raises:
      InvalidArgument: as for `validate_date`, or the date is outside the
        range of `splitlog_runtime.validation.check_record_date`.
    """
    day = validate_date(value, present, field)
    return check_record_date(day, field, "the expense")


def date_message(value: datetime.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


# Money


@dataclass(frozen=True)
class Amount:
    """An amount in integer minor units of its currency."""

    minor: int
    currency_code: str


def parse_money(value: money_pb2.Money, present: bool, field: str) -> Amount:
    """Convert a `google.type.Money` to minor units, exactly.

    Raises:
      InvalidArgument: the amount is missing, has no or an unknown currency,
        has digits below the minor unit, is malformed, or is larger than
        MAX_AMOUNT_MINOR.
    """
    if not present:
        raise invalid_field(
            field,
            "is required; give an amount such as "
            "{currency_code: 'EUR', units: 12, nanos: 500000000} for 12.50 EUR",
            reason="REQUIRED",
        )
    if not value.currency_code:
        raise invalid_field(
            f"{field}.currency_code",
            "is required; give an ISO 4217 code such as 'EUR', 'USD' or 'JPY'",
            reason="REQUIRED",
        )
    try:
        minor = money.to_minor_units(value.units, value.nanos, value.currency_code)
    except UnknownCurrencyError as exc:
        raise invalid_field(f"{field}.currency_code", str(exc), exc.reason) from None
    except money.MoneyError as exc:
        raise invalid_field(field, str(exc), exc.reason) from None
    if abs(minor) > MAX_AMOUNT_MINOR:
        message = money.describe_out_of_range(
            minor,
            value.currency_code,
            -MAX_AMOUNT_MINOR,
            MAX_AMOUNT_MINOR,
            "an expense amount",
        )
        raise invalid_field(
            field,
            f"{message}, negative for a refund; record a larger amount as "
            "several expenses",
            reason="AMOUNT_OUT_OF_RANGE",
        )
    return Amount(minor, value.currency_code)


def money_message(minor: int, currency_code: str) -> money_pb2.Money:
    units, nanos = money.from_minor_units(minor, currency_code)
    return money_pb2.Money(currency_code=currency_code, units=units, nanos=nanos)


def describe(amount: Amount) -> str:
    """Format an amount for messages, such as `95.00 EUR`."""
    return f"{money.format_amount(amount.minor, amount.currency_code)} " + (
        amount.currency_code
    )


# Expenses


@dataclass(frozen=True)
class Payer:
    """A payer of an expense; the amount carries its own currency until checked."""

    user: str
    amount: Amount


@dataclass(frozen=True)
class SplitMember:
    """A split participant as the caller gave it.

    `exact_currency` is the currency of `participant.exact_amount`, or None
    when the participant has no exact amount.
    """

    participant: splits.Participant
    exact_currency: str | None = None


@dataclass(frozen=True)
class Draft:
    """The fields of an expense that callers set, checked one by one.

    `check_expense` then checks them together and computes the owed amounts.
    """

    description: str
    category: int
    expense_date: datetime.date
    total: Amount
    payers: tuple[Payer, ...]
    split_type: int
    members: tuple[SplitMember, ...]
    notes: str

    def users(self) -> set[str]:
        """Return every payer and participant."""
        return {payer.user for payer in self.payers} | {
            member.participant.user for member in self.members
        }

    def user_fields(self, prefix: str = "expense") -> dict[str, list[str]]:
        """Return every payer and participant with the fields that name them.

        The fields are paths such as `expense.payers[0].user`, payers first.
        An empty `prefix` gives paths inside the expense, such as
        `payers[0].user`.
        """
        start = f"{prefix}." if prefix else ""
        found: dict[str, list[str]] = {}
        for index, payer in enumerate(self.payers):
            found.setdefault(payer.user, []).append(f"{start}payers[{index}].user")
        for index, member in enumerate(self.members):
            path = f"{start}split.participants[{index}].user"
            found.setdefault(member.participant.user, []).append(path)
        return found


@dataclass(frozen=True)
class CheckedExpense:
    """A draft whose amounts add up, with the amount each participant owes."""

    draft: Draft
    owed: dict[str, int]

    @property
    def currency_code(self) -> str:
        return self.draft.total.currency_code


def parse_payers(payers: Sequence[pb.Payer], field: str) -> tuple[Payer, ...]:
    """Check each payer's user and amount on its own.

    Raises:
      InvalidArgument: no payer, more than expense_max_payers (50) payers, a
        malformed or repeated user, or an invalid amount. Every bad payer
        gets its own violation.
    """
    if not payers:
        raise invalid_field(
            field,
            "is required; list who paid, such as "
            "[{user: 'users/alice', amount: <the total>}]",
            reason="REQUIRED",
        )
    max_payers = limits.current().expense_max_payers
    if len(payers) > max_payers:
        raise invalid_field(
            field,
            f"has {len(payers)} entries, more than the limit of {max_payers} "
            "payers per expense (expense_max_payers); record the bill as "
            "several expenses with fewer payers each",
            reason="TOO_MANY_PAYERS",
        )
    violations, parsed, seen = Violations(), [], {}
    for index, payer in enumerate(payers):
        path = f"{field}[{index}]"
        user = violations.check(validate_user_name, payer.user, f"{path}.user")
        amount = violations.check(
            parse_money, payer.amount, payer.HasField("amount"), f"{path}.amount"
        )
        if user is not None and user in seen:
            violations.errors.append(
                invalid_field(
                    f"{path}.user",
                    f"{user!r} is already listed at {field}[{seen[user]}]; list "
                    "each payer once with the whole amount they paid",
                    reason="DUPLICATE_PAYER",
                )
            )
        elif user is not None:
            seen[user] = index
        if user is not None and amount is not None:
            parsed.append(Payer(user, amount))
    violations.raise_if_any()
    return tuple(parsed)


def parse_split(split: pb.Split, present: bool, field: str) -> tuple[int, tuple]:
    """Check the split's participants on their own and convert exact amounts.

    The split type, duplicates and how values fit the type are checked later
    by `splits.allocate`, which has the total.

    Returns:
      The split type number and a tuple of SplitMember.

    Raises:
      InvalidArgument: the split is missing, or a participant has a
        malformed user or an invalid exact amount.
    """
    if not present:
        raise invalid_field(
            field,
            "is required; give a split such as {type: SPLIT_TYPE_EQUAL, "
            "participants: [{user: 'users/alice'}, {user: 'users/bob'}]}",
            reason="REQUIRED",
        )
    max_participants = limits.current().expense_max_participants
    if len(split.participants) > max_participants:
        raise invalid_field(
            f"{field}.participants",
            f"has {len(split.participants)} entries, more than the limit of "
            f"{max_participants} participants per expense "
            "(expense_max_participants); split the bill into several expenses",
            reason="TOO_MANY_PARTICIPANTS",
        )
    violations, members = Violations(), []
    for index, given in enumerate(split.participants):
        path = f"{field}.participants[{index}]"
        if given.user:
            violations.check(validate_user_name, given.user, f"{path}.user")
        kind = given.WhichOneof("value")
        exact, currency = None, None
        if kind == "exact_amount":
            amount = violations.check(
                parse_money, given.exact_amount, True, f"{path}.exact_amount"
            )
            if amount is not None:
                exact, currency = amount.minor, amount.currency_code
        participant = splits.Participant(
            user=given.user,
            exact_amount=exact if kind == "exact_amount" else None,
            basis_points=given.basis_points if kind == "basis_points" else None,
            shares=given.shares if kind == "shares" else None,
        )
        members.append(SplitMember(participant, currency))
    violations.raise_if_any()
    return split.type, tuple(members)


def parse_draft(expense: pb.Expense, field: str = "expense") -> Draft:
    """Check every caller-set field of an expense on its own.

    Raises:
      InvalidArgument: with one violation per invalid field.
    """
    violations = Violations()
    description = violations.check(
        validate_description, expense.description, f"{field}.description"
    )
    category = violations.check(
        validate_category, expense.category, f"{field}.category"
    )
    expense_date = violations.check(
        validate_expense_date,
        expense.expense_date,
        date_given(expense, "expense_date"),
        f"{field}.expense_date",
    )
    total = violations.check(
        parse_money, expense.total, expense.HasField("total"), f"{field}.total"
    )
    payers = violations.check(parse_payers, expense.payers, f"{field}.payers")
    parsed_split = violations.check(
        parse_split, expense.split, expense.HasField("split"), f"{field}.split"
    )
    notes = violations.check(validate_notes, expense.notes, f"{field}.notes")
    violations.raise_if_any()
    split_type, members = parsed_split
    return Draft(
        description=description,
        category=category,
        expense_date=expense_date,
        total=total,
        payers=payers,
        split_type=split_type,
        members=members,
        notes=notes,
    )


def _currency_mismatch(field: str, found: str, expected: str) -> InvalidArgument:
    return invalid_field(
        field,
        f"is in {found} but the total is in {expected}; every amount of an "
        f"expense uses the total's currency, so give it in {expected}",
        reason="CURRENCY_MISMATCH",
    )


def _check_payers(draft: Draft, field: str) -> None:
    total = draft.total
    violations = Violations()
    for index, payer in enumerate(draft.payers):
        path = f"{field}.payers[{index}].amount"
        if payer.amount.currency_code != total.currency_code:
            violations.errors.append(
                _currency_mismatch(
                    path, payer.amount.currency_code, total.currency_code
                )
            )
        elif payer.amount.minor == 0 or payer.amount.minor * total.minor < 0:
            sign = "negative" if total.minor < 0 else "positive"
            violations.errors.append(
                invalid_field(
                    path,
                    f"{describe(payer.amount)} is not {sign} like the total of "
                    f"{describe(total)}; a payer's amount has the total's sign "
                    "and is not zero (leave out members who paid nothing)",
                    reason="INVALID_PAYER_AMOUNT",
                )
            )
    violations.raise_if_any()

    paid = sum(payer.amount.minor for payer in draft.payers)
    if paid != total.minor:
        difference = Amount(abs(paid - total.minor), total.currency_code)
        side = "over" if abs(paid) > abs(total.minor) else "under"
        raise invalid_field(
            f"{field}.payers",
            f"payers' amounts add up to {describe(Amount(paid, total.currency_code))}"
            f", which is {describe(difference)} {side} the total of "
            f"{describe(total)}; change them so that they add up to the total",
            reason="PAYERS_DO_NOT_ADD_UP",
        )


def check_expense(draft: Draft, seed: str, field: str = "expense") -> CheckedExpense:
    """Check that the amounts of a draft agree and compute the owed amounts.

    Args:
      draft: the expense's fields, each valid on its own.
      seed: the expense's resource name, for the split's tie-break.
      field: path of the expense in the request, for error fields.

    Raises:
      InvalidArgument: a zero total, payers that do not add up to the total
        or have the wrong sign, an amount in another currency, or a split
        that `splits.allocate` rejects.
    """
    if draft.total.minor == 0:
        raise invalid_field(
            f"{field}.total",
            "the total is zero; an expense needs a non-zero total, negative "
            "for a refund",
            reason="INVALID_TOTAL",
        )
    _check_payers(draft, field)
    for index, member in enumerate(draft.members):
        currency = member.exact_currency
        if currency is not None and currency != draft.total.currency_code:
            raise _currency_mismatch(
                f"{field}.split.participants[{index}].exact_amount",
                currency,
                draft.total.currency_code,
            )
    try:
        owed = splits.allocate(
            draft.total.minor,
            draft.split_type,
            [member.participant for member in draft.members],
            currency_code=draft.total.currency_code,
            seed=seed,
            field_prefix=field,
        )
    except splits.SplitError as exc:
        raise invalid_field(exc.field, exc.message, exc.reason) from None
    except UnknownCurrencyError as exc:
        raise invalid_field(
            f"{field}.total.currency_code", str(exc), exc.reason
        ) from None
    return CheckedExpense(draft, owed)


# Update masks

#: Fields of an Expense that UpdateExpense can change, in the order applied.
MUTABLE_FIELDS = (
    "description",
    "category",
    "expense_date",
    "total",
    "payers",
    "split",
    "notes",
)
_OUTPUT_ONLY_FIELDS = (
    "currency_code",
    "owed_amounts",
    "create_time",
    "update_time",
    "delete_time",
    "etag",
)


def populated_fields(expense: pb.Expense) -> list[str]:
    """Return the mutable fields that a request sets, for an empty update mask."""
    present = {
        "description": bool(expense.description),
        "category": expense.category != pb.CATEGORY_UNSPECIFIED,
        "expense_date": date_given(expense, "expense_date"),
        "total": expense.HasField("total"),
        "payers": bool(expense.payers),
        "split": expense.HasField("split"),
        "notes": bool(expense.notes),
    }
    return [name for name in MUTABLE_FIELDS if present[name]]


EXPENSE_MASK = masks.MaskRules(
    resource="expense",
    mutable=MUTABLE_FIELDS,
    output_only=_OUTPUT_ONLY_FIELDS,
    immutable=("creator",),
    # Stored on every update anyway.
    ignored=("last_modifier",),
    replaced_whole=MUTABLE_FIELDS,
    article="an",
)


def resolve_update_mask(paths: Sequence[str], populated: Iterable[str]) -> list[str]:
    """Return the fields an update changes, in the order of MUTABLE_FIELDS.

    The rules are those of `masks.resolve_update_mask`. The path
    `last_modifier` is accepted and ignored, because every update stores it.
    """
    return masks.resolve_update_mask(paths, EXPENSE_MASK, populated)


def parse_changes(expense: pb.Expense, fields: Sequence[str]) -> dict[str, object]:
    """Check the new values of the fields an update changes.

    A field under the mask but empty in the request goes back to its default
    when it has one (category, notes). Required fields must be given. The
    date is checked against the accepted range only by
    `check_changed_date`, once the stored date is known.

    Raises:
      InvalidArgument: with one violation per invalid field.
    """
    violations, changes = Violations(), {}
    checks: dict[str, Callable[[], object]] = {
        "description": lambda: validate_description(
            expense.description, "expense.description"
        ),
        "category": lambda: validate_category(expense.category, "expense.category"),
        "expense_date": lambda: validate_date(
            expense.expense_date,
            date_given(expense, "expense_date"),
            "expense.expense_date",
        ),
        "total": lambda: parse_money(
            expense.total, expense.HasField("total"), "expense.total"
        ),
        "payers": lambda: parse_payers(expense.payers, "expense.payers"),
        "split": lambda: parse_split(
            expense.split, expense.HasField("split"), "expense.split"
        ),
        "notes": lambda: validate_notes(expense.notes, "expense.notes"),
    }
    for name in fields:
        value = violations.check(checks[name])
        changes[name] = value
    violations.raise_if_any()
    return changes


def check_changed_date(changes: dict[str, object], stored: datetime.date) -> None:
    """Check that an update which moves the expense date moves it into the
    accepted range.

    An update that keeps the stored date passes, so an expense stored before
    the range check existed, such as one dated 1850-01-01, can still be
    updated in full.

    Raises:
      InvalidArgument: the new date is outside the range of
        `splitlog_runtime.validation.check_record_date`.
    """
    new = changes.get("expense_date")
    if new is not None and new != stored:
        check_record_date(new, "expense.expense_date", "the expense")


def apply_changes(draft: Draft, changes: dict[str, object]) -> Draft:
    """Return the draft with the checked changes of an update applied."""
    updates = {name: value for name, value in changes.items() if name not in ("split",)}
    if "split" in changes:
        split_type, members = changes["split"]
        updates["split_type"] = split_type
        updates["members"] = members
    return replace(draft, **updates)
