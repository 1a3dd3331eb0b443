"""Pagination tokens, resource names, placeholders and the database helpers."""

from __future__ import annotations

import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import text

from splitlog_runtime import pagination, resources
from splitlog_runtime.channels import channel_options
from splitlog_runtime.database import Database
from splitlog_runtime.errors import InvalidArgument, join_whole
from splitlog_runtime.server import server_options


@given(st.lists(st.one_of(st.integers(), st.text()), max_size=4), st.text())
def test_page_token_round_trips(key, selector):
    token = pagination.encode_token(key, [selector])

    assert pagination.decode_token(token, [selector]) == key
    assert token.isascii()
    assert "=" not in token


def test_page_token_rejected_for_other_selector():
    token = pagination.encode_token([1, "a"], ["state = ACTIVE"])

    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(token, ["state = DEACTIVATED"])
    assert caught.value.reason == "PAGE_TOKEN_MISMATCH"
    assert pagination.quote_token(token) in str(caught.value)


@pytest.mark.parametrize("token", ["not a token", "e30", "!!!!", "W10"])
def test_malformed_page_token_rejected(token):
    with pytest.raises(InvalidArgument) as caught:
        pagination.decode_token(token, [])
    assert caught.value.reason in ("INVALID_PAGE_TOKEN", "PAGE_TOKEN_MISMATCH")


def test_invalid_token_quotes_short_token_whole():
    error = pagination.invalid_token("abc")

    assert error.reason == "INVALID_PAGE_TOKEN"
    assert "page_token: 'abc' is not a page token" in error.message


def test_invalid_token_cuts_long_token():
    token = "t" * 41

    error = pagination.invalid_token(token, "resume_token")

    assert error.message.startswith("resume_token: '" + "t" * 40 + "…'")


def test_page_size_default_max_and_negative():
    assert pagination.page_size(0) == pagination.DEFAULT_PAGE_SIZE
    assert pagination.page_size(10**6) == pagination.MAX_PAGE_SIZE
    with pytest.raises(InvalidArgument) as caught:
        pagination.page_size(-1)
    assert "-1" in caught.value.message


def test_parse_name_accepts_pattern():
    assert resources.parse_name(
        "groups/g1/members/u2", "groups/{group}/members/{member}", "name"
    ) == ("g1", "u2")


@pytest.mark.parametrize(
    "name", ["", "users", "users/", "groups/g1", "users/a/b", "user/a"]
)
def test_parse_name_rejects_malformed(name):
    with pytest.raises(InvalidArgument) as caught:
        resources.parse_name(name, "users/{user}", "name")
    assert caught.value.field_violations[0].field == "name"


@pytest.mark.parametrize("value", ["abc", "Abcd", "1abc", "abc-", "a" * 64, "ab_c"])
def test_check_id_rejects(value):
    with pytest.raises(InvalidArgument):
        resources.check_id(value, "user_id")


def test_new_id_is_valid():
    for _ in range(100):
        assert resources.check_id(resources.new_id(), "user_id")


def test_new_ids_do_not_repeat():
    ids = {resources.new_id() for _ in range(20_000)}

    assert len(ids) == 20_000


def test_ordered_ids_are_valid_distinct_and_sorted():
    ordered = resources.OrderedIds()
    ids = [ordered.new() for _ in range(20_000)]

    assert len(set(ids)) == 20_000
    assert ids == sorted(ids)
    for value in ids[:100]:
        assert resources.check_id(value, "expense_id") == value
        assert len(value) == 16


def test_ordered_ids_of_two_instances_differ():
    first, second = resources.OrderedIds(), resources.OrderedIds()
    ids = [maker.new() for _ in range(5_000) for maker in (first, second)]

    assert len(set(ids)) == 10_000


def test_sqlite_database_uses_wal(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'nested' / 'x.db'}")
    with database.transaction() as session:
        mode = session.execute(text("PRAGMA journal_mode")).scalar()
    database.dispose()

    assert mode == "wal"


def test_servers_accept_the_keepalive_pings_of_our_channels():
    channel = dict(channel_options(1024))
    server = dict(server_options(1024))

    assert server["grpc.keepalive_permit_without_calls"] == 1
    assert (
        channel["grpc.keepalive_time_ms"]
        >= server["grpc.http2.min_recv_ping_interval_without_data_ms"]
    )


def test_message_limits_of_servers_and_channels_agree():
    limit = 1024
    channel = dict(channel_options(limit))
    server = dict(server_options(limit))

    assert server["grpc.max_receive_message_length"] == 4 * limit
    assert server["grpc.max_send_message_length"] == limit
    assert channel["grpc.max_send_message_length"] == limit
    assert channel["grpc.max_receive_message_length"] == limit


def test_receive_ceiling_fits_grpc_int():
    server = dict(server_options(1024**3))

    assert server["grpc.max_receive_message_length"] == 2**31 - 1
    assert server["grpc.max_send_message_length"] == 1024**3


def test_sqlite_read_modify_write_loses_no_update(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'counter.db'}")
    with database.transaction() as session:
        session.execute(text("CREATE TABLE counter (id INTEGER PRIMARY KEY, n INT)"))
        session.execute(text("INSERT INTO counter VALUES (1, 0)"))

    def increment() -> None:
        for _ in range(50):
            with database.transaction() as session:
                n = session.execute(text("SELECT n FROM counter")).scalar()
                session.execute(text("UPDATE counter SET n = :n"), {"n": n + 1})

    workers = [threading.Thread(target=increment) for _ in range(6)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    with database.transaction(read_only=True) as session:
        final = session.execute(text("SELECT n FROM counter")).scalar()
    database.dispose()

    assert final == 300


@given(
    st.lists(st.text(alphabet="abc ", min_size=1, max_size=30), max_size=12),
    st.integers(min_value=0, max_value=120),
)
def test_join_whole_cuts_between_items(items, max_length):
    joined = join_whole(items, "; ", max_length, "item", "items")

    listed = joined.split(" and ")[0] if " more item" in joined else joined
    if items:
        assert listed.startswith(items[0])
    if len(joined) > max_length:
        # Only a first item longer than the limit may go past it.
        assert listed == items[0]
    rest = len(items) - (listed.count("; ") + 1 if items else 0)
    if rest == 1:
        assert joined.endswith(" and 1 more item")
    elif rest > 1:
        assert joined.endswith(f" and {rest} more items")


def test_join_whole_lists_at_most_limit():
    joined = join_whole(["a", "b", "c"], ", ", 100, limit=2)

    assert joined == "a, b and 1 more"
