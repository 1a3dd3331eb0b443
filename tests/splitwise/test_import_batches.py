"""How the Splitwise import splits its expenses into BatchCreateExpenses calls."""

from __future__ import annotations

import datetime

from splitlog_cli.splitwise import importer
from splitlog_cli.splitwise.convert import ExpensePlan


def _plan(key: str, payers: int, participants: int) -> ExpensePlan:
    return ExpensePlan(
        key=key,
        line=1,
        description="Dinner",
        category="CATEGORY_DINING_OUT",
        date=datetime.date(2024, 5, 1),
        currency="EUR",
        total=payers * participants,
        payers=tuple((f"p{index}", participants) for index in range(payers)),
        owed=tuple((f"u{index}", payers) for index in range(participants)),
        notes="",
    )


def _keys(batches) -> list[list[str]]:
    return [[plan.key for plan in batch] for batch in batches]


def test_batches_keep_pairs_limit():
    plans = [_plan("a", 2, 30), _plan("b", 1, 30), _plan("c", 1, 50)]
    plans += [_plan("d", 4, 40), _plan("e", 1, 2)]

    batches = list(importer._batches(plans, max_pairs=100))

    assert _keys(batches) == [["a", "b"], ["c"], ["d"], ["e"]]


def test_batches_keep_creates_limit():
    plans = [_plan(key, 1, 4) for key in "abcde"]

    batches = list(importer._batches(plans, max_creates=2))

    assert _keys(batches) == [["a", "b"], ["c", "d"], ["e"]]
