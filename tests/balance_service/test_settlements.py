"""Settlements: create with request_id, get, list, delete and undelete."""

from __future__ import annotations

import datetime
import logging
import uuid

import grpc
import pytest
from google.api import field_behavior_pb2
from google.type import date_pb2, money_pb2
from sqlalchemy import text

from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.validation import EARLIEST_RECORD_DATE, latest_record_date
from tests.balance_service.support import (
    check_rejected,
    create_group,
    error_details,
    group_nets,
    money_of,
    reason_of,
    settle,
    violated_fields,
)


def _create_request(group_id: str, payer: str, payee: str, **changes):
    settlement = pb.Settlement(
        payer=f"users/{payer}",
        payee=f"users/{payee}",
        creator=f"users/{payer}",
        amount=money_of(1000),
        settlement_date=date_pb2.Date(year=2024, month=6, day=1),
    )
    for key, value in changes.pop("settlement", {}).items():
        if key in ("amount", "settlement_date"):
            getattr(settlement, key).CopyFrom(value)
        else:
            setattr(settlement, key, value)
    if changes.pop("clear_date", False):
        settlement.ClearField("settlement_date")
    return pb.CreateSettlementRequest(
        parent=f"groups/{group_id}", settlement=settlement, **changes
    )


def test_create_moves_balances_and_get_returns_it(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    services.peer.publish(group_id, "e1", {alice: (2000, 1000), bob: (0, 1000)})
    services.sync()

    created = settle(services.balances, group_id, bob, alice, 400, note="part")
    fetched = services.balances.GetSettlement(
        pb.GetSettlementRequest(name=created.name), timeout=10
    ).settlement

    assert fetched == created
    assert created.name.startswith(f"groups/{group_id}/settlements/")
    assert created.etag == '"1"'
    assert created.note == "part"
    assert not created.HasField("delete_time")
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 600, bob: -600}}


def test_create_with_same_request_id_returns_first(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    request_id = str(uuid.uuid4())

    first = settle(services.balances, group_id, alice, bob, 250, request_id=request_id)
    # Output-only fields and the name are ignored, so they do not make it
    # another request.
    again = _create_request(
        group_id,
        alice,
        bob,
        settlement={
            "amount": money_of(250),
            "note": "bank transfer",
            "name": "groups/x/settlements/y",
            "etag": '"7"',
        },
        request_id=request_id.upper(),
    )
    second = services.balances.CreateSettlement(again, timeout=10).settlement

    assert second == first
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 250, bob: -250}}


def test_etag_annotated_output_only():
    # CreateSettlement ignores the etag (see the test above), and the requests
    # of DeleteSettlement and UndeleteSettlement carry their own.
    options = pb.Settlement.DESCRIPTOR.fields_by_name["etag"].GetOptions()
    behaviors = list(options.Extensions[field_behavior_pb2.field_behavior])

    assert behaviors == [field_behavior_pb2.OUTPUT_ONLY]


@pytest.mark.parametrize(
    "changes",
    [
        {"settlement": {"amount": money_of(100)}},
        {"settlement": {"amount": money_of(25000, "JPY")}},
        {"settlement": {"note": "cash"}},
        {"settlement": {"settlement_date": date_pb2.Date(year=2024, month=6, day=2)}},
        {"settlement_id": "chosen-now"},
        {"swap": True},
    ],
    ids=["amount", "currency", "note", "date", "settlement-id", "payer-and-payee"],
)
def test_request_id_reused_with_other_values_rejected(services, changes):
    group_id, (alice, bob) = create_group(services.users, 2)
    request_id = str(uuid.uuid4())
    first = settle(services.balances, group_id, alice, bob, 250, request_id=request_id)
    changes = dict(changes)  # The parameter is shared by both backends.
    payer, payee = (bob, alice) if changes.pop("swap", False) else (alice, bob)
    base = {"amount": money_of(250), "note": "bank transfer"}
    settlement = {**base, **changes.pop("settlement", {})}
    request = _create_request(
        group_id, payer, payee, settlement=settlement, request_id=request_id, **changes
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    error = caught.value
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(error) == "REQUEST_ID_REUSED"
    assert violated_fields(error) == ["request_id"]
    assert request_id in error.details()
    assert "other values" in error.details()
    assert "Send a new UUID" in error.details()
    listed = services.balances.ListSettlements(
        pb.ListSettlementsRequest(parent=f"groups/{group_id}"), timeout=10
    )
    assert [settlement.name for settlement in listed.settlements] == [first.name]
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 250, bob: -250}}


