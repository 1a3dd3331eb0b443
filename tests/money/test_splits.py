import math
from collections import Counter
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from expense_service.currencies import UnknownCurrencyError
from expense_service.splits import (
    DuplicateParticipantError,
    InvalidParticipantError,
    InvalidSplitTypeError,
    InvalidTotalError,
    Participant,
    SplitMismatchError,
    SplitType,
    allocate,
    tie_break_rank,
)

P = Participant
CURRENCY_BY_EXPONENT = {0: "JPY", 2: "USD", 3: "BHD"}


def split(total, split_type, participants, code="USD", seed="groups/g/expenses/e"):
    return allocate(total, split_type, participants, currency_code=code, seed=seed)


# Worked cases.


def test_equal_one_dollar_among_three():
    owed = split(100, SplitType.EQUAL, [P("users/a"), P("users/b"), P("users/c")])

    assert sorted(owed.values()) == [33, 33, 34]
    assert sum(owed.values()) == 100
    first = min(owed, key=lambda user: tie_break_rank(user, "groups/g/expenses/e"))
    assert owed[first] == 34


def test_equal_one_cent_between_two():
    owed = split(1, SplitType.EQUAL, [P("users/a"), P("users/b")])

    assert sorted(owed.values()) == [0, 1]


def test_exact_amounts_over_total_rejected():
    participants = [P(f"users/{name}", exact_amount=3167) for name in "abc"]

    with pytest.raises(SplitMismatchError) as caught:
        split(9500, SplitType.EXACT, participants)

    assert caught.value.reason == "SPLIT_DOES_NOT_ADD_UP"
    assert caught.value.field == "expense.split.participants"
    assert "add up to 95.01 USD" in caught.value.message
    assert "0.01 USD over the total of 95.00 USD" in caught.value.message


def test_exact_amounts_under_total_rejected():
    participants = [P("users/a", exact_amount=5000), P("users/b", exact_amount=4999)]

    with pytest.raises(
        SplitMismatchError, match="0.01 USD under the total of 100.00 USD"
    ):
        split(10000, SplitType.EXACT, participants)


def test_percentages_missing_ten_percent_rejected():
    participants = [P("users/a", basis_points=6000), P("users/b", basis_points=3000)]

    with pytest.raises(SplitMismatchError) as caught:
        split(10000, SplitType.PERCENTAGE, participants)

    assert "add up to 90 %" in caught.value.message
    assert "10 % is missing" in caught.value.message


def test_percentages_over_hundred_rejected():
    participants = [P("users/a", basis_points=6000), P("users/b", basis_points=5000)]

    with pytest.raises(SplitMismatchError, match="10 % over 100 %"):
        split(10000, SplitType.PERCENTAGE, participants)


def test_zero_total_rejected():
    with pytest.raises(InvalidTotalError) as caught:
        split(0, SplitType.EQUAL, [P("users/a")])

    assert caught.value.field == "expense.total"
    assert caught.value.reason == "INVALID_TOTAL"


def test_equal_jpy_has_no_fractions():
    owed = split(
        1000, SplitType.EQUAL, [P("users/a"), P("users/b"), P("users/c")], "JPY"
    )

    assert sorted(owed.values()) == [333, 333, 334]


def test_equal_bhd_splits_fils():
    owed = split(
        10_000, SplitType.EQUAL, [P("users/a"), P("users/b"), P("users/c")], "BHD"
    )

    assert sorted(owed.values()) == [3333, 3333, 3334]


def test_exact_bhd_message_uses_three_digits():
    participants = [P("users/a", exact_amount=500), P("users/b", exact_amount=499)]

    with pytest.raises(
        SplitMismatchError, match="0.001 BHD under the total of 1.000 BHD"
    ):
        split(1000, SplitType.EXACT, participants, "BHD")


def test_refund_shares_are_not_positive():
    owed = split(-100, SplitType.EQUAL, [P("users/a"), P("users/b"), P("users/c")])

    assert sorted(owed.values()) == [-34, -33, -33]


# Rules of each split type.


def test_percentage_rest_goes_to_participants_without_percentage():
    participants = [P("users/a", basis_points=6000), P("users/b"), P("users/c")]

    owed = split(10000, SplitType.PERCENTAGE, participants)

    assert owed == {"users/a": 6000, "users/b": 2000, "users/c": 2000}


def test_percentage_zero_rest_leaves_open_participants_nothing():
    participants = [P("users/a", basis_points=10000), P("users/b")]

    assert split(999, SplitType.PERCENTAGE, participants) == {
        "users/a": 999,
        "users/b": 0,
    }


def test_shares_weight_the_parts():
    participants = [
        P("users/a", shares=2),
        P("users/b", shares=1),
        P("users/c", shares=0),
    ]

    owed = split(900, SplitType.SHARES, participants)

    assert owed == {"users/a": 600, "users/b": 300, "users/c": 0}


def test_shares_adding_up_to_zero_rejected():
    with pytest.raises(SplitMismatchError, match="shares add up to 0"):
        split(900, SplitType.SHARES, [P("users/a", shares=0)])


