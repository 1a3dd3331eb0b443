"""Division of an expense total between its participants, in whole minor units.

`allocate` turns a total and a split (its type and participants) into the
amount each participant owes. The amounts are whole minor units with the sign
of the total, and they always add up exactly to the total. Every split type
first computes each participant's exact part as a fraction, then rounds with
the largest-remainder method:

1. Each participant gets the whole part of their exact part.
2. The minor units left over go, one each, to the participants with the
   largest fractional parts.
3. Equal fractional parts are ordered by a tie-break rank, the SHA-256
   digest of `seed + "\\0" + user` compared as bytes (smaller first), then by
   user. The rank depends only on the user and the seed, not on the order in
   which participants are listed. With the expense's resource name as the
   seed, the extra minor units of equal splits land on different members
   from one expense to the next instead of always on the same member.

The rules, with worked examples, are in docs/splits.md.
"""

from __future__ import annotations

import enum
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext
from fractions import Fraction

from expense_service.currencies import exponent
from expense_service.money import format_amount

#: 100 % in basis points (hundredths of a percent).
FULL_BASIS_POINTS = 10_000


class SplitType(enum.IntEnum):
    """Rule that divides a total; the values match `splitlog.expenses.v1.SplitType`."""

    UNSPECIFIED = 0
    EQUAL = 1
    EXACT = 2
    PERCENTAGE = 3
    SHARES = 4
    MIXED = 5


@dataclass(frozen=True)
class Participant:
    """One member's part of a split as the caller gave it.

    At most one value is set, like the `value` oneof of `SplitParticipant`:
    none for EQUAL, `exact_amount` for EXACT, `basis_points` or none for
    PERCENTAGE, `shares` for SHARES, and exactly one of the three for MIXED.

    Attributes:
      user: the member, `users/{user}`.
      exact_amount: amount owed in minor units, with the sign of the total.
      basis_points: percentage of the total in hundredths of a percent, from
        0 to 10000.
      shares: weight of the member, zero or more.
    """

    user: str
    exact_amount: int | None = None
    basis_points: int | None = None
    shares: int | None = None

    def values_set(self) -> list[str]:
        """Return the names of the value fields that are set."""
        return [
            name
            for name in ("exact_amount", "basis_points", "shares")
            if getattr(self, name) is not None
        ]


class SplitError(ValueError):
    """A split that cannot be allocated, with the request field at fault.

    The servicer turns it into INVALID_ARGUMENT with a BadRequest field
    violation for `field` and an ErrorInfo with `reason`.

    Attributes:
      field: path of the field, such as
        `expense.split.participants[2].exact_amount`.
      message: what is wrong, with the value and the fix.
      reason: UPPER_SNAKE_CASE ErrorInfo reason.
    """

    reason = "INVALID_SPLIT"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class InvalidTotalError(SplitError):
    """The total cannot be split, because it is zero."""

    reason = "INVALID_TOTAL"


class InvalidSplitTypeError(SplitError):
    """The split type is missing or unknown."""

    reason = "INVALID_SPLIT_TYPE"


class InvalidParticipantError(SplitError):
    """A participant's user or value is missing, out of range or of the wrong kind."""

    reason = "INVALID_SPLIT_PARTICIPANT"


class DuplicateParticipantError(InvalidParticipantError):
    """A user is listed more than once."""

    reason = "DUPLICATE_PARTICIPANT"


class SplitMismatchError(SplitError):
    """Exact amounts or percentages do not add up to the total or to 100 %."""

    reason = "SPLIT_DOES_NOT_ADD_UP"


# Value fields each split type accepts. PERCENTAGE also accepts none.
_ACCEPTED_VALUES = {
    SplitType.EQUAL: (),
    SplitType.EXACT: ("exact_amount",),
    SplitType.PERCENTAGE: ("basis_points",),
    SplitType.SHARES: ("shares",),
    SplitType.MIXED: ("exact_amount", "basis_points", "shares"),
}