def test_request_id_stored_without_hash_replays(services):
    """A key stored before requests were hashed replays whatever comes."""
    group_id, (alice, bob) = create_group(services.users, 2)
    request_id = str(uuid.uuid4())
    first = settle(services.balances, group_id, alice, bob, 250, request_id=request_id)
    with services.database.transaction() as session:
        session.execute(
            text(
                "UPDATE balance_service_request_ids SET request_hash = NULL "
                "WHERE request_id = :key"
            ),
            {"key": request_id},
        )

    second = settle(services.balances, group_id, alice, bob, 999, request_id=request_id)

    assert second == first
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 250, bob: -250}}


def test_request_id_reused_in_other_group_rejected(services):
    first_group, (alice, bob) = create_group(services.users, 2)
    second_group, (carol, dave) = create_group(services.users, 2)
    request_id = str(uuid.uuid4())
    settle(services.balances, first_group, alice, bob, 250, request_id=request_id)

    with pytest.raises(grpc.RpcError) as caught:
        settle(services.balances, second_group, carol, dave, 100, request_id=request_id)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "REQUEST_ID_REUSED"
    # Without auth every caller may see every group, so it is named.
    assert f"'groups/{first_group}'" in caught.value.details()
    assert group_nets(services.balances, second_group) == {}


