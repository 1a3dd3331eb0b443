"""Validation rules of the users API, free of gRPC and database types.

Every check raises `InvalidArgument` with a BadRequest violation that names
the request field, the rejected value and the fix. The servicer passes the
request field path (such as `user.email`) so the message points at the exact
spot in the caller's request.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from typing import TypeVar

from splitlog_runtime import limits
from splitlog_runtime.errors import InvalidArgument, invalid_field
from splitlog_runtime.etags import format_etag, parse_etag  # noqa: F401 (re-exported)
from splitlog_runtime.idempotency import validate_request_id  # noqa: F401 (re-exported)
from splitlog_runtime.masks import (  # noqa: F401 (resolve_update_mask re-exported)
    MaskRules,
    resolve_update_mask,
)
from splitlog_runtime.resources import check_id, parse_name_ids
from splitlog_runtime.validation import (
    BIDI_CONTROLS,
    Violations,  # noqa: F401 (re-exported)
    find_control_character,
)

USER_PATTERN = "users/{user}"
GROUP_PATTERN = "groups/{group}"
MEMBER_PATTERN = "groups/{group}/members/{member}"

USER_TYPE = "splitlog.dev/User"
GROUP_TYPE = "splitlog.dev/Group"
MEMBER_TYPE = "splitlog.dev/Member"

STATE_ACTIVE = "ACTIVE"
STATE_DEACTIVATED = "DEACTIVATED"

_T = TypeVar("_T")

DEFAULT_CURRENCY = "USD"
MAX_EMAIL_LENGTH = 254
MAX_EMAIL_LOCAL_LENGTH = 64
# The uniqueness key of an email (see `normalise_email`) in UTF-8 bytes. NFKC
# can expand one ligature to 18 characters, and the key must still fit the
# 1024-character column and a PostgreSQL B-tree index entry.
MAX_EMAIL_KEY_BYTES = 1024

# Active ISO 4217 currency codes (List One), kept by hand. Codes that people
# do not pay each other in are left out. These are the fund codes (BOV, CHE,
# CHW, CLF, COU, MXV, USN, UYI, UYW) and the Arab accounting dinar XAD. They
# also include precious metals, bond-market units, XDR, XSU, XUA, the test
# code XTS and "no currency" XXX. ANG (replaced by XCG) and BGN (replaced by
# EUR) are withdrawn.
# Withdrawn codes (HRK, DEM, ...) are left out too: amounts may still use
# them, but a default is for new expenses.
# NOTE: expense_service/currencies.py keeps its own tables: an active one, a
# superset of this one, and the withdrawn codes. Update both files when ISO
# publishes an amendment.
_ISO_4217_TEXT = """
    AED AFN ALL AMD AOA ARS AUD AWG AZN BAM BBD BDT BHD BIF BMD BND BOB
    BRL BSD BTN BWP BYN BZD CAD CDF CHF CLP CNY COP CRC CUP CVE CZK DJF DKK DOP
    DZD EGP ERN ETB EUR FJD FKP GBP GEL GHS GIP GMD GNF GTQ GYD HKD HNL HTG HUF
    IDR ILS INR IQD IRR ISK JMD JOD JPY KES KGS KHR KMF KPW KRW KWD KYD KZT LAK
    LBP LKR LRD LSL LYD MAD MDL MGA MKD MMK MNT MOP MRU MUR MVR MWK MXN MYR MZN
    NAD NGN NIO NOK NPR NZD OMR PAB PEN PGK PHP PKR PLN PYG QAR RON RSD RUB RWF
    SAR SBD SCR SDG SEK SGD SHP SLE SOS SRD SSP STN SVC SYP SZL THB TJS TMT TND
    TOP TRY TTD TWD TZS UAH UGX USD UYU UZS VED VES VND VUV WST XAF XCD XCG XOF
    XPF YER ZAR ZMW ZWG
