import pytest

from expense_service import domain
from splitlog_runtime.errors import InvalidArgument


def test_name_cache_returns_same_ids():
    for _ in range(3):
        assert domain.parse_expense_name(
            "groups/trip-2026/expenses/dinner-01", "name"
        ) == ("trip-2026", "dinner-01")


@pytest.mark.parametrize("field", ["expense.creator", "expense.payers[1].user"])
def test_name_cache_reports_each_field(field):
    domain.validate_user_name("users/ok-user", "expense.creator")
    with pytest.raises(InvalidArgument):
        domain.validate_user_name("users/Bad", "expense.creator")

    with pytest.raises(InvalidArgument) as caught:
        domain.validate_user_name("users/Bad", field)

    assert caught.value.field_violations[0].field == field
    assert "'users/Bad'" in caught.value.field_violations[0].description


def test_name_cache_skips_long_names():
    name = "users/" + "a" * 500

    with pytest.raises(InvalidArgument) as caught:
        domain.validate_user_name(name, "expense.creator")

    assert caught.value.field_violations[0].field == "expense.creator"
