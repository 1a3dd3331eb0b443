"""Errors about `google.type.Date` fields show a form that REST accepts.

Each test reads the example out of an error message and sends it back, so
the hint is checked by the servers themselves. Real user, expense and
balance services run behind a real gateway with authentication off.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator

import httpx
import pytest
from google.protobuf import json_format
from google.type import date_pb2

from splitlog_runtime import auth
from tests.auth.test_authorization import TIMEOUT, Stack, _start_stack, _stop_stack
from tests.gateway.support import LoopThread

# The JSON example of a date in an error message, such as
# {"year": 2024, "month": 5, "day": 31}.
JSON_DATE = re.compile(r'\{"year": \d+, "month": \d+, "day": \d+\}')


@pytest.fixture(scope="module")
def stack(tmp_path_factory) -> Iterator[Stack]:
    loop_thread = LoopThread()
    started = _start_stack(loop_thread, tmp_path_factory.mktemp("dates"), False)
    yield started
    _stop_stack(loop_thread, started)
    loop_thread.close()
    auth.install_process_signer(None)


@pytest.fixture(scope="module")
def http(stack: Stack) -> Iterator[httpx.Client]:
    with httpx.Client(
        base_url=f"http://127.0.0.1:{stack.gateway.http_port}", timeout=TIMEOUT
    ) as client:
        yield client


@pytest.fixture
def group(http) -> dict[str, str]:
    """Create two EUR users and a group of both; return their names."""
    suffix = uuid.uuid4().hex[:8]
    names = {}
    for person in ("ann", "ben"):
        response = http.post(
            "/v1/users",
            params={"userId": f"{person}-{suffix}"},
            json={"email": f"{person}-{suffix}@example.com", "displayName": person},
        )
        assert response.status_code == 200, response.text
        names[person] = response.json()["user"]["name"]
    response = http.post(
        "/v1/groups",
        params={"groupId": f"trip-{suffix}"},
        json={"displayName": "Trip", "creator": names["ann"], "currencyCode": "EUR"},
    )
    assert response.status_code == 200, response.text
    names["group"] = response.json()["group"]["name"]
    response = http.post(f"/v1/{names['group']}/members", json={"user": names["ben"]})
    assert response.status_code == 200, response.text
    return names


def _message(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    return response.json()["error"]["message"]


def _json_example(message: str) -> dict:
    """Return the JSON date of a message, checked as a google.type.Date."""
    found = JSON_DATE.search(message)
    assert found is not None, message
    # grpcurl reads request JSON with the proto3 JSON mapping, as this does.
    json_format.Parse(found.group(), date_pb2.Date())
    return json.loads(found.group())


def _query_example(message: str, field: str) -> list[tuple[str, str]]:
    """Return the query parameters of a message's date example for `field`."""
    pattern = rf"{field}\.year=\d+&{field}\.month=\d+&{field}\.day=\d+"
    found = re.search(pattern, message)
    assert found is not None, message
    return [tuple(pair.split("=")) for pair in found.group().split("&")]


def test_missing_settlement_date_hint_accepted(http, group):
    settlement = {
        "payer": group["ben"],
        "payee": group["ann"],
        "creator": group["ben"],
        "amount": {"currencyCode": "EUR", "units": "5"},
    }
    url = f"/v1/{group['group']}/settlements"

    message = _message(http.post(url, json=settlement))
    settlement["settlementDate"] = _json_example(message)
    accepted = http.post(url, json=settlement)

    assert message.startswith("settlement.settlement_date: is required")
    assert "2024-05-31" not in message
    assert accepted.status_code == 200, accepted.text


def test_missing_expense_date_hint_accepted(http, group):
    expense = {
        "description": "Dinner",
        "total": {"currencyCode": "EUR", "units": "10"},
        "payers": [
            {"user": group["ann"], "amount": {"currencyCode": "EUR", "units": "10"}}
        ],
        "split": {"type": "SPLIT_TYPE_EQUAL", "participants": [{"user": group["ann"]}]},
        "creator": group["ann"],
    }
    url = f"/v1/{group['group']}/expenses"

    message = _message(http.post(url, json=expense))
    expense["expenseDate"] = _json_example(message)
    accepted = http.post(url, json=expense)

    assert message.startswith("expense.expense_date: is required")
    assert accepted.status_code == 200, accepted.text


def test_report_date_as_text_hint_accepted(http, group):
    url = f"/v1/{group['group']}/report"
    sent = [("currencyCode", "EUR"), ("startDate", "2026-11-02")]

    message = _message(http.get(url, params=sent))
    example = _query_example(message, "startDate")
    accepted = http.get(url, params=[sent[0], *example])

    assert example == [
        ("startDate.year", "2026"),
        ("startDate.month", "11"),
        ("startDate.day", "2"),
    ]
    assert "<field>" not in message
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["report"]["startDate"] == {
        "year": 2026,
        "month": 11,
        "day": 2,
    }


def test_report_date_not_iso_shows_example(http, group):
    url = f"/v1/{group['group']}/report"

    message = _message(http.get(url, params={"currencyCode": "EUR", "startDate": "x"}))

    assert "startDate.year=2024&startDate.month=5&startDate.day=31" in message


@pytest.mark.parametrize(
    ("path", "field"),
    [("report", "start_date"), ("settlements", "end_date"), ("expenses", "end_date")],
)
def test_partial_query_date_hint_accepted(http, group, path, field):
    url = f"/v1/{group['group']}/{path}"
    sent = [(f"{field}.year", "2026")]
    if path == "report":
        sent.append(("currencyCode", "EUR"))

    message = _message(http.get(url, params=sent))
    example = _query_example(message, field)
    accepted = http.get(url, params=[*sent[1:], *example])

    assert message.startswith(f"{field}: 2026-00-00 is not")
    assert accepted.status_code == 200, accepted.text


@pytest.mark.parametrize("empty", [{}, {"year": 0, "month": 0, "day": 0}])
def test_empty_body_dates_count_as_missing(http, group, empty):
    settlement = {
        "payer": group["ben"],
        "payee": group["ann"],
        "creator": group["ben"],
        "amount": {"currencyCode": "EUR", "units": "5"},
        "settlementDate": empty,
    }
    expense = {
        "description": "Dinner",
        "expenseDate": empty,
        "total": {"currencyCode": "EUR", "units": "10"},
        "payers": [
            {"user": group["ann"], "amount": {"currencyCode": "EUR", "units": "10"}}
        ],
        "split": {"type": "SPLIT_TYPE_EQUAL", "participants": [{"user": group["ann"]}]},
        "creator": group["ann"],
    }

    settlement_message = _message(
        http.post(f"/v1/{group['group']}/settlements", json=settlement)
    )
    expense_message = _message(
        http.post(f"/v1/{group['group']}/expenses", json=expense)
    )

    assert settlement_message.startswith("settlement.settlement_date: is required")
    assert expense_message.startswith("expense.expense_date: is required")
    assert "0000-00-00" not in settlement_message
    assert "0000-00-00" not in expense_message


@pytest.mark.parametrize(
    ("path", "field"),
    [("report", "start_date"), ("settlements", "end_date"), ("expenses", "end_date")],
)
def test_all_zero_query_date_is_no_filter(http, group, path, field):
    sent = [(f"{field}.year", "0"), (f"{field}.month", "0"), (f"{field}.day", "0")]
    if path == "report":
        sent.append(("currencyCode", "EUR"))

    response = http.get(f"/v1/{group['group']}/{path}", params=sent)

    assert response.status_code == 200, response.text
