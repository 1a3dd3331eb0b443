"""Reading and writing the Splitwise CSV, both layouts and every rejection."""

from __future__ import annotations

import datetime

import pytest

from splitlog_cli.splitwise.csvformat import (
    MAX_PROBLEMS,
    Layout,
    Row,
    SplitwiseFormatError,
    Summary,
    parse_bytes,
    parse_text,
    write_text,
)
from tests.splitwise.conftest import FIXTURES

HEADER = "Date,Description,Category,Cost,Currency,Ana,Ben\n\n"
SUMMARY = "\n2024-02-01,Total balance, , ,EUR,10.00,-10.00\n"


def parse_rows(rows: str, summary: str = SUMMARY):
    return parse_text(HEADER + rows + summary)


def problem_of(text: str):
    with pytest.raises(SplitwiseFormatError) as caught:
        parse_text(text)
    return caught.value


def test_current_layout_fixture():
    parsed = parse_bytes((FIXTURES / "current_flat.csv").read_bytes())

    assert parsed.layout is Layout.CURRENT
    assert parsed.members == ("Ana", "Ben", "Chloé")
    assert len(parsed.rows) == 8
    assert parsed.rows[0] == Row(
        line=3,
        date=datetime.date(2023, 9, 1),
        description="Rent",
        category="Rent",
        cost=168000,
        currency="EUR",
        nets=(-56000, -56000, 112000),
    )
    assert parsed.rows[1].description == "Dinner, with wine"
    assert parsed.rows[6].currency == "JPY"
    assert parsed.rows[6].cost == 5400
    assert [s.currency for s in parsed.summaries] == ["EUR", "JPY"]
    assert parsed.summaries[0].label == "Total balance"
    assert parsed.summaries[0].line == 12
    assert parsed.currencies() == ["EUR", "JPY"]


def test_older_layout_fixture():
    parsed = parse_bytes((FIXTURES / "older_imbalanced.csv").read_bytes())

    assert parsed.layout is Layout.OLDER
    assert [row.line for row in parsed.rows] == [3, 5, 7, 9, 11]
    assert parsed.rows[0].cost == 8500
    assert parsed.rows[0].nets == (-1700, -1700, -1700)
    assert parsed.rows[4].cost == -1250
    assert parsed.summaries[0].label == "Current balance"
    assert parsed.summaries[0].line == 14
    assert parsed.summaries[0].date == datetime.date(2013, 1, 10)


def test_column_sums_per_currency():
    parsed = parse_bytes((FIXTURES / "current_flat.csv").read_bytes())

    sums = parsed.column_sums()

    assert sums == {s.currency: s.nets for s in parsed.summaries}


def test_byte_order_mark_and_crlf_accepted():
    text = HEADER + "2024-01-01,Tea,General,4.00,EUR,2.00,-2.00\n" + SUMMARY
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()

    parsed = parse_bytes(data)

    assert parsed.members == ("Ana", "Ben")
    assert parsed.rows[0].nets == (200, -200)
    assert parsed.rows[0].line == 3


def test_quoted_newline_keeps_line_numbers():
    rows = '2024-01-01,"Tea\nand cake",General,4.00,EUR,2.00,-2.00\n'
    rows += "2024-01-02,Bus,Taxi,3.00,EUR,-1.50,1.50\n"

    parsed = parse_rows(rows)

    assert parsed.rows[0].description == "Tea\nand cake"
    assert [row.line for row in parsed.rows] == [3, 5]


def test_blank_member_cell_is_zero():
    parsed = parse_rows("2024-01-01,Tea,General,4.00,EUR,,0\n")

    assert parsed.rows[0].nets == (0, 0)


def test_file_without_summary_row():
    parsed = parse_rows("2024-01-01,Tea,General,4.00,EUR,2.00,-2.00\n", summary="")

    assert parsed.summaries == ()
    assert parsed.summary_for("EUR") is None