def test_mixed_takes_exact_and_percentages_first():
    participants = [
        P("users/a", exact_amount=1000),
        P("users/b", basis_points=2500),
        P("users/c", shares=2),
        P("users/d", shares=1),
    ]

    owed = split(10000, SplitType.MIXED, participants)

    # 65.00 is left for shares: 43.3333 and 21.6667, and the larger
    # remainder takes the spare cent.
    assert owed == {"users/a": 1000, "users/b": 2500, "users/c": 4333, "users/d": 2167}


def test_mixed_percentage_is_exact_before_rounding():
    participants = [P("users/a", basis_points=3333), P("users/b", basis_points=6667)]

    owed = split(101, SplitType.MIXED, participants)

    # 33.6633 and 67.3367: the larger remainder 0.6633 takes the spare unit.
    assert owed == {"users/a": 34, "users/b": 67}


def test_mixed_without_shares_must_add_up():
    participants = [P("users/a", exact_amount=5000), P("users/b", basis_points=4000)]

    with pytest.raises(SplitMismatchError) as caught:
        split(10000, SplitType.MIXED, participants)

    assert "10.00 USD of the total of 100.00 USD is not divided" in caught.value.message


def test_mixed_over_total_rejected():
    participants = [P("users/a", exact_amount=9000), P("users/b", basis_points=2000)]

    with pytest.raises(
        SplitMismatchError, match="10.00 USD over the total of 100.00 USD"
    ):
        split(10000, SplitType.MIXED, participants)


def test_mixed_rest_with_zero_shares_rejected():
    participants = [P("users/a", exact_amount=5000), P("users/b", shares=0)]

    with pytest.raises(SplitMismatchError, match="one share or more"):
        split(10000, SplitType.MIXED, participants)


def test_mixed_with_nothing_left_accepts_zero_shares():
    participants = [P("users/a", exact_amount=10000), P("users/b", shares=0)]

    assert split(10000, SplitType.MIXED, participants) == {
        "users/a": 10000,
        "users/b": 0,
    }


# Input errors name the field.


def test_exact_amount_with_wrong_sign_rejected():
    participants = [P("users/a", exact_amount=-100), P("users/b", exact_amount=200)]

    with pytest.raises(InvalidParticipantError) as caught:
        split(100, SplitType.EXACT, participants)

    assert caught.value.field == "expense.split.participants[0].exact_amount"
    assert "opposite sign" in caught.value.message


def test_duplicate_participant_rejected():
    participants = [P("users/a"), P("users/b"), P("users/a")]

    with pytest.raises(DuplicateParticipantError) as caught:
        split(100, SplitType.EQUAL, participants)

    assert caught.value.field == "expense.split.participants[2].user"
    assert caught.value.reason == "DUPLICATE_PARTICIPANT"
    assert "participants[0]" in caught.value.message


@pytest.mark.parametrize(
    ("split_type", "participant", "field"),
    [
        (SplitType.EQUAL, P("users/a", shares=1), "participants[0].shares"),
        (SplitType.EXACT, P("users/a", basis_points=1), "participants[0].basis_points"),
        (SplitType.EXACT, P("users/a"), "participants[0].exact_amount"),
        (SplitType.PERCENTAGE, P("users/a", shares=1), "participants[0].shares"),
        (SplitType.SHARES, P("users/a"), "participants[0].shares"),
        (
            SplitType.SHARES,
            P("users/a", exact_amount=1),
            "participants[0].exact_amount",
        ),
        (SplitType.MIXED, P("users/a"), "participants[0]"),
        (SplitType.MIXED, P("users/a", shares=1, basis_points=1), "participants[0]"),
        (
            SplitType.PERCENTAGE,
            P("users/a", basis_points=10001),
            "participants[0].basis_points",
        ),
        (
            SplitType.PERCENTAGE,
            P("users/a", basis_points=-1),
            "participants[0].basis_points",
        ),
        (SplitType.SHARES, P("users/a", shares=-1), "participants[0].shares"),
        (SplitType.EQUAL, P(""), "participants[0].user"),
    ],
)
def test_invalid_participant_names_field(split_type, participant, field):
    with pytest.raises(InvalidParticipantError) as caught:
        split(100, split_type, [participant])

    assert caught.value.field == f"expense.split.{field}"
    assert caught.value.reason == "INVALID_SPLIT_PARTICIPANT"


def test_no_participants_rejected():
    with pytest.raises(InvalidParticipantError) as caught:
        split(100, SplitType.EQUAL, [])

    assert caught.value.field == "expense.split.participants"


@pytest.mark.parametrize("split_type", [0, 6, SplitType.UNSPECIFIED])
def test_unspecified_split_type_rejected(split_type):
    with pytest.raises(InvalidSplitTypeError) as caught:
        split(100, split_type, [P("users/a")])

    assert caught.value.field == "expense.split.type"


