"""Time settle-up plans: `python -m bench.settle` prints a Markdown table.

Balances are seeded random ints in minor units that add up to zero. Two
kinds are timed:

- "wide": amounts up to 10,000.00, so almost no subset adds up to zero. Each
  step of the exact search then finds one zero-sum group and stays cheap.
- "small distinct": different amounts below 2.5 times the member count, with
  no equal and opposite pair, which gives very many zero-sum subsets. This
  is the slowest kind found for the exact search.

Two fixed 20-member inputs follow: "crafted", small amounts with two equal
and opposite pairs and many zero-sum subsets, and "slowest found", the
slowest of the random small distinct inputs tried, which runs out of work
units and returns the fallback plan. The 1,000-member row runs the
heuristic, because it is above the exact limit.
"""

from __future__ import annotations

import os
import platform
import random
import statistics
import time

from balance_service import settle
from balance_service.settle import EXACT_LIMIT, plan_settlement
from bench.machine import cpu_model

RUNS = 5


def wide_balances(members: int, rng: random.Random) -> dict[str, int]:
    values = [rng.randint(-1_000_000, 1_000_000) for _ in range(members - 1)]
    values.append(-sum(values))
    return {f"users/m{index:04d}": value for index, value in enumerate(values)}


def small_distinct_balances(members: int, rng: random.Random) -> dict[str, int]:
    span = members * 5 // 2
    while True:
        magnitudes = rng.sample(range(1, span), members)
        half = members // 2
        values = magnitudes[:half] + [-m for m in magnitudes[half : members - 1]]
        last = -sum(values)
        if last and last not in values and -last not in values:
            values.append(last)
            return {f"users/m{index:04d}": value for index, value in enumerate(values)}


CRAFTED = [-28, -28, -21, -19, -18, -16, -15, -13, -12, -8]
CRAFTED += [2, 7, 8, 13, 17, 23, 24, 25, 29, 30]
SLOWEST_FOUND = [19, 18, 16, 14, 12, 10, 8, 6, 5, 4]
SLOWEST_FOUND += [2, -1, -3, -7, -9, -11, -17, -20, -21, -25]


def fixed(values: list[int]):
    def balances(members: int, rng: random.Random) -> dict[str, int]:
        return {f"users/m{index:02d}": value for index, value in enumerate(values)}

    return balances


def time_plans(kind, members: int) -> tuple[list[float], list[int], set[str]]:
    seconds, transfers, methods = [], [], set()
    for run in range(RUNS):
        balances = kind(members, random.Random(members * 1000 + run))
        settle._PLANS = settle._PlanCache(maxsize=256)
        start = time.perf_counter()
        plan = plan_settlement(balances)
        seconds.append(time.perf_counter() - start)
        transfers.append(len(plan.transfers))
        if members > EXACT_LIMIT:
            methods.add("heuristic")
        else:
            methods.add("exact" if plan.fewest_transfers else "fallback")
    return seconds, transfers, methods


def main() -> None:
    print(
        f"Machine: {len(os.sched_getaffinity(0))} CPUs (nproc), {cpu_model()}, "
        f"Python {platform.python_version()}; exact limit {EXACT_LIMIT} "
        f"members; {RUNS} seeded runs per row.\n"
    )
    print("| Members | Balances | Method | Transfers | Median ms | Max ms |")
    print("|---:|---|---|---|---:|---:|")
    rows = [
        (12, wide_balances, "wide"),
        (16, wide_balances, "wide"),
        (20, wide_balances, "wide"),
        (12, small_distinct_balances, "small distinct"),
        (16, small_distinct_balances, "small distinct"),
        (20, small_distinct_balances, "small distinct"),
        (20, fixed(CRAFTED), "crafted"),
        (20, fixed(SLOWEST_FOUND), "slowest found"),
        (1000, wide_balances, "wide"),
    ]
    for members, kind, label in rows:
        seconds, transfers, methods = time_plans(kind, members)
        method = ", ".join(sorted(methods))
        counts = f"{min(transfers)}–{max(transfers)}"
        print(
            f"| {members} | {label} | {method} | {counts} | "
            f"{statistics.median(seconds) * 1000:.1f} | {max(seconds) * 1000:.1f} |"
        )


if __name__ == "__main__":
    main()