def test_invalid_amount_reports_line_and_column():
    error = problem_of(HEADER + "2024-01-01,Tea,General,4.00,EUR,2.00,abc\n" + SUMMARY)

    assert error.line == 3
    assert error.column == "Ben"
    assert "invalid amount 'abc'" in error.message
    assert str(error).startswith("line 3, column Ben: ")


def test_amount_below_minor_unit_rejected():
    error = problem_of(HEADER + "2024-01-01,Tea,General,4.001,EUR,2.00,-2.00\n")

    assert (error.line, error.column) == (3, "Cost")
    assert "exponent 2" in error.message


def test_yen_with_decimals_rejected():
    error = problem_of(HEADER + "2024-01-01,Tea,General,400.5,JPY,200,-200\n")

    assert (error.line, error.column) == (3, "Cost")
    assert "JPY amounts are whole numbers" in error.message


def test_amount_over_stored_maximum_rejected():
    huge = "99999999999999999999.00"
    error = problem_of(
        HEADER + f"2024-01-01,Rent,Rent,{huge},EUR,{huge},-{huge}\n" + SUMMARY
    )

    assert (error.line, error.column) == (3, "Cost")
    assert f"amount {huge} EUR is larger than the maximum of" in error.message
    assert "10000000000000.00 EUR" in error.message
    columns = [problem.column for problem in error.problems]
    assert columns == ["Cost", "Ana", "Ben"]
    negative = error.problems[2].message
    assert f"amount -{huge} EUR is below the minimum of" in negative
    assert "-10000000000000.00 EUR that splitlog stores" in negative
    assert "larger" not in negative


def test_negative_amount_over_digits_rejected():
    huge = "-" + "9" * 30 + ".00"
    error = problem_of(HEADER + f"2024-01-01,Rent,Rent,10.00,EUR,{huge},-10.00\n")

    assert (error.line, error.column) == (3, "Ana")
    assert "is below the minimum of -10000000000000.00 EUR" in error.message
    assert "larger" not in error.message


def test_amount_of_thousands_of_digits_rejected():
    huge = "9" * 5000 + ".00"
    error = problem_of(HEADER + f"2024-01-01,Rent,Rent,10.00,EUR,{huge},-10.00\n")

    assert (error.line, error.column) == (3, "Ana")
    assert "is larger than the maximum of 10000000000000.00 EUR" in error.message
    assert "(5,003 characters)" in error.message
    assert len(error.message) < 300


def test_withdrawn_currency_accepted():
    parsed = parse_text(
        "Date,Description,Category,Cost,Currency,Ana,Ben\n\n"
        "2019-07-01,Ferry,General,120.50,HRK,60.25,-60.25\n"
        "2001-05-02,Bier,General,12.00,DEM,-6.00,6.00\n"
        "2001-05-03,Pizza,General,15000,ITL,7500,-7500\n\n"
        "2024-02-01,Total balance, , ,HRK,60.25,-60.25\n"
        "2024-02-01,Total balance, , ,DEM,-6.00,6.00\n"
        "2024-02-01,Total balance, , ,ITL,7500,-7500\n"
    )

    assert [(row.currency, row.cost) for row in parsed.rows] == [
        ("HRK", 12050),
        ("DEM", 1200),
        ("ITL", 15000),
    ]


def test_withdrawn_currency_exponent_applies():
    error = problem_of(HEADER + "2001-05-03,Pizza,General,150.50,ITL,75,-75\n")

    assert (error.line, error.column) == (3, "Cost")
    assert "ITL amounts are whole numbers" in error.message


def test_amount_at_stored_maximum_accepted():
    top = "10000000000000.00"
    parsed = parse_rows(f"2024-01-01,Rent,Rent,{top},EUR,{top},-{top}\n")

    assert parsed.rows[0].cost == 10**15


def test_summary_over_stored_maximum_accepted():
    summary = (
        "\n2024-02-01,Total balance, , ,EUR,20000000000000.00,-20000000000000.00\n"
    )
    parsed = parse_rows("2024-01-01,Tea,General,4.00,EUR,2.00,-2.00\n", summary)

    assert parsed.summaries[0].nets == (2 * 10**15, -(2 * 10**15))


