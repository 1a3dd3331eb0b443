"""CheckSettled waits for the group's settlement writes in flight and until
the ledger is applied up to expense_service's newest event, and fails with
UNAVAILABLE when it cannot."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from balance_service import storage
from splitlog.balances.v1 import balances_service_pb2 as pb
from splitlog_runtime.errors import RETRY_PUSHBACK_KEY
from tests.balance_service.support import (
    LedgerPeer,
    Services,
    create_group,
    minor,
    reason_of,
    settle,
    start_balances,
)


@pytest.fixture
def services(db_url, users_host, tmp_path) -> Iterator[Services]:
    """A balance service with a ledger peer of its own, which tests pause or stop."""
    peer = LedgerPeer()
    running = start_balances(db_url, users_host.port, peer, tmp_path / "data")
    yield running
    running.close()
    peer.stop()


def _check(services: Services, group_id: str, timeout: float = 10.0):
    request = pb.CheckSettledRequest(name=f"groups/{group_id}/balance")
    return services.balances.CheckSettled(request, timeout=timeout)


def _start(call) -> futures.Future:
    executor = futures.ThreadPoolExecutor(max_workers=1)
    future = executor.submit(call)
    executor.shutdown(wait=False)
    return future


def _nets(response) -> dict[str, int]:
    return {
        balance.user.removeprefix("users/"): minor(balance.net_amount)
        for balance in response.unsettled_balances
    }


def test_check_waits_for_paused_expense(services):
    group_id, (ann, ben) = create_group(services.users, 2)
    services.peer.paused = True
    services.peer.publish(group_id, "dinner", {ann: (1000, 500), ben: (0, 500)})
    release = threading.Timer(0.5, setattr, (services.peer, "paused", False))
    release.start()

    started = time.monotonic()
    response = _check(services, group_id)
    waited = time.monotonic() - started
    release.join()

    assert not response.settled
    assert _nets(response) == {ann: 500, ben: -500}
    assert waited >= 0.4


def test_check_unavailable_while_ledger_behind(services):
    group_id, (ann, ben) = create_group(services.users, 2)
    services.sync()
    services.peer.paused = True
    services.peer.publish(group_id, "dinner", {ann: (1000, 500), ben: (0, 500)})

    with pytest.raises(grpc.RpcError) as caught:
        _check(services, group_id, timeout=1.0)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "LEDGER_NOT_CAUGHT_UP"
    # The wait took the deadline, so retrying channels must not send it again.
    assert (RETRY_PUSHBACK_KEY, "-1") in caught.value.trailing_metadata()
    expected = (
        f"has applied expense changes up to ledger sequence "
        f"{services.peer.last_sequence - 1}, but expense_service has committed up "
        f"to {services.peer.last_sequence}"
    )
    assert expected in caught.value.details()


def test_check_unavailable_without_expense_service(services):
    group_id, _ = create_group(services.users, 2)
    services.peer.stop()

    with pytest.raises(grpc.RpcError) as caught:
        _check(services, group_id)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "EXPENSE_SERVICE_UNAVAILABLE"
    assert "did not return its ledger position" in caught.value.details()


def test_check_counts_settlement_at_once(services):
    group_id, (ann, ben) = create_group(services.users, 2)
    settle(services.balances, group_id, ben, ann, 700)

    response = _check(services, group_id)

    assert not response.settled
    assert _nets(response) == {ann: -700, ben: 700}


def test_check_counts_expense_and_settlement(services):
    group_id, (ann, ben) = create_group(services.users, 2)
    services.peer.publish(group_id, "dinner", {ann: (1000, 500), ben: (0, 500)})
    settle(services.balances, group_id, ben, ann, 500)

    response = _check(services, group_id)

    assert response.settled
    assert _nets(response) == {}


def test_check_waits_for_settlement_in_flight(services):
    group_id, (ann, ben) = create_group(services.users, 2)
    with services.database.transaction() as session:
        # The open transaction locks the row that the settlement's commit
        # needs, so the settlement stays in flight after its member check.
        storage.touch_group(session, group_id, storage.utc_now())
        write = _start(lambda: settle(services.balances, group_id, ben, ann, 500))
        time.sleep(0.3)
        with pytest.raises(grpc.RpcError) as caught:
            _check(services, group_id, timeout=0.8)
        fenced = _start(lambda: _check(services, group_id))
        time.sleep(0.3)
        waited = not fenced.done()
    write.result(10)
    response = fenced.result(10)

    assert caught.value.code() == grpc.StatusCode.UNAVAILABLE
    assert reason_of(caught.value) == "WRITES_IN_FLIGHT"
    assert f"groups/{group_id}" in caught.value.details()
    assert "1 settlement writes" in caught.value.details()
    assert waited
    assert not response.settled
    assert _nets(response) == {ann: -500, ben: 500}