def allocate(
    total_minor: int,
    split_type: SplitType | int,
    participants: Sequence[Participant],
    *,
    currency_code: str,
    seed: str = "",
    field_prefix: str = "expense",
) -> dict[str, int]:
    """Divide a total between participants in whole minor units.

    Args:
      total_minor: the expense total in minor units; negative for a refund.
      split_type: a SplitType, or its number from the proto enum.
      participants: the members and their values, in request order.
      currency_code: ISO 4217 code of the total, used for the exponent in
        error messages.
      seed: text that makes the tie-break differ between expenses; pass the
        expense's resource name.
      field_prefix: path of the expense in the request, for error fields.

    Returns:
      The amount each participant owes, keyed by user in the order of
      `participants`. The amounts add up exactly to `total_minor`, and none
      has the opposite sign.

    Raises:
      SplitError: a subclass naming the field at fault.
      UnknownCurrencyError: `currency_code` is not a known ISO 4217 code.
    """
    exponent(currency_code)  # Reject an unknown currency before anything else.
    split_field = f"{field_prefix}.split"
    kind = _check_split_type(split_type, f"{split_field}.type")
    if total_minor == 0:
        raise InvalidTotalError(
            f"{field_prefix}.total",
            "the total is zero; an expense needs a non-zero total, negative "
            "for a refund",
        )
    fields = _check_participants(kind, participants, f"{split_field}.participants")

    magnitude = abs(total_minor)
    context = _Context(magnitude, total_minor, currency_code, fields, split_field)
    quotas = _QUOTAS[kind](context, participants)
    amounts = _round_largest_remainder(
        magnitude, quotas, [p.user for p in participants], seed
    )
    sign = 1 if total_minor > 0 else -1
    return {p.user: sign * a for p, a in zip(participants, amounts, strict=True)}


def tie_break_rank(user: str, seed: str) -> tuple[bytes, str]:
    """Return the key that orders equal remainders; smaller gets a unit first."""
    digest = hashlib.sha256(f"{seed}\0{user}".encode()).digest()
    return digest, user


def _check_split_type(split_type: SplitType | int, field: str) -> SplitType:
    try:
        kind = SplitType(split_type)
    except ValueError:
        kind = SplitType.UNSPECIFIED
    if kind is SplitType.UNSPECIFIED:
        raise InvalidSplitTypeError(
            field,
            f"split type {int(split_type)} is not set or unknown; use one of "
            "SPLIT_TYPE_EQUAL, SPLIT_TYPE_EXACT, SPLIT_TYPE_PERCENTAGE, "
            "SPLIT_TYPE_SHARES or SPLIT_TYPE_MIXED",
        )
    return kind


def _check_participants(
    kind: SplitType, participants: Sequence[Participant], field: str
) -> list[str]:
    """Check users and value kinds; return each participant's field path."""
    if not participants:
        raise InvalidParticipantError(
            field, "the split has no participants; add at least one"
        )
    fields = [f"{field}[{index}]" for index in range(len(participants))]
    first_index: dict[str, int] = {}
    for index, participant in enumerate(participants):
        if not participant.user:
            raise InvalidParticipantError(
                f"{fields[index]}.user", "the user is empty; set `users/{user}`"
            )
        if participant.user in first_index:
            raise DuplicateParticipantError(
                f"{fields[index]}.user",
                f"{participant.user!r} is already listed at "
                f"participants[{first_index[participant.user]}]; list each "
                "member once",
            )
        first_index[participant.user] = index
        _check_value_kind(kind, participant, fields[index])
    return fields


# The fix for a participant without a value, by the split types that need one.
_MISSING_VALUE_FIXES = {
    SplitType.EXACT: (
        "set exact_amount to what this member owes, in the total's currency, "
        "or remove the participant"
    ),
    SplitType.SHARES: (
        "set shares to this member's weight, such as 1, or 0 for a member who "
        "owes nothing"
    ),
    SplitType.MIXED: (
        "set exact_amount for a fixed amount, basis_points for a percentage "
        "(2550 is 25.50 %), or shares for a part of what the others leave"
    ),
}


def _check_value_kind(kind: SplitType, participant: Participant, field: str) -> None:
    names = participant.values_set()
    accepted = _ACCEPTED_VALUES[kind]
    type_name = f"SPLIT_TYPE_{kind.name}"
    if len(names) > 1:
        raise InvalidParticipantError(
            field, f"{' and '.join(names)} are both set; set at most one value"
        )
    for name in names:
        if name not in accepted:
            if accepted:
                hint = f"a {type_name} split takes {' or '.join(accepted)}"
            else:
                hint = f"a {type_name} split takes no value; remove it"
            raise InvalidParticipantError(
                f"{field}.{name}", f"{name} does not fit the split type: {hint}"
            )
    if not names and kind in _MISSING_VALUE_FIXES:
        if kind is SplitType.MIXED:
            target, missing = field, "one of exact_amount, basis_points or shares"
        else:
            target, missing = f"{field}.{accepted[0]}", accepted[0]
        raise InvalidParticipantError(
            target,
            f"{missing} is required in a {type_name} split; "
            f"{_MISSING_VALUE_FIXES[kind]}",
        )