def test_invalid_date_rejected():
    error = problem_of(HEADER + "01/02/2024,Tea,General,4.00,EUR,2.00,-2.00\n")

    assert (error.line, error.column) == (3, "Date")
    assert "expected YYYY-MM-DD" in error.message


def test_unknown_currency_rejected():
    error = problem_of(HEADER + "2024-01-01,Tea,General,4.00,eur,2.00,-2.00\n")

    assert (error.line, error.column) == (3, "Currency")
    assert "use 'EUR'" in error.message


def test_empty_cost_rejected():
    error = problem_of(HEADER + "2024-01-01,Tea,General,,EUR,2.00,-2.00\n")

    assert (error.line, error.column) == (3, "Cost")
    assert error.message == "amount is empty"


def test_empty_category_rejected():
    error = problem_of(HEADER + "2024-01-01,Tea, ,4.00,EUR,2.00,-2.00\n")

    assert (error.line, error.column) == (3, "Category")


def test_wrong_cell_count_rejected():
    error = problem_of(HEADER + "2024-01-01,Tea, milk,General,4.00,EUR,2.00,-2.00\n")

    assert error.line == 3
    assert error.column is None
    assert "expected 7 cells like the header, found 8" in error.message


def test_every_bad_row_listed():
    rows = "2024-01-01,Tea,General,x,EUR,2.00,-2.00\n"
    rows += "2024-01-02,Tea,General,4.00,EUR,2.00,-2.00\n"
    rows += "2024-13-01,Tea,General,4.00,EUR,2.00,-2.00\n"

    error = problem_of(HEADER + rows)

    assert [(p.line, p.column) for p in error.problems] == [(3, "Cost"), (5, "Date")]
    assert "line 5, column Date" in str(error)


def test_problem_list_capped():
    rows = "2024-01-01,Tea,General,x,EUR,2.00,-2.00\n" * (MAX_PROBLEMS + 5)

    error = problem_of(HEADER + rows)

    assert len(error.problems) == MAX_PROBLEMS


def test_row_after_summary_rejected():
    text = HEADER + SUMMARY + "2024-02-02,Tea,General,4.00,EUR,2.00,-2.00\n"

    error = problem_of(text)

    assert error.line == 5
    assert "after the summary row on line 4" in error.message


def test_second_summary_for_currency_rejected():
    error = problem_of(HEADER + SUMMARY + SUMMARY.lstrip())

    assert (error.line, error.column) == (5, "Currency")
    assert "first is on line 4" in error.message


def test_header_not_splitwise_rejected():
    error = problem_of("When,What,Amount\n2024-01-01,Tea,4.00\n")

    assert error.line == 1
    assert "Export as spreadsheet" in error.message


def test_header_without_members_rejected():
    error = problem_of("Date,Description,Category,Cost,Currency\n")

    assert error.message == "the header names no member after Currency"


def test_duplicate_member_rejected():
    error = problem_of("Date,Description,Category,Cost,Currency,Ana,Ana\n")

    assert (error.line, error.column) == (1, "Ana")
    assert "appears twice" in error.message


def test_member_with_control_character_rejected():
    error = problem_of("Date,Description,Category,Cost,Currency,Ana,Bo\x1bb\n")

    assert (error.line, error.column) == (1, "Bo\x1bb")
    assert "control character U+001B" in error.message


def test_empty_file_rejected():
    error = problem_of("\n\n")

    assert error.line == 1
    assert "empty" in error.message


def test_not_utf8_rejected():
    data = (HEADER + "2024-01-01,Caf").encode() + b"\xe9,General,4.00,EUR,2,-2\n"

    with pytest.raises(SplitwiseFormatError) as caught:
        parse_bytes(data)

    assert caught.value.line == 3
    assert "not valid UTF-8" in caught.value.message


