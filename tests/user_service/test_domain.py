"""Unit tests of the pure validation rules in user_service.domain."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given
from hypothesis import strategies as st

from expense_service.currencies import HISTORIC_EXPONENTS
from splitlog_runtime.errors import InvalidArgument
from user_service import domain

# Email


@pytest.mark.parametrize(
    "email",
    [
        "ada@example.com",
        "Ada.Lovelace+splits@Example.co.uk",
        "o'brien@example.ie",
        "x@a-b.example",
        "user_name@sub.domain.example",
        "ünïcode@exämple.de",
        "a" * 64 + "@example.com",
        "a@" + "b" * 63 + ".com",
    ],
)
def test_validate_email_accepts_and_keeps_value(email):
    assert domain.validate_email(email, "user.email") == email


@pytest.mark.parametrize(
    "email",
    [
        "plain",
        "two@@example.com",
        "a@b@example.com",
        "@example.com",
        "ada@",
        "ada@localhost",
        "ada@example..com",
        "ada@-example.com",
        "ada@example-.com",
        "ada@exa_mple.com",
        "ada@192.168.0.1",
        ".ada@example.com",
        "ada.@example.com",
        "a..da@example.com",
        "a da@example.com",
        " ada@example.com",
        "ada@example.com\n",
        '"quoted"@example.com',
        "a" * 65 + "@example.com",
        "a@" + "b" * 64 + ".com",
        "a@" + "b." * 126 + "com",
    ],
)
def test_validate_email_rejects(email):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_email(email, "user.email")

    assert caught.value.reason == "INVALID_EMAIL"
    assert caught.value.field_violations[0].field == "user.email"


def test_validate_email_empty_is_required():
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_email("", "user.email")

    assert caught.value.reason == "REQUIRED"


def test_validate_email_rejects_255_characters():
    email = "a" * 60 + "@" + ".".join(["b" * 60] * 3) + "." + "c" * 11

    with pytest.raises(InvalidArgument) as caught:
        domain.validate_email(email, "user.email")

    assert len(email) == 255
    assert "254" in caught.value.message


@given(st.text(max_size=300))
def test_validate_email_never_raises_other_errors(text):
    try:
        assert domain.validate_email(text, "user.email") == text
    except InvalidArgument as error:
        assert error.field_violations[0].field == "user.email"


@given(
    st.text(
        alphabet="abcdefghijklmnopqrstuvwxyz0123456789+-_", min_size=1, max_size=30
    ),
    st.lists(
        st.text(
            alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=20
        ),
        min_size=1,
        max_size=3,
    ),
)
def test_validate_email_accepts_generated_addresses(local, labels):
    email = f"{local}@{'.'.join(labels)}.com"

    assert domain.validate_email(email, "user.email") == email


@given(st.emails())
def test_normalise_email_ignores_case(email):
    assert domain.normalise_email(email.upper()) == domain.normalise_email(
        email.lower()
    )


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ben@example.com", "ｂｅｎ@example.com"),
        ("ben@example.com", "ben@ｅxample.com"),
        ("ben@example.com", "BEN@example.com"),
        ("ｂｅｎ@example.com", "ＢＥＮ@ＥＸＡＭＰＬＥ.ＣＯＭ"),
        ("strasse@x.com", "straße@x.com"),
        ("STRASSE@x.com", "straße@x.com"),
        ("STRASSE@x.com", "STRAẞE@x.com"),
        ("zoë@example.com", "zoe\u0308@example.com"),
        ("ﬁne@example.com", "fine@example.com"),
    ],
)
def test_normalise_email_joins_look_alikes(first, second):
    assert domain.normalise_email(first) == domain.normalise_email(second)


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("ben@example.com", "ben@example.org"),
        ("ben@example.com", "ben1@example.com"),
        ("zoë@example.com", "zoe@example.com"),
        ("a.b@example.com", "ab@example.com"),
    ],
)
def test_normalise_email_keeps_distinct_addresses_apart(first, second):
    assert domain.normalise_email(first) != domain.normalise_email(second)


@given(st.text(max_size=60))
def test_normalise_email_is_stable(text):
    key = domain.normalise_email(text)

    assert domain.normalise_email(key) == key


@pytest.mark.parametrize(
    ("email", "reserved"),
    [
        ("sw-ana-1c2d3e@import.invalid", True),
        ("ana@Example.INVALID", True),
        ("ana@example.\uff49nvalid", True),
        ("ana@invalid.example.com", False),
        ("ana@example.invalids", False),
        ("ana@example.com", False),
        ("", False),
    ],
)
def test_is_reserved_email(email, reserved):
    assert domain.is_reserved_email(email) is reserved


def test_check_email_not_reserved_names_field():
    with pytest.raises(InvalidArgument) as caught:
        domain.check_email_not_reserved("x@import.invalid", "user.email")
    assert caught.value.reason == "EMAIL_DOMAIN_RESERVED"
    assert str(caught.value).startswith("user.email: 'x@import.invalid'")


def test_validate_email_rejects_key_over_1024_bytes():
    # U+FDFA is one letter that NFKC expands to 18 Arabic letters.
    email = "\ufdfa" * 60 + "@example.com"

    with pytest.raises(InvalidArgument) as caught:
        domain.validate_email(email, "user.email")

    assert len(email) < domain.MAX_EMAIL_LENGTH
    assert caught.value.reason == "INVALID_EMAIL"
    assert "1024" in caught.value.message


# Display name


@pytest.mark.parametrize(
    "name",
    [
        "  Ada  ",
        "\u200bAda\ufeff",
        "\u2060 Ada \u200d",
        "\u200c\u200eAda\u00ad",
        "\u3164Ada\u2800",
        "\t\u180eAda\u3000",
    ],
)
def test_validate_display_name_trims(name):
    assert domain.validate_display_name(name, "f") == "Ada"


@pytest.mark.parametrize(
    "name",
    [
        "Ada",
        "x" * 100,
        "Zoë 🍕",
        "李小龍",
        "a\u200db",
        "Zoe\u0308",
        "👨\u200d👩\u200d👧",
        "Go 🏴\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f",
        "❤\ufe0f",
    ],
)
def test_validate_display_name_accepts(name):
    assert domain.validate_display_name(name, "f") == name


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "REQUIRED"),
        (" \t\n ", "REQUIRED"),
        ("\u3000", "REQUIRED"),
        ("x" * 101, "DISPLAY_NAME_TOO_LONG"),
        ("Ada\x00", "INVALID_DISPLAY_NAME"),
        ("Ada\nLovelace", "INVALID_DISPLAY_NAME"),
        ("Ada\u2028Lovelace", "INVALID_DISPLAY_NAME"),
        ("Ada\u202eecalevol", "INVALID_DISPLAY_NAME"),
        ("\x1b[31mred", "INVALID_DISPLAY_NAME"),
        ("\u202eAda", "INVALID_DISPLAY_NAME"),
        ("\u200b", "REQUIRED"),
        ("\u200b\u200c\u200d\u2060\ufeff", "REQUIRED"),
        (" \u200b\u3164 \u2800 ", "REQUIRED"),
        ("\u2061\u2062", "REQUIRED"),
        ("\u0301", "INVALID_DISPLAY_NAME"),
        ("\u0301\u0302\u20dd", "INVALID_DISPLAY_NAME"),
        ("\u200b\u0301\u200b", "INVALID_DISPLAY_NAME"),
        ("\ufe0f", "INVALID_DISPLAY_NAME"),
        ("\U000e0041\U000e0064\U000e0061", "INVALID_DISPLAY_NAME"),
        ("\u0301\u200b\u0302", "INVALID_DISPLAY_NAME"),
    ],
)
def test_validate_display_name_rejects(name, reason):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_display_name(name, "group.display_name")

    assert caught.value.reason == reason
    assert caught.value.field_violations[0].field == "group.display_name"


def test_validate_display_name_invisible_message_names_value():
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_display_name("\u0301\u200b", "user.display_name")

    assert "no visible character" in caught.value.message
    assert "\\u200b" in caught.value.message


@given(st.text(max_size=150))
def test_validate_display_name_result_is_trimmed_and_bounded(text):
    try:
        result = domain.validate_display_name(text, "f")
    except InvalidArgument:
        return
    assert result == result.strip()
    assert 1 <= len(result) <= 100
    invisible = ("Cc", "Cf", "Cs", "Mc", "Me", "Mn", "Zl", "Zp", "Zs")
    assert any(
        not char.isspace() and unicodedata.category(char) not in invisible
        for char in result
    )


# Currency


@pytest.mark.parametrize("code", ["USD", "EUR", "JPY", "CHF", "XOF", "ZWG", "XCG"])
def test_validate_currency_code_accepts(code):
    assert domain.validate_currency_code(code, "f") == code


@pytest.mark.parametrize(
    "code", ["", "usd", "US", "USDD", "XXX", "XTS", "XAU", "HRK", "ABC", "€"]
)
def test_validate_currency_code_rejects(code):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_currency_code(code, "user.currency_code")

    assert caught.value.reason == "INVALID_CURRENCY_CODE"


def test_validate_currency_code_suggests_upper_case():
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_currency_code("eur", "f")

    assert "'EUR'" in caught.value.message


@pytest.mark.parametrize(
    ("code", "currency"),
    [
        ("BOV", "BOB"),
        ("CHE", "CHF"),
        ("CHW", "CHF"),
        ("CLF", "CLP"),
        ("COU", "COP"),
        ("MXV", "MXN"),
        ("USN", "USD"),
        ("UYI", "UYU"),
        ("UYW", "UYU"),
    ],
)
def test_validate_currency_code_names_fund(code, currency):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_currency_code(code, "user.currency_code")

    message = caught.value.message
    assert caught.value.reason == "INVALID_CURRENCY_CODE"
    assert f"{code!r} is an ISO 4217 fund code" in message
    assert "cannot be a default currency" in message
    assert f"use {currency!r}" in message
    assert "not an active" not in message


@pytest.mark.parametrize(
    ("code", "currency"),
    [
        ("HRK", "EUR"),
        ("DEM", "EUR"),
        ("BGN", "EUR"),
        ("BGL", "EUR"),
        ("ANG", "XCG"),
        ("SLL", "SLE"),
        ("VEF", "VES"),
        ("ZWL", "ZWG"),
        ("BYR", "BYN"),
    ],
)
def test_validate_currency_code_names_replacement(code, currency):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_currency_code(code, "group.currency_code")

    message = caught.value.message
    assert caught.value.reason == "INVALID_CURRENCY_CODE"
    assert f"{code!r} is a withdrawn ISO 4217 currency" in message
    assert f"replaced by {currency!r}" in message
    assert "cannot be a default currency" in message
    assert f"use {currency!r}" in message
    assert "not an active" not in message


def test_withdrawn_currencies_match_historic_table():
    assert set(domain.WITHDRAWN_CURRENCIES) == set(HISTORIC_EXPONENTS)


@pytest.mark.parametrize("code", sorted(HISTORIC_EXPONENTS))
def test_withdrawn_currency_replacement_is_active(code):
    replacement = domain.WITHDRAWN_CURRENCIES.get(code)

    assert domain.validate_currency_code(replacement, "f") == replacement


@pytest.mark.parametrize("code", ["XDR", "XAU", "XTS"])
def test_code_without_minor_unit_named_as_such(code):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_currency_code(code, "user.currency_code")

    assert "with a minor unit" in caught.value.message
    assert "'USD', 'EUR' or 'JPY'" in caught.value.message


def test_iso_4217_codes_are_three_upper_case_letters():
    assert all(len(code) == 3 and code.isupper() for code in domain.ISO_4217_CODES)
    assert len(domain.ISO_4217_CODES) > 150


# Ids, names, request ids and etags


def test_parse_names():
    assert domain.parse_user_name("users/ada-1", "name") == "ada-1"
    assert domain.parse_group_name("groups/trip", "name") == "trip"
    assert domain.parse_member_name("groups/trip/members/ada-1", "name") == (
        "trip",
        "ada-1",
    )


@pytest.mark.parametrize(
    "name", ["users/A", "users/abc", "users/ab_cd", "users/9abc", "users/abcd\n"]
)
def test_parse_user_name_rejects_invalid_id(name):
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_user_name(name, "name")

    assert caught.value.reason == "INVALID_RESOURCE_NAME"


def test_validate_new_id_rejects_trailing_newline():
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_new_id("abcd\n", "user_id")

    assert caught.value.reason == "INVALID_ID"


def test_validate_request_id_lower_cases():
    value = "5F0C6D2E-8A41-4C3B-9A57-2F1E0B7D9C44"

    assert domain.validate_request_id(value) == value.lower()
    assert domain.validate_request_id("") == ""


@pytest.mark.parametrize(
    "value",
    [
        "abc",
        "5f0c6d2e8a414c3b9a572f1e0b7d9c44",
        "{5f0c6d2e-8a41-4c3b-9a57}",
        "5f0c6d2e-8a41-4c3b-9a57-2f1e0b7d9c44\n",
    ],
)
def test_validate_request_id_rejects(value):
    with pytest.raises(InvalidArgument) as caught:
        domain.validate_request_id(value)

    assert caught.value.reason == "INVALID_REQUEST_ID"


@given(st.integers(min_value=1, max_value=10**17))
def test_etag_round_trips(version):
    assert domain.parse_etag(domain.format_etag(version), "etag") == version


@pytest.mark.parametrize("etag", ["3", 'W/"3"', '"x"', '"3'])
def test_parse_etag_rejects_foreign_values(etag):
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_etag(etag, "etag")

    assert caught.value.reason == "INVALID_ETAG"


# Update masks


def test_resolve_update_mask_empty_uses_populated_fields():
    fields = domain.resolve_update_mask(
        [], domain.USER_MASK, ["currency_code", "email"]
    )

    assert fields == ["email", "currency_code"]


def test_resolve_update_mask_star_selects_every_mutable_field():
    assert domain.resolve_update_mask(["*"], domain.GROUP_MASK, []) == [
        "display_name",
        "currency_code",
    ]


def test_resolve_update_mask_lists_every_bad_path():
    with pytest.raises(InvalidArgument) as caught:
        domain.resolve_update_mask(
            ["email", "state", "nope", "name"], domain.USER_MASK, []
        )

    fields = [v.field for v in caught.value.field_violations]
    assert fields == [
        "update_mask.paths[1]",
        "update_mask.paths[2]",
        "update_mask.paths[3]",
    ]
    assert caught.value.reason == "FIELD_NOT_MUTABLE"


@pytest.mark.parametrize(
    ("path", "quoted"),
    [
        ("DisplayName", "'DisplayName'"),
        ("displayName", "'displayName'"),
        ("user.display_name", "'user.display_name'"),
        (
            "_display_name",
            "'DisplayName' (received as '_display_name' after the JSON mapping)",
        ),
    ],
)
def test_resolve_update_mask_unknown_path_suggests_field(path, quoted):
    with pytest.raises(InvalidArgument) as caught:
        domain.resolve_update_mask([path], domain.USER_MASK, [])

    message = caught.value.field_violations[0].description
    assert caught.value.reason == "UNKNOWN_FIELD_PATH"
    assert message.startswith(f"unknown field path {quoted}; ")
    assert "did you mean 'display_name'?" in message
    assert "valid paths of a user are email, display_name, currency_code" in message


@pytest.mark.parametrize("path", ["nickname", "_1x", "__nick", "_Name"])
def test_resolve_update_mask_unknown_path_quoted_verbatim(path):
    with pytest.raises(InvalidArgument) as caught:
        domain.resolve_update_mask([path], domain.GROUP_MASK, [])

    message = caught.value.field_violations[0].description
    assert message == (
        f"unknown field path {path!r}; valid paths of a group are display_name, "
        "currency_code, or '*' alone for all of them"
    )


# ListUsers filter


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", domain.UserFilter()),
        ("   ", domain.UserFilter()),
        ("state = ACTIVE", domain.UserFilter(state="ACTIVE")),
        ("state=DEACTIVATED", domain.UserFilter(state="DEACTIVATED")),
        ('email = "Ada@Example.com"', domain.UserFilter(email="ada@example.com")),
        (
            'display_name : "Lo \\"V\\" e" AND state = ACTIVE',
            domain.UserFilter(state="ACTIVE", display_name_contains='lo "v" e'),
        ),
        (
            'state = ACTIVE AND email="a@b.io" AND display_name:"x"',
            domain.UserFilter(
                state="ACTIVE", email="a@b.io", display_name_contains="x"
            ),
        ),
    ],
)
def test_parse_user_filter_accepts(text, expected):
    assert domain.parse_user_filter(text) == expected


@pytest.mark.parametrize(
    ("spellings", "canonical"),
    [
        (["", " ", "\t \u3000"], ""),
        (
            ["state = ACTIVE", "state=ACTIVE", "  state =ACTIVE\n"],
            "state = ACTIVE",
        ),
        (
            [
                'display_name : "Ada" AND email = "Ada@Example.com"',
                'email="ada@example.com"   AND display_name:"ADA"',
                'email = "ａｄａ@example.com" AND display_name : "ada"',
            ],
            'email = "ada@example.com" AND display_name : "ada"',
        ),
    ],
)
def test_user_filter_canonical_joins_spellings(spellings, canonical):
    results = {domain.parse_user_filter(text).canonical() for text in spellings}

    assert results == {canonical}


def test_user_filter_canonical_tells_filters_apart():
    active = domain.parse_user_filter("state = ACTIVE").canonical()
    deactivated = domain.parse_user_filter("state = DEACTIVATED").canonical()

    assert active != deactivated
    assert active != domain.parse_user_filter("").canonical()


@given(
    st.sampled_from([None, "ACTIVE", "DEACTIVATED"]),
    st.none() | st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"])),
    st.none() | st.text(alphabet=st.characters(blacklist_categories=["Cc", "Cs"])),
)
def test_user_filter_canonical_parses_back(state, email, contains):
    parsed = domain.UserFilter(
        state=state,
        email=domain.normalise_email(email) if email is not None else None,
        display_name_contains=domain.normalise_text(contains)
        if contains is not None
        else None,
    )

    try:
        again = domain.parse_user_filter(parsed.canonical())
    except InvalidArgument as error:
        assert "control character" in error.message  # Zl, Zp and bidi controls
        return
    assert again == parsed


@pytest.mark.parametrize(
    ("text", "named"),
    [
        ("state = ACTIVE OR state = DEACTIVATED", "OR"),
        ("age > 3", "'age'"),
        ("state : ACTIVE", "':'"),
        ('state = ACTIVE AND display_name = "x"', "'='"),
        ("AND state = ACTIVE", "AND"),
        ("state = PENDING", "PENDING"),
        ('display_name : "open', "closing quote"),
        ("state = ACTIVE AND state = ACTIVE", "repeats"),
        ("email = bare", "quoted"),
        ("state = ACTIVE; DROP", "'state = ACTIVE; DROP'"),
        ('email = "a\x00@example.com"', "U+0000"),
    ],
)
def test_parse_user_filter_rejects_and_names_term(text, named):
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_user_filter(text)

    assert caught.value.reason == "INVALID_FILTER"
    assert caught.value.field_violations[0].field == "filter"
    assert named in caught.value.message


@given(st.text(max_size=80))
def test_parse_user_filter_raises_only_invalid_argument(text):
    try:
        domain.parse_user_filter(text)
    except InvalidArgument as error:
        assert error.reason == "INVALID_FILTER"


# Violations


def test_violations_merge_every_error():
    violations = domain.Violations()
    violations.check(domain.validate_email, "bad", "user.email")
    violations.check(domain.validate_currency_code, "usd", "user.currency_code")
    assert violations.check(domain.validate_currency_code, "USD", "x") == "USD"

    with pytest.raises(InvalidArgument) as caught:
        violations.raise_if_any()

    assert caught.value.reason == "INVALID_EMAIL"
    assert [v.field for v in caught.value.field_violations] == [
        "user.email",
        "user.currency_code",
    ]
