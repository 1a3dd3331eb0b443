"""Time ExplainBalance on a wide group, and other reads beside it.

`python -m bench.explain_wide` fills a SQLite file through
`balance_service.storage`, as the ledger consumer would, with two groups in
EUR:

- a wide group of `--members` members and `--expenses` expenses, each paid
  by one member and split equally among 2 to 8 random members, and every
  `--everyone-every`-th one among all members (0: none);
- a small group of 4 members with 20 expenses.

It starts user_service in this process, with a ledger server that sends no
events, and balance_service in a child process (`python -m splitlog_cli
serve balance_service`), so that the timed calls and the service do not
share one interpreter. Over gRPC it times, `--runs` calls each:

- ExplainBalance of `user-000`, alone and with `user-001` as counterparty,
  the first and the second page of 50;
- the first page of ExplainBalance of `user-000` with `user-001`, and of
  the last two members with each other, each call right after a change to
  the wide group: one minor unit between the last two members, one way and
  then back, written through `balance_service.storage`. In both patterns of
  the default group, the walk that cancels circular debts makes the debt
  between `user-000` and `user-001` final early. The debt between the last
  two members is final only at its end. Beside the time of each call, the
  bench reads the CPU time that balance_service used for them from /proc;
- GetGroupBalance and GetUserBalance of the small group, one pair of calls
  after the other for 3 s, first alone, then while another thread calls
  ExplainBalance of `user-000` with `user-001` over and over, and then
  while that thread makes a change before each call and explains the last
  two members.

The first ExplainBalance with a counterparty after the start or after a
change reads the wide group's debts at the new version and cancels their
circular debts, at least as far as the pair's debt (see
`balance_service.pair_cache`). The bench makes one such call, of
`user-000` with `user-001`, before it times anything and prints its time
apart.

Like `bench.explain_balance`, it runs against an older checkout with
PYTHONPATH pointing at it, the child process included.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent import futures
from datetime import date, datetime, timedelta
from pathlib import Path

import grpc
from sqlalchemy import insert

from balance_service import storage
from balance_service.app import MIGRATIONS_DIR
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

CURRENCY = "EUR"
WIDE = "group-wide"
SMALL = "group-small"
SMALL_MEMBERS = [f"small-{index}" for index in range(4)]
FIRST_DAY = date(2024, 1, 1)
FIRST_TIME = datetime(2024, 1, 1)
INSERT_BATCH = 5000
#: Seconds each phase of the reads of the small group lasts.
READ_SECONDS = 3.0
#: Seconds balance_service may take to serve after its start.
STARTUP_SECONDS = 120
#: The checkout that `balance_service` was imported from.
CHECKOUT = Path(storage.__file__).resolve().parents[1]


class _IdleLedger(ledger_grpc.LedgerServiceServicer):
    """A ledger server without events that sends a heartbeat every second."""

    def StreamLedgerEvents(self, request, context):
        while context.is_active():
            yield ledger_pb.StreamLedgerEventsResponse()
            time.sleep(1.0)

    def GetLedgerPosition(self, request, context):
        return ledger_pb.GetLedgerPositionResponse(last_sequence=0)


def wide_members(members: int) -> list[str]:
    return [f"user-{index:03d}" for index in range(members)]


def _expense_lines(
    rng: random.Random, members: list[str]
) -> list[tuple[str, int, int]]:
    """Return `(user, paid, owed)` of one expense split equally among `members`."""
    total = rng.randrange(300, 30000)
    payer = rng.choice(members)
    share, remainder = divmod(total, len(members))
    return [
        (
            user,
            total if user == payer else 0,
            share + (1 if index < remainder else 0),
        )
        for index, user in enumerate(members)
    ]


def _expense_columns(expense: dict) -> dict:
    """Return the expense's columns that a line copies, where lines have them.

    Older checkouts, which this bench can also time, lack these columns.
    """
    names = ("currency_code", "expense_date", "create_time")
    return {
        name: expense[name] for name in names if name in storage.LineRow.__table__.c
    }


def _group_rows(
    group_id: str, splits: list[list[tuple[str, int, int]]]
) -> tuple[list[dict], list[dict]]:
    """Return the expense rows and line rows of a group's expenses."""
    expense_rows, line_rows = [], []
    for index, lines in enumerate(splits):
        expense_id = f"expense-{index:07d}"
        created = FIRST_TIME + timedelta(seconds=index)
        expense = {
            "group_id": group_id,
            "expense_id": expense_id,
            "revision": 1,
            "deleted": False,
            "currency_code": CURRENCY,
            "expense_date": FIRST_DAY + timedelta(days=index % 1500),
            "category": 1,
            "description": f"Expense {index}",
            "total": sum(paid for _, paid, _ in lines),
            "create_time": created,
            "update_time": created,
        }
        expense_rows.append(expense)
        line_rows += [
            {
                "group_id": group_id,
                "expense_id": expense_id,
                "user_id": user,
                "paid": paid,
                "owed": owed,
                **_expense_columns(expense),
            }
            for user, paid, owed in lines
        ]
    return expense_rows, line_rows


