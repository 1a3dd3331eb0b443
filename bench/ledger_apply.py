"""Time how long balance_service takes to apply large expenses.

`python -m bench.ledger_apply` migrates a SQLite file in a temporary folder
and calls `balance_service.ledger.apply_batch` directly, so no stream or
gRPC call is timed. Each row applies `count` new expenses of `payers` payers
and `participants` participants, split by shares 1 to 7 so that most cells
of the pairwise allocation have a remainder, in one transaction. It prints a
Markdown table with the wall-clock and CPU seconds per transaction, and the
CPU seconds per expense. On a loaded machine the CPU time is the steadier
figure.

Options: `--rows PxQxN,...` (payers x participants x expenses per
transaction), `--runs N` (runs per row, default 3).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from datetime import date, datetime, timedelta
from pathlib import Path

from balance_service.app import MIGRATIONS_DIR
from balance_service.ledger import ExpenseState, apply_batch
from splitlog_runtime.database import Database, upgrade

DEFAULT_ROWS = "1x4x500,1x500x10,10x100x10,50x500x1,50x500x10"
TOTAL = 1_000_000_007


def _split(total: int, weights: list[int]) -> list[int]:
    """Split `total` in proportion to `weights` by largest remainder."""
    whole = sum(weights)
    parts = [total * weight // whole for weight in weights]
    order = sorted(range(len(weights)), key=lambda i: -(total * weights[i] % whole))
    for index in order[: total - sum(parts)]:
        parts[index] += 1
    return parts


def expense(sequence: int, payers: int, participants: int) -> ExpenseState:
    """Return the create event of one expense whose payers are participants too."""
    members = max(payers, participants)
    users = [f"m{index:04d}" for index in range(members)]
    paid = _split(TOTAL, [1] * payers) + [0] * (members - payers)
    owed = _split(TOTAL, [(i % 7) + 1 for i in range(participants)])
    owed += [0] * (members - participants)
    return ExpenseState(
        sequence=sequence,
        group_id="bench",
        expense_id=f"e{sequence:06d}",
        revision=1,
        deleted=False,
        currency_code="EUR",
        expense_date=date(2026, 1, 2),
        category=1,
        description="bench",
        total=TOTAL,
        commit_time=datetime(2026, 1, 2) + timedelta(seconds=sequence),
        lines=tuple(zip(users, paid, owed, strict=True)),
    )


def time_row(
    payers: int, participants: int, count: int, runs: int
) -> tuple[list[float], list[float]]:
    """Return the wall-clock and the CPU seconds of each run."""
    seconds, cpu_seconds = [], []
    for _ in range(runs):
        with tempfile.TemporaryDirectory() as folder:
            database = Database(f"sqlite:///{Path(folder) / 'balances.db'}")
            upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
            states = [expense(n + 1, payers, participants) for n in range(count)]
            start, cpu_start = time.perf_counter(), time.process_time()
            apply_batch(database, states)
            seconds.append(time.perf_counter() - start)
            cpu_seconds.append(time.process_time() - cpu_start)
            database.dispose()
    return seconds, cpu_seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--rows", default=DEFAULT_ROWS)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs, Python "
        f"{platform.python_version()}, load average {os.getloadavg()[0]:.1f}; "
        f"SQLite; {args.runs} runs per row.\n"
    )
    print(
        "| payers x participants | expenses per transaction | pairs | "
        "median s | max s | median CPU s | CPU s per expense |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in args.rows.split(","):
        payers, participants, count = (int(part) for part in row.split("x"))
        seconds, cpu_seconds = time_row(payers, participants, count, args.runs)
        cpu = statistics.median(cpu_seconds)
        print(
            f"| {payers} x {participants} | {count} | "
            f"{payers * participants * count:,} | {statistics.median(seconds):.2f} | "
            f"{max(seconds):.2f} | {cpu:.2f} | {cpu / count:.3f} |"
        )


if __name__ == "__main__":
    main()
