"""Tests of page and resume tokens and of the cross-shard merge order."""

from __future__ import annotations

import base64
import json
import random

import pytest

from log_service.merge import MAX_SEQUENCE, Row, merge_rows, shard_cursor
from log_service.tokens import (
    Cursor,
    PageToken,
    ResumeToken,
    check_hash,
    check_page_token_end,
    check_page_token_shards,
    decode_page_token,
    decode_resume_token,
    encode_page_token,
    encode_resume_token,
    filter_hash,
    resume_positions,
)
from splitlog_runtime.errors import InvalidArgument


def test_filter_hash_ignores_key_order():
    assert filter_hash({"a": 1, "b": [2]}) == filter_hash({"b": [2], "a": 1})
    assert filter_hash({"a": 1}) != filter_hash({"a": 2})


def test_page_token_round_trip():
    token = PageToken("abc", Cursor(5, "shard-1", 7), {"shard-0": 3}, 99)

    text = encode_page_token(token)

    assert "=" not in text
    assert decode_page_token(text, "abc") == token


def test_page_token_with_other_filters_names_page_token():
    text = encode_page_token(PageToken("abc", Cursor(1, "s", 1), {}, 2))

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(text, "xyz")

    assert caught.value.field_violations[0].field == "page_token"
    assert "other filters" in caught.value.message


def _edited(text: str, **changes) -> str:
    """Return a page token with keys of its JSON payload replaced or removed."""
    payload = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
    for key, value in changes.items():
        if value is None:
            del payload[key]
        else:
            payload[key] = value
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def test_page_token_with_edited_end_is_invalid():
    text = encode_page_token(PageToken("abc", Cursor(5, "s", 1), {"s": 3}, 99))

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(_edited(text, e=100), "abc")

    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.field_violations[0].field == "page_token"
    assert "does not match its check hash, so it was altered" in str(caught.value)


def test_page_token_without_check_hash_is_invalid():
    text = encode_page_token(PageToken("abc", Cursor(5, "s", 1), {"s": 3}, 99))

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(_edited(text, h=None), "abc")

    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert "is not a page token returned by this method" in str(caught.value)


def test_page_token_end_checked_against_request():
    token = PageToken("abc", Cursor(5, "s", 1), {"s": 3}, 99)

    check_page_token_end(token, 99)
    check_page_token_end(token, None)
    with pytest.raises(InvalidArgument) as caught:
        check_page_token_end(token, 98)

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert message.startswith("page_token: ")
    assert "end time 99 ns differs from the request's end_time 98 ns" in message
    assert "start the listing again without a page token" in message


@pytest.mark.parametrize("text", ["!!", "bm90IGpzb24", "eyJ2IjoxfQ", "e30"])
def test_page_token_malformed_is_invalid(text):
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(text, "abc")

    assert caught.value.field_violations[0].field == "page_token"
    assert caught.value.reason == "INVALID_PAGE_TOKEN"


@pytest.mark.parametrize(
    "token",
    [
        PageToken("abc", Cursor(5, "shard-9", 7), {"shard-0": 3}, 99),
        PageToken("abc", Cursor(5, "shard-1", 7), {"shard-9": 3}, 99),
    ],
)
def test_page_token_unknown_shard_is_invalid(token):
    text = encode_page_token(token)

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(text, "abc", known_shards=["shard-0", "shard-1"])

    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert decode_page_token(text, "abc") == token


def test_resume_token_unknown_shard_is_invalid():
    text = encode_resume_token(ResumeToken("f", {"shard-0": 1, "shard-9": 2}))

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(text, "f", known_shards=["shard-0", "shard-1"])

    assert caught.value.reason == "INVALID_PAGE_TOKEN"


def test_resume_token_round_trip():
    token = ResumeToken("f", {"shard-0": 10, "shard-1": 0})

    assert decode_resume_token(encode_resume_token(token), "f") == token


def test_resume_token_with_other_filters_is_invalid():
    text = encode_resume_token(ResumeToken("f", {"a": 1}))

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(text, "g")

    assert caught.value.field_violations[0].field == "resume_token"


