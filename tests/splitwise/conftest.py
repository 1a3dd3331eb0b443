"""Paths of the Splitwise fixtures and of the real exports in the shared data."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import SHARED_DATA

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "splitwise"
FIXTURE_FILES = (
    "current_flat.csv",
    "older_imbalanced.csv",
    "self_paid.csv",
    "withdrawn_currencies.csv",
)


def shared_export_params() -> list:
    """Return one parameter per real export, or one skipped parameter if none.

    The names are collected from the default shared data path so that each
    file gets its own test id. Tests open them through the `shared_data`
    fixture, which skips with the path to fix when the folder is missing.
    """
    folder = SHARED_DATA / "splitwise"
    names = (
        sorted(path.name for path in folder.glob("*.csv")) if folder.is_dir() else []
    )
    if not names:
        reason = (
            f"no Splitwise exports (*.csv) in {folder}; set SPLITLOG_SHARED_DATA to "
            "the folder that holds splitwise/"
        )
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="none")]
    return [pytest.param(name, id=name.removesuffix(".csv")) for name in names]


@pytest.fixture
def shared_export(request, shared_data) -> Path:
    """The path of the real export named by the test's `export_name` parameter."""
    path = shared_data / "splitwise" / request.param
    if not path.is_file():
        pytest.skip(f"{path} not found")
    return path