def test_create_with_chosen_id_and_duplicate(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    request = _create_request(group_id, alice, bob, settlement_id="paid-back")

    created = services.balances.CreateSettlement(request, timeout=10).settlement
    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    assert created.name == f"groups/{group_id}/settlements/paid-back"
    assert caught.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(caught.value) == "SETTLEMENT_ALREADY_EXISTS"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        (
            {"settlement": {"payee": "users/SAME"}},
            "settlement.payee",
            "SAME_PAYER_AND_PAYEE",
        ),
        ({"settlement": {"payer": "bob"}}, "settlement.payer", "INVALID_RESOURCE_NAME"),
        ({"settlement": {"creator": ""}}, "settlement.creator", "REQUIRED"),
        (
            {"settlement": {"amount": money_of(-5)}},
            "settlement.amount",
            "AMOUNT_NOT_POSITIVE",
        ),
        (
            {"settlement": {"amount": money_of(0)}},
            "settlement.amount",
            "AMOUNT_NOT_POSITIVE",
        ),
        (
            {
                "settlement": {
                    "amount": money_pb2.Money(currency_code="EUR", nanos=1_000_000)
                }
            },
            "settlement.amount",
            "AMOUNT_TOO_PRECISE",
        ),
        (
            {"settlement": {"amount": money_pb2.Money(currency_code="ABC", units=1)}},
            "settlement.amount.currency_code",
            "INVALID_CURRENCY_CODE",
        ),
        (
            {
                "settlement": {
                    "amount": money_pb2.Money(
                        currency_code="EUR", units=9_223_372_036_854_775_807
                    )
                }
            },
            "settlement.amount",
            "AMOUNT_OUT_OF_RANGE",
        ),
        ({"clear_date": True}, "settlement.settlement_date", "REQUIRED"),
        ({"settlement": {"note": "x" * 2001}}, "settlement.note", "NOTE_TOO_LONG"),
        ({"settlement": {"note": "a\x1b[2Jb"}}, "settlement.note", "INVALID_NOTE"),
        ({"settlement": {"note": "a\u202eb"}}, "settlement.note", "INVALID_NOTE"),
        ({"settlement": {"note": "a\x00b"}}, "settlement.note", "INVALID_NOTE"),
        ({"settlement_id": "Bad_Id"}, "settlement_id", "INVALID_ID"),
        ({"request_id": "not-a-uuid"}, "request_id", "INVALID_REQUEST_ID"),
    ],
)
def test_create_invalid_argument(services, changes, field, reason):
    group_id, (alice, bob) = create_group(services.users, 2)
    changes = {**changes, "settlement": dict(changes.get("settlement", {}))}
    if changes["settlement"].get("payee") == "users/SAME":
        changes["settlement"]["payee"] = f"users/{alice}"

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(
            _create_request(group_id, alice, bob, **changes), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == reason
    assert violated_fields(caught.value) == [field]
    assert group_nets(services.balances, group_id) == {}


def _date_of(value: datetime.date) -> date_pb2.Date:
    return date_pb2.Date(year=value.year, month=value.month, day=value.day)


def _days_from_today(days: int) -> datetime.date:
    today = datetime.datetime.now(datetime.UTC).date()
    return today + datetime.timedelta(days=days)


@pytest.mark.parametrize(
    "settlement_date",
    [
        datetime.date(9999, 12, 31),
        datetime.date(1, 1, 1),
        datetime.date(1899, 12, 31),
        _days_from_today(400),
    ],
)
def test_create_date_out_of_range(services, settlement_date):
    group_id, (alice, bob) = create_group(services.users, 2)
    request = _create_request(
        group_id, alice, bob, settlement={"settlement_date": _date_of(settlement_date)}
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    latest = latest_record_date().isoformat()
    message = caught.value.details()
    field = "settlement.settlement_date"
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "DATE_OUT_OF_RANGE"
    assert violated_fields(caught.value) == [field]
    assert message.startswith(f"{field}: {settlement_date.isoformat()} ")
    assert f"outside the accepted range 1900-01-01 to {latest}" in message
    assert "give the day of the payment" in message
    assert error_details(caught.value)["ErrorInfo"].metadata["latest_date"] == latest
    assert group_nets(services.balances, group_id) == {}


ONE_DAY = datetime.timedelta(days=1)


def _edge_date(edge: str) -> datetime.date:
    """Return a date at or just past an end of the accepted range.

    The latest date moves with the UTC date, so a test computes it when it
    runs, not when pytest collects it.
    """
    dates = {
        "earliest": EARLIEST_RECORD_DATE,
        "before_earliest": EARLIEST_RECORD_DATE - ONE_DAY,
        "latest": latest_record_date(),
        "after_latest": latest_record_date() + ONE_DAY,
    }
    return dates[edge]


@pytest.mark.parametrize("edge", ["earliest", "latest"])
def test_create_date_range_edges_accepted(services, edge):
    settlement_date = _edge_date(edge)
    group_id, (alice, bob) = create_group(services.users, 2)
    request = _create_request(
        group_id, alice, bob, settlement={"settlement_date": _date_of(settlement_date)}
    )

    created = services.balances.CreateSettlement(request, timeout=10).settlement

    assert created.settlement_date == _date_of(settlement_date)


@pytest.mark.parametrize("edge", ["before_earliest", "after_latest"])
def test_create_date_past_range_edges_rejected(services, edge):
    settlement_date = _edge_date(edge)
    group_id, (alice, bob) = create_group(services.users, 2)
    request = _create_request(
        group_id, alice, bob, settlement={"settlement_date": _date_of(settlement_date)}
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "DATE_OUT_OF_RANGE"
    assert violated_fields(caught.value) == ["settlement.settlement_date"]
    assert f"{settlement_date.isoformat()} is outside" in caught.value.details()
    assert group_nets(services.balances, group_id) == {}


@pytest.mark.parametrize(
    ("units", "bound"),
    [
        (9_223_372_036_854_775_807, "larger than the maximum of 10000000000000.00"),
        (-(10**14), "below the minimum of 0.01"),
    ],
)
def test_create_amount_range_named(services, units, bound):
    group_id, (alice, bob) = create_group(services.users, 2)
    amount = money_pb2.Money(currency_code="USD", units=units)
    request = _create_request(group_id, alice, bob, settlement={"amount": amount})

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    message = caught.value.details()
    assert reason_of(caught.value) == "AMOUNT_OUT_OF_RANGE"
    assert f"is {bound} USD; " in message
    assert "a settlement amount must be from 0.01 to 10000000000000.00 USD" in message
    assert "-10000000000000.00" not in message


def test_create_note_names_control_character(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    request = _create_request(group_id, alice, bob, settlement={"note": "a\x1bb"})

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    assert "settlement.note" in caught.value.details()
    assert "U+001B" in caught.value.details()
    assert "remove it" in caught.value.details()


def test_create_note_keeps_line_breaks_and_tabs(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    services.peer.publish(group_id, "e1", {alice: (2000, 1000), bob: (0, 1000)})
    services.sync()

    created = settle(services.balances, group_id, bob, alice, 400, note="a\r\nb\tc")

    assert created.note == "a\r\nb\tc"


def test_create_lists_every_invalid_field(services):
    request = pb.CreateSettlementRequest(
        parent="groups/abcd", settlement=pb.Settlement()
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert violated_fields(caught.value) == [
        "settlement.payer",
        "settlement.payee",
        "settlement.creator",
        "settlement.amount.currency_code",
        "settlement.settlement_date",
    ]


def test_create_for_non_member_fails_precondition(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    _, (outsider,) = create_group(services.users, 1)

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(
            _create_request(group_id, alice, outsider), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(caught.value) == "NOT_A_GROUP_MEMBER"
    violation = error_details(caught.value)["PreconditionFailure"].violations[0]
    assert violation.subject == f"groups/{group_id}/members/{outsider}"


def _deactivate(services, user_id: str) -> None:
    services.users.DeactivateUser(
        users_pb.DeactivateUserRequest(name=f"users/{user_id}"), timeout=10
    )


@pytest.mark.parametrize("role", ["payer", "payee"])
def test_create_with_deactivated_user_rejected(services, role):
    group_id, (alice, bob, carol) = create_group(services.users, 3)
    _deactivate(services, bob)
    payer, payee = (bob, alice) if role == "payer" else (alice, bob)
    request = _create_request(
        group_id, payer, payee, settlement={"creator": f"users/{carol}"}
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(request, timeout=10)

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert f"'users/{bob}' (settlement.{role}) is deactivated" in error.details()
    assert "has no balance in EUR in the group" in error.details()
    assert "Name an active member instead" in error.details()
    violations = error_details(error)["PreconditionFailure"].violations
    assert [v.subject for v in violations] == [f"users/{bob}"]
    assert [v.type for v in violations] == ["USER_DEACTIVATED"]
    assert _list(services, parent=f"groups/{group_id}") == []
    assert group_nets(services.balances, group_id) == {}


def test_create_by_deactivated_payer_names_both_fields(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    _deactivate(services, alice)

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(
            _create_request(group_id, alice, bob), timeout=10
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert (
        f"'users/{alice}' (settlement.payer, settlement.creator) is deactivated"
        in error.details()
    )
    info = error_details(error)["ErrorInfo"]
    assert info.metadata["users"] == f"users/{alice}"
    assert info.metadata["fields"] == "settlement.payer,settlement.creator"
    assert len(error_details(error)["PreconditionFailure"].violations) == 1


def test_undelete_with_deactivated_payee_rejected(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    created = settle(services.balances, group_id, alice, bob, 300)
    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name), timeout=10
    ).settlement
    _deactivate(services, bob)

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.UndeleteSettlement(
            pb.UndeleteSettlementRequest(name=created.name, etag=deleted.etag),
            timeout=10,
        )

    error = caught.value
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert reason_of(error) == "USER_DEACTIVATED"
    assert f"'users/{bob}' (the settlement's payee)" in error.details()
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 0, bob: 0}}


def test_delete_with_deactivated_payee_allowed(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    created = settle(services.balances, group_id, alice, bob, 300)
    _deactivate(services, bob)

    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name), timeout=10
    ).settlement

    assert deleted.HasField("delete_time")
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 0, bob: 0}}


def test_create_in_unknown_group_is_not_found(services):
    with pytest.raises(grpc.RpcError) as caught:
        services.balances.CreateSettlement(
            _create_request("missing-group", "alice", "bobby"), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "GROUP_NOT_FOUND"


def test_get_unknown_settlement_is_not_found(services):
    with pytest.raises(grpc.RpcError) as caught:
        services.balances.GetSettlement(
            pb.GetSettlementRequest(name="groups/abcd/settlements/none-such"),
            timeout=10,
        )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "SETTLEMENT_NOT_FOUND"


def test_delete_and_undelete_move_balances(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    created = settle(services.balances, group_id, alice, bob, 300)

    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name, etag=created.etag), timeout=10
    ).settlement
    after_delete = group_nets(services.balances, group_id)
    restored = services.balances.UndeleteSettlement(
        pb.UndeleteSettlementRequest(name=created.name, etag=deleted.etag), timeout=10
    ).settlement
    after_restore = group_nets(services.balances, group_id)

    assert deleted.HasField("delete_time")
    assert deleted.etag == '"2"'
    assert after_delete == {"EUR": {alice: 0, bob: 0}}
    assert not restored.HasField("delete_time")
    assert after_restore == {"EUR": {alice: 300, bob: -300}}


def test_delete_with_stale_etag_is_aborted(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    created = settle(services.balances, group_id, alice, bob, 300)
    services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name), timeout=10
    )

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.UndeleteSettlement(
            pb.UndeleteSettlementRequest(name=created.name, etag=created.etag),
            timeout=10,
        )

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert caught.value.details() == (
        f'etag {created.etag} does not match the current etag "2" of '
        f"{created.name!r}: it is stale, because the settlement has changed "
        "since it was read. Read it again and retry with the current etag"
    )
    metadata = error_details(caught.value)["ErrorInfo"].metadata
    assert metadata["current_etag"] == '"2"'


def test_delete_with_never_issued_etag_is_aborted(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    created = settle(services.balances, group_id, alice, bob, 300)

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.DeleteSettlement(
            pb.DeleteSettlementRequest(name=created.name, etag='"7"'), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.ABORTED
    assert reason_of(caught.value) == "ETAG_MISMATCH"
    assert caught.value.details() == (
        f'etag "7" does not match the current etag "1" of {created.name!r}: '
        "the settlement never had that etag. Send the etag of a read of it "
        "(the etag field, or the ETag header of a REST GET)"
    )


def test_delete_twice_succeeds_and_undelete_live_fails(services):
    group_id, (alice, bob) = create_group(services.users, 2)
    created = settle(services.balances, group_id, alice, bob, 300)

    with pytest.raises(grpc.RpcError) as not_deleted:
        services.balances.UndeleteSettlement(
            pb.UndeleteSettlementRequest(name=created.name), timeout=10
        )
    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name), timeout=10
    ).settlement
    # Deleting again changes nothing; a stale etag is not checked then.
    twice = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name, etag=created.etag), timeout=10
    ).settlement

    assert not_deleted.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert reason_of(not_deleted.value) == "SETTLEMENT_NOT_DELETED"
    assert deleted.HasField("delete_time")
    assert twice == deleted
    assert group_nets(services.balances, group_id) == {"EUR": {alice: 0, bob: 0}}


def test_delete_invalid_id_shows_settlement_example(services):
    name = "groups/abcd/settlements/a_b"

    with pytest.raises(grpc.RpcError) as caught:
        services.balances.DeleteSettlement(
            pb.DeleteSettlementRequest(name=name), timeout=10
        )

    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert reason_of(caught.value) == "INVALID_RESOURCE_NAME"
    assert caught.value.details() == (
        f"name: {name!r} contains the invalid id 'a_b'; ids are 4 to 63 "
        "lower-case letters, digits and hyphens, starting with a letter and "
        "not ending with a hyphen, as in "
        "'groups/example-id/settlements/example-id'"
    )


@pytest.mark.parametrize(
    ("name", "etag", "code", "reason"),
    [
        (
            "groups/abcd/settlements/none-such",
            "",
            grpc.StatusCode.NOT_FOUND,
            "GROUP_NOT_FOUND",
        ),
        (
            "groups/abcd/settlements",
            "",
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_RESOURCE_NAME",
        ),
        (
            "groups/abcd/settlements/none-such",
            "3",
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ETAG",
        ),
    ],
)
def test_delete_errors(services, name, etag, code, reason):
    with pytest.raises(grpc.RpcError) as caught:
        services.balances.DeleteSettlement(
            pb.DeleteSettlementRequest(name=name, etag=etag), timeout=10
        )

    assert caught.value.code() == code
    assert reason_of(caught.value) == reason


@pytest.mark.parametrize("deleted", [True, False])
def test_delete_or_restore_missing_settlement(services, deleted):
    group_id, _ = create_group(services.users, 2)
    name = f"groups/{group_id}/settlements/none-such"

    with pytest.raises(grpc.RpcError) as caught:
        if deleted:
            services.balances.DeleteSettlement(
                pb.DeleteSettlementRequest(name=name), timeout=10
            )
        else:
            services.balances.UndeleteSettlement(
                pb.UndeleteSettlementRequest(name=name), timeout=10
            )

    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert reason_of(caught.value) == "SETTLEMENT_NOT_FOUND"


def _list(services, **fields) -> list[pb.Settlement]:
    found, token = [], ""
    while True:
        response = services.balances.ListSettlements(
            pb.ListSettlementsRequest(page_token=token, **fields), timeout=10
        )
        found += response.settlements
        token = response.next_page_token
        if not token:
            return found


def test_list_pages_filters_and_orders(services):
    group_id, (alice, bob, carol) = create_group(services.users, 3)
    day = lambda d: date_pb2.Date(year=2024, month=4, day=d)  # noqa: E731
    first = settle(services.balances, group_id, alice, bob, 100, settlement_date=day(3))
    second = settle(
        services.balances, group_id, bob, carol, 200, settlement_date=day(9)
    )
    third = settle(
        services.balances, group_id, carol, alice, 300, settlement_date=day(5)
    )
    services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=third.name), timeout=10
    )
    parent = f"groups/{group_id}"

    by_date = _list(services, parent=parent, page_size=1)
    with_deleted = _list(services, parent=parent, show_deleted=True)
    by_creation = _list(services, parent=parent, order_by="create_time desc")
    of_carol = _list(
        services, parent=parent, participant=f"users/{carol}", show_deleted=True
    )
    in_range = _list(
        services, parent=parent, start_date=day(4), end_date=day(9), show_deleted=True
    )
    across_groups = _list(services, parent="groups/-", participant=f"users/{alice}")

    assert [s.name for s in by_date] == [second.name, first.name]
    assert [s.name for s in with_deleted] == [second.name, third.name, first.name]
    assert [s.name for s in by_creation] == [second.name, first.name]
    assert [s.name for s in of_carol] == [second.name, third.name]
    assert [s.name for s in in_range] == [second.name, third.name]
    assert [s.name for s in across_groups] == [first.name]


