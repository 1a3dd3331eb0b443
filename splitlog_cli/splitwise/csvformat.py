"""Read and write the CSV that Splitwise's "Export as spreadsheet" produces.

Two layouts are known, and `parse` accepts both:

- current: a header `Date,Description,Category,Cost,Currency,<member>...`,
  a blank line, one line per expense or payment, a blank line, then one
  `Total balance` summary row per currency;
- older (seen in 2013 exports): a lower-case header `date,...,cost,...`, a
  blank line after every row, amounts such as `85.0` and a summary row
  called `Current balance`.

Each member cell is that member's net change for the row, paid minus owed:
positive when the member lent money, negative when they owe. The summary row
carries the export date and, per member, the net over the whole group.

Amounts are parsed to integer minor units of the row's currency; nothing here
uses float.
"""

from __future__ import annotations

import csv
import datetime
import enum
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from expense_service.currencies import UnknownCurrencyError, exponent
from expense_service.domain import MAX_AMOUNT_MINOR
from expense_service.money import (
    MoneyError,
    format_amount,
    parse_decimal_amount,
    shorten,
)
from splitlog_runtime.validation import find_control_character

FIXED_COLUMNS = ("Date", "Description", "Category", "Cost", "Currency")
SUMMARY_LABELS = ("Total balance", "Current balance")
#: Upper bound on reported problems, so a wrong file does not flood the screen.
MAX_PROBLEMS = 20
#: First characters that make a spreadsheet read a cell as a formula.
FORMULA_TRIGGERS = ("=", "+", "-", "@", "\t", "\r")
#: Mark that `write_text` puts before such text cells.
FORMULA_ESCAPE = "'"


def escape_formula(text: str) -> str:
    """Put an apostrophe before text that a spreadsheet would run as a formula.

    Text that already starts with apostrophes followed by a trigger gets one
    more too, so that `unescape_formula` gives back any text exactly.
    """
    if text.lstrip(FORMULA_ESCAPE).startswith(FORMULA_TRIGGERS):
        return FORMULA_ESCAPE + text
    return text


def unescape_formula(text: str) -> str:
    """Remove the apostrophe that `escape_formula` adds; other text stays."""
    if text.startswith(FORMULA_ESCAPE) and text.lstrip(FORMULA_ESCAPE).startswith(
        FORMULA_TRIGGERS
    ):
        return text[len(FORMULA_ESCAPE) :]
    return text


class Layout(enum.Enum):
    """Generation of the export format."""

    CURRENT = "current"
    OLDER = "older"


@dataclass(frozen=True)
class Problem:
    """One reason a file cannot be read.

    Attributes:
      line: 1-based line number in the file.
      column: header name of the column at fault, or None for the whole row.
      message: what is wrong and how to fix it.
    """

    line: int
    column: str | None
    message: str

    def __str__(self) -> str:
        where = f"line {self.line}"
        if self.column is not None:
            where += f", column {self.column}"
        return f"{where}: {self.message}"


class SplitwiseFormatError(ValueError):
    """A file that is not a readable Splitwise export.

    `line`, `column` and `message` describe the first problem, and `problems`
    lists every problem found, up to `MAX_PROBLEMS`.
    """

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = tuple(problems)
        first = self.problems[0]
        self.line = first.line
        self.column = first.column
        self.message = first.message
        text = "\n".join(str(problem) for problem in self.problems)
        super().__init__(text)


@dataclass(frozen=True)
class Row:
    """One expense or payment line of an export.

    Attributes:
      line: 1-based line number in the file.
      date: the day of the expense.
      description: text as written, surrounding spaces included, without
        the apostrophe of `escape_formula`.
      category: Splitwise category name, such as "Dining out" or "Payment".
      cost: the cost in minor units of `currency`; negative for a refund.
      currency: ISO 4217 code.
      nets: each member's net change in minor units, in member column order.
    """

    line: int
    date: datetime.date
    description: str
    category: str
    cost: int
    currency: str
    nets: tuple[int, ...]


@dataclass(frozen=True)
class Summary:
    """A `Total balance` or `Current balance` row: final nets in one currency."""

    line: int
    date: datetime.date
    label: str
    currency: str
    nets: tuple[int, ...]