def fill(url: str, args: argparse.Namespace) -> None:
    """Write both groups' expenses, balances and pair amounts."""
    database = Database(url)
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    rng = random.Random(1)
    members = wide_members(args.members)
    splits = {WIDE: [], SMALL: []}
    for index in range(args.expenses):
        if args.everyone_every and index % args.everyone_every == 0:
            sharing = members
        else:
            sharing = rng.sample(members, rng.randint(2, 8))
        splits[WIDE].append(_expense_lines(rng, sharing))
    splits[SMALL] = [_expense_lines(rng, SMALL_MEMBERS) for _ in range(20)]
    changes = Changes()
    with database.transaction() as session:
        for group_id, group_splits in splits.items():
            expense_rows, line_rows = _group_rows(group_id, group_splits)
            for rows, table in (
                (expense_rows, storage.ExpenseRow),
                (line_rows, storage.LineRow),
            ):
                for start in range(0, len(rows), INSERT_BATCH):
                    session.execute(insert(table), rows[start : start + INSERT_BATCH])
            for lines in group_splits:
                changes.add_expense(group_id, CURRENCY, lines, 1)
            storage.touch_group(session, group_id, FIRST_TIME)
        changes.write(session)
    database.dispose()


def _create_group(users, group_id: str, members: list[str]) -> None:
    for user_id in members:
        users.CreateUser(
            users_pb.CreateUserRequest(
                user=users_pb.User(email=f"{user_id}@example.com", display_name="M"),
                user_id=user_id,
            ),
            timeout=30,
        )
    users.CreateGroup(
        users_pb.CreateGroupRequest(
            group=users_pb.Group(display_name="Bench", creator=f"users/{members[0]}"),
            group_id=group_id,
        ),
        timeout=30,
    )
    for user_id in members[1:]:
        users.AddGroupMember(
            users_pb.AddGroupMemberRequest(
                parent=f"groups/{group_id}", user=f"users/{user_id}"
            ),
            timeout=30,
        )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_balances(
    folder: Path, url: str, users_port: int, ledger_port: int
) -> tuple[subprocess.Popen, int]:
    """Start balance_service in a child process; return it and its port."""
    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "splitlog_cli",
        "serve",
        "balance_service",
        "--balance-service-port",
        str(port),
        "--balance-service-db-url",
        url,
        "--data-dir",
        str(folder),
        "--user-service-addr",
        f"127.0.0.1:{users_port}",
        "--expense-service-addr",
        f"127.0.0.1:{ledger_port}",
        "--auth-required",
        "false",
        "--log-self-ship",
        "false",
        "--log-level",
        "warning",
    ]
    with open(folder / "balance_service.log", "w") as log:
        # `python -m` puts the working directory first on the module path,
        # before PYTHONPATH, so the child starts in the checkout whose
        # balance_service this process imported, and runs the same code.
        child = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, cwd=CHECKOUT
        )
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        grpc.channel_ready_future(channel).result(timeout=STARTUP_SECONDS)
    return child, port


def _explain(stub, counterparty: str, page_token: str = "", user: str = "user-000"):
    return stub.ExplainBalance(
        pb.ExplainBalanceRequest(
            name=f"groups/{WIDE}/balance",
            user=f"users/{user}",
            currency_code=CURRENCY,
            counterparty=counterparty,
            page_size=50,
            page_token=page_token,
        ),
        timeout=600,
    )