def test_resume_token_rejects_non_integer_positions():
    text = encode_resume_token(ResumeToken("f", {"a": "x"}))  # type: ignore[dict-item]

    with pytest.raises(InvalidArgument):
        decode_resume_token(text, "f")


def test_shard_cursor_orders_ties_by_shard():
    cursor = Cursor(100, "shard-1", 5)

    assert shard_cursor(cursor, "shard-0") == (100, MAX_SEQUENCE)
    assert shard_cursor(cursor, "shard-1") == (100, 5)
    assert shard_cursor(cursor, "shard-2") == (100, 0)


def _simulate_pages(shards, descending, page_size):
    """Page through in-memory shards the way the router pages through nodes."""

    def query(shard, rows, after):
        ordered = sorted(rows, reverse=descending)
        if after is not None:
            if descending:
                ordered = [r for r in ordered if r < after]
            else:
                ordered = [r for r in ordered if r > after]
        return [Row(Cursor(ts, shard, seq), (ts, shard, seq)) for ts, seq in ordered]

    seen = []
    cursor = None
    while True:
        per_shard = {}
        for shard, rows in shards.items():
            after = None if cursor is None else shard_cursor(cursor, shard)
            per_shard[shard] = query(shard, rows, after)[: page_size + 1]
        merged = merge_rows(per_shard, descending, page_size + 1)
        page = merged[:page_size]
        seen.extend(row.item for row in page)
        if len(merged) <= page_size:
            return seen
        cursor = page[-1].cursor


@pytest.mark.parametrize("descending", [False, True])
@pytest.mark.parametrize("page_size", [1, 7, 100])
def test_paging_with_ties_never_skips_or_repeats(descending, page_size):
    generator = random.Random(7)
    shards = {
        shard: [(generator.choice([10, 20, 20, 30]), seq) for seq in range(1, 60)]
        for shard in ("shard-0", "shard-1", "shard-2")
    }
    expected = sorted(
        ((ts, shard, seq) for shard, rows in shards.items() for ts, seq in rows),
        reverse=descending,
    )

    assert _simulate_pages(shards, descending, page_size) == expected


def test_resume_token_with_negative_sequence_is_rejected():
    text = encode_resume_token(ResumeToken("abc", {"shard-0": 4, "shard-1": -1}))

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(text, "abc")

    message = str(caught.value)
    assert message.startswith("resume_token: ")
    assert "sequence -1 of shard shard-1 is negative" in message
    assert "start a new tail without a resume token" in message


@pytest.mark.parametrize(
    "token",
    [
        PageToken("abc", Cursor(5, "shard-1", -2), {"shard-1": 7}, 99),
        PageToken("abc", Cursor(5, "shard-1", 2), {"shard-1": -7}, 99),
    ],
)
def test_page_token_with_negative_sequence_is_rejected(token):
    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(encode_page_token(token), "abc")

    message = str(caught.value)
    assert message.startswith("page_token: ")
    assert "of shard shard-1 is negative" in message
    assert "start the listing again without a page token" in message


def test_deeply_nested_tokens_are_invalid():
    nested = base64.urlsafe_b64encode(b"[" * 100_000 + b"]" * 100_000).decode()

    with pytest.raises(InvalidArgument) as page:
        decode_page_token(nested, "abc")
    with pytest.raises(InvalidArgument) as resume:
        decode_resume_token(nested, "abc")

    assert page.value.reason == "INVALID_PAGE_TOKEN"
    assert resume.value.reason == "INVALID_PAGE_TOKEN"


def test_page_token_with_every_shard_passes():
    token = PageToken("abc", Cursor(5, "shard-1", 7), {"shard-0": 0, "shard-1": 9}, 99)

    check_page_token_shards(token, ["shard-0", "shard-1"])
    check_page_token_shards(token, ["shard-1"])


def test_page_token_missing_shard_is_invalid():
    token = PageToken("abc", Cursor(5, "shard-1", 7), {"shard-1": 9}, 99)

    with pytest.raises(InvalidArgument) as caught:
        check_page_token_shards(token, ["shard-0", "shard-1", "shard-2"])

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.field_violations[0].field == "page_token"
    assert caught.value.metadata["shards"] == "shard-0, shard-2"
    assert message.startswith("page_token: ")
    assert "no position for shard(s) shard-0, shard-2" in message
    assert "start the listing again without a page token" in message