"""
ISO_4217_CODES = frozenset(_ISO_4217_TEXT.split())
# The ISO 4217 fund codes, with the currency that people pay in where each
# fund is used: the code to suggest as a default currency in its place.
FUND_CURRENCIES = {
    "BOV": "BOB",
    "CHE": "CHF",
    "CHW": "CHF",
    "CLF": "CLP",
    "COU": "COP",
    "MXV": "MXN",
    "USN": "USD",
    "UYI": "UYU",
    "UYW": "UYU",
}
# The withdrawn codes that expense amounts may still use (the historic table
# of expense_service/currencies.py), each with the active code that replaced
# it, following the chain of replacements to today's code: DEM became EUR,
# and BGL became BGN, which became EUR. Where a code's country now pays in
# another country's currency, that currency is named (TPE: USD, GWP: XOF).
WITHDRAWN_CURRENCIES = {
    "ADP": "EUR", "AFA": "AFN", "ANG": "XCG", "ATS": "EUR", "AYM": "AZN",
    "AZM": "AZN", "BEF": "EUR", "BGL": "EUR", "BGN": "EUR", "BYB": "BYN",
    "BYR": "BYN", "CSD": "RSD", "CUC": "CUP", "CYP": "EUR", "DEM": "EUR",
    "EEK": "EUR", "ESP": "EUR", "FIM": "EUR", "FRF": "EUR", "GHC": "GHS",
    "GRD": "EUR", "GWP": "XOF", "HRK": "EUR", "IEP": "EUR", "ITL": "EUR",
    "LTL": "EUR", "LUF": "EUR", "LVL": "EUR", "MGF": "MGA", "MRO": "MRU",
    "MTL": "EUR", "MZM": "MZN", "NLG": "EUR", "PTE": "EUR", "ROL": "RON",
    "RUR": "RUB", "SDD": "SDG", "SIT": "EUR", "SKK": "EUR", "SLL": "SLE",
    "SRG": "SRD", "STD": "STN", "TMM": "TMT", "TPE": "USD", "TRL": "TRY",
    "USS": "USD", "VEB": "VES", "VEF": "VES", "YUM": "RSD", "ZMK": "ZMW",
    "ZWD": "ZWG", "ZWL": "ZWG", "ZWN": "ZWG", "ZWR": "ZWG",
}  # fmt: skip

# Characters allowed unquoted in the local part of an address (RFC 5322 atext).
_ATEXT = frozenset(
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+/=?^_`{|}~-"
)
# A domain label: letters and digits (any script), hyphens inside, 1 to 63 long.
_DOMAIN_LABEL = re.compile(r"[^\W_](?:(?:[^\W_]|-){0,61}[^\W_])?")


def _is_local_char(char: str) -> bool:
    # Internationalised addresses (RFC 6531) also allow non-ASCII letters and
    # digits, which ASCII-only mail systems would reject on delivery.
    return char in _ATEXT or (ord(char) > 127 and char.isalnum())


def _email_problem(value: str) -> str | None:
    if not value:
        return "is required; give an address such as 'ada@example.com'"

    if len(value) > MAX_EMAIL_LENGTH:
        return (
            f"has {len(value)} characters, more than the maximum of "
            f"{MAX_EMAIL_LENGTH}; use a shorter address"
        )
    if value.count("@") != 1:
        return f"{value!r} must contain exactly one '@', as in 'ada@example.com'"

    local, domain = value.split("@")
    if not local or len(local) > MAX_EMAIL_LOCAL_LENGTH:
        return (
            f"{value!r} must have 1 to {MAX_EMAIL_LOCAL_LENGTH} characters before "
            "the '@'"
        )
    if local.startswith(".") or local.endswith(".") or ".." in local:
        return (
            f"{value!r} has a dot at the start or end of the part before the '@', "
            "or two dots in a row; quoted local parts are not supported"
        )
    bad = [char for char in local.replace(".", "") if not _is_local_char(char)]
    if bad:
        return (
            f"{value!r} contains {bad[0]!r} before the '@'; use letters, digits "
            "and !#$%&'*+/=?^_`{|}~.- only"
        )

    labels = domain.split(".")
    if len(labels) < 2 or not all(_DOMAIN_LABEL.fullmatch(label) for label in labels):
        return (
            f"{value!r} has an invalid domain {domain!r}; use a domain name with "
            "a dot, such as 'example.com', made of letters, digits and hyphens"
        )
    if labels[-1].isdigit():
        return f"{value!r} has a numeric top-level domain; use a domain name"

    key_bytes = len(normalise_email(value).encode())
    if key_bytes > MAX_EMAIL_KEY_BYTES:
        return (
            f"{value!r} expands to {key_bytes} bytes under Unicode compatibility "
            f"normalisation, more than the maximum of {MAX_EMAIL_KEY_BYTES}; use "
            "an address without ligatures such as U+FDFA"
        )
    return None


def validate_email(value: str, field: str) -> str:
    """Check an email address and return it unchanged.

    The check follows RFC 5321 and 5322 for dot-atom addresses at a domain
    name: at most 254 characters, at most 64 before the '@'. Quoted local
    parts and IP-literal domains are rejected, and so are addresses whose
    uniqueness key (`normalise_email`) exceeds 1024 UTF-8 bytes.

    Raises:
      InvalidArgument: the address is empty or not valid.
    """
    problem = _email_problem(value)
    if problem is not None:
        reason = "REQUIRED" if not value else "INVALID_EMAIL"
        raise invalid_field(field, problem, reason=reason)
    return value


# Top-level domain that RFC 2606 reserves for names that never resolve. Only
# administrators may give a user an address in it, so that `splitlog import`
# can tell the users it created (`<id>@import.invalid`) from accounts that
# someone signed up with the same id.
RESERVED_EMAIL_TLD = "invalid"


def is_reserved_email(value: str) -> bool:
    """Return whether an address is in the reserved `.invalid` domain.

    The check reads the uniqueness key (`normalise_email`), so full-width or
    upper-case forms of the domain count too.
    """
    domain = normalise_email(value).rpartition("@")[2]
    return domain.rstrip(".").rpartition(".")[2] == RESERVED_EMAIL_TLD


def check_email_not_reserved(value: str, field: str) -> None:
    """Reject an address in the reserved `.invalid` domain.

    Raises:
      InvalidArgument: reason EMAIL_DOMAIN_RESERVED, naming `field`.
    """
    if is_reserved_email(value):
        raise invalid_field(
            field,
            f"{value!r} is in the reserved domain '.{RESERVED_EMAIL_TLD}', which "
            "only administrators may give to users (imports use it for the users "
            "they create); use an address that receives mail",
            reason="EMAIL_DOMAIN_RESERVED",
        )


def normalise_email(value: str) -> str:
    """Return the key under which emails are unique: NFKC, casefold, NFKC.

    NFKC folds compatibility forms such as full-width letters onto their
    plain forms, and `casefold()` then removes case, so 'ｂｅｎ@example.com',
    'ben@ｅxample.com' and 'BEN@example.com' share one key. Case folding also
    maps 'ß' and 'ẞ' to 'ss', so 'straße@x.com' and 'STRASSE@x.com' collide.
    That is deliberate: mail providers treat local parts case-insensitively in
    practice, and two accounts whose addresses read the same are a spoofing
    risk worth the rare mailbox pair that differs only by ß and ss. The final
    NFKC makes the key stable when computed again. The key serves uniqueness
    and the `email` filter only; the stored email keeps the form it was given.
    """
    folded = unicodedata.normalize("NFKC", value).casefold()
    return unicodedata.normalize("NFKC", folded)


def normalise_text(value: str) -> str:
    """Return the case-folded form used for case-insensitive substring search."""
    return unicodedata.normalize("NFC", value).lower()


# Letters and symbols that fonts draw as empty space: the Hangul fillers and
# the blank Braille pattern. They are a common way to fake an empty name.
_BLANK_GLYPHS = frozenset("\u115f\u1160\u3164\uffa0\u2800")
# Tag characters (Cf) end emoji flag sequences such as the flag of England,
# so they are kept at the end of a name.
_TAGS = range(0xE0000, 0xE0080)


def _is_blank(char: str) -> bool:
    """Return whether `char` may be trimmed from the ends of a display name."""
    if char.isspace() or char in _BLANK_GLYPHS:
        return True
    return (
        unicodedata.category(char) == "Cf"
        and ord(char) not in _TAGS
        and char not in BIDI_CONTROLS
    )


def _is_visible(char: str) -> bool:
    """Return whether `char` shows on its own.

    A visible character is not blank, not a format character (Cf, such as
    U+200B) and not a combining mark, which needs a base character.

    Unassigned (Cn) and private-use characters count as visible, because a
    character newer than Python's Unicode database shows up as unassigned.
    """
    category = unicodedata.category(char)
    return not (_is_blank(char) or category in ("Cf", "Zs") or category.startswith("M"))


def _trim(value: str) -> str:
    start, end = 0, len(value)
    while start < end and _is_blank(value[start]):
        start += 1
    while end > start and _is_blank(value[end - 1]):
        end -= 1
    return value[start:end]


def validate_display_name(value: str, field: str) -> str:
    """Check a display name and return it trimmed.

    Trimming removes whitespace, format characters such as U+200B ZERO WIDTH
    SPACE and U+FEFF, and blank glyphs such as U+3164 HANGUL FILLER from both
    ends. Bidirectional controls are not trimmed but rejected, and emoji tag
    characters at the end are kept.

    Raises:
      InvalidArgument: the trimmed name is empty (reason REQUIRED), longer
        than max_display_name_length (100) characters, contains a control,
        line-separator or bidirectional-override character, or has no
        visible character, such as a name made of combining marks alone.
    """
    trimmed = _trim(value)
    maximum = limits.current().max_display_name_length
    if not trimmed:
        raise invalid_field(
            field,
            f"{value!r} is empty after removing spaces and zero-width "
            f"characters; give 1 to {maximum} characters",
            reason="REQUIRED",
        )
    if len(trimmed) > maximum:
        raise invalid_field(
            field,
            f"has {len(trimmed)} characters, more than the maximum of "
            f"{maximum} (max_display_name_length); shorten it",
            reason="DISPLAY_NAME_TOO_LONG",
        )
    forbidden = find_control_character(trimmed)
    if forbidden is not None:
        raise invalid_field(
            field,
            f"{value!r} contains the control character U+{ord(forbidden):04X}; "
            "remove it",
            reason="INVALID_DISPLAY_NAME",
        )
    if not any(_is_visible(char) for char in trimmed):
        raise invalid_field(
            field,
            f"{value!r} has no visible character, only spaces, format characters "
            "or combining marks; give a name with at least one letter, digit or "
            "symbol",
            reason="INVALID_DISPLAY_NAME",
        )
    return trimmed


def validate_currency_code(value: str, field: str) -> str:
    """Check an ISO 4217 currency code such as `EUR` and return it.

    Raises:
      InvalidArgument: the code is not an active ISO 4217 currency with a
        minor unit, in upper case (XDR and the metals have none), or is a fund
        code. A fund code or a withdrawn code gets the active code to use.
    """
    if value in ISO_4217_CODES:
        return value
    if value in FUND_CURRENCIES:
        raise invalid_field(
            field,
            f"{value!r} is an ISO 4217 fund code, a unit of account that "
            "expenses and settlements accept but that cannot be a default "
            "currency, which is for the money new expenses are paid in; use "
            f"{FUND_CURRENCIES[value]!r}, the currency of the same country, "
            "or another active code",
            reason="INVALID_CURRENCY_CODE",
        )
    if value in WITHDRAWN_CURRENCIES:
        replacement = WITHDRAWN_CURRENCIES[value]
        raise invalid_field(
            field,
            f"{value!r} is a withdrawn ISO 4217 currency, replaced by "
            f"{replacement!r}. Expenses and settlements accept it for old "
            "amounts, but it cannot be a default currency, which is for the "
            f"money new expenses are paid in; use {replacement!r} or another "
            "active code",
            reason="INVALID_CURRENCY_CODE",
        )
    hint = ""
    if value.upper() in ISO_4217_CODES:
        hint = f"; write it in upper case, {value.upper()!r}"
    raise invalid_field(
        field,
        f"{value!r} is not an active ISO 4217 currency with a minor unit{hint}; "
        "use a three-letter code such as 'USD', 'EUR' or 'JPY'",
        reason="INVALID_CURRENCY_CODE",
    )


def validate_new_id(value: str, field: str) -> str:
    """Check a client-chosen id; see `splitlog_runtime.resources.check_id`."""
    return check_id(value, field)


def _parse_id(name: str, pattern: str, field: str) -> tuple[str, ...]:
    return parse_name_ids(name, pattern, field)


def parse_user_name(name: str, field: str) -> str:
    """Return the id in `users/{user}`.

    Raises:
      InvalidArgument: the name is empty or malformed.
    """
    return _parse_id(name, USER_PATTERN, field)[0]


def parse_group_name(name: str, field: str) -> str:
    """Return the id in `groups/{group}`.

    Raises:
      InvalidArgument: the name is empty or malformed.
    """
    return _parse_id(name, GROUP_PATTERN, field)[0]


def parse_member_name(name: str, field: str) -> tuple[str, str]:
    """Return the group id and user id in `groups/{group}/members/{member}`.

    Raises:
      InvalidArgument: the name is empty or malformed.
    """
    group_id, user_id = _parse_id(name, MEMBER_PATTERN, field)
    return group_id, user_id


def user_name(user_id: str) -> str:
    return f"users/{user_id}"


def group_name(group_id: str) -> str:
    return f"groups/{group_id}"


def member_name(group_id: str, user_id: str) -> str:
    return f"groups/{group_id}/members/{user_id}"


# Update masks

USER_MASK = MaskRules(
    resource="user",
    mutable=("email", "display_name", "currency_code"),
    output_only=("state", "create_time", "update_time"),
)
GROUP_MASK = MaskRules(
    resource="group",
    mutable=("display_name", "currency_code"),
    output_only=("member_count", "create_time", "update_time"),
    immutable=("creator",),
)


# ListUsers filter


@dataclass(frozen=True)
class UserFilter:
    """A parsed ListUsers filter; None means the term was absent."""

    state: str | None = None
    email: str | None = None
    display_name_contains: str | None = None

    def canonical(self) -> str:
        """Return one text for every spelling of this filter.

        Filters that differ only in whitespace, term order or the case of a
        value select the same users and get the same text, so page tokens
        bind to it instead of to the request's spelling. No filter gives ''.
        """
        terms = []
        if self.state is not None:
            terms.append(f"state = {self.state}")
        if self.email is not None:
            terms.append(f"email = {_quote(self.email)}")
        if self.display_name_contains is not None:
            terms.append(f"display_name : {_quote(self.display_name_contains)}")
        return " AND ".join(terms)


def _quote(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return f'"{escaped}"'


FILTER_GRAMMAR = (
    "supported terms, joined by AND, are state = ACTIVE, state = DEACTIVATED, "
    'email = "address" and display_name : "text"'
)

_FILTER_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<operator>!=|<=|>=|=|:|<|>|~)
      | (?P<paren>[()])
      | (?P<word>[^\s"=:<>!~()]+)
      | (?P<other>\S)
    )""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


def _filter_error(description: str) -> InvalidArgument:
    return invalid_field("filter", description, reason="INVALID_FILTER")


def _tokenize(text: str) -> list[_Token]:
    tokens = []
    position = 0
    while position < len(text):
        match = _FILTER_TOKEN.match(text, position)
        if match is None:  # only trailing whitespace remains
            break
        kind = match.lastgroup
        value = match.group(kind)
        if kind == "other":
            if value == '"':
                raise _filter_error(
                    f"the string that starts at position {match.start(kind)} has "
                    'no closing quote; close it with "'
                )
            raise _filter_error(
                f"unexpected character {value!r} at position {match.start(kind)}; "
                + FILTER_GRAMMAR
            )
        tokens.append(_Token(kind, value, match.start(kind), match.end(kind)))
        position = match.end()
    return tokens


def _unquote(token: _Token) -> str:
    return re.sub(r"\\(.)", r"\1", token.text[1:-1])


def _split_terms(text: str, tokens: list[_Token]) -> list[tuple[str, list[_Token]]]:
    terms: list[tuple[str, list[_Token]]] = []
    current: list[_Token] = []
    for token in [*tokens, None]:
        if token is None or (token.kind == "word" and token.text == "AND"):
            if not current:
                raise _filter_error(
                    "AND must join two terms; remove the extra AND or add a term"
                )
            terms.append((text[current[0].start : current[-1].end], current))
            current = []
        else:
            current.append(token)
    return terms


def _parse_term(term: str, tokens: list[_Token], parsed: dict[str, str]) -> None:
    words = {token.text for token in tokens if token.kind == "word"}
    if words & {"OR", "NOT", "and", "or", "not"} or any(
        token.kind == "paren" for token in tokens
    ):
        raise _filter_error(
            f"{term!r} uses OR, NOT, lower-case operators or parentheses, which "
            f"are not supported; {FILTER_GRAMMAR}"
        )
    if len(tokens) != 3 or tokens[0].kind != "word" or tokens[1].kind != "operator":
        raise _filter_error(f"{term!r} is not a supported term; {FILTER_GRAMMAR}")

    field, operator, value = tokens
    expected = {"state": "=", "email": "=", "display_name": ":"}
    if field.text not in expected:
        raise _filter_error(
            f"{term!r} filters on {field.text!r}, which is not supported; "
            + FILTER_GRAMMAR
        )
    if operator.text != expected[field.text]:
        raise _filter_error(
            f"{term!r} uses the operator {operator.text!r}; {field.text} supports "
            f"only {expected[field.text]!r}"
        )
    if field.text in parsed:
        raise _filter_error(
            f"{term!r} repeats a term on {field.text!r}; give each field once"
        )

    if field.text == "state":
        if value.kind != "word" or value.text not in (STATE_ACTIVE, STATE_DEACTIVATED):
            raise _filter_error(
                f"{term!r} compares state with {value.text}; use state = ACTIVE "
                "or state = DEACTIVATED, without quotes"
            )
        parsed["state"] = value.text
        return

    if value.kind != "string":
        raise _filter_error(
            f"{term!r} needs a quoted value, as in {field.text} "
            f'{operator.text} "{value.text}"'
        )
    text = _unquote(value)
    forbidden = find_control_character(text)
    if forbidden is not None:
        raise _filter_error(
            f"{term!r} contains the control character U+{ord(forbidden):04X}; remove it"
        )
    parsed[field.text] = text


def parse_user_filter(text: str) -> UserFilter:
    """Parse the ListUsers filter grammar documented in the proto.

    Whitespace around the filter and between tokens is ignored, so ' ' is
    no filter, like ''. Error positions count from the start of `text`.

    Raises:
      InvalidArgument: on any term outside the grammar; the message names
        the term.
    """
    tokens = _tokenize(text)
    if not tokens:
        return UserFilter()
    parsed: dict[str, str] = {}
    for term, term_tokens in _split_terms(text, tokens):
        _parse_term(term, term_tokens, parsed)
    email = parsed.get("email")
    contains = parsed.get("display_name")
    return UserFilter(
        state=parsed.get("state"),
        email=normalise_email(email) if email is not None else None,
        display_name_contains=normalise_text(contains)
        if contains is not None
        else None,
    )
