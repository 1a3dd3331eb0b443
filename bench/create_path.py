"""CPU time of expense_service's own work per CreateExpense, without gRPC.

Runs the steps that a grouped create runs in the servicer, on a SQLite file
in a temporary directory: the request check, the write of each group (rows,
ledger events and commit, in one transaction) and the response message. It
prints the CPU time (`time.process_time`) per create of each step, so that
two versions of the code can be compared in the same minute on a busy
machine. The requests are those of `bench.expenses`: an equal split of a
random total among 4 members.

Run: `python -m bench.create_path [--creates 9600] [--group 16]`.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from bench.expenses import _expense_request
from expense_service import ledger, messages
from expense_service.app import MIGRATIONS_DIR
from expense_service.servicer import ExpensesServicer
from splitlog.expenses.v1 import expenses_service_pb2 as pb
from splitlog_runtime.database import Database, upgrade

#: Groups written before the measured ones, so that caches and tables are warm.
WARM_UP_GROUPS = 100


def _requests(count: int) -> list[pb.CreateExpenseRequest]:
    rng = random.Random(1)
    members = [f"users/member-{index}" for index in range(4)]
    return [
        pb.CreateExpenseRequest.FromString(
            _expense_request("groups/bench-group", members, rng)
        )
        for _ in range(count)
    ]


def _measure(
    database: Database, requests: list[pb.CreateExpenseRequest], size: int
) -> dict[str, float]:
    """Run the creates in groups of `size`; return CPU seconds by step.

    The first `WARM_UP_GROUPS` groups are left out of the sums.
    """
    seconds = {"check": 0.0, "write": 0.0, "respond": 0.0}
    for index in range(len(requests) // size):
        if index == WARM_UP_GROUPS:
            seconds = dict.fromkeys(seconds, 0.0)
        batch = requests[index * size : (index + 1) * size]
        started = time.process_time()
        creates = [
            ExpensesServicer._check_create(request, request.parent, "")
            for request in batch
        ]
        checked = time.process_time()
        with database.transaction() as session:
            written = ExpensesServicer._insert_creates(session, creates)
            ledger.appended_events(session)
        committed = time.process_time()
        for stored in written:
            response = pb.CreateExpenseResponse(
                expense=messages.expense_message(stored)
            )
            response.SerializeToString()
        responded = time.process_time()
        seconds["check"] += checked - started
        seconds["write"] += committed - checked
        seconds["respond"] += responded - committed
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=9600)
    parser.add_argument(
        "--group", type=int, default=16, help="creates written in one transaction"
    )
    options = parser.parse_args()
    groups = WARM_UP_GROUPS + options.creates // options.group
    requests = _requests(groups * options.group)
    with tempfile.TemporaryDirectory(prefix="create-path-") as tmp:
        database = Database(f"sqlite:///{Path(tmp) / 'expenses.db'}")
        upgrade(database.engine, MIGRATIONS_DIR, "alembic_version")
        seconds = _measure(database, requests, options.group)
        database.dispose()
    measured = (groups - WARM_UP_GROUPS) * options.group
    print(f"{measured:,} creates in groups of {options.group}, CPU us per create:")
    print("| check | write | respond | total |")
    print("|---:|---:|---:|---:|")
    cells = [seconds[step] * 1e6 / measured for step in ("check", "write", "respond")]
    print("| " + " | ".join(f"{cell:.0f}" for cell in [*cells, sum(cells)]) + " |")


if __name__ == "__main__":
    main()