@dataclass(frozen=True)
class _Context:
    """The total and the facts that the quota functions need for messages."""

    magnitude: int
    total_minor: int
    currency_code: str
    fields: list[str]
    split_field: str

    def money(self, amount: Fraction | int) -> str:
        """Format minor units exactly, with at least the currency's digits and
        the currency code, such as "10.00 USD" or "3.333 USD"."""
        if Fraction(amount).denominator == 1:
            text = format_amount(int(amount), self.currency_code)
        else:
            with localcontext() as decimal_context:
                decimal_context.prec = 60
                exact = Decimal(amount.numerator) / Decimal(amount.denominator)
            text = f"{exact.scaleb(-exponent(self.currency_code)).normalize():f}"
        return f"{text} {self.currency_code}"

    def signed(self, magnitude: Fraction | int) -> Fraction | int:
        """Give an amount of the magnitude the sign of the total."""
        return magnitude if self.total_minor > 0 else -magnitude


def _percent(basis_points: int) -> str:
    """Format basis points as a percentage without trailing zeros: "110.5 %"."""
    return f"{Decimal(basis_points).scaleb(-2).normalize():f} %"


def _equal_quotas(
    context: _Context, participants: Sequence[Participant]
) -> list[Fraction]:
    return [Fraction(context.magnitude, len(participants))] * len(participants)


def _exact_magnitudes(
    context: _Context, participants: Sequence[Participant]
) -> dict[int, int]:
    """Check the sign of each exact amount; return index to magnitude."""
    magnitudes = {}
    for index, participant in enumerate(participants):
        amount = participant.exact_amount
        if amount is None:
            continue
        if amount * context.total_minor < 0:
            raise InvalidParticipantError(
                f"{context.fields[index]}.exact_amount",
                f"exact amount {context.money(amount)} has the opposite sign of "
                f"the total {context.money(context.total_minor)}; amounts owed "
                "have the sign of the total",
            )
        magnitudes[index] = abs(amount)
    return magnitudes


def _exact_quotas(
    context: _Context, participants: Sequence[Participant]
) -> list[Fraction]:
    magnitudes = _exact_magnitudes(context, participants)
    listed = sum(magnitudes.values())
    if listed != context.magnitude:
        difference = abs(listed - context.magnitude)
        side = "over" if listed > context.magnitude else "under"
        raise SplitMismatchError(
            f"{context.split_field}.participants",
            f"exact amounts add up to {context.money(context.signed(listed))}, "
            f"which is {context.money(difference)} {side} the total of "
            f"{context.money(context.total_minor)}; change them so that they "
            "add up to the total",
        )
    return [Fraction(magnitudes[i]) for i in range(len(participants))]


def _check_basis_points(context: _Context, participants: Sequence[Participant]):
    for index, participant in enumerate(participants):
        points = participant.basis_points
        if points is not None and not 0 <= points <= FULL_BASIS_POINTS:
            raise InvalidParticipantError(
                f"{context.fields[index]}.basis_points",
                f"basis_points {points} is out of range; use 0 to 10000, where "
                "2550 is 25.50 %",
            )


def _percentage_quotas(
    context: _Context, participants: Sequence[Participant]
) -> list[Fraction]:
    _check_basis_points(context, participants)
    listed = sum(p.basis_points for p in participants if p.basis_points is not None)
    open_count = sum(1 for p in participants if p.basis_points is None)
    field = f"{context.split_field}.participants"
    if listed > FULL_BASIS_POINTS:
        raise SplitMismatchError(
            field,
            f"percentages add up to {_percent(listed)}, which is "
            f"{_percent(listed - FULL_BASIS_POINTS)} over 100 %; lower them",
        )
    if listed < FULL_BASIS_POINTS and open_count == 0:
        raise SplitMismatchError(
            field,
            f"percentages add up to {_percent(listed)}, so "
            f"{_percent(FULL_BASIS_POINTS - listed)} is missing; raise them or "
            "add a participant without a percentage to take the rest",
        )
    rest = Fraction(FULL_BASIS_POINTS - listed, open_count or 1)
    return [
        Fraction(context.magnitude)
        * (rest if p.basis_points is None else p.basis_points)
        / FULL_BASIS_POINTS
        for p in participants
    ]


def _check_shares(context: _Context, participants: Sequence[Participant]) -> int:
    for index, participant in enumerate(participants):
        if participant.shares is not None and participant.shares < 0:
            raise InvalidParticipantError(
                f"{context.fields[index]}.shares",
                f"shares {participant.shares} is negative; use zero or more",
            )
    return sum(p.shares for p in participants if p.shares is not None)


def _shares_quotas(
    context: _Context, participants: Sequence[Participant]
) -> list[Fraction]:
    total_shares = _check_shares(context, participants)
    if total_shares < 1:
        raise SplitMismatchError(
            f"{context.split_field}.participants",
            "shares add up to 0; give at least one participant one share or more",
        )
    return [Fraction(context.magnitude * p.shares, total_shares) for p in participants]


