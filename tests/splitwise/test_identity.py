"""Deterministic ids of an import."""

from __future__ import annotations

import re
import uuid

import pytest

from splitlog_cli.splitwise import identity

# The id rule of CreateUser, CreateGroup, CreateExpense and CreateSettlement.
RESOURCE_ID = re.compile(r"^[a-z][a-z0-9-]{3,62}$")


@pytest.mark.parametrize(
    "member",
    ["Alice", "Al", "Zoë Ørsted", "Ayşe Yılmaz", "山田", "x" * 200, "--", "A B"],
)
def test_user_id_valid(member):
    assert RESOURCE_ID.match(identity.user_id(member))
    assert identity.user_id(member) == identity.user_id(member)


def test_user_id_readable():
    assert identity.user_id("Ayşe Yılmaz").startswith("sw-ayse-ylmaz-")


def test_user_ids_differ_for_similar_names():
    names = ["Zoë", "Zoe", "zoe", "ZOE"]

    assert len({identity.user_id(name) for name in names}) == len(names)


def test_email_in_invalid_domain():
    assert identity.email("sw-ana-123abc") == "sw-ana-123abc@import.invalid"


def test_group_and_placeholder_ids_valid():
    digest = identity.file_digest(b"Date,Description\n")

    assert RESOURCE_ID.match(identity.group_id(digest))
    assert RESOURCE_ID.match(identity.placeholder_user_id(digest))
    assert RESOURCE_ID.match(identity.entry_id("7"))
    assert RESOURCE_ID.match(identity.entry_id("12345-3"))


def test_group_id_follows_file_content():
    first = identity.group_id(identity.file_digest(b"one"))

    assert first == identity.group_id(identity.file_digest(b"one"))
    assert first != identity.group_id(identity.file_digest(b"two"))


def test_request_id_is_uuid_per_entry():
    digest = identity.file_digest(b"one")

    value = identity.request_id(digest, "expense", "7")

    assert uuid.UUID(value).version == 5
    assert value == identity.request_id(digest, "expense", "7")
    assert value != identity.request_id(digest, "expense", "8")
    assert value != identity.request_id(digest, "settlement", "7")
    assert value != identity.request_id(identity.file_digest(b"two"), "expense", "7")