@dataclass(frozen=True)
class SplitwiseFile:
    """The content of one export.

    Attributes:
      layout: which generation of the format the header uses.
      members: member names, in column order.
      rows: expense and payment rows, in file order.
      summaries: the summary rows, one per currency, in file order.
      header_line: 1-based line number of the header.
    """

    layout: Layout
    members: tuple[str, ...]
    rows: tuple[Row, ...]
    summaries: tuple[Summary, ...]
    header_line: int = 1

    def summary_for(self, currency: str) -> Summary | None:
        """Return the summary row of a currency, or None when the file has none."""
        for summary in self.summaries:
            if summary.currency == currency:
                return summary
        return None

    def currencies(self) -> list[str]:
        """Return the currencies of the rows and summaries, in order of appearance."""
        seen = dict.fromkeys(row.currency for row in self.rows)
        seen.update(dict.fromkeys(summary.currency for summary in self.summaries))
        return list(seen)

    def column_sums(self) -> dict[str, tuple[int, ...]]:
        """Return each member's sum of the member cells of the rows, per currency."""
        sums: dict[str, list[int]] = {}
        for row in self.rows:
            total = sums.setdefault(row.currency, [0] * len(self.members))
            for index, net in enumerate(row.nets):
                total[index] += net
        return {currency: tuple(values) for currency, values in sums.items()}


def missing_summaries(source: SplitwiseFile) -> list[Problem]:
    """Return one problem per currency that has rows but no summary row.

    The parser accepts such a file, but an import cannot check its rows
    against the final balances without the summary row.
    """
    last_lines: dict[str, int] = {}
    for row in source.rows:
        last_lines[row.currency] = row.line
    if not last_lines:
        return []
    if source.summaries:
        where = f"with the summary rows from line {source.summaries[0].line}"
        line = source.summaries[0].line
    else:
        line = source.rows[-1].line
        where = f"after line {line}, the last row"
    member_cells = ",".join(f"<{member}>" for member in source.members)
    return [
        Problem(
            line,
            None,
            f"the summary row for {currency} is missing: Splitwise ends the file "
            f"with one '{SUMMARY_LABELS[0]}' row per currency (older exports: "
            f"'{SUMMARY_LABELS[1]}'), expected {where}. The import checks the "
            "rows against it, so export the group from Splitwise again, or add "
            f"the row with each member's final net: YYYY-MM-DD,{SUMMARY_LABELS[0]}"
            f", , ,{currency},{member_cells}",
        )
        for currency in last_lines
        if source.summary_for(currency) is None
    ]


def parse_text(text: str) -> SplitwiseFile:
    """Parse the text of an export.

    Raises:
      SplitwiseFormatError: the header is not a Splitwise header, or rows have
        the wrong number of cells, invalid dates, unknown currencies or amounts
        that are not plain decimals exact to the currency's minor unit.
    """
    reader = _Reader(text)
    return reader.read()


