"""Collect the errors of several field checks into one INVALID_ARGUMENT.

Also the character rule that stored texts share, so that expense notes and
settlement notes reject the same characters, and the example that errors
about `google.type.Date` fields show and the check whether one is set. The
range of dates that expenses and settlements accept is here too. And
the cut of a text to a UTF-8 byte limit, which log_service and the log
shipping handler share.
"""

from __future__ import annotations

import datetime
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from google.protobuf.message import Message

from splitlog_runtime.errors import InvalidArgument, invalid_field

_T = TypeVar("_T")

# Bidirectional overrides and isolates can make a text display as another one.
BIDI_CONTROLS = frozenset(
    chr(c) for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]
)
# Control characters that free-text notes may contain: line breaks and tabs.
NOTE_CONTROLS = "\n\r\t"


def find_control_character(value: str, allowed: str = "") -> str | None:
    """Return the first control, surrogate, line or paragraph separator, or
    bidirectional control character of `value` that is not in `allowed`."""
    for char in value:
        if char in allowed:
            continue
        category = unicodedata.category(char)
        if category in ("Cc", "Cs", "Zl", "Zp") or char in BIDI_CONTROLS:
            return char
    return None


def date_example(field: str, query: bool = False) -> str:
    """Write an example value of the `google.type.Date` field `field`.

    The JSON form is what gRPC clients such as grpcurl and REST bodies take.
    With `query`, for a field that a REST GET route reads from the query
    string, the query parameters of the same day follow it.
    """
    example = 'such as {"year": 2024, "month": 5, "day": 31}'
    if query:
        example += (
            f", or as REST query parameters {field}.year=2024&{field}.month=5&"
            f"{field}.day=31"
        )
    return example


#: The earliest date that an expense or a settlement accepts.
EARLIEST_RECORD_DATE = datetime.date(1900, 1, 1)
#: Days after the current UTC date that the date of an expense or a
#: settlement may be, so that a planned payment fits and a mistyped year
#: such as 2205 does not.
MAX_RECORD_DAYS_AHEAD = 366


def latest_record_date(today: datetime.date | None = None) -> datetime.date:
    """Return the latest date that an expense or a settlement accepts.

    `today` defaults to the current UTC date.
    """
    if today is None:
        today = datetime.datetime.now(datetime.UTC).date()
    return today + datetime.timedelta(days=MAX_RECORD_DAYS_AHEAD)


def check_record_date(
    day: datetime.date, field: str, subject: str, today: datetime.date | None = None
) -> datetime.date:
    """Check that the date of an expense or a settlement is in the accepted range.

    The range runs from EARLIEST_RECORD_DATE to `latest_record_date(today)`.
    `subject` names what the date is the day of in the error's advice, such
    as "the expense". Filters of list and report calls take any calendar
    date, so they skip this check.

    Raises:
      InvalidArgument: the date is outside the range, with reason
        DATE_OUT_OF_RANGE.
    """
    latest = latest_record_date(today)
    if EARLIEST_RECORD_DATE <= day <= latest:
        return day
    raise invalid_field(
        field,
        f"{day.isoformat()} is outside the accepted range "
        f"{EARLIEST_RECORD_DATE.isoformat()} to {latest.isoformat()} "
        f"({MAX_RECORD_DAYS_AHEAD} days after today in UTC); give the day of "
        f"{subject}, {date_example(field)}",
        reason="DATE_OUT_OF_RANGE",
        metadata={
            "earliest_date": EARLIEST_RECORD_DATE.isoformat(),
            "latest_date": latest.isoformat(),
        },
    )


def date_given(message: Message, name: str) -> bool:
    """Return whether `message` sets its `google.type.Date` field `name`.

    A date whose year, month and day are all 0 counts as not set: REST's
    `{}` parses to it, and it carries no part of a date.
    """
    if not message.HasField(name):
        return False
    value = getattr(message, name)
    return bool(value.year or value.month or value.day)


@dataclass
class Violations:
    """Errors of several field checks, so one reply lists them all.

    Example:
      violations = Violations()
      email = violations.check(validate_email, request.user.email, "user.email")
      violations.raise_if_any()
    """

    errors: list[InvalidArgument] = field(default_factory=list)

    def check(self, validate: Callable[..., _T], *args: object) -> _T | None:
        """Run one check; return its result, or None after recording its error."""
        try:
            return validate(*args)
        except InvalidArgument as exc:
            self.errors.append(exc)
            return None

    def raise_if_any(self) -> None:
        """Raise one InvalidArgument carrying every recorded field violation.

        Raises:
          InvalidArgument: at least one check failed. The message describes the
            first invalid field and counts the others. The ErrorInfo reason is
            that of the first failure.
        """
        if not self.errors:
            return
        first = self.errors[0]
        if len(self.errors) == 1:
            raise first
        found = [v for e in self.errors for v in e.field_violations]
        message = first.message
        if first.field_violations:
            # A nested check may already have counted its own extra fields, so
            # describe only the first field and count every other one here.
            message = f"{found[0].field}: {found[0].description}"
        extra = len(found) - 1
        if extra > 0:
            plural = "field" if extra == 1 else "fields"
            message = f"{message} (and {extra} more invalid {plural})"
        raise InvalidArgument(
            message,
            reason=first.reason,
            metadata=first.metadata,
            field_violations=found,
        )


def cut_utf8(text: str, max_bytes: int) -> tuple[str, bool]:
    """Cut text to at most `max_bytes` UTF-8 bytes at a character boundary.

    Returns the text and whether it was cut.
    """
    # A character takes 1 to 4 bytes, so the length in characters bounds the
    # length in bytes and most texts need no encoding.
    if len(text) * 4 <= max_bytes:
        return text, False
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text, False
    # "ignore" drops only the partial character left at the cut.
    return encoded[:max_bytes].decode("utf-8", "ignore"), True