@pytest.mark.parametrize(
    ("fields", "code", "reason"),
    [
        (
            {"parent": "groups/missing-group"},
            grpc.StatusCode.NOT_FOUND,
            "GROUP_NOT_FOUND",
        ),
        ({"parent": "groups/-"}, grpc.StatusCode.INVALID_ARGUMENT, "REQUIRED"),
        (
            {"parent": "groups/-", "participant": "users/nobody-here"},
            grpc.StatusCode.NOT_FOUND,
            "USER_NOT_FOUND",
        ),
        (
            {"parent": "groups/abcd", "order_by": "amount"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ORDER_BY",
        ),
        (
            {"parent": "groups/abcd", "page_size": -2},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_FIELD",
        ),
        (
            {"parent": "groups/abcd", "page_token": "garbage"},
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_PAGE_TOKEN",
        ),
    ],
)
def test_list_errors(services, fields, code, reason):
    call = services.balances.ListSettlements
    check_rejected(call, pb.ListSettlementsRequest(**fields), code, reason)


def test_settlements_beside_applied_expenses(services, caplog):
    """A settlement and a ledger batch of the same group lock the same rows, in
    one order, so neither fails with a deadlock on PostgreSQL."""
    group_id, (ann, ben) = create_group(services.users, 2)

    with caplog.at_level(logging.WARNING, logger="balance_service.ledger"):
        for index in range(40):
            services.peer.publish(
                group_id, f"dinner{index}", {ann: (1000, 500), ben: (0, 500)}
            )
            settle(services.balances, group_id, ben, ann, 500)
        services.sync()

    assert group_nets(services.balances, group_id) == {"EUR": {ann: 0, ben: 0}}
    failures = [record.getMessage() for record in caplog.records]
    assert not [message for message in failures if "deadlock" in message.lower()]