def parse_bytes(data: bytes) -> SplitwiseFile:
    """Parse the bytes of an export, which must be UTF-8 (a BOM is allowed)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        message = (
            f"the file is not valid UTF-8 (byte {data[exc.start]:#04x} at offset "
            f"{exc.start}); save the export as UTF-8 and try again"
        )
        raise SplitwiseFormatError([Problem(line, None, message)]) from None
    return parse_text(text)


class _Reader:
    """Walks the CSV records, keeping the line number of each one."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._problems: list[Problem] = []
        self._members: tuple[str, ...] = ()

    def read(self) -> SplitwiseFile:
        records = list(_records(self._text))
        if not records:
            self._fail(1, None, "the file is empty; expected a Splitwise export")
        header_line, header = records[0]
        layout = self._read_header(header_line, header)
        rows: list[Row] = []
        summaries: list[Summary] = []
        for line, cells in records[1:]:
            if len(self._problems) >= MAX_PROBLEMS:
                break
            if len(cells) != len(header):
                self._problem(
                    line,
                    None,
                    f"expected {len(header)} cells like the header, found "
                    f"{len(cells)}; quote descriptions that contain commas",
                )
                continue
            if cells[1].strip() in SUMMARY_LABELS and not cells[3].strip():
                summary = self._read_summary(line, cells)
                if summary is not None:
                    summaries.append(summary)
                continue
            if summaries:
                self._problem(
                    line,
                    None,
                    f"expense row after the summary row on line {summaries[0].line}; "
                    "the summary rows must come last",
                )
                continue
            row = self._read_row(line, cells)
            if row is not None:
                rows.append(row)
        self._check_summary_currencies(summaries)
        if self._problems:
            raise SplitwiseFormatError(self._problems)
        return SplitwiseFile(
            layout, self._members, tuple(rows), tuple(summaries), header_line
        )

    def _read_header(self, line: int, header: list[str]) -> Layout:
        names = [cell.strip() for cell in header]
        fixed = names[: len(FIXED_COLUMNS)]
        if [name.lower() for name in fixed] != [n.lower() for n in FIXED_COLUMNS]:
            self._fail(
                line,
                None,
                f"expected a header starting with {','.join(FIXED_COLUMNS)}, found "
                f"{','.join(fixed)!r}; is this a Splitwise 'Export as spreadsheet' "
                "file?",
            )
        members = tuple(unescape_formula(name) for name in names[len(FIXED_COLUMNS) :])
        if not members:
            self._fail(line, None, "the header names no member after Currency")
        for index, name in enumerate(members):
            column = f"{len(FIXED_COLUMNS) + index + 1}"
            control = find_control_character(name)
            if not name:
                self._problem(line, column, "member name is empty")
            elif control is not None:
                self._problem(
                    line,
                    name,
                    f"member name {name!r} contains the control character "
                    f"U+{ord(control):04X}; remove it from the header",
                )
            elif name in members[:index]:
                self._problem(line, name, f"member {name!r} appears twice")
        if self._problems:
            raise SplitwiseFormatError(self._problems)
        self._members = members
        older = fixed[0] == "date" and fixed[3] == "cost"
        return Layout.OLDER if older else Layout.CURRENT

    def _read_row(self, line: int, cells: list[str]) -> Row | None:
        count = len(self._problems)
        date = self._date(line, cells[0])
        description = unescape_formula(cells[1])
        category = unescape_formula(cells[2].strip())
        currency = self._currency(line, cells[4])
        if not category:
            self._problem(line, "Category", "category is empty")
        cost = nets = None
        if currency is not None:
            cost = self._amount(line, "Cost", cells[3], currency, blank_is_zero=False)
            nets = self._nets(line, cells, currency)
            self._check_stored_range(line, cells, cost, nets, currency)
        if len(self._problems) > count:
            return None
        return Row(line, date, description, category, cost, currency, nets)

    def _read_summary(self, line: int, cells: list[str]) -> Summary | None:
        count = len(self._problems)
        date = self._date(line, cells[0])
        currency = self._currency(line, cells[4])
        nets = None if currency is None else self._nets(line, cells, currency)
        if len(self._problems) > count:
            return None
        return Summary(line, date, cells[1].strip(), currency, nets)

    def _check_summary_currencies(self, summaries: list[Summary]) -> None:
        seen: dict[str, int] = {}
        for summary in summaries:
            if summary.currency in seen:
                self._problem(
                    summary.line,
                    "Currency",
                    f"second summary row for {summary.currency}; the first is on "
                    f"line {seen[summary.currency]}",
                )
            seen.setdefault(summary.currency, summary.line)

    def _check_stored_range(
        self,
        line: int,
        cells: list[str],
        cost: int | None,
        nets: tuple[int | None, ...],
        currency: str,
    ) -> None:
        """Reject row amounts that expense_service would not store.

        Checking them here keeps a file with such an amount from creating
        its group and users before the expense write fails.
        """
        member_cells = cells[len(FIXED_COLUMNS) :]
        named = [("Cost", cells[3], cost)]
        named += zip(self._members, member_cells, nets, strict=True)
        for column, cell, amount in named:
            if amount is not None and abs(amount) > MAX_AMOUNT_MINOR:
                self._problem(line, column, _too_large(cell.strip(), currency))

    def _nets(self, line: int, cells: list[str], currency: str) -> tuple[int, ...]:
        values = []
        for name, cell in zip(self._members, cells[len(FIXED_COLUMNS) :], strict=True):
            values.append(self._amount(line, name, cell, currency, blank_is_zero=True))
        return tuple(values)

    def _date(self, line: int, cell: str) -> datetime.date | None:
        try:
            return datetime.date.fromisoformat(cell.strip())
        except ValueError:
            self._problem(line, "Date", f"invalid date {cell!r}; expected YYYY-MM-DD")
            return None

    def _currency(self, line: int, cell: str) -> str | None:
        code = cell.strip()
        try:
            exponent(code)
        except UnknownCurrencyError as exc:
            self._problem(line, "Currency", str(exc))
            return None
        return code

    def _amount(
        self, line: int, column: str, cell: str, currency: str, *, blank_is_zero: bool
    ) -> int | None:
        text = cell.strip()
        if not text:
            if blank_is_zero:
                return 0
            self._problem(line, column, "amount is empty")
            return None
        try:
            return parse_decimal_amount(text, currency)
        except MoneyError as exc:
            # Too many digits for google.type.Money is also over the maximum.
            if exc.reason == "AMOUNT_OUT_OF_RANGE":
                self._problem(line, column, _too_large(text, currency))
            else:
                self._problem(line, column, str(exc))
            return None

    def _problem(self, line: int, column: str | None, message: str) -> None:
        self._problems.append(Problem(line, column, message))

    def _fail(self, line: int, column: str | None, message: str) -> None:
        self._problem(line, column, message)
        raise SplitwiseFormatError(self._problems)


