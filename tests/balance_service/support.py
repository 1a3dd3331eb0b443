"""Helpers for the balance service tests: a ledger peer, clients and checks.

`LedgerPeer` is a small real gRPC server that implements
`splitlog.expenses.v1.LedgerService` the way expense_service's outbox does:
it keeps numbered events and streams the backlog after `after_sequence`,
then each new event. The balance service reads it through a real channel.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from datetime import date, datetime

import grpc
import pytest
from google.protobuf import timestamp_pb2
from google.type import date_pb2, money_pb2

from balance_service import storage
from balance_service.app import build as build_balances
from expense_service import money
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.balances.v1 import balances_service_pb2_grpc as pb_grpc
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.database import Database
from splitlog_runtime.server import ServiceHost
from tests.rich_errors import (  # noqa: F401 (re-exported)
    error_details,
    reason_of,
    violated_fields,
)


def money_of(amount_minor: int, currency: str = "EUR") -> money_pb2.Money:
    units, nanos = money.from_minor_units(amount_minor, currency)
    return money_pb2.Money(currency_code=currency, units=units, nanos=nanos)


def minor(value: money_pb2.Money) -> int:
    return money.to_minor_units(value.units, value.nanos, value.currency_code)


def check_rejected(call, request, code: grpc.StatusCode, reason: str) -> None:
    """Check that `call(request)` fails with `code` and the ErrorInfo `reason`."""
    with pytest.raises(grpc.RpcError) as caught:
        call(request, timeout=10)

    assert caught.value.code() == code
    assert reason_of(caught.value) == reason


def unique_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class LedgerPeer(ledger_grpc.LedgerServiceServicer):
    """A real LedgerService server holding events in memory.

    Args:
      replay_from_start: ignore `after_sequence` and always stream from the
        first event, as a peer that lost track would.
      stalled_streams: how many of the first streams send nothing, not even
        headers, until the caller gives them up, as a server that hangs would.
    """

    def __init__(
        self,
        address: str = "127.0.0.1:0",
        replay_from_start=False,
        stalled_streams: int = 0,
    ):
        self.events: list[ledger_pb.LedgerEvent] = []
        self.replay_from_start = replay_from_start
        self.stalled_streams = stalled_streams
        # While True, streams send nothing, as if the link were slow.
        self.paused = False
        self.requests: list[int] = []
        self._changed = threading.Condition()
        self._closed = False
        self._revisions: dict[str, int] = defaultdict(int)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        ledger_grpc.add_LedgerServiceServicer_to_server(self, self.server)
        self.port = self.server.add_insecure_port(address)
        self.server.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def stop(self) -> None:
        with self._changed:
            self._closed = True
            self._changed.notify_all()
        self.server.stop(0).wait()

    def StreamLedgerEvents(self, request, context):
        self.requests.append(request.after_sequence)
        if len(self.requests) <= self.stalled_streams:
            while context.is_active() and not self._closed:
                time.sleep(0.05)
            return
        position = 0 if self.replay_from_start else request.after_sequence
        while context.is_active():
            with self._changed:
                if self._closed:
                    return
                backlog = [] if self.paused else self.events[position:]
                if not backlog:
                    self._changed.wait(0.2)
                    continue
            for start in range(0, len(backlog), 3):
                yield ledger_pb.StreamLedgerEventsResponse(
                    events=backlog[start : start + 3]
                )
            position += len(backlog)

    def GetLedgerPosition(self, request, context):
        with self._changed:
            return ledger_pb.GetLedgerPositionResponse(last_sequence=len(self.events))

    def publish(
        self,
        group: str,
        expense: str,
        lines: Mapping[str, tuple[int, int]],
        *,
        currency: str = "EUR",
        deleted: bool = False,
        revision: int | None = None,
        day: date = date(2024, 5, 1),
        category: int = 1,
        description: str = "Dinner",
        event_type: int = ledger_pb.LEDGER_EVENT_TYPE_UPDATED,
        commit_time: datetime | None = None,
    ) -> ledger_pb.LedgerEvent:
        """Append the new state of an expense; lines map user ids to (paid, owed).

        `commit_time` is a naive UTC time, the current time when None. The
        first event of an expense sets its create time.
        """
        # Short test names such as "e1" become valid ids such as "expense-e1".
        name = f"groups/{group}/expenses/expense-{expense}"
        if revision is None:
            self._revisions[name] += 1
            revision = self._revisions[name]
        commit_timestamp = timestamp_pb2.Timestamp()
        if commit_time is None:
            commit_timestamp.GetCurrentTime()
        else:
            commit_timestamp.FromDatetime(commit_time)
        with self._changed:
            event = ledger_pb.LedgerEvent(
                sequence=len(self.events) + 1,
                expense=name,
                group=f"groups/{group}",
                revision=revision,
                type=event_type,
                deleted=deleted,
                currency_code=currency,
                expense_date=date_pb2.Date(year=day.year, month=day.month, day=day.day),
                category=category,
                description=description,
                total=money_of(sum(paid for paid, _ in lines.values()), currency),
                commit_time=commit_timestamp,
                lines=[
                    ledger_pb.LedgerLine(
                        user=f"users/{user}",
                        paid=money_of(paid, currency),
                        owed=money_of(owed, currency),
                    )
                    for user, (paid, owed) in lines.items()
                ],
            )
            self.events.append(event)
            self._changed.notify_all()
        return event

    @property
    def last_sequence(self) -> int:
        return len(self.events)


def debt_nets(debts: Mapping[tuple[str, str], int]) -> dict[str, int]:
    """Return each member's non-zero net amount from `(debtor, creditor) -> amount`."""
    nets: dict[str, int] = defaultdict(int)
    for (debtor, creditor), amount in debts.items():
        nets[debtor] -= amount
        nets[creditor] += amount
    return {member: net for member, net in nets.items() if net}