def test_resume_token_unopened_round_trip():
    token = ResumeToken("f", {"shard-0": 10}, frozenset({"shard-1", "shard-2"}))

    text = encode_resume_token(token)

    assert decode_resume_token(text, "f") == token


def test_resume_token_without_unopened_has_empty_list():
    text = encode_resume_token(ResumeToken("f", {"shard-0": 10}))
    payload = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))

    assert b'"u":[]' in payload
    assert decode_resume_token(text, "f").unopened == frozenset()


def _with_check_hash(payload: dict) -> str:
    """Return a resume token of `payload` with a matching check hash."""
    payload = {"v": 2, **payload}
    payload["h"] = check_hash("resume token", payload)
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "unopened",
    ["shard-1", [1], ["shard-0"], ["shard-9"], ["shard-1", "shard-1"]],
)
def test_resume_token_bad_unopened_is_invalid(unopened):
    payload = {"f": "f", "p": {"shard-0": 1}, "u": unopened, "e": {}}
    text = _with_check_hash(payload)

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(text, "f", known_shards=["shard-0", "shard-1"])

    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.field_violations[0].field == "resume_token"
    assert "check hash" not in str(caught.value)


def test_resume_positions_of_positioned_and_unopened():
    token = ResumeToken("f", {"shard-0": 10, "shard-2": 0}, frozenset({"shard-1"}))

    positions = resume_positions(token, ["shard-0", "shard-1", "shard-2"])

    assert positions == {"shard-0": 10, "shard-1": -1, "shard-2": 0}


def test_resume_positions_missing_shard_is_invalid():
    token = ResumeToken("f", {"shard-0": 10})

    with pytest.raises(InvalidArgument) as caught:
        resume_positions(token, ["shard-0", "shard-1"])

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.field_violations[0].field == "resume_token"
    assert message.startswith("resume_token: ")
    assert "no position for shard(s) shard-1, which this tail follows" in message
    assert "start a new tail without a resume token" in message


# Edits by hand. Every field is covered by the check hash, so each edit below
# is rejected, although each keeps the token well formed.

_SHARDS = ["shard-0", "shard-1", "shard-2"]


def _decoded(text: str) -> dict:
    return json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))


def _encoded(payload: dict) -> str:
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _page_text() -> str:
    return encode_page_token(
        PageToken("abc", Cursor(50, "shard-1", 7), {"shard-0": 3, "shard-1": 9}, 99)
    )


def _resume_text() -> str:
    return encode_resume_token(
        ResumeToken(
            "f",
            {"shard-0": 10, "shard-1": 4},
            frozenset({"shard-2"}),
            {"shard-0": 2, "shard-1": 3},
        )
    )


def _set_cursor_time(value):
    def edit(payload):
        payload["c"][0] = value

    return edit


def _raise_snapshot(payload):
    payload["s"]["shard-1"] += 1


def _set(key, value):
    def edit(payload):
        payload[key] = value

    return edit


PAGE_EDITS = {
    "cursor time 0": _set_cursor_time(0),
    "cursor time int64 max": _set_cursor_time(2**63 - 1),
    "cursor sequence": lambda payload: payload["c"].__setitem__(2, 8),
    "cursor shard": lambda payload: payload["c"].__setitem__(1, "shard-0"),
    "snapshot raised": _raise_snapshot,
    "snapshot shard added": lambda payload: payload["s"].__setitem__("shard-2", 5),
    "end time": _set("e", 100),
    "version true": _set("v", True),
    "extra key": _set("x", 1),
}


@pytest.mark.parametrize("edit", PAGE_EDITS.values(), ids=PAGE_EDITS.keys())
def test_page_token_edit_is_rejected(edit):
    payload = _decoded(_page_text())
    edit(payload)

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(_encoded(payload), "abc", known_shards=_SHARDS)

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.field_violations[0].field == "page_token"
    assert message.startswith("page_token: ")
    assert "start the listing again without a page token" in message


