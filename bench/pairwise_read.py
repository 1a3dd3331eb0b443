"""Time the pairwise reads of large groups: `python -m bench.pairwise_read`.

For each group size and debt pattern, the bench fills a SQLite file with one
group and its expenses in EUR, each paid by one member and split equally
among its participants. It writes the ledger tables, the balances and the
pair amounts through `balance_service.storage`, as the ledger consumer
would. The patterns:

- sparse: each member pays `--sparse-expenses` expenses, each shared with
  three other random members, so each member has a few debts;
- dense: every two members share one expense, paid by one of them at
  random, so every two members have a debt of random size and direction,
  with many cycles. For 500 members that is 124,750 expenses and pair
  amounts; `--no-dense-500` leaves it out.

Then it starts user_service and balance_service on loopback, with a ledger
server that sends no events, and times over gRPC, `--runs` calls each:

- ListPairwiseBalances of the whole group, every page of 1,000 lines, or
  only the first page with `--no-whole-list`;
- GetUserBalance of the member with the lowest id;
- ExplainBalance of that member with the next member as counterparty, the
  first page of 50.

Each read is timed twice: first right after a change to the group's pair
amounts, written through `balance_service.storage` (one minor unit between
the first two members, added and taken back in turn), so that nothing netted
before can serve it; then repeated without a change in between.

It also times `cycles.cancel_cycles` in process on the same debts, so the
table separates the netting from the rest of a read.

The bench uses only calls that every version of balance_service has, so the
same file can time an older checkout: run it as a script with PYTHONPATH
pointing at that checkout. When the checkout has no `balance_service.cycles`,
the netting column stays empty.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import tempfile
import time
from concurrent import futures
from datetime import date, datetime, timedelta
from pathlib import Path

import grpc
from sqlalchemy import insert, select

from balance_service import storage
from balance_service.app import MIGRATIONS_DIR
from balance_service.app import build as build_balances
from balance_service.ledger import Changes
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.balances.v1 import balances_service_pb2_grpc as pb_grpc
from splitlog.expenses.v1 import ledger_service_pb2 as ledger_pb
from splitlog.expenses.v1 import ledger_service_pb2_grpc as ledger_grpc
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from splitlog_runtime import config as config_module
from splitlog_runtime.database import Database, upgrade
from user_service.app import build as build_users
from user_service.guards import AllowAllBalanceGuard

try:
    from balance_service.cycles import cancel_cycles
except ImportError:  # a checkout from before the netting
    cancel_cycles = None

CURRENCY = "EUR"
FIRST_DAY = date(2024, 1, 1)
FIRST_TIME = datetime(2024, 1, 1)
LIST_PAGE_SIZE = 1000
EXPLAIN_PAGE_SIZE = 50
INSERT_BATCH = 5000
SPARSE_SHARERS = 3


def member_ids(members: int) -> list[str]:
    """Return the ids of the first `members` users, sorting in number order."""
    return [f"user-{index:03d}" for index in range(members)]


class _IdleLedger(ledger_grpc.LedgerServiceServicer):
    """A ledger server without events that sends a heartbeat every second."""

    def StreamLedgerEvents(self, request, context):
        while context.is_active():
            yield ledger_pb.StreamLedgerEventsResponse()
            time.sleep(1.0)

    def GetLedgerPosition(self, request, context):
        return ledger_pb.GetLedgerPositionResponse(last_sequence=0)


def _expenses(
    members: list[str], pattern: str, sparse_expenses: int, rng: random.Random
) -> list[tuple[str, list[str]]]:
    """Return `(payer, participants)` of each expense of one group."""
    if pattern == "dense":
        return [
            rng.choice(((first, [first, second]), (second, [first, second])))
            for index, first in enumerate(members)
            for second in members[index + 1 :]
        ]
    found = []
    for payer in members:
        others = [member for member in members if member != payer]
        for _ in range(sparse_expenses):
            sharers = rng.sample(others, min(SPARSE_SHARERS, len(others)))
            found.append((payer, [payer, *sharers]))
    return found


def _lines(
    payer: str, participants: list[str], rng: random.Random
) -> list[tuple[str, int, int]]:
    """Return `(user, paid, owed)` of one expense split equally."""
    total = rng.randrange(100 * len(participants), 10_000 * len(participants))
    share, remainder = divmod(total, len(participants))
    return [
        (
            user,
            total if user == payer else 0,
            share + (1 if index < remainder else 0),
        )
        for index, user in enumerate(participants)
    ]


def _expense_columns(expense: dict) -> dict:
    """Return the expense's columns that a line copies, where lines have them.

    Lines got copies of the currency, date and create time in migration
    0008. Older checkouts, which this bench can also time, lack them.
    """
    names = ("currency_code", "expense_date", "create_time")
    return {
        name: expense[name] for name in names if name in storage.LineRow.__table__.c
    }


def fill_group(
    url: str,
    group_id: str,
    members: list[str],
    pattern: str,
    sparse_expenses: int,
    seed: int = 1,
) -> int:
    """Write the expenses of one group; return how many there are."""
    database = Database(url)
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    rng = random.Random(seed)
    changes = Changes()
    expense_rows, line_rows = [], []
    spread = _expenses(members, pattern, sparse_expenses, rng)
    with database.transaction() as session:
        for index, (payer, participants) in enumerate(spread):
            expense_id = f"expense-{index:07d}"
            created = FIRST_TIME + timedelta(seconds=index)
            lines = _lines(payer, participants, rng)
            expense_rows.append(
                {
                    "group_id": group_id,
                    "expense_id": expense_id,
                    "revision": 1,
                    "deleted": False,
                    "currency_code": CURRENCY,
                    "expense_date": FIRST_DAY + timedelta(days=index % 700),
                    "category": 1,
                    "description": f"Expense {index}",
                    "total": sum(paid for _, paid, _ in lines),
                    "create_time": created,
                    "update_time": created,
                }
            )
            line_rows += [
                {
                    "group_id": group_id,
                    "expense_id": expense_id,
                    "user_id": user,
                    "paid": paid,
                    "owed": owed,
                    **_expense_columns(expense_rows[-1]),
                }
                for user, paid, owed in lines
            ]
            changes.add_expense(group_id, CURRENCY, lines, 1)
        for start in range(0, len(expense_rows), INSERT_BATCH):
            session.execute(
                insert(storage.ExpenseRow), expense_rows[start : start + INSERT_BATCH]
            )
        for start in range(0, len(line_rows), INSERT_BATCH):
            session.execute(
                insert(storage.LineRow), line_rows[start : start + INSERT_BATCH]
            )
        changes.write(session)
        storage.touch_group(session, group_id, FIRST_TIME)
    database.dispose()
    return len(spread)


def read_debts(url: str, group_id: str) -> dict[tuple[str, str], int]:
    """Return the stored pair amounts of a group as `(debtor, creditor) -> amount`."""
    database = Database(url)
    row = storage.PairRow
    debts = {}
    with database.transaction() as session:
        query = select(row.first_user_id, row.second_user_id, row.amount).where(
            row.group_id == group_id, row.amount != 0
        )
        for first, second, amount in session.execute(query):
            if amount > 0:
                debts[first, second] = amount
            else:
                debts[second, first] = -amount
    database.dispose()
    return debts


def _create_users(users, members: list[str]) -> None:
    for user_id in members:
        users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(
                    email=f"{user_id}@example.com", display_name=user_id
                ),
                user_id=user_id,
            ),
            timeout=10,
        )


def _create_group(users, group_id: str, members: list[str]) -> None:
    users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name=group_id, creator=f"users/{members[0]}"),
            group_id=group_id,
        ),
        timeout=10,
    )
    for user_id in members[1:]:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{group_id}", user=f"users/{user_id}"
            ),
            timeout=10,
        )


def percentiles(timings: list[float]) -> tuple[float, float]:
    """Return the p50 and p99 of `timings`, by linear interpolation."""
    if len(timings) == 1:
        return timings[0], timings[0]
    cuts = statistics.quantiles(timings, n=100, method="inclusive")
    return statistics.median(timings), cuts[98]


def _timed(call, runs: int):
    """Return the p50 and p99 seconds of `runs` calls, and the last result."""
    timings, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = call()
        timings.append(time.perf_counter() - started)
    return percentiles(timings), result


def _timed_after(change, call, runs: int):
    """Return the p50 and p99 seconds of `runs` calls, each after `change()`."""
    timings = []
    for _ in range(runs):
        change()
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return percentiles(timings)


class GroupChange:
    """Move one minor unit between the first two members of a group, in turn
    one way and back, as an expense that the first paid and both owe."""

    def __init__(self, url: str, group_id: str, members: list[str]) -> None:
        self._database = Database(url)
        self._group_id = group_id
        self._lines = [(members[0], 2, 1), (members[1], 0, 1)]
        self._sign = 1

    def __call__(self) -> None:
        changes = Changes()
        changes.add_expense(self._group_id, CURRENCY, self._lines, self._sign)
        with self._database.transaction() as session:
            changes.write(session)
            storage.touch_group(session, self._group_id, FIRST_TIME)
        self._sign = -self._sign

    def close(self) -> None:
        self._database.dispose()


def _list_group(stub, group_id: str, whole: bool) -> tuple[int, int]:
    """Read a group's pairwise lines; return lines and pages read.

    Reads every page when `whole` is set, else the first page only.
    """
    request = pb.ListPairwiseBalancesRequest(
        parent=f"groups/{group_id}", page_size=LIST_PAGE_SIZE
    )
    lines = pages = 0
    while True:
        response = stub.ListPairwiseBalances(request, timeout=600)
        lines += len(response.pairwise_balances)
        pages += 1
        if not whole or not response.next_page_token:
            return lines, pages
        request.page_token = response.next_page_token


def time_reads(
    stub, group_id: str, members: list[str], runs: int, whole_list: bool, change
) -> dict:
    """Return the timings of the three reads of one group, first after
    `change()` and then repeated."""
    balance = pb.GetUserBalanceRequest(name=f"users/{members[0]}/balance")
    explain = pb.ExplainBalanceRequest(
        name=f"groups/{group_id}/balance",
        user=f"users/{members[0]}",
        currency_code=CURRENCY,
        counterparty=f"users/{members[1]}",
        page_size=EXPLAIN_PAGE_SIZE,
    )
    reads = {
        "list": lambda: _list_group(stub, group_id, whole_list),
        "user": lambda: stub.GetUserBalance(balance, timeout=600),
        "explain": lambda: stub.ExplainBalance(explain, timeout=600),
    }
    found = {}
    for name, call in reads.items():
        found[name, "first"] = _timed_after(change, call, runs)
        found[name, "repeated"], result = _timed(call, runs)
        if name == "list":
            found["lines"], found["pages"] = result
    return found


def bench_group(
    folder: Path, users_port: int, group_id: str, members: list[str], pattern, args
) -> dict:
    """Fill one group, serve it, time its reads and its netting."""
    data = folder / group_id
    data.mkdir()
    url = f"sqlite:///{data / 'balances.db'}"
    expenses = fill_group(url, group_id, members, pattern, args.sparse_expenses)
    debts = read_debts(url, group_id)
    netting = None
    if cancel_cycles is not None:
        netting, _ = _timed(lambda: cancel_cycles(debts), args.runs)
    ledger = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    ledger_grpc.add_LedgerServiceServicer_to_server(_IdleLedger(), ledger)
    ledger_port = ledger.add_insecure_port("127.0.0.1:0")
    ledger.start()
    config = config_module.load(
        environ={},
        overrides={
            "auth_required": False,
            "data_dir": data,
            "balance_service_db_url": url,
            "user_service_addr": f"127.0.0.1:{users_port}",
            "expense_service_addr": f"127.0.0.1:{ledger_port}",
        },
    )
    host = build_balances(config, "127.0.0.1:0")
    change = GroupChange(url, group_id, members)
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = pb_grpc.BalancesServiceStub(channel)
            found = time_reads(
                stub, group_id, members, args.runs, args.whole_list, change
            )
    finally:
        change.close()
        host.stop(0)
        ledger.stop(0).wait()
    return {
        **found,
        "expenses": expenses,
        "debts": len(debts),
        "netting": netting,
    }


def _ms(pair: tuple[float, float] | None) -> str:
    if pair is None:
        return "-"
    return " / ".join(f"{seconds * 1000:.1f}" for seconds in pair)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--members",
        type=int,
        nargs="+",
        default=[10, 100, 500],
        help="group sizes to time (default: 10 100 500)",
    )
    parser.add_argument(
        "--patterns",
        nargs="+",
        choices=["sparse", "dense"],
        default=["sparse", "dense"],
        help="debt patterns to time (default: sparse dense)",
    )
    parser.add_argument(
        "--sparse-expenses",
        type=int,
        default=2,
        help="expenses each member pays in the sparse pattern (default: 2)",
    )
    parser.add_argument(
        "--dense-500",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time the dense pattern with 500 or more members (default: on)",
    )
    parser.add_argument(
        "--whole-list",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="read every page of ListPairwiseBalances, not only the first "
        "(default: on)",
    )
    parser.add_argument(
        "--runs", type=int, default=7, help="calls per case and read (default: 7)"
    )
    args = parser.parse_args()
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}; load average "
        f"{' '.join(f'{load:.2f}' for load in os.getloadavg())}; "
        f"p50 / p99 of {args.runs} calls, in ms; netting "
        f"{'in' if cancel_cycles else 'absent from'} this checkout; "
        f"ListPairwiseBalances reads "
        f"{'every page' if args.whole_list else 'the first page'}.\n"
    )
    print(
        "| members | pattern | expenses | debts | lines listed | pages "
        "| ListPairwiseBalances first | repeated | GetUserBalance first | repeated "
        "| ExplainBalance first | repeated | cancel_cycles |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as folder:
        users_config = config_module.load(
            environ={},
            overrides={
                "auth_required": False,
                "data_dir": Path(folder),
                "user_service_db_url": f"sqlite:///{Path(folder) / 'users.db'}",
            },
        )
        users_host = build_users(
            users_config, "127.0.0.1:0", guard=AllowAllBalanceGuard()
        )
        try:
            with grpc.insecure_channel(f"127.0.0.1:{users_host.port}") as channel:
                users = users_grpc.UsersServiceStub(channel)
                _create_users(users, member_ids(max(args.members)))
                cases = [
                    (size, pattern)
                    for size in args.members
                    for pattern in args.patterns
                    if args.dense_500 or pattern == "sparse" or size < 500
                ]
                for size, pattern in cases:
                    members = member_ids(size)
                    group_id = f"group-{pattern}-{size}"
                    _create_group(users, group_id, members)
                    found = bench_group(
                        Path(folder), users_host.port, group_id, members, pattern, args
                    )
                    timings = " | ".join(
                        _ms(found[read, when])
                        for read in ("list", "user", "explain")
                        for when in ("first", "repeated")
                    )
                    print(
                        f"| {size} | {pattern} | {found['expenses']:,} "
                        f"| {found['debts']:,} | {found['lines']:,} | {found['pages']} "
                        f"| {timings} | {_ms(found['netting'])} |",
                        flush=True,
                    )
        finally:
            users_host.stop(0)


if __name__ == "__main__":
    main()