def has_cycle(debts: Mapping[tuple[str, str], int]) -> bool:
    """Return whether debts go round in a cycle somewhere, by dropping the
    debts to members who owe nobody until none is left or none can go."""
    left = set(debts)
    while left:
        debtors = {debtor for debtor, _ in left}
        sinks = {creditor for _, creditor in left} - debtors
        if not sinks:
            return True
        left = {debt for debt in left if debt[1] not in sinks}
    return False


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)


def open_balances(port: int) -> tuple[grpc.Channel, pb_grpc.BalancesServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, pb_grpc.BalancesServiceStub(channel)


def open_users(port: int) -> tuple[grpc.Channel, users_grpc.UsersServiceStub]:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    return channel, users_grpc.UsersServiceStub(channel)


def create_group(
    users: users_grpc.UsersServiceStub, size: int
) -> tuple[str, list[str]]:
    """Create `size` users and a group of all of them; return the ids."""
    user_ids = [unique_id("user") for _ in range(size)]
    for user_id in user_ids:
        users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"{user_id}@example.com", display_name=user_id
                ),
                user_id=user_id,
            ),
            timeout=10,
        )
    group_id = unique_id("group")
    users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Trip", creator=f"users/{user_ids[0]}"),
            group_id=group_id,
        ),
        timeout=10,
    )
    for user_id in user_ids[1:]:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{group_id}", user=f"users/{user_id}"
            ),
            timeout=10,
        )
    return group_id, user_ids


def group_nets(
    stub: pb_grpc.BalancesServiceStub, group_id: str
) -> dict[str, dict[str, int]]:
    """Return `currency -> user id -> net` and check that each currency sums to 0."""
    balance = stub.GetGroupBalance(
        pb.GetGroupBalanceRequest(name=f"groups/{group_id}/balance"), timeout=10
    ).balance
    nets = {
        entry.currency_code: {
            member.user.split("/", 1)[1]: minor(member.net_amount)
            for member in entry.member_balances
        }
        for entry in balance.currency_balances
    }
    for currency, by_user in nets.items():
        assert sum(by_user.values()) == 0, f"{currency} balances {by_user} not zero-sum"
    return nets


def settle(
    stub: pb_grpc.BalancesServiceStub,
    group_id: str,
    payer: str,
    payee: str,
    amount_minor: int,
    currency: str = "EUR",
    creator: str | None = None,
    **request_fields,
) -> pb.Settlement:
    """Record a settlement; `creator` defaults to the payer."""
    settlement = pb.Settlement(
        payer=f"users/{payer}",
        payee=f"users/{payee}",
        creator=f"users/{creator or payer}",
        amount=money_of(amount_minor, currency),
        settlement_date=request_fields.pop(
            "settlement_date", date_pb2.Date(year=2024, month=6, day=1)
        ),
        note=request_fields.pop("note", "bank transfer"),
    )
    request = pb.CreateSettlementRequest(
        parent=f"groups/{group_id}", settlement=settlement, **request_fields
    )
    return stub.CreateSettlement(request, timeout=10).settlement


@dataclass
class Services:
    """A running balance service with its peers and clients."""

    balances: pb_grpc.BalancesServiceStub
    users: users_grpc.UsersServiceStub
    peer: LedgerPeer
    database: Database
    host: ServiceHost
    users_port: int
    config: config_module.Config
    _channels: list[grpc.Channel] = field(default_factory=list)

    def sync(self, timeout: float = 10.0) -> None:
        """Wait until the balance service has applied every published event."""
        wait_until(lambda: self.cursor() >= self.peer.last_sequence, timeout)

    def cursor(self) -> int:
        with self.database.transaction() as session:
            return storage.read_cursor(session)

    def close(self) -> None:
        for channel in self._channels:
            channel.close()
        self.host.stop(0)
        self.database.dispose()


def start_balances(
    db_url: str, users_port: int, peer: LedgerPeer, data_dir, users=None
) -> Services:
    """Start a balance service on a database, reading from `peer`."""
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data_dir,
            "balance_service_db_url": db_url,
            "user_service_addr": f"127.0.0.1:{users_port}",
            "expense_service_addr": peer.address,
            "workers": 8,
        },
    )
    host = build_balances(config, "127.0.0.1:0")
    balances_channel, balances = open_balances(host.port)
    users_channel, users_stub = open_users(users_port)
    return Services(
        balances=balances,
        users=users_stub,
        peer=peer,
        database=Database(db_url),
        host=host,
        users_port=users_port,
        config=config,
        _channels=[balances_channel, users_channel],
    )
