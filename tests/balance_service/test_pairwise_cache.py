"""The netted pairwise lines kept between reads follow every write.

Each test reads the pairwise views first, so that the service keeps the
netted lines, then writes and reads again. Every read must match the lines
netted anew from the stored pair amounts, and a second balance service on
the same database, with lines of its own, must see a write made through the
first one.
"""

from __future__ import annotations

from sqlalchemy import event

from balance_service import cycles, storage
from balance_service.app import MIGRATIONS_DIR
from balance_service.pair_cache import PairwiseCache
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog_runtime.database import Database, upgrade
from tests.balance_service.support import (
    create_group,
    minor,
    settle,
    start_balances,
)

NAMES = ("ann", "ben", "cleo", "dora")
# ann -> ben -> cleo -> ann is a cycle of 10.00; dora owes ann and cleo.
DEBTS = {
    ("ann", "ben"): 3000,
    ("ben", "cleo"): 2000,
    ("cleo", "ann"): 1000,
    ("dora", "ann"): 500,
}


def _group(services) -> tuple[str, dict[str, str]]:
    """Create a group of NAMES with DEBTS and an expense in which dora owes cleo."""
    group_id, user_ids = create_group(services.users, len(NAMES))
    ids = dict(zip(NAMES, sorted(user_ids), strict=True))
    for (debtor, creditor), amount in DEBTS.items():
        _debt(services, group_id, ids, f"{debtor}-{creditor}", debtor, creditor, amount)
    _debt(services, group_id, ids, "shared", "dora", "cleo", 700)
    services.sync()
    return group_id, ids


def _debt(services, group_id, ids, expense, debtor, creditor, amount, **fields):
    """Publish an expense that `creditor` paid and `debtor` owes in full."""
    services.peer.publish(
        group_id,
        expense,
        {ids[creditor]: (amount, 0), ids[debtor]: (0, amount)},
        **fields,
    )


def _list(stub, group_id: str, **fields) -> list[tuple[str, str, str, int]]:
    """Read every page of ListPairwiseBalances, two lines a page."""
    request = pb.ListPairwiseBalancesRequest(
        parent=f"groups/{group_id}", page_size=2, **fields
    )
    found = []
    while True:
        response = stub.ListPairwiseBalances(request, timeout=10)
        found += [
            (line.amount.currency_code, line.debtor, line.creditor, minor(line.amount))
            for line in response.pairwise_balances
        ]
        if not response.next_page_token:
            return found
        request.page_token = response.next_page_token


def _reads(stub, group_id: str, ids: dict[str, str]) -> dict:
    """Return every pairwise view of the group: lists, counterparties, pairs."""
    found: dict = {"lines": _list(stub, group_id)}
    for name, user_id in ids.items():
        found["lines", name] = _list(stub, group_id, user=f"users/{user_id}")
        balance = stub.GetUserBalance(
            pb.GetUserBalanceRequest(name=f"users/{user_id}/balance"), timeout=10
        ).balance
        found["counterparties", name] = sorted(
            (entry.user, minor(entry.net_amount))
            for entry in balance.counterparty_balances
        )
        for other, other_id in ids.items():
            if other == name:
                continue
            response = stub.ExplainBalance(
                pb.ExplainBalanceRequest(
                    name=f"groups/{group_id}/balance",
                    user=f"users/{user_id}",
                    currency_code="EUR",
                    counterparty=f"users/{other_id}",
                    page_size=1,
                ),
                timeout=10,
            )
            found["pair", name, other] = (
                minor(response.net_amount),
                minor(response.pairwise_amount),
                minor(response.circular_debt_adjustment),
            )
    return found


def _netted_anew(database: Database, group_id: str, ids: dict[str, str]) -> dict:
    """Return what `_reads` must find, netted from the stored pair amounts."""
    with database.transaction(read_only=True) as session:
        pairs = storage.group_pairs(session, group_id, None)
    debts = cycles.pairwise_lines(pairs).get((group_id, "EUR"), {})
    before = {}
    for _, _, first, second, amount in pairs:
        before[first, second] = amount
        before[second, first] = -amount
    lines = sorted(
        ("EUR", f"users/{debtor}", f"users/{creditor}", amount)
        for (debtor, creditor), amount in debts.items()
    )
    found: dict = {"lines": lines}
    for name, user_id in ids.items():
        found["lines", name] = [
            line for line in lines if f"users/{user_id}" in (line[1], line[2])
        ]
        found["counterparties", name] = sorted(
            [(f"users/{d}", amount) for (d, c), amount in debts.items() if c == user_id]
            + [
                (f"users/{c}", -amount)
                for (d, c), amount in debts.items()
                if d == user_id
            ]
        )
        for other, other_id in ids.items():
            if other == name:
                continue
            net = before.get((other_id, user_id), 0)
            pairwise = debts.get((other_id, user_id), 0) - debts.get(
                (user_id, other_id), 0
            )
            found["pair", name, other] = (net, pairwise, pairwise - net)
    return found


def _check_follows(services, write) -> None:
    """Read, run `write(group_id, ids)`, and read again; both must be netted anew."""
    group_id, ids = _group(services)
    before = _reads(services.balances, group_id, ids)
    assert before == _netted_anew(services.database, group_id, ids)

    write(group_id, ids)

    after = _reads(services.balances, group_id, ids)
    assert after == _netted_anew(services.database, group_id, ids)
    assert after != before


def test_reads_follow_new_expense(services):
    def write(group_id, ids):
        _debt(services, group_id, ids, "new", "cleo", "dora", 400)
        services.sync()

    _check_follows(services, write)


