"""Time ExplainBalance pages on a long history: `python -m bench.explain_balance`.

For each history size, the bench fills a SQLite file with one group of three
members and N expenses in EUR, each paid by one member and split equally
among all three. It writes the ledger tables, the balances and the pairwise
amounts through `balance_service.storage`, as the ledger consumer would.
Then it starts user_service and balance_service on loopback, with a ledger
server that sends no events. It times ExplainBalance over gRPC for one
member, alone and with a counterparty: the first page, the second page and,
unless `--no-late-pages` is given, the page after 90 % of the history.

The bench uses only calls that every version of balance_service has, so the
same file can time an older checkout: run it as a script with PYTHONPATH
pointing at that checkout, and pass `--no-late-pages` when its pages are
slow, because reaching the late page walks the history.
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
from sqlalchemy import insert

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

MEMBERS = ("user-ann", "user-bob", "user-cat")
GROUP = "group-long"
CURRENCY = "EUR"
FIRST_DAY = date(2020, 1, 1)
FIRST_TIME = datetime(2024, 1, 1)
INSERT_BATCH = 5000


class _IdleLedger(ledger_grpc.LedgerServiceServicer):
    """A ledger server without events that sends a heartbeat every second."""

    def StreamLedgerEvents(self, request, context):
        while context.is_active():
            yield ledger_pb.StreamLedgerEventsResponse()
            time.sleep(1.0)

    def GetLedgerPosition(self, request, context):
        return ledger_pb.GetLedgerPositionResponse(last_sequence=0)


def _expense_lines(rng: random.Random) -> list[tuple[str, int, int]]:
    """Return `(user, paid, owed)` of one expense paid by one random member."""
    total = rng.randrange(300, 30000)
    payer = rng.choice(MEMBERS)
    share, remainder = divmod(total, len(MEMBERS))
    return [
        (
            user,
            total if user == payer else 0,
            share + (1 if index < remainder else 0),
        )
        for index, user in enumerate(MEMBERS)
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


def fill_history(url: str, expenses: int, seed: int = 1) -> None:
    """Write `expenses` expenses of one group, spread over about four years."""
    database = Database(url)
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    rng = random.Random(seed)
    changes = Changes()
    with database.transaction() as session:
        for start in range(0, expenses, INSERT_BATCH):
            expense_rows, line_rows = [], []
            for index in range(start, min(start + INSERT_BATCH, expenses)):
                expense_id = f"expense-{index:07d}"
                created = FIRST_TIME + timedelta(seconds=index)
                lines = _expense_lines(rng)
                expense_rows.append(
                    {
                        "group_id": GROUP,
                        "expense_id": expense_id,
                        "revision": 1,
                        "deleted": False,
                        "currency_code": CURRENCY,
                        "expense_date": FIRST_DAY
                        + timedelta(days=index * 1500 // expenses),
                        "category": 1,
                        "description": f"Expense {index}",
                        "total": sum(paid for _, paid, _ in lines),
                        "create_time": created,
                        "update_time": created,
                    }
                )
                line_rows += [
                    {
                        "group_id": GROUP,
                        "expense_id": expense_id,
                        "user_id": user,
                        "paid": paid,
                        "owed": owed,
                        **_expense_columns(expense_rows[-1]),
                    }
                    for user, paid, owed in lines
                ]
                changes.add_expense(GROUP, CURRENCY, lines, 1)
            session.execute(insert(storage.ExpenseRow), expense_rows)
            session.execute(insert(storage.LineRow), line_rows)
        changes.write(session)
        storage.touch_group(session, GROUP, FIRST_TIME)
    database.dispose()


def _create_members(port: int) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        users = users_grpc.UsersServiceStub(channel)
        for user_id in MEMBERS:
            users.CreateUser(
                users_pb.CreateUserRequest(
                    user=users_pb.User(
                        email=f"{user_id}@example.com", display_name=user_id
                    ),
                    user_id=user_id,
                ),
                timeout=10,
            )
        users.CreateGroup(
            users_pb.CreateGroupRequest(
                group=users_pb.Group(
                    display_name="Long history", creator=f"users/{MEMBERS[0]}"
                ),
                group_id=GROUP,
            ),
            timeout=10,
        )
        for user_id in MEMBERS[1:]:
            users.AddGroupMember(
                users_pb.AddGroupMemberRequest(
                    parent=f"groups/{GROUP}", user=f"users/{user_id}"
                ),
                timeout=10,
            )


def _seconds(call, request, runs: int) -> tuple[float, pb.ExplainBalanceResponse]:
    """Return the median seconds of `runs` calls and the last response."""
    timings = []
    response = None
    for _ in range(runs):
        started = time.perf_counter()
        response = call(request, timeout=600)
        timings.append(time.perf_counter() - started)
    return statistics.median(timings), response


def _late_token(stub, request: pb.ExplainBalanceRequest, expenses: int) -> str:
    """Return the page token after about 90 % of the history."""
    walk = pb.ExplainBalanceRequest()
    walk.CopyFrom(request)
    walk.page_size = 1000
    token, seen = "", 0
    while seen < expenses * 9 // 10:
        walk.page_token = token
        response = stub.ExplainBalance(walk, timeout=600)
        seen += len(response.contributions)
        token = response.next_page_token
    return token


def time_pages(
    stub, expenses: int, page_size: int, runs: int, late: bool
) -> list[tuple[str, str, float]]:
    """Return `(member, page, median seconds)` rows for one history."""
    rows = []
    for label, counterparty in (
        (MEMBERS[0], ""),
        (f"{MEMBERS[0]} with {MEMBERS[1]}", f"users/{MEMBERS[1]}"),
    ):
        request = pb.ExplainBalanceRequest(
            name=f"groups/{GROUP}/balance",
            user=f"users/{MEMBERS[0]}",
            currency_code=CURRENCY,
            counterparty=counterparty,
            page_size=page_size,
        )
        seconds, first = _seconds(stub.ExplainBalance, request, runs)
        rows.append((label, "first", seconds))
        request.page_token = first.next_page_token
        seconds, _ = _seconds(stub.ExplainBalance, request, runs)
        rows.append((label, "second", seconds))
        if late:
            request.page_token = _late_token(stub, request, expenses)
            seconds, _ = _seconds(stub.ExplainBalance, request, runs)
            rows.append((label, "after 90 %", seconds))
    return rows


def bench_history(
    folder: Path, users_port: int, expenses: int, args
) -> list[tuple[str, str, float]]:
    """Fill one history, serve it and time its pages."""
    data = folder / f"balances-{expenses}"
    data.mkdir()
    url = f"sqlite:///{data / 'balances.db'}"
    fill_history(url, expenses)
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
    try:
        with grpc.insecure_channel(f"127.0.0.1:{host.port}") as channel:
            stub = pb_grpc.BalancesServiceStub(channel)
            return time_pages(stub, expenses, args.page_size, args.runs, args.late)
    finally:
        host.stop(0)
        ledger.stop(0).wait()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--expenses",
        type=int,
        nargs="+",
        default=[20_000, 80_000],
        help="history sizes to time, in expenses (default: 20000 80000)",
    )
    parser.add_argument(
        "--page-size", type=int, default=50, help="items per page (default: 50)"
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="calls per median (default: 5)"
    )
    parser.add_argument(
        "--late-pages",
        dest="late",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also time the page after 90 %% of the history (default: on)",
    )
    args = parser.parse_args()
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}; page size {args.page_size}, median of "
        f"{args.runs} calls.\n"
    )
    print("| expenses | member | page | median s |")
    print("|---:|---|---|---:|")
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
            _create_members(users_host.port)
            for expenses in args.expenses:
                rows = bench_history(Path(folder), users_host.port, expenses, args)
                for member, page, seconds in rows:
                    print(f"| {expenses:,} | {member} | {page} | {seconds:.4f} |")
        finally:
            users_host.stop(0)


if __name__ == "__main__":
    main()