def _too_large(text: str, currency: str) -> str:
    """Return the problem of an amount outside the range that splitlog stores."""
    if text.startswith("-"):
        bound = "below the minimum of"
        limit = format_amount(-MAX_AMOUNT_MINOR, currency)
    else:
        bound = "larger than the maximum of"
        limit = format_amount(MAX_AMOUNT_MINOR, currency)
    return (
        f"amount {shorten(text)} {currency} is {bound} {limit} {currency} "
        "that splitlog stores per amount; split the row into smaller ones"
    )


def _records(text: str) -> Iterable[tuple[int, list[str]]]:
    """Yield (first line number, cells) for every non-blank CSV record."""
    reader = csv.reader(io.StringIO(text, newline=""))
    previous_end = 0
    try:
        for cells in reader:
            start = previous_end + 1
            previous_end = reader.line_num
            if any(cell.strip() for cell in cells):
                yield start, cells
    except csv.Error as exc:
        problem = Problem(reader.line_num, None, f"malformed CSV: {exc}")
        raise SplitwiseFormatError([problem]) from None


def write_text(
    members: Sequence[str],
    rows: Iterable[Row],
    summaries: Iterable[Summary],
) -> str:
    """Write the current layout: header, blank line, rows, blank line, summaries.

    Amounts are written with the currency's digits ("85.00", "1200" for JPY),
    and empty summary cells hold one space, as Splitwise writes them. `line`
    of the rows and summaries is ignored. Member names, descriptions and
    categories that a spreadsheet would run as formulas start with an
    apostrophe (`escape_formula`), which `parse_text` removes. Amounts never
    do, so a negative amount stays a number.
    """
    buffer = io.StringIO()
    writer = _RecordWriter(buffer)
    writer.writerow([*FIXED_COLUMNS, *(escape_formula(name) for name in members)])
    buffer.write("\n")
    for row in rows:
        writer.writerow(
            [
                row.date.isoformat(),
                escape_formula(row.description),
                escape_formula(row.category),
                format_amount(row.cost, row.currency),
                row.currency,
                *(format_amount(net, row.currency) for net in row.nets),
            ]
        )
    buffer.write("\n")
    for summary in summaries:
        writer.writerow(
            [
                summary.date.isoformat(),
                summary.label,
                " ",
                " ",
                summary.currency,
                *(format_amount(net, summary.currency) for net in summary.nets),
            ]
        )
    return buffer.getvalue()


class _RecordWriter:
    """CSV writer whose records end in "\n" and quote every cell with a line break.

    csv.writer quotes only the characters of its line terminator (seen with
    Python 3.11.7), so with "\n" a cell that contains a lone "\r", such as a
    description that starts with one, would end the record early for a
    reader. This writer uses "\r\n" to decide the quoting and then ends each
    record in "\n".
    """

    def __init__(self, output: io.StringIO) -> None:
        self._output = output
        self._record = io.StringIO()
        self._writer = csv.writer(self._record, lineterminator="\r\n")

    def writerow(self, cells: Sequence[str]) -> None:
        self._record.seek(0)
        self._record.truncate()
        self._writer.writerow(cells)
        self._output.write(self._record.getvalue().removesuffix("\r\n") + "\n")
