"""A tail that its client stops must give its router stream slot back.

The router here allows one open stream per caller, so a slot that the gateway
kept after its client left would refuse the next tail.
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2 as logs_pb2
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from tests.gateway.conftest import logs_gateway
from tests.gateway.support import LoopThread

# Enough backlog bytes to fill the flow-control windows between the gateway
# and a client that stops reading, so that the gateway waits in a write.
BACKLOG_ENTRIES = 12_000
MESSAGE = "x" * 700


@pytest.fixture(scope="module")
def one_slot(tmp_path_factory):
    loop = LoopThread()
    running = logs_gateway(tmp_path_factory, loop, log_max_streams_per_caller=1)
    yield running
    running.close()
    loop.close()


def _open_tail(stub, request, timeout: float = 30):
    """Open a tail and read its first response, retrying while slots are busy.

    A slot comes back within a second when the gateway cancels its call; the
    router would notice an abandoned one only after about 30 s.
    """
    deadline = time.monotonic() + 10
    while True:
        call = stub.TailLogEntries(request, timeout=timeout)
        try:
            return call, next(call)
        except grpc.RpcError as error:
            code = error.code()
            if code != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            if time.monotonic() > deadline:
                raise AssertionError("no stream slot came back") from error
            time.sleep(0.2)


def test_cancelled_stalled_tail_frees_slot(one_slot):
    address = f"127.0.0.1:{one_slot.gateway.grpc_port}"
    with grpc.insecure_channel(address) as channel:
        stub = logs_grpc.LogsServiceStub(channel)
        service = f"slots-{uuid.uuid4().hex[:8]}"
        request = logs_pb2.TailLogEntriesRequest(services=[service])
        first, response = _open_tail(stub, request)
        token = response.resume_token
        first.cancel()
        for start in range(0, BACKLOG_ENTRIES, 2_000):
            stub.WriteLogEntries(
                logs_pb2.WriteLogEntriesRequest(
                    entries=[
                        logs_pb2.LogEntry(service=service, message=f"{MESSAGE} {i}")
                        for i in range(start, start + 2_000)
                    ]
                ),
                timeout=30,
            )
        resumed = logs_pb2.TailLogEntriesRequest(services=[service], resume_token=token)
        for _ in range(2):
            call, _ = _open_tail(stub, resumed)
            # Stop reading until the gateway waits in a write, then leave.
            time.sleep(2)
            call.cancel()

        # The slot of the last tail comes back, so one more tail opens.
        last, response = _open_tail(stub, resumed)
        last.cancel()

    assert response.resume_token
