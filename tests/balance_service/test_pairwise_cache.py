"""The netted pairwise lines kept between reads follow every write.

Each test reads the pairwise views first, so that the service keeps the
netted lines, then writes and reads again. Every read must match the lines
netted anew from the stored pair amounts, and a second balance service on
the same database, with lines of its own, must see a write made through the
first one. Reads net only what they need: an explanation of a pair without
a debt reads no other pair, and reads that miss at once share one walk.
"""

from __future__ import annotations

import threading

from sqlalchemy import Engine, event

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
    # Group a's entry weighs 3 (2 debts and the entry), group b's 2.
    cache = PairwiseCache(max_size=4)

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


def test_group_above_limit_kept_as_lines(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'pairs.db'}")
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    pair_reads = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM pair_balances" in statement:
            pair_reads.append(statement)

    with database.transaction() as session:
        # A cycle of 1.00 leaves one of the three debts.
        storage.add_to_pairs(
            session,
            {
                ("group-a", "EUR", "ann", "ben"): 200,
                ("group-a", "EUR", "ben", "cleo"): 100,
                ("group-a", "EUR", "cleo", "ann"): 100,
            },
        )
    # The walk weighs 4 (3 debts and the entry), and its lines 2.
    cache = PairwiseCache(max_size=3)

    def owed(debtor, creditor):
        with database.transaction(read_only=True) as session:
            versions = storage.pair_versions(session, "group-a", "EUR")
            return cache.lines(session, versions)["group-a", "EUR"].owed(
                debtor, creditor
            )

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        assert owed("ann", "ben") == 100
        assert owed("ben", "cleo") == 0
        assert len(pair_reads) == 1
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
        database.dispose()


def test_explain_without_debt_reads_one_pair(services):
    group_id, ids = _group(services)
    pair_reads = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM pair_balances" in statement and group_id in str(parameters):
            pair_reads.append(statement)

    def explain(user: str, counterparty: str) -> tuple[int, int, int]:
        response = services.balances.ExplainBalance(
            pb.ExplainBalanceRequest(
                name=f"groups/{group_id}/balance",
                user=f"users/{ids[user]}",
                currency_code="EUR",
                counterparty=f"users/{ids[counterparty]}",
                page_size=1,
            ),
            timeout=10,
        )
        return (
            minor(response.net_amount),
            minor(response.pairwise_amount),
            minor(response.circular_debt_adjustment),
        )

    event.listen(Engine, "before_cursor_execute", record)
    try:
        # ben and dora share no expense, so only their own pair is read.
        assert explain("ben", "dora") == (0, 0, 0)
        assert len(pair_reads) == 1
        # ann's debt to ben is in the cycle of 10.00, so the group is read.
        assert explain("ben", "ann") == (3000, 2000, -1000)
        assert len(pair_reads) == 3
    finally:
        event.remove(Engine, "before_cursor_execute", record)


def test_concurrent_misses_share_one_walk(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'pairs.db'}")
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    with database.transaction() as session:
        storage.add_to_pairs(
            session,
            {
                ("group-a", "EUR", "ann", "ben"): 300,
                ("group-a", "EUR", "ben", "cleo"): 200,
                ("group-a", "EUR", "cleo", "ann"): 100,
            },
        )
    cache = PairwiseCache()
    # Each read waits at the pair amounts until the other gets there, so
    # both found no kept lines.
    both_reading = threading.Barrier(2, timeout=10)
    entries = {}

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM pair_balances" in statement:
            both_reading.wait()

    def read(name: str) -> None:
        with database.transaction(read_only=True) as session:
            versions = storage.pair_versions(session, "group-a", "EUR")
            entries[name] = cache.lines(session, versions)["group-a", "EUR"]

    event.listen(database.engine, "before_cursor_execute", record)
    try:
        readers = [threading.Thread(target=read, args=(name,)) for name in "ab"]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join(timeout=20)
    finally:
        event.remove(database.engine, "before_cursor_execute", record)
        database.dispose()

    assert set(entries) == {"a", "b"}
    assert entries["a"] is entries["b"]
    assert entries["a"].lines == (("ann", "ben", 200), ("ben", "cleo", 100))


def test_group_debts_of_group_and_currency(db_url):
    database = Database(db_url)
    upgrade(database.engine, MIGRATIONS_DIR, "alembic_version_balance_service")
    try:
        with database.transaction() as session:
            storage.add_to_pairs(
                session,
                {
                    ("group-a", "EUR", "user-a", "user-B"): 100,
                    ("group-a", "EUR", "user_a", "user-a"): 200,
                    ("group-a", "EUR", "user-b", "user_a"): 300,
                    ("group-a", "EUR", "user-B", "user-b"): 0,
                    ("group-a", "USD", "user-a", "user-b"): 400,
                    ("group-b", "EUR", "user-a", "user-b"): 500,
                },
            )
        with database.transaction(read_only=True) as session:
            debts = storage.group_debts(session, "group-a", "EUR")
    finally:
        database.dispose()

    assert sorted(debts) == [
        ("user-a", "user-B", 100),
        ("user-b", "user_a", 300),
        ("user_a", "user-a", 200),
    ]