def _set_epoch(shard, value):
    def edit(payload):
        payload["e"][shard] = value

    return edit


def _set_position(value):
    def edit(payload):
        payload["p"]["shard-0"] = value

    return edit


def _move_to_unopened(payload):
    del payload["p"]["shard-1"]
    del payload["e"]["shard-1"]
    payload["u"].append("shard-1")


RESUME_EDITS = {
    "epoch 0": _set_epoch("shard-0", 0),
    "epoch plus 1": _set_epoch("shard-0", 3),
    "epoch 999": _set_epoch("shard-0", 999),
    "epoch of unknown shard": _set_epoch("shard-9", 2),
    "epoch of unopened shard": _set_epoch("shard-2", 2),
    "epoch removed": lambda payload: payload["e"].pop("shard-0"),
    "position 0": _set_position(0),
    "position -5": _set_position(-5),
    "position raised": _set_position(11),
    "shard moved to unopened": _move_to_unopened,
    "unopened removed": _set("u", []),
    "version true": _set("v", True),
    "extra key": _set("x", 1),
}


@pytest.mark.parametrize("edit", RESUME_EDITS.values(), ids=RESUME_EDITS.keys())
def test_resume_token_edit_is_rejected(edit):
    payload = _decoded(_resume_text())
    edit(payload)

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(_encoded(payload), "f", known_shards=_SHARDS)

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert caught.value.field_violations[0].field == "resume_token"
    assert message.startswith("resume_token: ")
    assert "start a new tail without a resume token" in message


def test_edited_page_token_names_check_hash():
    payload = _decoded(_page_text())
    payload["c"][0] = 0

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(_encoded(payload), "abc")

    assert "does not match its check hash, so it was altered" in str(caught.value)


def test_edited_resume_token_names_check_hash():
    payload = _decoded(_resume_text())
    payload["p"]["shard-0"] = 0

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(_encoded(payload), "f")

    assert "does not match its check hash, so it was altered" in str(caught.value)


def test_page_token_unknown_key_is_named():
    payload = _decoded(_page_text())
    payload["x"] = 1

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(_encoded(payload), "abc")

    assert "unknown key(s) 'x'" in str(caught.value)


# Tokens built with a valid check hash, as a caller who read this code could
# build them, still pass the checks of their content.


def test_resume_token_epoch_without_position_is_rejected():
    token = ResumeToken("f", {"shard-0": 10}, frozenset({"shard-1"}), {"shard-1": 2})

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(encode_resume_token(token), "f")

    message = str(caught.value)
    assert caught.value.field_violations[0].field == "resume_token"
    assert "epoch for shard(s) shard-1, which it has no position for" in message
    assert "start a new tail without a resume token" in message


def test_resume_token_shard_positioned_and_unopened_is_rejected():
    token = ResumeToken("f", {"shard-0": 10, "shard-1": 4}, frozenset({"shard-1"}))

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(encode_resume_token(token), "f")

    message = str(caught.value)
    assert caught.value.field_violations[0].field == "resume_token"
    assert "shard(s) shard-1 both have a position and are unopened" in message
    assert "start a new tail without a resume token" in message


# Tokens of the format before the check hash covered every field.


def test_page_token_of_version_1_is_rejected():
    payload = _decoded(_page_text())
    payload["v"] = 1

    with pytest.raises(InvalidArgument) as caught:
        decode_page_token(_encoded(payload), "abc")

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert message.startswith("page_token: ")
    assert "issued by an earlier version of the router" in message
    assert "start the listing again without a page token" in message


def test_resume_token_without_check_hash_is_rejected():
    legacy = _encoded({"v": 1, "f": "f", "p": {"shard-0": 10}, "e": {"shard-0": 2}})

    with pytest.raises(InvalidArgument) as caught:
        decode_resume_token(legacy, "f")

    message = str(caught.value)
    assert caught.value.reason == "INVALID_PAGE_TOKEN"
    assert message.startswith("resume_token: ")
    assert "issued by an earlier version of the router" in message
    assert "start a new tail without a resume token" in message
    assert "ListLogEntries" in message