def time_explain(stub, runs: int) -> list[tuple[str, str, float]]:
    """Return `(member, page, median seconds)` of the first two pages."""
    rows = []
    for label, counterparty in (
        ("user-000", ""),
        ("user-000 with user-001", "users/user-001"),
    ):
        for page in ("first", "second"):
            timings = []
            for _ in range(runs):
                token = ""
                if page == "second":
                    token = _explain(stub, counterparty).next_page_token
                    if not token:
                        break
                started = time.perf_counter()
                _explain(stub, counterparty, token)
                timings.append(time.perf_counter() - started)
            if timings:
                rows.append((label, page, statistics.median(timings)))
    return rows


class PairChange:
    """Move one minor unit between the last two members of the wide group, in
    turn one way and back, as an expense that the first of them paid."""

    def __init__(self, url: str, members: list[str]) -> None:
        self._database = Database(url)
        self._lines = [(members[-2], 2, 1), (members[-1], 0, 1)]
        self._sign = 1

    def __call__(self) -> None:
        changes = Changes()
        changes.add_expense(WIDE, CURRENCY, self._lines, self._sign)
        with self._database.transaction() as session:
            changes.write(session)
            storage.touch_group(session, WIDE, FIRST_TIME)
        self._sign = -self._sign

    def close(self) -> None:
        self._database.dispose()


