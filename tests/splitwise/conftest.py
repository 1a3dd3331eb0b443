"""Paths of the Splitwise fixtures and of the real exports in the shared data."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import grpc
import pytest

from splitlog.users.v1 import users_service_pb2 as users_pb
from splitlog.users.v1 import users_service_pb2_grpc as users_grpc
from tests.conftest import SHARED_DATA
from tests.system.conftest import (
    START_TIMEOUT,
    WITHOUT_AUTH,
    Splitlog,
    start_splitlog,
)

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


LOOKUP_TIMEOUT = 10.0


def lookup_code(channel, name: str) -> grpc.StatusCode:
    """Return the status code of GetGroup on a group, or GetUser on a user."""
    users = users_grpc.UsersServiceStub(channel)
    try:
        if name.startswith("users/"):
            users.GetUser(users_pb.GetUserRequest(name=name), timeout=LOOKUP_TIMEOUT)
        else:
            users.GetGroup(users_pb.GetGroupRequest(name=name), timeout=LOOKUP_TIMEOUT)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


@contextlib.contextmanager
def running_splitlog(
    folder: Path, settings: Mapping[str, str] = WITHOUT_AUTH
) -> Iterator[Splitlog]:
    """Run `splitlog up` in `folder` until the block ends; fail if it never starts.

    The ready line is printed once every component serves. The gateway's
    aggregated health is not waited for, because the import needs only the
    forwarded services.
    """
    running = start_splitlog(folder, settings=settings)
    try:
        if not running.ready.wait(START_TIMEOUT):
            pytest.fail(f"splitlog did not start:\n{running.log()[-4000:]}")
        yield running
    finally:
        if running.process.poll() is None:
            running.signal(signal.SIGTERM)
            try:
                running.wait(timeout=30)
            except subprocess.TimeoutExpired:
                running.kill_everything()