def test_write_text_current_layout():
    rows = [
        Row(
            0, datetime.date(2024, 1, 1), "Tea, hot", "General", 400, "EUR", (200, -200)
        ),
        Row(
            0,
            datetime.date(2024, 1, 2),
            "Ramen",
            "Dining out",
            1200,
            "JPY",
            (-600, 600),
        ),
    ]
    summaries = [
        Summary(0, datetime.date(2024, 2, 1), "Total balance", "EUR", (200, -200)),
        Summary(0, datetime.date(2024, 2, 1), "Total balance", "JPY", (-600, 600)),
    ]

    text = write_text(["Ana", "Ben"], rows, summaries)

    assert text == (
        "Date,Description,Category,Cost,Currency,Ana,Ben\n"
        "\n"
        '2024-01-01,"Tea, hot",General,4.00,EUR,2.00,-2.00\n'
        "2024-01-02,Ramen,Dining out,1200,JPY,-600,600\n"
        "\n"
        "2024-02-01,Total balance, , ,EUR,2.00,-2.00\n"
        "2024-02-01,Total balance, , ,JPY,-600,600\n"
    )


def test_write_then_parse_gives_same_rows():
    original = parse_bytes((FIXTURES / "current_flat.csv").read_bytes())

    again = parse_text(write_text(original.members, original.rows, original.summaries))

    assert [row.nets for row in again.rows] == [row.nets for row in original.rows]
    assert [row.cost for row in again.rows] == [row.cost for row in original.rows]
    assert again.summaries == original.summaries


# Texts that a spreadsheet would run as a formula, and texts next to them.
FORMULA_TEXTS = (
    '=HYPERLINK("http://example.invalid")',
    "+1 guest",
    "-5 discount",
    "@SUM(A1:A2)",
    "\tTabbed",
    "\rReturn",
    "'=already marked",
    "''-twice",
    "'plain quote",
    "Plain",
)


def _written_and_read(members, description, category):
    rows = [
        Row(0, datetime.date(2024, 1, 1), description, category, -400, "EUR", (-2, 2))
    ]
    summaries = [Summary(0, datetime.date(2024, 2, 1), "Total balance", "EUR", (-2, 2))]
    return parse_text(write_text(members, rows, summaries))


@pytest.mark.parametrize("text", FORMULA_TEXTS)
def test_formula_description_round_trip(text):
    again = _written_and_read(["Ana", "Ben"], text, "General")

    assert again.rows[0].description == text
    assert again.rows[0].cost == -400
    assert again.rows[0].nets == (-2, 2)


# Member names and categories are read without surrounding spaces, and a
# member name may not contain a tab or a carriage return.
@pytest.mark.parametrize("text", [t for t in FORMULA_TEXTS if t == t.strip()])
def test_formula_member_and_category_round_trip(text):
    again = _written_and_read(["Ana", text], "Lunch", text)

    assert again.members == ("Ana", text)
    assert again.rows[0].category == text


def test_formula_text_escaped_amounts_not():
    rows = [
        Row(0, datetime.date(2024, 1, 1), "=1+1", "@cat", -400, "EUR", (-200, 200)),
    ]
    summaries = [
        Summary(0, datetime.date(2024, 2, 1), "Total balance", "EUR", (-200, 200))
    ]

    text = write_text(["-Ana", "Ben"], rows, summaries)

    assert text == (
        "Date,Description,Category,Cost,Currency,'-Ana,Ben\n"
        "\n"
        "2024-01-01,'=1+1,'@cat,-4.00,EUR,-2.00,2.00\n"
        "\n"
        "2024-02-01,Total balance, , ,EUR,-2.00,2.00\n"
    )


def test_splitwise_apostrophe_kept_unless_formula():
    parsed = parse_rows(
        "2024-01-01,'Twas lunch,General,20.00,EUR,10.00,-10.00\n"
        "2024-01-02,'-5 off,General,20.00,EUR,-10.00,10.00\n"
    )

    assert parsed.rows[0].description == "'Twas lunch"
    assert parsed.rows[1].description == "-5 off"