def _mixed_quotas(
    context: _Context, participants: Sequence[Participant]
) -> list[Fraction]:
    exact = _exact_magnitudes(context, participants)
    _check_basis_points(context, participants)
    total_shares = _check_shares(context, participants)

    # Exact amounts and percentages are taken from the total first.
    quotas = [Fraction(0)] * len(participants)
    for index, participant in enumerate(participants):
        if index in exact:
            quotas[index] = Fraction(exact[index])
        elif participant.basis_points is not None:
            quotas[index] = (
                Fraction(context.magnitude * participant.basis_points)
                / FULL_BASIS_POINTS
            )

    taken = sum(quotas, Fraction(0))
    rest = context.magnitude - taken
    field = f"{context.split_field}.participants"
    total = context.money(context.total_minor)
    has_shares = any(p.shares is not None for p in participants)
    if rest > 0 and not total_shares and not taken and has_shares:
        raise SplitMismatchError(
            field,
            f"shares add up to 0, so the total of {total} is not divided; give a "
            "shares participant one share or more",
        )
    points = [p.basis_points for p in participants if p.basis_points is not None]
    if rest < 0:
        given, pronoun = _given_sum(context, exact, points, taken)
        if exact:
            over = f"{context.money(-rest)} over the total of {total}"
        else:
            over = f"{_percent(sum(points) - FULL_BASIS_POINTS)} over 100 %"
        raise SplitMismatchError(field, f"{given}, which is {over}; lower {pronoun}")
    if rest > 0 and total_shares == 0:
        given, pronoun = _given_sum(context, exact, points, taken)
        if has_shares:
            hint = "give a shares participant one share or more"
        else:
            hint = (
                f"change {pronoun}, or add a participant with shares to take the rest"
            )
        if exact:
            left = context.money(rest)
        else:
            left = _percent(FULL_BASIS_POINTS - sum(points))
        raise SplitMismatchError(
            field,
            f"{given}, so {left} of the total of {total} is not divided; {hint}",
        )

    # The rest is divided in proportion to the shares.
    for index, participant in enumerate(participants):
        if participant.shares is not None and total_shares:
            quotas[index] = rest * participant.shares / total_shares
    return quotas


def _given_sum(
    context: _Context, exact: dict[int, int], points: list[int], taken: Fraction
) -> tuple[str, str]:
    """Name the exact amounts and percentages of a mixed split and their sum.

    Only the kinds of values given are named. Percentages alone are summed as
    a percentage, and with exact amounts the sum is the money both take.

    Args:
      exact: the magnitudes of the exact amounts in minor units, by index.
      points: the percentages given, in basis points.
      taken: the magnitude that the exact amounts and percentages take from
        the total, in minor units.

    Returns:
      The clause, such as "percentages add up to 110.5 %" or "the exact
      amount of 4.00 USD and the percentage of 10 % come to 5.00 USD", and
      the pronoun for the values.
    """
    pronoun = "it" if len(exact) + len(points) == 1 else "them"
    exact_sum = context.money(context.signed(sum(exact.values())))
    if not points:
        if len(exact) == 1:
            return f"the exact amount comes to {exact_sum}", pronoun
        return f"exact amounts add up to {exact_sum}", pronoun
    percent_sum = _percent(sum(points))
    if not exact:
        if len(points) == 1:
            return f"the percentage is {percent_sum}", pronoun
        return f"percentages add up to {percent_sum}", pronoun
    if len(exact) == 1:
        exact_part = f"the exact amount of {exact_sum}"
    else:
        exact_part = f"exact amounts adding up to {exact_sum}"
    if len(points) == 1:
        percent_part = f"the percentage of {percent_sum}"
    else:
        percent_part = f"percentages adding up to {percent_sum}"
    taken_text = context.money(context.signed(taken))
    return f"{exact_part} and {percent_part} come to {taken_text}", pronoun


_QUOTAS = {
    SplitType.EQUAL: _equal_quotas,
    SplitType.EXACT: _exact_quotas,
    SplitType.PERCENTAGE: _percentage_quotas,
    SplitType.SHARES: _shares_quotas,
    SplitType.MIXED: _mixed_quotas,
}


def _round_largest_remainder(
    magnitude: int, quotas: list[Fraction], users: list[str], seed: str
) -> list[int]:
    """Round exact parts that add up to `magnitude` to whole units that do too."""
    amounts = [quota.numerator // quota.denominator for quota in quotas]
    leftover = magnitude - sum(amounts)
    if leftover == 0:
        return amounts
    # Count each fractional part in units of 1/common, so that the sort
    # compares ints, not Fractions, and keeps the same order.
    common = math.lcm(*(quota.denominator for quota in quotas))
    order = sorted(
        range(len(quotas)),
        key=lambda i: (
            -(quotas[i].numerator % quotas[i].denominator)
            * (common // quotas[i].denominator),
            tie_break_rank(users[i], seed),
        ),
    )
    for index in order[:leftover]:
        amounts[index] += 1
    return amounts
