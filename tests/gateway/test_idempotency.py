"""The request_id that the gateway gives a create sent without one."""

from __future__ import annotations

import uuid

import pytest

from gateway import idempotency
from gateway.services import public_services
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.logs.v1 import logs_service_pb2

REQUEST = balances_pb.CreateSettlementRequest
NUMBER = REQUEST.DESCRIPTOR.fields_by_name["request_id"].number
LIMIT = 1 << 20
# Field 99, which CreateSettlementRequest does not define but a newer client
# may send, encoded as a varint, as a length-delimited value and as a group.
UNKNOWN_VARINT = bytes([99 << 3 & 0x7F | 0x80, 99 >> 4, 0x96, 0x01])
UNKNOWN_BYTES = bytes([99 << 3 & 0x7F | 0x80 | 2, 99 >> 4, 3]) + b"abc"
UNKNOWN_GROUP = (
    bytes([99 << 3 & 0x7F | 0x80 | 3, 99 >> 4])
    + bytes([1 << 3, 7])
    + bytes([99 << 3 & 0x7F | 0x80 | 4, 99 >> 4])
)


def _request(**fields) -> balances_pb.CreateSettlementRequest:
    return balances_pb.CreateSettlementRequest(
        parent="groups/trip",
        settlement=balances_pb.Settlement(note="rent"),
        **fields,
    )


def _string_field(number: int, value: bytes) -> bytes:
    return bytes([number << 3 | 2, len(value)]) + value


def test_filled_methods_are_the_creates():
    filled = {
        method.full_name
        for service in public_services()
        for method in service.descriptor.methods
        if idempotency.request_id_number(method) is not None
    }
    assert filled == {
        "splitlog.users.v1.UsersService.CreateUser",
        "splitlog.users.v1.UsersService.CreateGroup",
        "splitlog.expenses.v1.ExpensesService.CreateExpense",
        "splitlog.expenses.v1.ExpensesService.BatchCreateExpenses",
        "splitlog.balances.v1.BalancesService.CreateSettlement",
    }


def test_log_writes_keep_their_request_id():
    service = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]
    method = service.methods_by_name["WriteLogEntries"]
    assert idempotency.request_id_number(method) is None


def test_missing_request_id_gets_a_uuid():
    sent = _request().SerializeToString()
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT)
    parsed = balances_pb.CreateSettlementRequest.FromString(filled)
    assert uuid.UUID(parsed.request_id).version == 4
    assert filled.startswith(sent)
    assert parsed.settlement.note == "rent"


def test_each_call_gets_its_own_uuid():
    sent = _request().SerializeToString()
    first = idempotency.with_request_id(sent, REQUEST, LIMIT)
    second = idempotency.with_request_id(sent, REQUEST, LIMIT)
    assert first != second


def test_client_request_id_is_kept():
    sent = _request(request_id=str(uuid.uuid4())).SerializeToString()
    assert idempotency.with_request_id(sent, REQUEST, LIMIT) == sent


def test_empty_last_occurrence_counts_as_missing():
    key = str(uuid.uuid4())
    # Protobuf keeps the last occurrence: an empty one after a key clears it.
    sent = _request(request_id=key).SerializeToString() + bytes([NUMBER << 3 | 2, 0])
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT)
    parsed = balances_pb.CreateSettlementRequest.FromString(filled)
    assert parsed.request_id not in ("", key)


def test_last_of_repeated_request_ids_counts():
    key = str(uuid.uuid4()).encode()
    sent = _string_field(NUMBER, b"") + _request().SerializeToString()
    sent += _string_field(NUMBER, key)
    assert idempotency.with_request_id(sent, REQUEST, LIMIT) is sent


def test_lone_empty_request_id_is_missing():
    sent = _request().SerializeToString() + _string_field(NUMBER, b"")
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT)
    assert uuid.UUID(REQUEST.FromString(filled).request_id).version == 4


def test_wrong_wire_type_is_missing():
    # Protobuf parses a field of the wrong wire type as an unknown field, so
    # the backend would see no request_id.
    sent = _request().SerializeToString() + bytes([NUMBER << 3, 5])
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT)
    assert REQUEST.FromString(sent).request_id == ""
    assert uuid.UUID(REQUEST.FromString(filled).request_id).version == 4


@pytest.mark.parametrize(
    "unknown",
    [UNKNOWN_VARINT, UNKNOWN_BYTES, UNKNOWN_GROUP],
    ids=["varint", "bytes", "group"],
)
def test_unknown_fields_kept_exactly(unknown):
    sent = unknown + _request().SerializeToString() + unknown
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT, "key-1")
    assert filled == sent + _string_field(NUMBER, b"key-1")
    assert REQUEST.FromString(filled).request_id == "key-1"


def test_given_key_is_used():
    sent = _request().SerializeToString()
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT, "key-1")
    assert REQUEST.FromString(filled).request_id == "key-1"


def test_nested_request_id_is_ignored():
    # Field 4 of the settlement is its amount, not the request's request_id.
    settlement = _string_field(NUMBER, b"nested")
    sent = bytes([2 << 3 | 2, len(settlement)]) + settlement
    filled = idempotency.with_request_id(sent, REQUEST, LIMIT, "key-1")
    assert filled == sent + _string_field(NUMBER, b"key-1")


@pytest.mark.parametrize(
    "sent",
    [
        b"\x0a\xff",
        _request().SerializeToString()[:-1],
        _request().SerializeToString() + b"\x80",
        _request().SerializeToString() + _string_field(NUMBER, b"key")[:-1],
        b"\x00\x01",
        UNKNOWN_GROUP[:-2],
    ],
    ids=[
        "length-past-end",
        "cut-short",
        "truncated-tag",
        "truncated-request-id",
        "field-number-zero",
        "unclosed-group",
    ],
)
def test_undecodable_bytes_are_kept(sent):
    assert idempotency.with_request_id(sent, REQUEST, LIMIT) is sent


def test_empty_request_is_filled():
    filled = idempotency.with_request_id(b"", REQUEST, LIMIT, "key-1")
    assert filled == _string_field(NUMBER, b"key-1")


def test_request_at_the_limit_is_kept():
    sent = _request().SerializeToString()
    assert idempotency.with_request_id(sent, REQUEST, len(sent) + 10) == sent


def test_request_just_fitting_is_filled():
    sent = _request().SerializeToString()
    limit = len(sent) + len(_string_field(NUMBER, b"key-1"))
    assert idempotency.with_request_id(sent, REQUEST, limit, "key-1") != sent
    assert idempotency.with_request_id(sent, REQUEST, limit - 1, "key-1") is sent


def test_parsed_request_is_filled_when_it_fits():
    message = _request()
    idempotency.fill_request_id(message, LIMIT)
    assert uuid.UUID(message.request_id).version == 4
    at_limit = _request()
    idempotency.fill_request_id(at_limit, at_limit.ByteSize())
    assert at_limit.request_id == ""


def test_filled_request_class_of_create():
    method = balances_pb.DESCRIPTOR.services_by_name["BalancesService"].methods_by_name[
        "CreateSettlement"
    ]
    request_class = idempotency.filled_request_class(method)
    assert request_class.DESCRIPTOR.full_name == REQUEST.DESCRIPTOR.full_name
    service = logs_service_pb2.DESCRIPTOR.services_by_name["LogsService"]
    write = service.methods_by_name["WriteLogEntries"]
    assert idempotency.filled_request_class(write) is None
