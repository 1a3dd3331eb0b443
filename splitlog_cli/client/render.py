"""Output of the client commands: aligned plain-text tables, or proto3 JSON."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from decimal import Decimal

from google.protobuf import json_format
from google.protobuf.message import Message
from google.protobuf.timestamp_pb2 import Timestamp
from google.type import date_pb2, money_pb2

from expense_service.currencies import EXPONENTS
from splitlog.expenses.v1 import expenses_service_pb2 as expenses_pb2
from splitlog_cli.client.values import category_key

FORMATS = ("table", "json")

# C0 and C1 control characters, DEL, and the Unicode characters that reorder
# or hide text (bidirectional embeddings, overrides and isolates).
_UNSAFE_TEXT = re.compile(r"[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069]")
_NAMED_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t", "\x1b": "\\e"}


def to_json(message: Message) -> str:
    """Return a message as indented proto3 JSON.

    Fields at their default value are printed too, so that a script reads
    `"settled": false` or `"expenses": []` instead of a missing key.
    """
    as_dict = json_format.MessageToDict(
        message, always_print_fields_with_no_presence=True
    )
    return json.dumps(as_dict, indent=2, ensure_ascii=False)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Return rows under their headers, each column padded to its widest cell.

    A table without rows prints its headers and `(none)`. Cells go through
    `safe_text`, so stored text cannot break a row or control the terminal.
    """
    cells = [[safe_text(str(cell)) for cell in row] for row in rows]
    widths = [len(header) for header in headers]
    for row in cells:
        widths = [
            max(width, len(cell)) for width, cell in zip(widths, row, strict=True)
        ]
    lines = [_line(headers, widths)]
    lines += [_line(row, widths) for row in cells]
    if not cells:
        lines.append("(none)")
    return "\n".join(lines)


def _line(cells: Sequence[str], widths: Sequence[int]) -> str:
    return "  ".join(
        cell.ljust(width) for cell, width in zip(cells, widths, strict=True)
    ).rstrip()


def fields(pairs: Sequence[tuple[str, object]]) -> str:
    """Return `label: value` lines with the values aligned and `safe_text`."""
    width = max(len(label) for label, _ in pairs) + 1
    return "\n".join(
        f"{label + ':':<{width}} {safe_text(str(value))}" for label, value in pairs
    )


def amount(money: money_pb2.Money, with_code: bool = True) -> str:
    """Format a Money exactly, with its currency's digits: `12.50 EUR`, `900 JPY`."""
    value = Decimal(money.units) + Decimal(money.nanos).scaleb(-9)
    digits = EXPONENTS.get(money.currency_code)
    if digits is None:
        text = f"{value.normalize():f}" if value else "0"
    else:
        text = f"{value.quantize(Decimal(1).scaleb(-digits)):f}"
    return f"{text} {money.currency_code}" if with_code else text


def amounts(values: Iterable[money_pb2.Money]) -> str:
    """Format several amounts on one line, such as `12.50 EUR, 900 JPY`."""
    return ", ".join(amount(value) for value in values) or "-"


def date(value: date_pb2.Date) -> str:
    """Format a `google.type.Date` as YYYY-MM-DD, or YYYY-MM for a month."""
    if not value.year:
        return "-"
    if not value.day:
        return f"{value.year:04d}-{value.month:02d}"
    return f"{value.year:04d}-{value.month:02d}-{value.day:02d}"


def timestamp(value: Timestamp) -> str:
    """Format a timestamp in UTC to the second, or `-` when unset."""
    if not value.seconds and not value.nanos:
        return "-"
    return value.ToDatetime().strftime("%Y-%m-%d %H:%M:%SZ")


def category(value: int) -> str:
    """Return the command-line name of a category, such as `dining-out`."""
    return category_key(expenses_pb2.Category.Name(value))


def short(name: str) -> str:
    """Return the last segment of a resource name: `alice` for `users/alice`."""
    return name.rsplit("/", 1)[-1]


def count_noun(count: int, singular: str, plural: str = "") -> str:
    """Return the count with its noun in the matching number: `1 entry`, `2 entries`.

    `plural` defaults to `singular` with an `s`.
    """
    if count == 1:
        return f"{count} {singular}"
    return f"{count} {plural or singular + 's'}"


def safe_text(text: str) -> str:
    """Replace characters that a terminal would act on with visible escapes.

    Control characters become `\\n`, `\\t`, `\\e` (for ESC) or `\\xHH`, and
    bidirectional formatting characters become `\\uHHHH`, so one value
    prints as one line and cannot start an ANSI escape sequence.
    """
    return _UNSAFE_TEXT.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    character = match.group()
    named = _NAMED_ESCAPES.get(character)
    if named:
        return named
    code = ord(character)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"