def test_field_prefix_changes_paths():
    with pytest.raises(InvalidParticipantError) as caught:
        allocate(100, 4, [P("users/a")], currency_code="USD", field_prefix="update")

    assert caught.value.field == "update.split.participants[0].shares"


def test_unknown_currency_rejected():
    with pytest.raises(UnknownCurrencyError):
        allocate(100, SplitType.EQUAL, [P("users/a")], currency_code="ABC")


# Tie-break.


def test_tie_break_spreads_extra_cent_across_seeds():
    people = [P("users/a"), P("users/b"), P("users/c")]
    winners = Counter()
    for number in range(60):
        owed = split(100, SplitType.EQUAL, people, seed=f"groups/g/expenses/e{number}")
        winners.update(user for user, amount in owed.items() if amount == 34)

    assert set(winners) == {"users/a", "users/b", "users/c"}


def test_tie_break_ignores_participant_order():
    people = [P(f"users/u{number}") for number in range(7)]

    forward = split(1000, SplitType.EQUAL, people)
    backward = split(1000, SplitType.EQUAL, people[::-1])

    assert forward == backward
    assert list(backward) == [p.user for p in people[::-1]]


# Properties for every split type and exponent.

USERS = [f"users/u{number}" for number in range(8)]


@st.composite
def split_cases(draw):
    digits = draw(st.sampled_from([0, 2, 3]))
    split_type = draw(st.sampled_from(list(SplitType)[1:]))
    users = draw(st.lists(st.sampled_from(USERS), min_size=1, max_size=8, unique=True))
    total = draw(st.integers(-(10**7), 10**7).filter(bool))
    sign = 1 if total > 0 else -1
    magnitude = abs(total)
    if split_type is SplitType.EQUAL:
        participants = [P(user) for user in users]
    elif split_type is SplitType.EXACT:
        cuts = sorted(
            draw(
                st.lists(
                    st.integers(0, magnitude),
                    min_size=len(users) - 1,
                    max_size=len(users) - 1,
                )
            )
        )
        bounds = [0, *cuts, magnitude]
        participants = [
            P(user, exact_amount=sign * (bounds[i + 1] - bounds[i]))
            for i, user in enumerate(users)
        ]
    elif split_type is SplitType.PERCENTAGE:
        open_user = draw(st.sampled_from(users))
        points = {u: draw(st.integers(0, 10000 // len(users))) for u in users}
        participants = [
            P(u) if u == open_user else P(u, basis_points=points[u]) for u in users
        ]
    elif split_type is SplitType.SHARES:
        participants = [P(u, shares=draw(st.integers(1, 1000))) for u in users]
    else:
        participants = [P(users[0], shares=draw(st.integers(1, 50)))]
        budget = magnitude
        for user in users[1:]:
            kind = draw(st.sampled_from(["exact", "points", "shares"]))
            if kind == "exact":
                amount = draw(st.integers(0, budget // len(users)))
                participants.append(P(user, exact_amount=sign * amount))
            elif kind == "points":
                participants.append(
                    P(user, basis_points=draw(st.integers(0, 10000 // len(users))))
                )
            else:
                participants.append(P(user, shares=draw(st.integers(0, 50))))
    seed = draw(st.text(max_size=8))
    return total, split_type, participants, CURRENCY_BY_EXPONENT[digits], seed


@settings(max_examples=400, deadline=None)
@given(split_cases(), st.randoms(use_true_random=False))
def test_allocation_properties(case, random):
    total, split_type, participants, code, seed = case

    owed = split(total, split_type, participants, code, seed)
    shuffled = list(participants)
    random.shuffle(shuffled)
    owed_shuffled = split(total, split_type, shuffled, code, seed)

    assert sum(owed.values()) == total
    assert all(amount * total >= 0 for amount in owed.values())
    assert list(owed) == [p.user for p in participants]
    assert owed_shuffled == owed
    for participant in participants:
        if participant.exact_amount is not None:
            assert owed[participant.user] == participant.exact_amount


@settings(max_examples=300, deadline=None)
@given(
    st.integers(1, 10**7),
    st.lists(st.integers(1, 997), min_size=1, max_size=8),
    st.text(max_size=8),
)
def test_allocate_extra_units_to_largest_remainders(magnitude, weights, seed):
    users = USERS[: len(weights)]
    participants = [
        P(user, shares=weight) for user, weight in zip(users, weights, strict=True)
    ]

    owed = split(magnitude, SplitType.SHARES, participants, seed=seed)

    exact = {
        user: Fraction(magnitude * weight, sum(weights))
        for user, weight in zip(users, weights, strict=True)
    }
    rounded_up = [user for user in users if owed[user] > exact[user]]
    rounded_down = [user for user in users if owed[user] <= exact[user]]
    assert all(0 <= owed[user] - math.floor(exact[user]) <= 1 for user in users)
    for up in rounded_up:
        for down in rounded_down:
            up_part, down_part = exact[up] % 1, exact[down] % 1
            assert up_part > down_part or (
                up_part == down_part
                and tie_break_rank(up, seed) < tie_break_rank(down, seed)
            )