def cpu_seconds(pid: int) -> float:
    """Return the user and system CPU time that process `pid` has used, from
    /proc (Linux), in steps of one clock tick."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # utime and stime are the 14th and 15th fields; the split starts at the 3rd.
    ticks = int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def time_after_change(
    stub, change: PairChange, user: str, counterparty: str, runs: int, server: int
) -> tuple[list[float], float]:
    """Time `runs` ExplainBalance calls of `user` with `counterparty`, each
    right after `change()`.

    Returns:
      the seconds of each call, and the mean CPU seconds per call of the
      balance_service process `server`, which the load from other
      processes sways less than the time of a call. The CPU time is read
      before the first change and after the last call, when the service
      does little else.
    """
    timings = []
    cpu_before = cpu_seconds(server)
    for _ in range(runs):
        change()
        started = time.perf_counter()
        _explain(stub, f"users/{counterparty}", user=user)
        timings.append(time.perf_counter() - started)
    return timings, (cpu_seconds(server) - cpu_before) / runs


def _read_small(stub, until: float) -> list[float]:
    """Call GetGroupBalance and GetUserBalance of the small group until `until`."""
    timings = []
    while time.perf_counter() < until:
        started = time.perf_counter()
        stub.GetGroupBalance(
            pb.GetGroupBalanceRequest(name=f"groups/{SMALL}/balance"), timeout=600
        )
        stub.GetUserBalance(
            pb.GetUserBalanceRequest(name=f"users/{SMALL_MEMBERS[1]}/balance"),
            timeout=600,
        )
        timings.append(time.perf_counter() - started)
    return timings


def _read_beside(
    stub, change: PairChange | None, members: list[str]
) -> tuple[list[float], int]:
    """Time the small group's reads while another thread calls ExplainBalance;
    return the timings and the calls that thread completed.

    Without `change`, the thread explains `user-000` with `user-001`. With
    it, the thread calls `change()` before each call and explains the last
    two members, whose debt is final only at the end of the walk.
    """
    stop = threading.Event()
    explained = []

    def explain_loop() -> None:
        while not stop.is_set():
            if change is None:
                _explain(stub, "users/user-001")
            else:
                change()
                _explain(stub, f"users/{members[-1]}", user=members[-2])
            explained.append(1)

    worker = threading.Thread(target=explain_loop)
    worker.start()
    try:
        beside = _read_small(stub, time.perf_counter() + READ_SECONDS)
    finally:
        stop.set()
        worker.join()
    return beside, len(explained)


def time_beside(
    stub, change: PairChange, members: list[str]
) -> list[tuple[str, list[float], int]]:
    """Time the small group's reads alone, then beside ExplainBalance calls
    without and with a change before each."""
    alone = _read_small(stub, time.perf_counter() + READ_SECONDS)
    repeated, repeated_calls = _read_beside(stub, None, members)
    changed, changed_calls = _read_beside(stub, change, members)
    return [
        ("alone", alone, 0),
        ("beside ExplainBalance", repeated, repeated_calls),
        (
            "beside ExplainBalance of the last two, each after a change",
            changed,
            changed_calls,
        ),
    ]


def _summary(timings: list[float]) -> str:
    ordered = sorted(timings)
    p50 = statistics.median(ordered) * 1000
    return f"{len(ordered)} | {p50:.1f} | {ordered[-1] * 1000:.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--members",
        type=int,
        default=200,
        help="members of the wide group (default: 200)",
    )
    parser.add_argument(
        "--expenses",
        type=int,
        default=20_000,
        help="expenses of the wide group (default: 20000)",
    )
    parser.add_argument(
        "--everyone-every",
        type=int,
        default=20,
        help="every N-th expense of the wide group is split among all members; "
        "0 for none (default: 20)",
    )
    parser.add_argument(
        "--runs", type=int, default=5, help="calls per median (default: 5)"
    )
    args = parser.parse_args()
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}, load average "
        f"{' '.join(f'{value:.1f}' for value in os.getloadavg())}; "
        f"{args.members} members, {args.expenses:,} expenses, every "
        f"{args.everyone_every or 'no'} split among all; median of {args.runs}.\n"
    )
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        url = f"sqlite:///{folder / 'balances.db'}"
        fill(url, args)
        users_config = config_module.load(
            environ={},
            overrides={
                "auth_required": False,
                "data_dir": folder,
                "user_service_db_url": f"sqlite:///{folder / 'users.db'}",
            },
        )
        users_host = build_users(
            users_config, "127.0.0.1:0", guard=AllowAllBalanceGuard()
        )
        ledger = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        ledger_grpc.add_LedgerServiceServicer_to_server(_IdleLedger(), ledger)
        ledger_port = ledger.add_insecure_port("127.0.0.1:0")
        ledger.start()
        members = wide_members(args.members)
        change = PairChange(url, members)
        child = None
        try:
            with grpc.insecure_channel(f"127.0.0.1:{users_host.port}") as channel:
                users = users_grpc.UsersServiceStub(channel)
                _create_group(users, WIDE, members)
                _create_group(users, SMALL, SMALL_MEMBERS)
            child, port = start_balances(folder, url, users_host.port, ledger_port)
            with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub = pb_grpc.BalancesServiceStub(channel)
                started = time.perf_counter()
                _explain(stub, "users/user-001")
                netting = time.perf_counter() - started
                print(
                    f"First ExplainBalance of user-000 with user-001 after the "
                    f"start: {netting:.3f} s\n"
                )
                print("| member | page | median ms |")
                print("|---|---|---:|")
                for label, page, seconds in time_explain(stub, args.runs):
                    print(f"| {label} | {page} | {seconds * 1000:.1f} |")
                print(
                    "\n| after a change | median ms | max ms | "
                    "balance_service CPU ms per call |"
                )
                print("|---|---:|---:|---:|")
                for user, counterparty in (
                    ("user-000", "user-001"),
                    (members[-2], members[-1]),
                ):
                    timings, cpu = time_after_change(
                        stub, change, user, counterparty, args.runs, child.pid
                    )
                    print(
                        f"| {user} with {counterparty} | "
                        f"{statistics.median(timings) * 1000:.1f} | "
                        f"{max(timings) * 1000:.1f} | {cpu * 1000:.0f} |"
                    )
                print()
                print(
                    "| small group reads | calls | p50 ms | max ms | "
                    "ExplainBalance calls |"
                )
                print("|---|---:|---:|---:|---:|")
                for label, timings, explained in time_beside(stub, change, members):
                    print(f"| {label} | {_summary(timings)} | {explained} |")
        finally:
            change.close()
            if child is not None:
                child.terminate()
                child.wait(timeout=60)
            ledger.stop(0).wait()
            users_host.stop(0)


if __name__ == "__main__":
    main()
