"""The request_id that the gateway gives a create sent without one."""

from __future__ import annotations

import uuid

from gateway import idempotency
from gateway.services import public_services
from splitlog.balances.v1 import balances_service_pb2 as balances_pb
from splitlog.logs.v1 import logs_service_pb2

CREATE_SETTLEMENT = balances_pb.DESCRIPTOR.services_by_name[
    "BalancesService"
].methods_by_name["CreateSettlement"]
NUMBER = CREATE_SETTLEMENT.input_type.fields_by_name["request_id"].number
LIMIT = 1 << 20


def _request(**fields) -> balances_pb.CreateSettlementRequest:
    return balances_pb.CreateSettlementRequest(
        parent="groups/trip",
        settlement=balances_pb.Settlement(note="rent"),
        **fields,
    )


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
    filled = idempotency.with_request_id(sent, NUMBER, LIMIT)
    parsed = balances_pb.CreateSettlementRequest.FromString(filled)
    assert uuid.UUID(parsed.request_id).version == 4
    assert filled.startswith(sent)
    assert parsed.settlement.note == "rent"


def test_each_call_gets_its_own_uuid():
    sent = _request().SerializeToString()
    first = idempotency.with_request_id(sent, NUMBER, LIMIT)
    second = idempotency.with_request_id(sent, NUMBER, LIMIT)
    assert first != second


def test_client_request_id_is_kept():
    sent = _request(request_id=str(uuid.uuid4())).SerializeToString()
    assert idempotency.with_request_id(sent, NUMBER, LIMIT) == sent


def test_empty_last_occurrence_counts_as_missing():
    key = str(uuid.uuid4())
    # Protobuf keeps the last occurrence: an empty one after a key clears it.
    sent = _request(request_id=key).SerializeToString() + bytes([NUMBER << 3 | 2, 0])
    filled = idempotency.with_request_id(sent, NUMBER, LIMIT)
    parsed = balances_pb.CreateSettlementRequest.FromString(filled)
    assert parsed.request_id not in ("", key)


def test_undecodable_bytes_are_kept():
    sent = b"\x0a\xff"
    assert idempotency.with_request_id(sent, NUMBER, LIMIT) == sent


def test_request_at_the_limit_is_kept():
    sent = _request().SerializeToString()
    assert idempotency.with_request_id(sent, NUMBER, len(sent) + 10) == sent


def test_parsed_request_is_filled_when_it_fits():
    message = _request()
    idempotency.fill_request_id(message, LIMIT)
    assert uuid.UUID(message.request_id).version == 4
    at_limit = _request()
    idempotency.fill_request_id(at_limit, at_limit.ByteSize())
    assert at_limit.request_id == ""