def test_reads_follow_changed_expense(services):
    def write(group_id, ids):
        _debt(services, group_id, ids, "shared", "dora", "cleo", 900)
        services.sync()

    _check_follows(services, write)


def test_reads_follow_deleted_and_restored_expense(services):
    def delete(group_id, ids):
        _debt(services, group_id, ids, "shared", "dora", "cleo", 700, deleted=True)
        services.sync()

    def restore(group_id, ids):
        _debt(services, group_id, ids, "shared", "dora", "cleo", 700)
        services.sync()

    group_id, ids = _group(services)
    with_expense = _reads(services.balances, group_id, ids)
    delete(group_id, ids)
    deleted = _reads(services.balances, group_id, ids)
    assert deleted == _netted_anew(services.database, group_id, ids)
    restore(group_id, ids)
    restored = _reads(services.balances, group_id, ids)

    assert deleted != with_expense
    assert restored == with_expense == _netted_anew(services.database, group_id, ids)
    delete(group_id, ids)
    assert _reads(services.balances, group_id, ids) == deleted


def test_reads_follow_settlement_created_deleted_and_restored(services):
    group_id, ids = _group(services)
    unsettled = _reads(services.balances, group_id, ids)
    created = settle(services.balances, group_id, ids["ann"], ids["ben"], 1500)
    settled = _reads(services.balances, group_id, ids)

    deleted = services.balances.DeleteSettlement(
        pb.DeleteSettlementRequest(name=created.name), timeout=10
    ).settlement
    after_delete = _reads(services.balances, group_id, ids)
    services.balances.UndeleteSettlement(
        pb.UndeleteSettlementRequest(name=created.name, etag=deleted.etag), timeout=10
    )
    after_restore = _reads(services.balances, group_id, ids)

    assert settled != unsettled
    assert after_delete == unsettled
    assert after_restore == settled == _netted_anew(services.database, group_id, ids)


def test_reads_follow_former_member_settling(services):
    def write(group_id, ids):
        services.users.RemoveGroupMember(
            users_pb.RemoveGroupMemberRequest(
                name=f"groups/{group_id}/members/{ids['dora']}"
            ),
            timeout=10,
        )
        # dora keeps her debts after leaving, and pays part of them.
        assert _reads(services.balances, group_id, ids) == _netted_anew(
            services.database, group_id, ids
        )
        settle(
            services.balances,
            group_id,
            ids["dora"],
            ids["cleo"],
            300,
            creator=ids["cleo"],
        )

    _check_follows(services, write)


def test_second_service_on_database_sees_writes_of_first(
    services, module_db_url, tmp_path
):
    group_id, ids = _group(services)
    first = _reads(services.balances, group_id, ids)
    other = start_balances(
        module_db_url, services.users_port, services.peer, tmp_path / "data"
    )
    try:
        # The second service nets anew what the first one keeps.
        assert _reads(other.balances, group_id, ids) == first

        settle(services.balances, group_id, ids["dora"], ids["ann"], 200)
        settled = _reads(other.balances, group_id, ids)
        assert settled != first
        assert settled == _netted_anew(services.database, group_id, ids)

        settle(other.balances, group_id, ids["ben"], ids["cleo"], 600)
        assert _reads(services.balances, group_id, ids) == _netted_anew(
            services.database, group_id, ids
        )

        # Either service may apply the ledger event; both read it.
        _debt(services, group_id, ids, "late", "ann", "dora", 250)
        services.sync()
        expected = _netted_anew(services.database, group_id, ids)
        assert _reads(services.balances, group_id, ids) == expected
        assert _reads(other.balances, group_id, ids) == expected
    finally:
        other.close()


def test_kept_lines_renetted_after_pair_write_and_bounded(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'pairs.db'}")
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    pair_reads = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM pair_balances" in statement:
            pair_reads.append(statement)

    def write(changes):
        with database.transaction() as session:
            storage.add_to_pairs(session, changes)

    write(
        {("group-a", "EUR", "ann", "ben"): 100, ("group-a", "EUR", "cleo", "ben"): 50}
    )
    write({("group-b", "EUR", "ann", "ben"): 70})
    # Group a's entry weighs 3 (2 lines and the entry), group b's 2.
    cache = PairwiseCache(max_lines=4)

    def lines(group_id):
        with database.transaction(read_only=True) as session:
            versions = storage.pair_versions(session, group_id, "EUR")
            return cache.lines(session, versions)[group_id, "EUR"].lines

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        first = lines("group-a")
        assert (first, len(pair_reads)) == (
            (("ann", "ben", 100), ("cleo", "ben", 50)),
            1,
        )
        assert (lines("group-a"), len(pair_reads)) == (first, 1)

        write({("group-a", "EUR", "ben", "ann"): 40})
        assert (lines("group-a"), len(pair_reads)) == (
            (("ann", "ben", 60), ("cleo", "ben", 50)),
            2,
        )
        assert (lines("group-a"), len(pair_reads)) == (
            (("ann", "ben", 60), ("cleo", "ben", 50)),
            2,
        )

        # Group b's lines take the room of group a's, read less recently.
        assert (lines("group-b"), len(pair_reads)) == ((("ann", "ben", 70),), 3)
        assert (lines("group-b"), len(pair_reads)) == ((("ann", "ben", 70),), 3)
        assert len(lines("group-a")) == 2
        assert len(pair_reads) == 4
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
        database.dispose()
