"""A client that leaves an open stream must not make the gateway log errors.

A real log cluster and a real gateway listen on 127.0.0.1, once with
`auth_required` on and a real user_service, once with it off. The gateway's
log records are shipped to log_service as its own errors, so a tail client
that cancels mid-stream must leave no ERROR record, such as grpc's failed
write or asyncio's task whose exception was never retrieved.
"""

from __future__ import annotations

import gc
import logging
import time
import uuid
from collections.abc import Iterator

import grpc
import pytest

from splitlog.logs.v1 import logs_service_pb2 as logs_pb
from splitlog.logs.v1 import logs_service_pb2_grpc as logs_grpc
from tests.auth.support import operator_admin_key, sign_up_user
from tests.cli.test_logs_cli import LogsGateway, logs_gateway_with_auth
from tests.gateway.conftest import logs_gateway
from tests.gateway.support import LoopThread

SECRET = "stream-departure-secret-" + "d" * 40
PASSWORD = "correct horse battery staple"
TIMEOUT = 30.0
# Enough backlog bytes to fill the flow-control windows between the gateway
# and a client that stops reading, so that the gateway waits in a write when
# the client leaves.
BACKLOG_ENTRIES = 12_000
BATCH = 2_000
MESSAGE = "x" * 700
TAILS = 3
# Seconds that a client reads nothing before it leaves.
STALL_SECONDS = 1.0


@pytest.fixture(scope="module")
def loop_thread() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def live_with_auth(loop_thread, tmp_path_factory) -> Iterator[LogsGateway]:
    with logs_gateway_with_auth(loop_thread, tmp_path_factory, SECRET) as running:
        yield running


@pytest.fixture(scope="module")
def live_without_auth(loop_thread, tmp_path_factory) -> Iterator[LogsGateway]:
    running = logs_gateway(tmp_path_factory, loop_thread)
    yield running
    running.close()


def _admin_metadata(live: LogsGateway, channel) -> tuple[tuple[str, str], ...]:
    signed_up = sign_up_user(channel, "leaver", PASSWORD, TIMEOUT)
    _, secret = operator_admin_key(live.gateway.config.data_dir, signed_up.user.name)
    return (("authorization", f"Bearer {secret}"),)


def _backlog(stub, metadata) -> logs_pb.TailLogEntriesRequest:
    """Write a backlog after a tail's first token; return the resuming request."""
    service = f"leave-{uuid.uuid4().hex[:8]}"
    first = stub.TailLogEntries(
        logs_pb.TailLogEntriesRequest(services=[service]),
        metadata=metadata,
        timeout=TIMEOUT,
    )
    token = next(first).resume_token
    first.cancel()
    for start in range(0, BACKLOG_ENTRIES, BATCH):
        stub.WriteLogEntries(
            logs_pb.WriteLogEntriesRequest(
                entries=[
                    logs_pb.LogEntry(service=service, message=f"{MESSAGE} {i}")
                    for i in range(start, start + BATCH)
                ],
                request_id=str(uuid.uuid4()),
            ),
            metadata=metadata,
            timeout=TIMEOUT,
        )
    return logs_pb.TailLogEntriesRequest(services=[service], resume_token=token)


def _settle(loop_thread: LoopThread) -> None:
    """Let the gateway finish the left calls and collect what they dropped.

    asyncio logs a task's unretrieved exception when the task is collected,
    and it closes an abandoned async generator in a task of its own. The
    collection runs on the loop's thread, because grpc.aio objects freed on
    another thread can crash the interpreter.
    """
    for _ in range(5):
        time.sleep(0.2)
        loop_thread.run(_collect())


async def _collect() -> None:
    gc.collect()


def test_tail_left_with_auth_logs_no_error(live_with_auth, loop_thread, caplog):
    with grpc.insecure_channel(live_with_auth.address) as channel:
        metadata = _admin_metadata(live_with_auth, channel)
        _leave_tails(channel, metadata, loop_thread, caplog)

    assert _errors(caplog) == []


def test_tail_left_without_auth_logs_no_error(live_without_auth, loop_thread, caplog):
    with grpc.insecure_channel(live_without_auth.address) as channel:
        _leave_tails(channel, (), loop_thread, caplog)

    assert _errors(caplog) == []


def _leave_tails(channel, metadata, loop_thread: LoopThread, caplog) -> None:
    """Open tails of a backlog and leave each while the gateway writes to it."""
    stub = logs_grpc.LogsServiceStub(channel)
    request = _backlog(stub, metadata)
    # Only errors matter. Records of lower levels would keep grpc.aio objects
    # alive in their tracebacks until pytest frees them on the main thread.
    caplog.set_level(logging.WARNING)
    for _ in range(TAILS):
        tail = stub.TailLogEntries(request, metadata=metadata, timeout=TIMEOUT)
        first = next(tail)
        time.sleep(STALL_SECONDS)
        tail.cancel()
        assert first.resume_token
    _settle(loop_thread)


def _errors(caplog) -> list[str]:
    return [
        f"{record.name}: {record.getMessage()}"
        for record in caplog.records
        if record.levelno >= logging.ERROR
    ]
